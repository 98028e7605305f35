import csv

import pytest
import torch
from conftest import TINY

import common
import train_series


def summary(out):
    with open(out / "summary.csv") as f:
        return {r["mesh"]: r for r in csv.DictReader(f)}


def run(mesh_dir, out, *extra, arch="keysphere"):
    return train_series.main(["--mesh-dir", str(mesh_dir), "--out", str(out), "--arch", arch, "--quiet",
                              "--cache-dir", str(out.parent / "cache"), *TINY, *extra])


@pytest.mark.parametrize("arch", ["keysphere", "latent", "ni"])
def test_smoke_run_writes_everything(tmp_path, tiny_series, arch):
    out = tmp_path / "run"
    assert run(tiny_series, out, arch=arch) == 0
    rows = summary(out)
    assert {r["status"] for r in rows.values()} == {"ok"}
    for name in ("ball", "box"):
        paths = common.RunPaths(out / name)
        for f in (paths.checkpoint, paths.compressed, paths.loss_plot, paths.log, paths.reconstruction):
            assert f.is_file(), f
        assert paths.spheres.is_file() == (arch != "ni")
        model, info = common.load_checkpoint(paths.checkpoint)
        assert info["arch"] == arch
        assert info["config"]["epochs"] == 8 and info["mesh"]["watertight"]
        assert set(info["normalization"]) == {"center", "scale"}
        assert float(rows[name]["final_loss"]) == pytest.approx(info["loss"], rel=1e-4)
        assert int(rows[name]["numbers"]) == common.count_numbers(model)
        assert "loss" in paths.log.read_text()
    assert not list(out.glob(".*"))  # no temporary directories left


def test_rerun_skips_done_meshes_and_force_retrains(tmp_path, tiny_series):
    out = tmp_path / "run"
    run(tiny_series, out)
    stamp = (out / "ball" / "model.pt").stat().st_mtime_ns
    run(tiny_series, out)
    assert (out / "ball" / "model.pt").stat().st_mtime_ns == stamp
    assert set(summary(out)) == {"ball", "box"}
    run(tiny_series, out, "--force")
    assert (out / "ball" / "model.pt").stat().st_mtime_ns != stamp


def test_a_failing_mesh_is_reported_and_the_rest_continues(tmp_path, tiny_series):
    (tiny_series / "broken.obj").write_text("this is not a mesh\n")
    (tiny_series / "cloud.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
                                           "property float y\nproperty float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    out = tmp_path / "run"
    run(tiny_series, out)
    rows = summary(out)
    assert rows["ball"]["status"] == rows["box"]["status"] == "ok"
    assert rows["broken"]["status"].startswith("failed: ")
    assert rows["cloud"]["status"].startswith("failed: ") and "no faces" in rows["cloud"]["status"]
    assert not (out / "broken").exists()


def test_training_lowers_the_loss(tmp_path, tiny_series):
    out = tmp_path / "run"
    run(tiny_series, out, "--restarts=1")
    info = torch.load(out / "ball" / "model.pt", weights_only=True)
    losses = info["loss_history"]["main"]
    assert losses[-1] < 0.5 * losses[0]


def test_config_rejects_unknown_and_mistyped_keys(tmp_path):
    with pytest.raises(common.InputError, match="unknown config key"):
        common.TrainConfig.load(common.PROJECT_ROOT / "configs" / "default.yaml", ["--epoch=3"])
    with pytest.raises(common.InputError, match="epochs must be int"):
        common.TrainConfig.load(None, ["--epochs=many"])
    with pytest.raises(common.InputError, match="scheduler"):
        common.TrainConfig.load(None, ["--scheduler=sometimes"])
    cfg = common.TrainConfig.load(common.PROJECT_ROOT / "configs" / "paper.yaml", ["--lr=1e-3"])
    assert cfg.lr == 1e-3 and cfg.epochs == 150 and cfg.batch_size == 512


def test_every_config_key_is_commented_and_known():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(common.TrainConfig)}
    for path in (common.PROJECT_ROOT / "configs").glob("*.yaml"):
        keys = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
        for line in keys:
            assert "#" in line, f"{path.name}: uncommented key {line!r}"
            assert line.split(":")[0] in fields
        common.TrainConfig.load(path)

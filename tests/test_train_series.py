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
    for name in ("ball", "box"):
        losses = torch.load(out / name / "model.pt", weights_only=True)["loss_history"]["main"]
        # 8 tiny epochs: the ball ends at ~0.4-0.75x its first epoch, the box at ~0.03-0.1x (float noise decides)
        assert losses[-1] < 0.9 * losses[0], name


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


def test_shipped_file_is_what_gets_meshed_and_eval_reports_its_rate_distortion(tmp_path, tiny_series):
    import codec
    import eval as evaluate

    out = tmp_path / "ks"
    run(tiny_series, out, "--codec_bits=8", "--qat_epochs=1")
    paths = common.RunPaths(out / "ball")
    shipped, info = codec.read(paths.compressed)
    assert info["bits"] == 8
    # the quantization-aware copy is stored; the float checkpoint keeps the pre-QAT weights
    x = torch.rand(500, 3) * 2 - 1
    float_model, _ = common.load_checkpoint(paths.checkpoint)
    assert not torch.equal(shipped(x), float_model(x))
    assert evaluate.main(["--mesh-dir", str(tiny_series), "--results", str(out), "--csv", str(tmp_path / "e.csv"),
                          "--rd", "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert {int(r["bytes"]) for r in rows} == {(out / r["mesh"] / "model.ksdf").stat().st_size for r in rows}
    rd_rows = list(csv.DictReader(open(tmp_path / "e-rd.csv")))
    methods = {r["method"] for r in rd_rows}
    assert {"draco", "ks", "ks shipped"} <= methods
    assert "**median** | ks" in (tmp_path / "e-rd.md").read_text()
    assert (tmp_path / "e-rd.png").stat().st_size > 1000


def test_compare_trains_every_architecture_on_one_budget_and_tabulates_the_ratio(tmp_path, tiny_series):
    import compare

    (tiny_series / "box.stl").unlink()  # one mesh keeps it short
    out = tmp_path / "cmp"
    assert compare.main(["--mesh-dir", str(tiny_series), "--out", str(out), "--quiet",
                         f"--cache-dir={tmp_path / 'cache'}", *TINY]) == 0
    configs = {arch: common.load_checkpoint(out / arch / "ball" / "model.pt")[1]["config"]
               for arch in ("keysphere", "latent", "ni")}
    assert configs["keysphere"] == configs["latent"] == configs["ni"]
    table = (out / "compare.md").read_text()
    assert "CD2 keysphere/ni" in table and "**median**" in table
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert {r["run"] for r in rows} == {"keysphere", "latent", "ni"}


@pytest.mark.parametrize("arch", ["keysphere", "latent", "ni"])
def test_hand_written_training_step_matches_autograd(arch):
    torch.manual_seed(0)
    spheres = torch.cat([torch.rand(16, 3) * 1.6 - 0.8, -0.1 * torch.rand(16, 1)], 1)
    args = {} if arch == "ni" else {"num_spheres": 16, "spheres": spheres}
    reference = common.build_model(arch, args)
    model = common.build_model(arch, args)
    model.load_state_dict(reference.state_dict())
    x, y = torch.rand(300, 3) * 2 - 1, torch.rand(300) * 0.2 - 0.1
    expected = torch.nn.functional.l1_loss(reference(x), y)
    expected.backward()
    loss = train_series.training_step(model, train_series.precompute(model, x), y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-7), name


def test_two_workers_train_the_series_and_report_a_failure(tmp_path, tiny_series):
    (tiny_series / "broken.obj").write_text("this is not a mesh\n")
    out = tmp_path / "run"
    assert run(tiny_series, out, "--workers=2") == 0
    rows = summary(out)
    assert list(rows) == ["ball", "box", "broken"]  # in mesh order, whichever finished first
    assert rows["ball"]["status"] == rows["box"]["status"] == "ok"
    assert rows["broken"]["status"].startswith("failed")
    assert (out / "box" / "model.ksdf").is_file() and not (out / "broken").exists()
    assert not list(out.glob(".*"))


def test_a_collapsed_training_is_retried_at_half_the_rate(tmp_path, tiny_series):
    out = tmp_path / "run"
    run(tiny_series, out, "--lr=20", "--restarts=1")  # Adam steps of 20 kill every unit
    _, info = common.load_checkpoint(out / "ball" / "model.pt")
    assert info["loss_history"]["lr"] == pytest.approx(5.0)  # tried 20, 10, 5
    run(tiny_series, tmp_path / "sane")
    _, info = common.load_checkpoint(tmp_path / "sane" / "ball" / "model.pt")
    assert info["loss_history"]["lr"] == pytest.approx(0.01)  # a sound run is trained once

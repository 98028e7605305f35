import csv
import dataclasses
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, train

import architectures
import checkpoint
import common
import pipeline
import train_series


def summary(out, name="summary.csv"):
    with open(out / name) as f:
        return {r["mesh"]: r for r in csv.DictReader(f)}


def test_a_series_writes_everything_and_reports_bad_files(trained_series):
    folder, out = trained_series
    rows = summary(out)
    assert list(rows) == ["ball", "box", "broken", "cloud", "nan"]  # in mesh order
    for name in ("ball", "box"):
        assert rows[name]["status"] == "ok" and rows[name]["kind"] == "closed"
        paths = common.RunPaths(out / name)
        for f in (paths.checkpoint, paths.compressed, paths.loss_plot, paths.log, paths.reconstruction, paths.spheres):
            assert f.is_file(), f
        model, info = checkpoint.load_checkpoint(paths.checkpoint)
        assert info["arch"] == "keysphere" and info["kind"] == "closed" and info["shell"] == 0
        assert info["config"]["epochs"] == 8 and info["mesh"]["watertight"]
        assert set(info["normalization"]) == {"center", "scale"}
        assert float(rows[name]["final_loss"]) == pytest.approx(info["loss"], rel=1e-4)
        assert int(rows[name]["numbers"]) == checkpoint.count_numbers(model)
        assert "loss" in paths.log.read_text() and "closed" in paths.log.read_text()
        losses = info["loss_history"]["main"]
        assert losses[-1] < 0.9 * losses[0], name  # training lowers the loss
        assert info["loss_history"]["lr"] == pytest.approx(0.005)  # a sound run is trained once
    assert rows["broken"]["status"].startswith("failed: ")
    assert rows["cloud"]["status"].startswith("failed: ") and "no faces" in rows["cloud"]["status"]
    assert rows["nan"]["status"].startswith("failed: ") and "NaN" in rows["nan"]["status"]
    assert not (out / "broken").exists() and (out / "broken.failed.txt").is_file()
    assert not list(out.glob(".*"))  # no temporary directories left


def test_rerun_skips_done_meshes_and_force_retrains(tmp_path, trained_series):
    folder, done = trained_series
    out = tmp_path / "run"
    shutil.copytree(done, out)
    stamp = (out / "ball" / "model.pt").stat().st_mtime_ns
    train(folder, out)
    assert (out / "ball" / "model.pt").stat().st_mtime_ns == stamp
    assert set(summary(out)) == {"ball", "box", "broken", "cloud", "nan"}
    (folder / "box.stl").rename(tmp_path / "box.stl")
    try:
        train(folder, out, "--force")
    finally:
        (tmp_path / "box.stl").rename(folder / "box.stl")
    assert (out / "ball" / "model.pt").stat().st_mtime_ns != stamp


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


def test_shipped_file_is_what_gets_meshed_and_eval_reports_its_rate_distortion_and_pictures(tmp_path, trained_series):
    import codec
    import eval as evaluate

    folder, out = trained_series
    paths = common.RunPaths(out / "ball")
    shipped, info = codec.read(paths.compressed)
    one = tmp_path / "one"  # the rate-distortion report of one mesh keeps it short
    one.mkdir()
    (one / "ball.obj").symlink_to(folder / "ball.obj")
    assert info["bits"] == 8 and info["kind"] == "closed"
    # the quantization-aware copy is stored; the float checkpoint keeps the pre-QAT weights
    x = torch.rand(500, 3) * 2 - 1
    float_model, _ = checkpoint.load_checkpoint(paths.checkpoint)
    assert not torch.equal(shipped(x), float_model(x))
    assert evaluate.main(["--mesh-dir", str(one), "--results", str(out), "--csv", str(tmp_path / "e.csv"),
                          "--rd", "--render", "--render-size", "48", "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert {r["mesh"] for r in rows} == {"ball"}
    assert {int(r["bytes"]) for r in rows} == {(out / r["mesh"] / "model.ksdf").stat().st_size for r in rows}
    assert {r["kind"] for r in rows} == {"closed"}
    for r in rows:  # the two one-sided terms add up to CD2
        assert float(r["cd2_gt_to_rec"]) + float(r["cd2_rec_to_gt"]) == pytest.approx(float(r["cd2"]), rel=1e-4)
    # the run's self-check is eval's CD2 of the same reconstruction (same samples and seeds) and its warning
    row = summary(out)["ball"]
    assert float(row["self_cd2"]) == pytest.approx(float(rows[0]["cd2"]), rel=1e-3)
    assert row["warning"] == rows[0]["warning"]
    check = checkpoint.load_checkpoint(paths.checkpoint)[1]["self_check"]
    assert check["parts_in"] == 1 and check["parts_out"] >= 1
    assert "self-check CD2" in paths.log.read_text()
    rd_rows = list(csv.DictReader(open(tmp_path / "e-rd.csv")))
    assert {r["method"] for r in rd_rows} == {"draco", "ks"}
    ours = {r["setting"]: int(r["bytes"]) for r in rd_rows if r["method"] == "ks"}
    assert set(ours) == {"4-bit", "8-bit (shipped)", "float32"}  # rd_bits=4 wrote model-4bit.ksdf
    assert ours["4-bit"] == paths.compressed_at(4).stat().st_size < ours["8-bit (shipped)"] < ours["float32"]
    table = (tmp_path / "e-rd.md").read_text()
    assert "**median** | ks" in table and "best on our front" in table
    assert (tmp_path / "e-rd.png").stat().st_size > 1000
    # --render: ground truth | the shipped model | its key spheres | Draco within its bytes, and a report that links
    # table, plot and picture
    import matplotlib.image

    picture = matplotlib.image.imread(tmp_path / "e-render" / "ball.png")
    assert picture.shape[1] >= 4 * 48 and picture.shape[0] >= 48  # truth, the run, its spheres, Draco's decode
    assert (picture[..., :3] < 0.9).any()  # something was drawn
    report = (tmp_path / "e-report.md").read_text()
    assert "](e-render/ball.png)" in report and "](e-rd.png)" in report and "| ball |" in report


def test_refit_rewrites_the_files_of_a_run_without_training(tmp_path, trained_series):
    folder, out = trained_series
    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = checkpoint.load_checkpoint(run / "ball" / "model.pt")[0].state_dict()
    assert train_series.main(["--mesh-dir", str(folder), "--out", str(run), "--quiet", "--refit",
                              "--cache-dir", str(out.parent / "cache"), *TINY, "--codec_bits=6", "--rd_bits=5"]) == 0
    after, info = checkpoint.load_checkpoint(run / "ball" / "model.pt")
    assert all(torch.equal(before[k], v) for k, v in after.state_dict().items())  # the float network stays
    import codec

    assert codec.read(run / "ball" / "model.ksdf")[1]["bits"] == 6 and (run / "ball" / "model-5bit.ksdf").is_file()
    assert info["ksdf_bytes"] == (run / "ball" / "model.ksdf").stat().st_size
    assert "fitting the trained network to the codec again" in (run / "ball" / "train.log").read_text()
    rows = {r["mesh"]: r for r in csv.DictReader(open(run / "summary.csv"))}
    assert rows["ball"]["status"] == "ok" and rows["broken"]["status"].startswith("failed")


def test_compare_trains_every_architecture_on_one_budget_and_tabulates_the_ratio(tmp_path, tiny_series):
    import compare

    (tiny_series / "box.stl").unlink()  # one mesh keeps it short
    out = tmp_path / "cmp"
    assert compare.main(["--mesh-dir", str(tiny_series), "--out", str(out), "--quiet",
                         f"--cache-dir={tmp_path / 'cache'}", *TINY]) == 0
    configs = {}
    for arch in ("keysphere", "latent", "ni"):
        paths = common.RunPaths(out / arch / "ball")
        for f in (paths.checkpoint, paths.compressed, paths.loss_plot, paths.log, paths.reconstruction):
            assert f.is_file(), f
        assert paths.spheres.is_file() == (arch != "ni")
        model, info = checkpoint.load_checkpoint(paths.checkpoint)
        assert info["arch"] == arch and int(summary(out / arch)["ball"]["numbers"]) == checkpoint.count_numbers(model)
        configs[arch] = info["config"]
    shared = [key for key in configs["ni"] if architectures.get("ni").applies(key)]
    assert all(configs["keysphere"][k] == configs["latent"][k] == configs["ni"][k] for k in shared)
    assert configs["keysphere"]["num_spheres"] == 8 and configs["ni"]["num_spheres"] == 128  # a key NI does not read
    table = (out / "compare.md").read_text()
    assert "CD2 keysphere/ni" in table and "**median**" in table
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert {r["run"] for r in rows} == {"keysphere", "latent", "ni"}


def test_two_workers_train_the_series_and_report_a_failure(tmp_path, tiny_series, trained_series):
    (tiny_series / "broken.obj").write_text("this is not a mesh\n")
    out = tmp_path / "run"
    assert train(tiny_series, out, "--workers=2") == 0
    rows = summary(out)
    assert list(rows) == ["ball", "box", "broken"]  # in mesh order, whichever finished first
    assert rows["ball"]["status"] == rows["box"]["status"] == "ok"
    assert rows["broken"]["status"].startswith("failed")
    assert (out / "box" / "model.ksdf").is_file() and not (out / "broken").exists()
    assert not list(out.glob(".*"))
    # a worker trains exactly what the main process trains
    assert rows["ball"]["final_loss"] == summary(trained_series[1])["ball"]["final_loss"]


def test_a_group_trains_like_one_network_at_a_time_and_a_bad_mesh_spares_it(tmp_path, trained_series, monkeypatch):
    """The pipeline hands a group the same training data and recipe as each mesh alone, and gets the same
    networks back. One epoch (62 steps): batched and single matrix kernels round differently, and over a long
    training that difference grows along a chaotic trajectory (training.train_group's own test bounds it per
    step); here it stays near float rounding (3e-8 at 2 threads)."""
    folder, _ = trained_series
    calls = []

    def recording(arch, model_args, cfg, members, *rest):
        calls.append((model_args, dataclasses.replace(cfg, group=0), members))
        return real(arch, model_args, cfg, members, *rest)

    real = pipeline.train_group
    monkeypatch.setattr(pipeline, "train_group", recording)
    out = {mode: tmp_path / mode for mode in ("group", "alone")}
    assert train(folder, out["group"], "--group=3", "--workers=1", "--epochs=1") == 0
    assert train(folder, out["alone"], "--epochs=1") == 0
    [(args, cfg, grouped)], alone = calls[:1], calls[1:]
    assert [m.name for m in grouped] == [c[2][0].name for c in alone] == ["ball", "box"]
    for member, (alone_args, alone_cfg, [single]) in zip(grouped, alone):
        assert args == alone_args and cfg == alone_cfg
        for key in ("spheres", "points", "sdf"):
            assert torch.equal(getattr(member, key), getattr(single, key)), (member.name, key)
    rows = summary(out["group"])
    assert [rows[n]["status"] for n in ("ball", "box")] == ["ok", "ok"]
    assert all(rows[n]["status"].startswith("failed") for n in ("broken", "cloud", "nan"))
    assert not list(out["group"].glob(".*"))
    for name in ("ball", "box"):
        grouped_model, info = checkpoint.load_checkpoint(out["group"] / name / "model.pt")
        single_model, alone_info = checkpoint.load_checkpoint(out["alone"] / name / "model.pt")
        for (key, p), q in zip(grouped_model.named_parameters(), single_model.parameters()):
            assert torch.allclose(p, q, atol=1e-4), (name, key, (p - q).abs().max())
        assert info["loss"] == pytest.approx(alone_info["loss"], rel=1e-3)
        assert (out["group"] / name / "reconstruction.ply").is_file()


def test_a_collapsed_training_is_retried_at_half_the_rate(tmp_path, tiny_series):
    (tiny_series / "box.stl").unlink()
    out = tmp_path / "run"
    train(tiny_series, out, "--lr=20", "--qat_epochs=0")  # Adam steps of 20 kill every unit
    _, info = checkpoint.load_checkpoint(out / "ball" / "model.pt")
    assert info["loss_history"]["lr"] == pytest.approx(5.0)  # tried 20, 10, 5


def test_shards_cover_every_mesh_once_and_merge_rebuilds_the_summary(tmp_path, trained_series):
    folder, one_shot = trained_series
    out = tmp_path / "sharded"
    for index in (0, 1):
        assert train(folder, out, f"--shard={index}/2", "--codec_bits=8") == 0  # as trained_series
    shards = [summary(out, f"summary.shard-{i}-of-2.csv") for i in (0, 1)]
    assert sorted(list(shards[0]) + list(shards[1])) == ["ball", "box", "broken", "cloud", "nan"]
    assert list(shards[0]) == ["ball", "broken", "nan"]  # sorted(...)[0::2]
    assert not (out / "summary.csv").exists()
    assert train_series.main(["--out", str(out), "--merge", "--quiet"]) == 0
    merged = (out / "summary.csv").read_text()
    train_series.main(["--out", str(out), "--merge", "--quiet"])
    assert (out / "summary.csv").read_text() == merged  # the same however often it runs
    reference = summary(one_shot)
    for name, row in summary(out).items():
        for key in ("status", "kind", "final_loss", "numbers", "bytes", "ksdf_bytes", "watertight"):
            assert row[key] == reference[name][key], (name, key)


def test_a_shard_killed_mid_mesh_resumes_and_leaves_nothing_half_written(tmp_path, tiny_series):
    out = tmp_path / "killed"
    command = [sys.executable, "train_series.py", "--mesh-dir", str(tiny_series), "--out", str(out), "--quiet",
               "--shard", "0/1", "--cache-dir", str(tmp_path / "cache"), *TINY]
    slow = [a for a in command if not a.startswith("--epochs")] + ["--epochs=200"]
    process = subprocess.Popen(slow, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / ".ball.tmp" / "train.log").is_file() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # well into the mesh: sampled, training
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert (out / ".ball.tmp").is_dir() and not (out / "ball").exists()
    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    rows = summary(out, "summary.shard-0-of-1.csv")
    assert {r["status"] for r in rows.values()} == {"ok"} and set(rows) == {"ball", "box"}
    assert not list(out.glob(".*"))
    assert np.isfinite(float(rows["ball"]["final_loss"]))


def test_nglod_trains_writes_a_file_per_lod_and_eval_scores_any_lod(tmp_path, tiny_series):
    import eval as evaluate

    out = tmp_path / "ng"
    one = tmp_path / "one"  # one mesh keeps it short
    one.mkdir()
    (one / "ball.obj").symlink_to(tiny_series / "ball.obj")
    assert train(one, out, "--nglod_lods=2", "--nglod_features=8", "--nglod_hidden=16", "--nglod_lr=0.01",
                 arch="nglod") == 0
    paths = common.RunPaths(out / "ball")
    assert paths.compressed.is_file() and paths.reconstruction.is_file() and not paths.spheres.is_file()
    full, info = checkpoint.load_checkpoint(paths.checkpoint)
    assert list(info["self_check"]["lods"]) == [1]  # the coarser LOD's file is self-checked too
    assert info["model_args"]["margin"] == 1 and full.margin == 1
    sizes = []
    for lod in (1, 2):
        model, info = codec_read(paths.compressed_at_lod(lod))
        assert info["model_args"]["lods"] == lod and model.stored_numbers() == full.stored_numbers(lod - 1)
        sizes.append(paths.compressed_at_lod(lod).stat().st_size)
    assert sizes[0] < sizes[1] < paths.compressed.stat().st_size
    assert evaluate.main(["--mesh-dir", str(one), "--results", str(out), "--csv", str(tmp_path / "e.csv"),
                          "--lod", "1", "--quiet"]) == 0
    rows = {r["mesh"]: r for r in csv.DictReader(open(tmp_path / "e.csv"))}
    assert int(rows["ball"]["bytes"]) == sizes[0] and int(rows["ball"]["numbers"]) == full.stored_numbers(0)
    assert float(rows["ball"]["cd2"]) < 50  # a ball, roughly


def codec_read(path):
    import codec

    return codec.read(path)


def test_a_warned_mesh_trains_a_second_time_and_keeps_the_better_try(tmp_path, tiny_series, monkeypatch):
    real = pipeline.self_check
    first_try = {}

    def warns_on_the_first_try(*args):  # the first check of each mesh reads as a broken shape (CD2 1e6)
        check = real(*args)
        if first_try.setdefault(args[0].tobytes(), True):
            first_try[args[0].tobytes()] = False
            return {**check, "self_cd2": 1e6, "warning": "wrong shape"}
        return check

    monkeypatch.setattr(pipeline, "self_check", warns_on_the_first_try)
    out = tmp_path / "run"
    (tiny_series / "box.stl").unlink()
    assert train(tiny_series, out, "--retry_epochs=3") == 0
    row = summary(out)["ball"]
    assert row["second_try"] == "kept (first 1e+06)", row
    info = torch.load(out / "ball" / "model.pt", weights_only=True)
    assert info["config"]["epochs"] == 3 and info["config"]["seed"] == 1  # the second try ships
    assert '"kept": "second"' in (out / "ball" / "retry.json").read_text()
    assert float(row["seconds"]) > info["seconds"]  # both tries are counted
    assert not list(out.glob(".*"))  # the second tries' folder is gone
    stamp = (out / "ball" / "model.pt").stat().st_mtime_ns
    assert train(tiny_series, out, "--retry_epochs=3") == 0  # a rerun trains neither try again
    assert (out / "ball" / "model.pt").stat().st_mtime_ns == stamp
    assert summary(out)["ball"]["second_try"] == "kept (first 1e+06)"


def test_a_second_try_that_scores_worse_or_fails_leaves_the_first(tmp_path, trained_series):
    from run_records import RETRY_DIR, keep_better, needs_second_try, row_from_checkpoint

    _, done = trained_series
    out = tmp_path / "run"
    for name in ("ball", "box"):
        shutil.copytree(done / name, out / name)
    shutil.copytree(done / "ball", out / RETRY_DIR / "ball")
    first = row_from_checkpoint("ball", common.RunPaths(out / "ball"))
    assert needs_second_try({**first, "warning": "wrong shape"}, out)
    assert not needs_second_try({**first, "warning": ""}, out)
    worse = {**first, "self_cd2": f"{float(first['self_cd2']) * 2:.6g}"}
    kept = keep_better(out, worse)
    assert kept["self_cd2"] == first["self_cd2"] and kept["second_try"] == f"not kept ({worse['self_cd2']})"
    assert not (out / RETRY_DIR / "ball").exists()
    assert not needs_second_try({**kept, "warning": "wrong shape"}, out)  # one second try, never more
    failed = keep_better(out, {"mesh": "box", "status": "failed: worker process died"})
    assert failed["second_try"] == "not kept (failed: worker process died)" and failed["status"] == "ok"

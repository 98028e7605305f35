"""Benchmark the whole per-mesh path: seconds per stage, per mesh and the median, and training FLOP/s.

    python bench.py --mesh-dir ../shared/meshes [--config configs/default.yaml] [--arch keysphere] [--KEY=VALUE ...]
    python bench.py --mesh-dir DIR --series [--out DIR] ...   # the whole train_series run (groups on a GPU)

Stages: load + normalize, key spheres, samples (pool, weights, exact SDF), training, quantization-aware
fine-tuning, marching cubes at the config's resolution, evaluation (eval.py's metrics). The training step's
achieved FLOP/s is printed next to this machine's float32 matmul peak, measured in the same run, with the
step's split into matmul kernels and the rest, and the hand-written step's points/s next to the autograd
step's. Meshes go one at a time with ``threads`` threads (``--threads=1`` is what each of train_series'
workers does). Outputs go to a temporary folder.

``--series`` times ``train_series.py`` itself on the folder instead, as a user runs it (on a GPU: groups of
stacked networks fed by a pool of CPU processes): amortized seconds per mesh end to end, the training
points per second of the device, the share of the wall time it spent waiting for the CPU stages, and the
device's float32 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import architectures
import eval as evaluate
import train_series
from architectures import Architecture
from common import (
    PROJECT_ROOT,
    InputError,
    RunPaths,
    TrainConfig,
    add_logging_flags,
    atomic_write_text,
    list_meshes,
    pick_device,
    run_main,
    setup_logging,
)
from pipeline import Job, prepare_mesh, train_mesh
from quantization import fit_epochs
from run_records import parse_shard
from training import NetworkStack, total_epochs

log = logging.getLogger("keysphere")
STAGES = ("load", "classify", "spheres", "samples", "train", "qat", "mesh", "eval")
PREPARATION = ("load", "classify", "spheres", "samples")


def training_flops_per_point(arch: Architecture, cfg: TrainConfig, num_spheres: int) -> float:
    """FLOPs of one training point as ``NetworkStack.step`` runs it (2 per multiply-add): forward
    and weight gradient of every layer, input gradient of every layer but the first. The first layer acts on
    the precomputed inputs (``Architecture.input_size``): xyz (ni), xyz and the sphere average (keysphere, 7),
    xyz and the M sphere weights (latent)."""
    args = arch.model_args(cfg, num_spheres)
    layers, width, in_dim = args["layers"], args["width"], arch.input_size(num_spheres)
    first, rest = in_dim * width, (layers - 1) * width * width + width
    return 2 * (2 * (first + rest) + rest)


def matmul_peak(device: torch.device, n: int = 2048, repeat: int = 10) -> float:
    """Measured float32 FLOP/s of an n x n matmul on ``device`` (best of ``repeat``)."""
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
    best = float("inf")
    for _ in range(repeat + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul")


def random_networks(arch: Architecture, cfg: TrainConfig, device: torch.device, num_spheres: int, count: int = 1):
    """``count`` fresh networks of ``arch``, each with random spheres (when it has spheres), as a stack, and its
    Adam."""
    spheres = [torch.cat([torch.rand(num_spheres, 3) * 1.6 - 0.8, -0.1 * torch.rand(num_spheres, 1)], 1).to(device)
               if arch.has_spheres else None for _ in range(count)]
    stack = NetworkStack.new(arch, arch.model_args(cfg, num_spheres), spheres, 0, device)
    return stack, torch.optim.Adam(stack.params.values(), lr=cfg.lr, fused=True)


def step_breakdown(arch: Architecture, cfg: TrainConfig, device: torch.device, num_spheres: int,
                   steps: int = 50) -> dict:
    """Where one training step's time goes, measured with the torch profiler on random points.

    Returns
    -------
    dict of seconds per step: ``step`` (wall), ``matmul`` (mm/addmm kernels), ``other`` (elementwise
    kernels, optimizer, per-op dispatch: the rest); and ``matmul_flops`` (FLOP/s the matmul kernels reach on
    their own).
    """
    from torch.profiler import ProfilerActivity, profile

    stack, opt = random_networks(arch, cfg, device, num_spheres)
    x = stack.precompute(torch.rand(1, cfg.batch_size, 3, device=device) * 2 - 1)
    y = torch.rand(1, cfg.batch_size, device=device) * 0.1

    def step():  # the step of training.run_epochs
        opt.zero_grad(set_to_none=True)
        stack.step(x, y)
        opt.step()

    for _ in range(10):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, with_flops=True) as prof:
        start = time.perf_counter()  # the same steps give the wall time and the matmul time
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / steps
    events = [e for e in prof.key_averages() if e.key in MATMUL_OPS]
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    mm_seconds = sum(getattr(e, attr) for e in events) / 1e6 / steps
    mm_flops = sum(e.flops for e in events) / steps
    return {"step": wall, "matmul": mm_seconds, "other": max(wall - mm_seconds, 0.0),
            "matmul_flops": mm_flops / mm_seconds if mm_seconds else math.nan}


def step_throughput(arch: Architecture, cfg: TrainConfig, device: torch.device, num_spheres: int,
                    steps: int = 100) -> dict:
    """Training points per second of ``NetworkStack.step`` (hand-written backward on precomputed inputs, one
    network) and of the plain autograd step (``l1_loss(model(points))``) on the same model and batches.

    Returns
    -------
    dict with ``hand`` and ``autograd`` points per second (best of three passes of ``steps`` steps each).
    """
    stack, opt = random_networks(arch, cfg, device, num_spheres)
    model = stack.export(0).to(device)
    model_opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    n = cfg.batch_size * steps
    points = torch.rand(n, 3, device=device) * 2 - 1
    target = torch.rand(n, device=device) * 0.1
    inputs = stack.precompute(points.unsqueeze(0))

    def autograd_pass():
        for s in range(0, n, cfg.batch_size):
            model_opt.zero_grad(set_to_none=True)
            torch.nn.functional.l1_loss(model(points[s:s + cfg.batch_size]), target[s:s + cfg.batch_size]).backward()
            model_opt.step()

    def hand_pass():
        for s in range(0, n, cfg.batch_size):
            opt.zero_grad(set_to_none=True)
            stack.step(inputs[:, s:s + cfg.batch_size], target[None, s:s + cfg.batch_size])
            opt.step()

    best = {"hand": 0.0, "autograd": 0.0}
    for _ in range(3):  # interleaved, so both see the same machine load
        for name, run in (("autograd", autograd_pass), ("hand", hand_pass)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = max(best[name], n / (time.perf_counter() - start))
    return best


def stacked_step_rates(arch: Architecture, cfg: TrainConfig, device: torch.device, counts=(1, 16, 64, 128, 256),
                       steps: int = 200) -> list[tuple[int, float]]:
    """Seconds per training step of K stacked networks (``NetworkStack.step`` and one fused Adam, a batch of
    ``batch_size`` points plus the sphere centres each), after as many steps of warm-up. Returns (K, s)."""
    rates = []
    for count in counts:
        stack, opt = random_networks(arch, cfg, device, cfg.num_spheres, count)
        points = cfg.batch_size + (cfg.num_spheres if arch.has_spheres else 0)
        x = stack.precompute(torch.rand(count, points, 3, device=device) * 2 - 1)
        y = torch.rand(count, points, device=device) * 0.1
        for _ in range(2):  # the first pass warms up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                stack.step(x, y)
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        rates.append((count, (time.perf_counter() - start) / steps))
    return rates


def series(mesh_dir: str, config: str, arch: Architecture, device: torch.device, out: str | None,
           overrides: list[str]) -> None:
    """``--series``: run train_series.py on the folder and report what a dataset user sees."""
    peak = matmul_peak(device, 8192 if device.type == "cuda" else 2048)
    cfg = TrainConfig.load(config, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(out or tmp)
        start = time.perf_counter()
        train_series.main(["--mesh-dir", mesh_dir, "--config", config, "--arch", arch.name, "--out", str(run),
                           "--device", str(device), "--cache-dir", "none", "--force", "--quiet", *overrides])
        wall = time.perf_counter() - start
        rows = [r for r in csv.DictReader(open(run / "summary.csv")) if r["status"].startswith("ok")]
        timings = [torch.load(run / r["mesh"] / "model.pt", weights_only=True)["timings"] for r in rows]
    if not rows:
        raise InputError(f"{mesh_dir}: no mesh went through")
    busy = sum(t.get("train", 0) + t.get("qat", 0) for t in timings)  # each mesh carries its share of its group
    fitting = sum(fit_epochs(arch, dataclasses.replace(cfg, codec_bits=b)) for b in [cfg.codec_bits] + cfg.extra_bits)
    points = len(rows) * cfg.num_samples * (total_epochs(cfg) + fitting)
    cpu = {s: statistics.median(t.get(s, 0) for t in timings) for s in PREPARATION}
    sys.stdout.write(f"{len(rows)} meshes in {wall:.1f} s: {wall / len(rows):.2f} s per mesh end to end ({device}, "
                     f"{Path(config).name} {' '.join(overrides)})\n"
                     f"training (all groups, quantization-aware fine-tuning included) {busy:.1f} s: "
                     f"{points / busy / 1e6:.1f} M points/s; the device waited for the CPU stages "
                     f"{100 * max(0.0, 1 - busy / wall):.0f}% of the wall time\n"
                     f"CPU stages per mesh (median, one core each): "
                     + ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
                     + f"\nfloat32 matmul peak of the device, same run: {peak / 1e12:.1f} TFLOP/s\n")
    for count, seconds in stacked_step_rates(arch, cfg, device, (1, 16, 64, 128, 256) if device.type == "cuda"
                                             else (1, 4)):
        sys.stdout.write(f"one step of {count} stacked networks: {1e3 * seconds:.2f} ms, "
                         f"{count * cfg.batch_size / seconds / 1e6:.1f} M points/s\n")


def preparation(mesh_dir: str, arch: Architecture, cfg: TrainConfig, device: torch.device, csv_path: str | None,
                shard: str | None, quiet: bool = False) -> None:
    """Prepare every mesh of a folder without training (``pipeline.prepare_mesh``) and print the seconds per
    stage: per mesh, then median, p90 and max per stage and the slowest meshes with their faces. With
    ``csv_path`` the table is rewritten there (whole, atomically) after each mesh, and meshes already in it are
    skipped (resumable; shards may share one file)."""
    done = {}
    if csv_path and Path(csv_path).is_file():
        done = {r["mesh"]: r for r in csv.DictReader(open(csv_path))}
    part = parse_shard(shard)
    meshes = list_meshes(mesh_dir)[part[0]::part[1]] if part else list_meshes(mesh_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for path in tqdm(meshes, desc="preparing", unit="mesh", disable=quiet):
            if path.stem in done:
                continue
            work = RunPaths(Path(tmp) / path.stem)
            work.dir.mkdir(parents=True, exist_ok=True)
            try:
                prepared = prepare_mesh(path, Job(Path(tmp), arch, cfg, device, force=True), work)
            except InputError as err:
                log.warning("%s", err)  # the error names the file
                continue
            row = {"mesh": path.stem, "faces": prepared.mesh["faces"], "kind": prepared.kind,
                   **{s: f"{prepared.timings.get(s, 0.0):.2f}" for s in PREPARATION}}
            row["total"] = f"{sum(float(row[s]) for s in PREPARATION):.2f}"
            done[path.stem] = row
            if csv_path:  # the whole table rewritten each time: a killed run leaves it whole
                write_rows(Path(csv_path), list(done.values()))
    rows = [r for r in done.values() if r["mesh"] in {p.stem for p in meshes}]
    if not rows:
        raise InputError(f"{mesh_dir}: no mesh was prepared")
    sys.stdout.write(preparation_table(rows))


def write_rows(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["mesh", "faces", "kind", *PREPARATION, "total"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def preparation_table(rows: list[dict]) -> str:
    """Markdown: median, p90 and max seconds per preparation stage over ``rows``, then the ten slowest."""
    stages = (*PREPARATION, "total")
    lines = [f"{len(rows)} meshes, seconds per mesh\n", "| stage | median | p90 | max |", "|---|---|---|---|"]
    for s in stages:
        values = np.array([float(r[s]) for r in rows])
        lines.append(f"| {s} | {np.median(values):.2f} | {np.quantile(values, 0.9):.2f} | {values.max():.2f} |")
    lines += ["", "| slowest | faces | kind | " + " | ".join(stages) + " |", "|---" * (len(stages) + 3) + "|"]
    for r in sorted(rows, key=lambda r: -float(r["total"]))[:10]:
        lines.append(f"| {r['mesh']} | {r['faces']} | {r['kind']} | " + " | ".join(str(r[s]) for s in stages) + " |")
    return "\n".join(lines) + "\n"


def stage_by_stage(mesh_dir: str, arch: Architecture, cfg: TrainConfig, device: torch.device) -> None:
    """Train and evaluate each mesh of a folder alone and print the seconds per stage, then the training step's
    FLOP/s and its split (the module docstring)."""
    peak = matmul_peak(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in list_meshes(mesh_dir):
            row = train_mesh(path, Job(Path(tmp), arch, cfg, device, force=True))
            if row["status"].startswith("failed"):
                continue
            timings = row["timings"]
            info = torch.load(RunPaths(Path(tmp) / path.stem).checkpoint, weights_only=True)
            start = time.perf_counter()
            evaluate.evaluate_run(evaluate.GroundTruth(path), Path(tmp), path.stem, device)
            timings["eval"] = time.perf_counter() - start
            points = cfg.num_samples * total_epochs(cfg)
            spheres = info["model_args"].get("num_spheres", 0)
            flops = training_flops_per_point(arch, cfg, spheres) * points / timings["train"]
            rows.append((path.stem, timings, flops))
            sys.stdout.write(f"{path.stem:12s} " + " ".join(f"{s} {timings.get(s, 0):6.1f}" for s in STAGES)
                             + f"  total {sum(timings.values()):6.1f} s  train {flops / 1e9:5.1f} GFLOP/s\n")
            sys.stdout.flush()
    if not rows:
        raise InputError(f"{mesh_dir}: no mesh went through")
    med = {s: statistics.median(t.get(s, 0) for _, t, _ in rows) for s in STAGES}
    sys.stdout.write(f"{'median':12s} " + " ".join(f"{s} {med[s]:6.1f}" for s in STAGES)
                     + f"  total {statistics.median(sum(t.values()) for _, t, _ in rows):6.1f} s\n")
    train_flops = statistics.median(f for _, _, f in rows)
    sys.stdout.write(f"training {train_flops / 1e9:.1f} GFLOP/s = {100 * train_flops / peak:.0f}% of the measured "
                     f"float32 matmul peak {peak / 1e9:.1f} GFLOP/s ({device}, {torch.get_num_threads()} threads)\n")
    speed = step_throughput(arch, cfg, device, cfg.num_spheres)
    sys.stdout.write(f"training step, batch {cfg.batch_size}: {speed['hand'] / 1e3:.0f}k points/s hand-written "
                     f"(training.l1_step) vs {speed['autograd'] / 1e3:.0f}k points/s autograd, "
                     f"x{speed['hand'] / speed['autograd']:.2f}\n")
    parts = step_breakdown(arch, cfg, device, cfg.num_spheres)
    sys.stdout.write(f"one step of {cfg.batch_size} points: {1e3 * parts['step']:.2f} ms, of which matmul kernels "
                     f"{1e3 * parts['matmul']:.2f} ms ({100 * parts['matmul'] / parts['step']:.0f}%, running at "
                     f"{parts['matmul_flops'] / 1e9:.1f} GFLOP/s = {100 * parts['matmul_flops'] / peak:.0f}% of peak: "
                     f"{cfg.batch_size} x {cfg.width} products are too small for full speed) and the rest "
                     f"(elementwise kernels, optimizer, per-op dispatch) {1e3 * parts['other']:.2f} ms\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh-dir", required=True, help="folder of meshes")
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "default.yaml"), help="YAML config")
    parser.add_argument("--arch", choices=[a.name for a in architectures.REGISTRY.values() if a.stacks],
                        default="keysphere", help="an architecture trained by the stacked step")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--series", action="store_true",
                        help="time train_series.py on the whole folder (groups on a GPU) instead of stage by stage")
    parser.add_argument("--out", help="with --series: keep the run in this folder (default: a temporary one)")
    parser.add_argument("--prepare", action="store_true",
                        help="only prepare each mesh (load, classify, key spheres, samples): the stages' distribution")
    parser.add_argument("--csv", help="with --prepare: keep the rows here (rewritten after each mesh) and skip the "
                                      "meshes already in it")
    parser.add_argument("--shard", metavar="I/N", help="with --prepare: only shard I of N of the meshes")
    add_logging_flags(parser)
    args, overrides = parser.parse_known_args(argv)
    setup_logging(args.quiet, args.verbose)
    device = pick_device(args.device)
    arch = architectures.get(args.arch)
    if args.series:
        series(args.mesh_dir, args.config, arch, device, args.out, overrides)
        return 0
    cfg = arch.resolve(TrainConfig.load(args.config, overrides), overrides)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if args.prepare:
        preparation(args.mesh_dir, arch, cfg, device, args.csv, args.shard, args.quiet)
        return 0
    stage_by_stage(args.mesh_dir, arch, cfg, device)
    return 0


if __name__ == "__main__":
    run_main(main)

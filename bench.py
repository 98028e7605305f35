"""Benchmark the whole per-mesh path: seconds per stage, per mesh and the median, and training FLOP/s.

    python bench.py --mesh-dir ../shared/meshes [--config configs/default.yaml] [--arch keysphere] [--KEY=VALUE ...]

Stages: load + normalize, key spheres, samples (pool, weights, exact SDF), training, marching cubes at the
config's resolution, evaluation (eval.py's metrics). The training step's achieved FLOP/s is printed next to
this machine's float32 matmul peak, measured in the same run. Outputs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import eval as evaluate
from common import (
    PROJECT_ROOT,
    InputError,
    RunPaths,
    TrainConfig,
    add_logging_flags,
    list_meshes,
    pick_device,
    run_main,
    setup_logging,
)
from train_series import encode_mesh, total_epochs

log = logging.getLogger("keysphere")
STAGES = ("load", "spheres", "samples", "train", "mesh", "eval")


def training_flops_per_point(arch: str, cfg: TrainConfig, num_spheres: int) -> float:
    """FLOPs of one training point (forward and backward, ~3x the forward multiply-adds, 2 FLOPs each)."""
    layers, width = (cfg.ni_layers, cfg.ni_width) if arch == "ni" else (cfg.layers, cfg.width)
    in_dim = 3 if arch == "ni" else 3 + cfg.feature_dim
    macs = in_dim * width + (layers - 1) * width * width + width
    if arch == "keysphere":  # distances, weighted sphere average (M x 4), encoder (forward only for the first two)
        macs += (num_spheres * 3 + num_spheres * 4) / 3 + 4 * cfg.feature_dim
    elif arch == "latent":  # distances (forward only), weighted latent sum
        macs += num_spheres * 3 / 3 + num_spheres * cfg.feature_dim
    return 3 * 2 * macs


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh-dir", required=True, help="folder of meshes")
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "default.yaml"), help="YAML config")
    parser.add_argument("--arch", choices=("keysphere", "latent", "ni"), default="keysphere")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    add_logging_flags(parser)
    args, overrides = parser.parse_known_args(argv)
    setup_logging(args.quiet, args.verbose)
    cfg = TrainConfig.load(args.config, overrides)
    device = pick_device(args.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    peak = matmul_peak(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in list_meshes(args.mesh_dir):
            work = RunPaths(Path(tmp) / path.stem)
            work.dir.mkdir()
            try:
                timings = encode_mesh(path, args.arch, cfg, device, work, None, quiet=True)["timings"]
            except InputError as exc:
                log.error("%s: failed: %s", path.name, exc)
                continue
            info = torch.load(work.checkpoint, weights_only=True)
            start = time.perf_counter()
            evaluate.evaluate_run(evaluate.GroundTruth(path), Path(tmp), path.stem, device)
            timings["eval"] = time.perf_counter() - start
            points = cfg.num_samples * total_epochs(cfg)
            spheres = info["model_args"].get("num_spheres", 0)
            flops = training_flops_per_point(args.arch, cfg, spheres) * points / timings["train"]
            rows.append((path.stem, timings, flops))
            sys.stdout.write(f"{path.stem:12s} " + " ".join(f"{s} {timings.get(s, 0):6.1f}" for s in STAGES)
                             + f"  total {sum(timings.values()):6.1f} s  train {flops / 1e9:5.1f} GFLOP/s\n")
            sys.stdout.flush()
    if not rows:
        raise InputError(f"{args.mesh_dir}: no mesh went through")
    med = {s: statistics.median(t.get(s, 0) for _, t, _ in rows) for s in STAGES}
    sys.stdout.write(f"{'median':12s} " + " ".join(f"{s} {med[s]:6.1f}" for s in STAGES)
                     + f"  total {statistics.median(sum(t.values()) for _, t, _ in rows):6.1f} s\n")
    train_flops = statistics.median(f for _, _, f in rows)
    sys.stdout.write(f"training {train_flops / 1e9:.1f} GFLOP/s = {100 * train_flops / peak:.0f}% of the measured "
                     f"float32 matmul peak {peak / 1e9:.1f} GFLOP/s ({device}, {torch.get_num_threads()} threads)\n")
    return 0


if __name__ == "__main__":
    run_main(main)

"""Train one SDF network per mesh of a folder.

    python train_series.py --mesh-dir data/shapes --config configs/default.yaml --arch keysphere --out runs/ks
    python train_series.py ... --epochs=10 --lr=1e-2      # override any config key

Per mesh ``<out>/<mesh>/`` gets ``model.pt`` (self-describing checkpoint), ``model.ksdf`` (compressed,
see ``codec.py``), ``spheres.txt`` (authors' format),
``loss.png``, ``train.log`` and ``reconstruction.ply`` (normalized frame); ``<out>/summary.csv`` lists every
mesh with its status. Meshes already done are skipped unless ``--force``; a failing mesh is reported and
skipped. Each mesh directory appears whole or not at all.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import io
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

import codec
from common import (
    ARCHS,
    PROJECT_ROOT,
    InputError,
    RunPaths,
    TrainConfig,
    add_logging_flags,
    atomic_write,
    atomic_write_text,
    build_model,
    count_numbers,
    list_meshes,
    mesh_name,
    pick_device,
    replace_dir,
    run_main,
    save_checkpoint,
    setup_logging,
)
from sphere_sampler import cached_key_spheres, load_mesh, normalize_mesh, sample_training_points, write_sphere_file

log = logging.getLogger("keysphere")
SUMMARY_FIELDS = ["mesh", "status", "seconds", "final_loss", "numbers", "bytes", "ksdf_bytes", "checkpoint_bytes",
                  "watertight"]


# ----------------------------------------------------------------------------------------------------------
# Training


def model_args_for(arch: str, cfg: TrainConfig, num_spheres: int) -> dict:
    if arch == "ni":
        return {"layers": cfg.ni_layers, "width": cfg.ni_width}
    return {"num_spheres": num_spheres, "layers": cfg.layers, "width": cfg.width, "feature_dim": cfg.feature_dim,
            "weighting": cfg.sphere_weighting}


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, epochs: int, steps_per_epoch: int):
    """Returns (scheduler, steps_per_batch): per-batch schedules step every batch, plateau every epoch."""
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=epochs * steps_per_epoch), True
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch), True
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience), False
    return None, False


def run_epochs(model, opt, points, sdf, anchors, anchor_sdf, epochs, cfg, gen, scheduler=None,
               per_batch=False, progress=None, quantize_bits=None) -> list[float]:
    """Train for ``epochs`` epochs of mini-batches sliced from a fresh permutation; returns epoch losses.

    ``anchors`` (A, 3) with ``anchor_sdf`` (A,) are appended to every batch (the key-sphere centres).
    With ``quantize_bits`` every step runs forward and backward with the weights quantized as ``codec.py``
    stores them and applies the gradient to the float weights (straight-through estimator).
    """
    losses = []
    n = len(points)
    params = [(name, p) for name, p in model.named_parameters()] if quantize_bits else []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen, device=points.device)
        shuffled_points, shuffled_sdf = points[perm], sdf[perm]
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            x = shuffled_points[start:start + cfg.batch_size]
            y = shuffled_sdf[start:start + cfg.batch_size]
            if anchors is not None:
                x, y = torch.cat([x, anchors]), torch.cat([y, anchor_sdf])
            if params:
                with torch.no_grad():
                    stash = [p.detach().clone() for _, p in params]
                    for name, p in params:
                        p.copy_(codec.fake_quantize(name, p, quantize_bits))
            loss = torch.nn.functional.l1_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if params:
                with torch.no_grad():
                    for (_, p), saved in zip(params, stash):
                        p.copy_(saved)
            opt.step()
            if per_batch:
                scheduler.step()
            total += loss.detach() * len(x)
        epoch_loss = float(total) / (n + (0 if anchors is None else len(anchors) * math.ceil(n / cfg.batch_size)))
        if not math.isfinite(epoch_loss):
            raise InputError("training diverged (loss is not finite); try a lower lr")
        if scheduler is not None and not per_batch:
            scheduler.step(epoch_loss)
        losses.append(epoch_loss)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{epoch_loss:.5f}")
    return losses


def total_epochs(cfg: TrainConfig) -> int:
    """Epochs trained in all: the final model's, plus those of the restarts that lost."""
    return cfg.epochs + (cfg.restarts - 1) * cfg.restart_epochs if cfg.restarts > 1 else cfg.epochs


def new_model(arch, model_args, spheres, cfg, seed, device):
    """A freshly initialised network (seeded) and its Adam optimizer."""
    torch.manual_seed(seed)
    model = build_model(arch, model_args if spheres is None else {**model_args, "spheres": spheres}).to(device)
    # the fused kernel is ~25% faster for these tiny layers, on CPU and CUDA alike
    return model, torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)


def train_network(arch: str, cfg: TrainConfig, spheres: torch.Tensor | None, points: torch.Tensor,
                  sdf: torch.Tensor, device: torch.device, quiet: bool) -> tuple[torch.nn.Module, dict, dict]:
    """Random restarts (``restart_epochs`` each, best final loss wins), then the winner trains on with the
    learning-rate schedule for the rest of ``epochs``. Returns (model, model_args, history)."""
    model_args = model_args_for(arch, cfg, 0 if spheres is None else len(spheres))
    anchors = anchor_sdf = None
    if spheres is not None and cfg.train_on_spheres:
        anchors, anchor_sdf = spheres[:, :3], spheres[:, 3]
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    steps = math.ceil(len(points) / cfg.batch_size)
    history = {"restarts": [], "main": []}
    with tqdm(total=total_epochs(cfg), desc="  epochs", leave=False, disable=quiet) as bar:
        best = None
        if cfg.restarts > 1:
            for k in range(cfg.restarts):
                model, opt = new_model(arch, model_args, spheres, cfg, cfg.seed + k, device)
                losses = run_epochs(model, opt, points, sdf, anchors, anchor_sdf, cfg.restart_epochs, cfg, gen,
                                    progress=bar)
                history["restarts"].append(losses)
                log.debug("restart %d: loss %.6f", k, losses[-1])
                if best is None or losses[-1] < best[0]:
                    best = (losses[-1], model, opt)
            _, model, opt = best
            remaining = cfg.epochs - cfg.restart_epochs
        else:
            model, opt = new_model(arch, model_args, spheres, cfg, cfg.seed, device)
            remaining = cfg.epochs
        if remaining > 0:
            scheduler, per_batch = make_scheduler(opt, cfg, remaining, steps)
            history["main"] = run_epochs(model, opt, points, sdf, anchors, anchor_sdf, remaining, cfg, gen,
                                         scheduler, per_batch, progress=bar)
    final = history["main"][-1] if history["main"] else best[0]
    history["final_loss"] = final
    return model.eval(), model_args, history


def quantization_aware_finetune(model: torch.nn.Module, cfg: TrainConfig, spheres: torch.Tensor | None,
                                points: torch.Tensor, sdf: torch.Tensor, device: torch.device,
                                quiet: bool) -> tuple[torch.nn.Module, list[float]]:
    """A copy of ``model`` fine-tuned for ``cfg.qat_epochs`` epochs so that its weights lose little when
    stored at ``cfg.codec_bits`` bits (cosine decay from ``cfg.qat_lr``). The spheres are not trained, so they
    are quantized once, up front, and the network adapts to them. Returns (model, epoch losses)."""
    model = copy.deepcopy(model).train()
    if hasattr(model, "spheres"):
        model.spheres.copy_(codec.fake_quantize("spheres", model.spheres, cfg.codec_bits))
    anchors = anchor_sdf = None
    if spheres is not None and cfg.train_on_spheres:
        anchors, anchor_sdf = spheres[:, :3], spheres[:, 3]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.qat_lr, fused=True)
    steps = cfg.qat_epochs * math.ceil(len(points) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1000)
    with tqdm(total=cfg.qat_epochs, desc="  quantization-aware", leave=False, disable=quiet) as bar:
        losses = run_epochs(model, opt, points, sdf, anchors, anchor_sdf, cfg.qat_epochs, cfg, gen, scheduler,
                            True, progress=bar, quantize_bits=cfg.codec_bits)
    return model.eval(), losses


def plot_losses(path: Path, history: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, losses in enumerate(history["restarts"]):
        ax.plot(range(1, len(losses) + 1), losses, alpha=0.4, label=f"restart {k}")
    offset = len(history["restarts"][0]) if history["restarts"] else 0
    ax.plot(range(offset + 1, offset + len(history["main"]) + 1), history["main"], color="black", label="main")
    ax.set(xlabel="epoch", ylabel="L1 loss", yscale="log", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# One mesh


def encode_mesh(mesh_path: Path, arch: str, cfg: TrainConfig, device: torch.device, work: RunPaths,
                cache_dir: Path | None, quiet: bool) -> dict:
    """Everything for one mesh, written into ``work.dir``. Returns the summary row."""
    from modelmesher import mesh_model, save_mesh

    timings = {}
    clock = time.perf_counter()

    def lap(stage):
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    mesh = load_mesh(mesh_path)
    watertight = mesh.watertight
    mesh, norm = normalize_mesh(mesh)
    log.info("%s: %d vertices, %d faces, %s", mesh_path.name, len(mesh.vertices), len(mesh.faces),
             "watertight" if watertight else "not watertight (sign from the winding number)")
    lap("load")
    spheres = None
    if arch != "ni":
        spheres_np = cached_key_spheres(mesh_path, mesh, cfg.num_spheres, cfg.sphere_grid, cfg.sphere_min_radius,
                                        cache_dir)
        write_sphere_file(work.spheres, spheres_np, cfg.sphere_grid)
        spheres = torch.as_tensor(spheres_np, device=device)
        lap("spheres")
    points, sdf = sample_training_points(mesh, cfg.pool_uniform, cfg.pool_surface, cfg.surface_noise,
                                         cfg.importance_beta, cfg.num_samples, cfg.seed, cfg.uniform_fraction,
                                         device)
    lap("samples")
    model, model_args, history = train_network(arch, cfg, spheres, points, sdf, device, quiet)
    lap("train")
    shipped = model
    if cfg.qat_epochs > 0 and cfg.codec_bits < 32:
        shipped, history["quantization_aware"] = quantization_aware_finetune(model, cfg, spheres, points, sdf,
                                                                             device, quiet)
        lap("qat")
    numbers = count_numbers(model)
    seconds = sum(timings.values())
    ksdf_bytes = codec.write(work.compressed, shipped, arch, model_args, cfg.codec_bits, norm.to_dict())
    # everything downstream (reconstruction, eval) uses the model exactly as the shipped file decodes
    shipped, _ = codec.read(work.compressed)
    save_checkpoint(work.checkpoint, model, arch, model_args, {
        "normalization": norm.to_dict(),
        "config": dataclasses.asdict(cfg),
        "loss": float(history["final_loss"]),
        "loss_history": history,
        "mesh": {"name": mesh_name(mesh_path), "file": mesh_path.name, "vertices": len(mesh.vertices),
                 "faces": len(mesh.faces), "watertight": bool(watertight)},
        "numbers": numbers,
        "bytes": 4 * numbers,
        "ksdf_bytes": ksdf_bytes,
        "seconds": float(seconds),
        "timings": {k: float(v) for k, v in timings.items()},
        "torch": str(torch.__version__),
    })
    plot_losses(work.loss_plot, history, f"{mesh_name(mesh_path)} ({arch})")
    status = "ok"
    try:
        save_mesh(mesh_model(shipped.to(device), cfg.mesh_res, device), work.reconstruction)
    except InputError as exc:
        log.warning("%s: %s", mesh_path.name, exc)
        status = "ok (no surface)"
    lap("mesh")
    log.info("%s: loss %.6f, %d numbers, %s", mesh_path.name, history["final_loss"], numbers,
             ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return {"mesh": mesh_name(mesh_path), "status": status, "seconds": f"{sum(timings.values()):.1f}",
            "final_loss": f"{history['final_loss']:.6g}", "numbers": numbers, "bytes": 4 * numbers,
            "ksdf_bytes": ksdf_bytes, "checkpoint_bytes": work.checkpoint.stat().st_size, "watertight": watertight,
            "timings": timings}


def row_from_checkpoint(name: str, paths: RunPaths) -> dict:
    """Summary row of a mesh done earlier (the checkpoint is self-describing)."""
    data = torch.load(paths.checkpoint, map_location="cpu", weights_only=True)
    status = "ok" if paths.reconstruction.is_file() else "ok (no surface)"
    return {"mesh": name, "status": status, "seconds": f"{data['seconds']:.1f}", "final_loss": f"{data['loss']:.6g}",
            "numbers": data["numbers"], "bytes": data["bytes"], "ksdf_bytes": data.get("ksdf_bytes", ""),
            "checkpoint_bytes": paths.checkpoint.stat().st_size,
            "watertight": data["mesh"]["watertight"]}


def write_summary(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Any config key can be overridden as --key=value.")
    parser.add_argument("--mesh-dir", required=True, help="folder of meshes (obj, stl, ply, off, glb, gltf)")
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "default.yaml"),
                        help="YAML training config (default: configs/default.yaml)")
    parser.add_argument("--arch", choices=ARCHS, default="keysphere",
                        help="keysphere (architecture 1), latent (architecture 2) or ni (baseline)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<config>-<arch>)")
    parser.add_argument("--force", action="store_true", help="retrain meshes that are already done")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when present)")
    parser.add_argument("--cache-dir", default=str(PROJECT_ROOT / ".cache" / "spheres"),
                        help="key-sphere cache (default: .cache/spheres); 'none' disables it")
    add_logging_flags(parser)
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not (o.startswith("--") and "=" in o)]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    setup_logging(args.quiet, args.verbose)
    cfg = TrainConfig.load(args.config, overrides)
    device = pick_device(args.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    meshes = list_meshes(args.mesh_dir)
    out = Path(args.out) if args.out else PROJECT_ROOT / "runs" / f"{Path(args.config).stem}-{args.arch}"
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = None if args.cache_dir.lower() == "none" else Path(args.cache_dir)
    log.info("%d meshes -> %s (arch %s, device %s)", len(meshes), out, args.arch, device)

    rows = []
    for mesh_path in tqdm(meshes, desc="meshes", disable=args.quiet):
        name = mesh_name(mesh_path)
        paths = RunPaths(out / name)
        if paths.checkpoint.is_file() and not args.force:
            try:
                rows.append(row_from_checkpoint(name, paths))
                log.info("%s: done already, skipped (use --force to retrain)", name)
                continue
            except Exception:  # an unreadable old result is retrained
                log.warning("%s: existing checkpoint unreadable, retraining", name)
        work = RunPaths(out / f".{name}.tmp")
        shutil.rmtree(work.dir, ignore_errors=True)
        work.dir.mkdir(parents=True)
        handler = logging.FileHandler(work.log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        start = time.perf_counter()
        try:
            rows.append(encode_mesh(mesh_path, args.arch, cfg, device, work, cache_dir, args.quiet))
            log.removeHandler(handler)
            handler.close()
            replace_dir(work.dir, paths.dir)
        except Exception as exc:  # any failure of one mesh is reported in its row; the series goes on
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            reason = reason.replace(f"{mesh_path}: ", "")
            log.error("%s: failed: %s", mesh_path, reason)
            log.removeHandler(handler)
            handler.close()
            shutil.rmtree(work.dir, ignore_errors=True)
            rows.append({"mesh": name, "status": f"failed: {reason}", "seconds": f"{time.perf_counter() - start:.1f}"})
        write_summary(out / "summary.csv", rows)
    failed = [r["mesh"] for r in rows if r["status"].startswith("failed")]
    log.info("%d ok, %d failed%s; summary: %s", len(rows) - len(failed), len(failed),
             f" ({', '.join(failed)})" if failed else "", out / "summary.csv")
    return 0


if __name__ == "__main__":
    run_main(main)

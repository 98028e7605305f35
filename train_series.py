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
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
import torch.nn.functional as F
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


def l1_step(layers: list[tuple[torch.Tensor, torch.Tensor]], slope: float, x: torch.Tensor,
            y: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Loss and gradients of mean |f(x) - y| for the MLP f of ``layers`` (LeakyReLU(``slope``) between them,
    tanh after the last), forward and backward written out by hand.

    The same arithmetic as autograd (a test checks the gradients) without its bookkeeping: for 2048 x 32
    activations that bookkeeping costs about as much as the matrix products.

    Parameters
    ----------
    layers : list of (weight (out, in), bias (out,)) tensors
    slope : float
    x : (N, in) tensor
    y : (N,) tensor of target signed distances

    Returns
    -------
    loss : () tensor
    grads : list of (grad weight, grad bias), one per layer
    """
    with torch.no_grad():
        acts = [x]
        for weight, bias in layers[:-1]:
            acts.append(F.leaky_relu_(torch.addmm(bias, acts[-1], weight.t()), slope))
        out = torch.tanh(torch.addmm(layers[-1][1], acts[-1], layers[-1][0].t()))
        diff = out.squeeze(1) - y
        loss = diff.abs().mean()
        grad = torch.sign(diff).unsqueeze(1).mul_(1.0 / len(y)).mul_(1 - out * out)
        grads = []
        for i in range(len(layers) - 1, -1, -1):
            grads.append((grad.t().mm(acts[i]), grad.sum(0)))
            if i > 0:
                # the mask of LeakyReLU from its output: positive exactly where its input was
                grad = torch.ops.aten.leaky_relu_backward(grad.mm(layers[i][0]), acts[i], slope, True)
    return loss, grads[::-1]


def training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradients of the L1 loss for one batch of precomputed inputs ``x`` (see ``precompute``), stored in the
    parameters' ``.grad``; returns the loss.

    The model's first layer comes from ``model.input_layer()``, a small differentiable function of its
    parameters (the sphere encoder or latents folded in); autograd carries the first layer's gradient back
    through it, the rest is ``l1_step``.
    """
    weight, bias = model.input_layer()
    linears = [m for m in model.mlp.model if isinstance(m, torch.nn.Linear)]
    layers = [(weight.detach(), bias.detach())] + [(lin.weight.detach(), lin.bias.detach()) for lin in linears[1:]]
    loss, grads = l1_step(layers, model.mlp.model[1].negative_slope, x, y)
    for lin, (grad_weight, grad_bias) in zip(linears[1:], grads[1:]):
        lin.weight.grad, lin.bias.grad = grad_weight, grad_bias
    torch.autograd.backward([weight, bias], list(grads[0]))
    return loss


def precompute(model: torch.nn.Module, points: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """``model.precompute`` over (N, 3) points in chunks (bounded memory): the per-point inputs that do not
    change during training."""
    with torch.no_grad():
        return torch.cat([model.precompute(points[i:i + chunk]) for i in range(0, len(points), chunk)])


def training_inputs(model: torch.nn.Module, points: torch.Tensor, spheres: torch.Tensor | None,
                    cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Precomputed (N, K) training inputs, and the sphere centres precomputed likewise (A, K) with their
    signed distances (A,) to append to every batch, or None when ``train_on_spheres`` is off or there are none."""
    if spheres is None or not cfg.train_on_spheres:
        return precompute(model, points), None, None
    return precompute(model, points), precompute(model, spheres[:, :3]), spheres[:, 3]


def run_epochs(model, opt, inputs, sdf, anchors, anchor_sdf, epochs, cfg, gen, scheduler=None,
               per_batch=False, progress=None, quantize_bits=None, check=None) -> list[float]:
    """Train for ``epochs`` epochs of mini-batches sliced from a fresh permutation; returns epoch losses.

    ``inputs`` are the precomputed training points (``precompute``); ``anchors`` (A, K), precomputed likewise,
    with ``anchor_sdf`` (A,) are appended to every batch (the key-sphere centres).
    With ``quantize_bits`` every step runs forward and backward with the weights quantized as ``codec.py``
    stores them and applies the gradient to the float weights (straight-through estimator).
    ``check(model)``, when given, runs after every epoch; true raises ``Collapsed``.
    """
    losses = []
    n = len(inputs)
    params = [(name, p) for name, p in model.named_parameters()] if quantize_bits else []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen, device=inputs.device)
        shuffled_inputs, shuffled_sdf = inputs[perm], sdf[perm]
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            x = shuffled_inputs[start:start + cfg.batch_size]
            y = shuffled_sdf[start:start + cfg.batch_size]
            if anchors is not None:
                x, y = torch.cat([x, anchors]), torch.cat([y, anchor_sdf])
            if params:
                with torch.no_grad():
                    stash = [p.detach().clone() for _, p in params]
                    for name, p in params:
                        p.copy_(codec.fake_quantize(name, p, quantize_bits))
            opt.zero_grad(set_to_none=True)
            loss = training_step(model, x, y)
            if params:
                with torch.no_grad():
                    for (_, p), saved in zip(params, stash):
                        p.copy_(saved)
            opt.step()
            if per_batch:
                scheduler.step()
            total += loss * len(x)
        epoch_loss = float(total) / (n + (0 if anchors is None else len(anchors) * math.ceil(n / cfg.batch_size)))
        if not math.isfinite(epoch_loss):
            raise InputError("training diverged (loss is not finite); try a lower lr")
        if scheduler is not None and not per_batch:
            scheduler.step(epoch_loss)
        losses.append(epoch_loss)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{epoch_loss:.5f}")
        if check is not None and check(model):
            raise Collapsed
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


class Collapsed(Exception):
    """Training left the network's field constant (see ``collapsed``)."""


def collapsed(model: torch.nn.Module, probe: torch.Tensor, target: torch.Tensor, final: bool) -> bool:
    """Whether the field has collapsed on the (P, 3) ``probe`` points: it is constant (a saturated tanh or
    dead units, which no later step can undo), or, at the end of training (``final``), it has one sign where
    the (P,) ``target`` distances have two."""
    with torch.no_grad():
        field = model(probe)
    if float(field.max() - field.min()) < 1e-5:
        return True
    two_signs = bool((target > 0).any() and (target < 0).any())
    return final and two_signs and not bool((field > 0).any() and (field < 0).any())


def train_network(arch: str, cfg: TrainConfig, spheres: torch.Tensor | None, points: torch.Tensor,
                  sdf: torch.Tensor, device: torch.device, quiet: bool) -> tuple[torch.nn.Module, dict, dict]:
    """Random restarts (``restart_epochs`` each, best final loss wins), then the winner trains on with the
    learning-rate schedule for the rest of ``epochs``. A run that collapses (``collapsed``, checked after
    every epoch, e.g. after a too-large step) is stopped and retrained at half the learning rate, at most
    twice. Returns (model, model_args, history)."""
    model_args = model_args_for(arch, cfg, 0 if spheres is None else len(spheres))
    # every restart has the same spheres, so one precomputation serves them all
    model = build_model(arch, model_args if spheres is None else {**model_args, "spheres": spheres}).to(device)
    inputs, anchors, anchor_sdf = training_inputs(model, points, spheres, cfg)
    probe, target = points[:4096], sdf[:4096]
    for attempt in range(3):
        last = attempt == 2
        try:
            model, history = train_restarts_then_main(
                arch, cfg, model_args, spheres, inputs, sdf, anchors, anchor_sdf, device, quiet,
                check=None if last else lambda m: collapsed(m, probe, target, final=False))
            if last or not collapsed(model, probe, target, final=True):
                break
        except Collapsed:
            pass
        log.warning("training collapsed at lr %g (the field is constant or one-signed); retrying at lr %g",
                    cfg.lr, cfg.lr / 2)
        cfg = dataclasses.replace(cfg, lr=cfg.lr / 2)
    history["lr"] = cfg.lr
    return model, model_args, history


def train_restarts_then_main(arch, cfg, model_args, spheres, inputs, sdf, anchors, anchor_sdf, device,
                             quiet, check=None) -> tuple[torch.nn.Module, dict]:
    """One training of ``train_network`` on precomputed inputs; ``check(model)`` after every epoch of the
    main phase raises ``Collapsed`` when true. Returns (model, history)."""
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    steps = math.ceil(len(inputs) / cfg.batch_size)
    history = {"restarts": [], "main": []}
    with tqdm(total=total_epochs(cfg), desc="  epochs", leave=False, disable=quiet) as bar:
        best = None
        if cfg.restarts > 1:
            for k in range(cfg.restarts):
                model, opt = new_model(arch, model_args, spheres, cfg, cfg.seed + k, device)
                losses = run_epochs(model, opt, inputs, sdf, anchors, anchor_sdf, cfg.restart_epochs, cfg, gen,
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
            history["main"] = run_epochs(model, opt, inputs, sdf, anchors, anchor_sdf, remaining, cfg, gen,
                                         scheduler, per_batch, progress=bar, check=check)
    history["final_loss"] = history["main"][-1] if history["main"] else best[0]
    return model.eval(), history


def quantization_aware_finetune(model: torch.nn.Module, cfg: TrainConfig, spheres: torch.Tensor | None,
                                points: torch.Tensor, sdf: torch.Tensor, device: torch.device,
                                quiet: bool) -> tuple[torch.nn.Module, list[float]]:
    """A copy of ``model`` fine-tuned for ``cfg.qat_epochs`` epochs so that its weights lose little when
    stored at ``cfg.codec_bits`` bits (cosine decay from ``cfg.qat_lr``). The spheres are not trained, so they
    are quantized once, up front, and the network adapts to them. Returns (model, epoch losses)."""
    model = copy.deepcopy(model).train()
    if hasattr(model, "spheres"):
        model.spheres.copy_(codec.fake_quantize("spheres", model.spheres, cfg.codec_bits))
    inputs, anchors, anchor_sdf = training_inputs(model, points, spheres, cfg)  # from the quantized spheres
    opt = torch.optim.Adam(model.parameters(), lr=cfg.qat_lr, fused=True)
    steps = cfg.qat_epochs * math.ceil(len(points) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1000)
    with tqdm(total=cfg.qat_epochs, desc="  quantization-aware", leave=False, disable=quiet) as bar:
        losses = run_epochs(model, opt, inputs, sdf, anchors, anchor_sdf, cfg.qat_epochs, cfg, gen, scheduler,
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


def train_mesh(mesh_path: Path, out: Path, arch: str, cfg: TrainConfig, device: torch.device,
               cache_dir: Path | None, force: bool, quiet: bool) -> dict:
    """Train ``mesh_path`` into ``out/<mesh>/`` unless it is done already; returns its summary row. A failure
    is logged and becomes the row's status, and leaves nothing behind."""
    name = mesh_name(mesh_path)
    paths = RunPaths(out / name)
    if paths.checkpoint.is_file() and not force:
        try:
            row = row_from_checkpoint(name, paths)
            log.info("%s: done already, skipped (use --force to retrain)", name)
            return row
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
        row = encode_mesh(mesh_path, arch, cfg, device, work, cache_dir, quiet)
        log.removeHandler(handler)
        handler.close()
        replace_dir(work.dir, paths.dir)
        return row
    except Exception as exc:  # any failure of one mesh is reported in its row; the series goes on
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = reason.replace(f"{mesh_path}: ", "")
        log.error("%s: failed: %s", mesh_path, reason)
        log.removeHandler(handler)
        handler.close()
        shutil.rmtree(work.dir, ignore_errors=True)
        return {"mesh": name, "status": f"failed: {reason}", "seconds": f"{time.perf_counter() - start:.1f}"}


def _worker_init(threads: int, quiet: bool, verbose: bool) -> None:
    """Start of a worker process (``workers`` > 1): its logging and its share of the cores."""
    setup_logging(quiet, verbose)
    torch.set_num_threads(threads)


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

    series_start = time.perf_counter()
    jobs = [(mesh_path, out, args.arch, cfg, device, cache_dir, args.force) for mesh_path in meshes]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cfg.workers or cores, len(meshes)) if device.type == "cpu" else 1
    rows: list[dict | None] = [None] * len(jobs)
    with tqdm(total=len(jobs), desc="meshes", disable=args.quiet) as bar:
        if workers <= 1:
            for i, job in enumerate(jobs):
                rows[i] = train_mesh(*job, quiet=args.quiet)
                write_summary(out / "summary.csv", [r for r in rows if r is not None])
                bar.update(1)
        else:
            # one process per mesh at a time: these small matrices keep one core busier than two threads do
            threads = cfg.threads or max(1, cores // workers)
            context = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
            with ProcessPoolExecutor(workers, context, initializer=_worker_init,
                                     initargs=(threads, args.quiet, args.verbose)) as pool:
                futures = {pool.submit(train_mesh, *job, quiet=True): i for i, job in enumerate(jobs)}
                for future in as_completed(futures):
                    i = futures[future]
                    try:
                        rows[i] = future.result()
                    except Exception as exc:  # the worker process itself died (killed, out of memory)
                        log.error("%s: failed: worker process died (%s)", jobs[i][0], type(exc).__name__)
                        rows[i] = {"mesh": mesh_name(jobs[i][0]), "status": "failed: worker process died"}
                    write_summary(out / "summary.csv", [r for r in rows if r is not None])
                    bar.update(1)
    failed = [r["mesh"] for r in rows if r["status"].startswith("failed")]
    wall = time.perf_counter() - series_start
    log.info("%d ok, %d failed%s in %.0f s (%.1f s per mesh, %d at a time); summary: %s", len(rows) - len(failed),
             len(failed), f" ({', '.join(failed)})" if failed else "", wall, wall / len(rows), workers,
             out / "summary.csv")
    return 0


if __name__ == "__main__":
    run_main(main)

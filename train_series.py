"""Train one SDF network per mesh of a folder.

    python train_series.py --mesh-dir data/shapes --config configs/default.yaml --arch keysphere --out runs/ks
    python train_series.py ... --epochs=10 --lr=1e-2      # override any config key
    python train_series.py ... --shard 3/16               # the meshes sorted(...)[3::16], e.g. one SLURM task
    python train_series.py --out runs/ks --merge          # rebuild runs/ks/summary.csv from what is on disk

Per mesh ``<out>/<mesh>/`` gets ``model.pt`` (self-describing checkpoint), ``model.ksdf`` (compressed,
see ``codec.py``), ``spheres.txt`` (authors' format), ``loss.png``, ``train.log`` and ``reconstruction.ply``
(normalized frame); ``<out>/summary.csv`` lists every mesh with its status, a failed mesh also leaves
``<out>/<mesh>.failed.txt``. Meshes already done are skipped unless ``--force``; a failing mesh is reported
and skipped. Each mesh directory appears whole or not at all.

On a CPU each mesh trains in its own process (``workers``). On a GPU the meshes train in groups of
``group`` networks stacked into one model (``training.py``), while a pool of CPU processes loads, samples and
meshes the others.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import io
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
    count_numbers,
    list_meshes,
    load_checkpoint,
    mesh_name,
    pick_device,
    replace_dir,
    run_main,
    save_checkpoint,
    setup_logging,
)
from mesh_kind import TargetField
from modelmesher import mesh_model, save_mesh
from nglod import occupied_voxels
from quantization import quantization_aware_finetune
from sphere_sampler import (
    cached_key_spheres,
    load_mesh,
    normalize_mesh,
    sample_surface,
    sample_training_points,
    write_sphere_file,
)
from training import Member, Trained, mine_hard_points, model_args_for, stack_for, train_group, training_set

log = logging.getLogger("keysphere")
SUMMARY_FIELDS = ["mesh", "status", "kind", "seconds", "final_loss", "numbers", "bytes", "ksdf_bytes",
                  "checkpoint_bytes", "watertight"]
FAILED_SUFFIX = ".failed.txt"


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
# One mesh: prepare (CPU), train (any device, alone or in a group), finish (CPU)


@dataclass
class Prepared:
    """A mesh ready to train: what ``prepare_mesh`` computed, kept until ``finish_mesh`` writes it out.

    ``points`` (N, 3) and ``sdf`` (N,) are float32 arrays, ``spheres`` (M, 4) or None (NI); ``field`` is
    dropped (None) once training is over, ``timings`` are seconds per stage.
    """

    path: Path
    work: RunPaths
    mesh: dict
    normalization: dict
    kind: str
    shell: float
    field: TargetField | None
    spheres: np.ndarray | None
    points: np.ndarray | None
    sdf: np.ndarray | None
    timings: dict
    voxels: np.ndarray | None = None  # NGLOD: occupied voxels of the finest level (V, 3)


@contextmanager
def mesh_log(work: RunPaths):
    """Copy the log into the mesh's ``train.log`` while the block runs (appending: several stages, maybe in
    several processes, write to it)."""
    handler = logging.FileHandler(work.log, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


class Stopwatch:
    """Seconds per stage: ``lap(stage)`` charges the time since the last lap to ``stage``."""

    def __init__(self, timings: dict):
        self.timings, self.clock = timings, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.clock
        self.clock = now


def prepare_mesh(mesh_path: Path, arch: str, cfg: TrainConfig, work: RunPaths, cache_dir: Path | None,
                 device: torch.device | str = "cpu") -> Prepared:
    """Load, normalize and classify a mesh, extract its key spheres and sample its training points."""
    timings = {}
    watch = Stopwatch(timings)
    with mesh_log(work):
        mesh = load_mesh(mesh_path)
        watertight = mesh.watertight
        mesh, norm = normalize_mesh(mesh)
        field = TargetField.of(mesh, cfg.sheet_shell, cfg.sphere_grid)
        log.info("%s: %d vertices, %d faces, %s (%s)", mesh_path.name, len(mesh.vertices), len(mesh.faces),
                 field.kind, field.analysis.reason)
        watch.lap("load")
        spheres = None
        if arch in ("keysphere", "latent"):
            spheres = cached_key_spheres(mesh_path, field, cfg.num_spheres, cfg.sphere_grid, cfg.sphere_min_radius,
                                         cache_dir)
            watch.lap("spheres")
        voxels = None
        if arch == "nglod":  # the octree: voxels the surface passes through, grown by the margin
            finest = cfg.nglod_base_res * 2 ** (cfg.nglod_lods - 1)
            surface, _ = sample_surface(mesh, 64 * finest * finest, seed=cfg.seed)
            voxels = occupied_voxels(surface, finest, cfg.nglod_margin)
            watch.lap("octree")
        points, sdf = sample_training_points(field, cfg.pool_uniform, cfg.pool_surface, cfg.surface_noise,
                                             cfg.importance_beta, cfg.num_samples, cfg.seed, cfg.uniform_fraction,
                                             device)
        watch.lap("samples")
    info = {"name": mesh_name(mesh_path), "file": mesh_path.name, "vertices": len(mesh.vertices),
            "faces": len(mesh.faces), "watertight": bool(watertight), "kind": field.kind}
    return Prepared(mesh_path, work, info, norm.to_dict(), field.kind, field.shell, field, spheres,
                    points.cpu().numpy(), sdf.cpu().numpy(), timings, voxels)


def train_prepared(group: list[Prepared], arch: str, cfg: TrainConfig, device: torch.device,
                   quiet: bool) -> list[tuple[Trained, dict]]:
    """Train the networks of a group of prepared meshes together, then fit them to the codec. Each mesh is
    charged an equal share of the group's seconds. Returns per mesh (trained network, ``fit_codec``'s fits)."""
    model_args = model_args_for(arch, cfg, 0 if group[0].spheres is None else len(group[0].spheres))
    members = members_of(group, cfg, device)
    start = time.perf_counter()
    trained = train_group(arch, model_args, cfg, members, device, quiet)
    for p in group:
        p.timings["train"] = (time.perf_counter() - start) / len(group)
    return list(zip(trained, fit_codec(group, trained, members, arch, model_args, cfg, device, quiet)))


def members_of(group: list[Prepared], cfg: TrainConfig, device: torch.device) -> list[Member]:
    """What training needs of prepared meshes, on ``device`` (fields only for the kinds mined)."""
    mined = {k.strip() for k in cfg.mine_kinds.split(",")}
    return [Member(p.mesh["name"], None if p.spheres is None else torch.as_tensor(p.spheres, device=device),
                   torch.as_tensor(p.points, device=device), torch.as_tensor(p.sdf, device=device),
                   p.field if p.kind in mined else None,
                   None if p.voxels is None else torch.as_tensor(p.voxels, device=device))
            for p in group]


def fit_codec(group: list[Prepared], trained: list[Trained], members: list[Member], arch: str, model_args: dict,
              cfg: TrainConfig, device: torch.device, quiet: bool) -> list[dict]:
    """Trained networks fitted to the codec (``quantization.py``) at ``codec_bits`` and each of ``rd_bits``:
    per mesh {bits: (quantized copy, its steps, its fine-tuning losses)}; empty without fine-tuning
    (``qat_epochs`` 0, and NGLOD, whose features are rounded to the nearest step: the files quantize the float
    network)."""
    fits = [{} for _ in group]
    start = time.perf_counter()
    for bits in [cfg.codec_bits] + cfg.extra_bits:
        if cfg.qat_epochs > 0 and bits < 32 and arch != "nglod":
            depth = dataclasses.replace(cfg, codec_bits=bits)
            for fit, result in zip(fits, quantization_aware_finetune(trained, members, arch, model_args, depth,
                                                                     device, quiet)):
                fit[bits] = result
    for p in group:
        p.timings["qat"] = (time.perf_counter() - start) / len(group)
    return fits


def finish_mesh(p: Prepared, trained: Trained, fits: dict, arch: str, cfg: TrainConfig,
                device: torch.device | str = "cpu") -> dict:
    """Write everything of a trained mesh into its work folder (the shipped ``model.ksdf`` first: the
    reconstruction is meshed from what it decodes to), move the folder into place and return the summary row.
    ``fits``: ``fit_codec``'s for this mesh."""
    watch = Stopwatch(p.timings)
    model, history = trained.model.cpu(), dict(trained.history)
    if cfg.codec_bits in fits:
        history["quantization_aware"] = fits[cfg.codec_bits][2]
    model_args = model_args_for(arch, cfg, 0 if p.spheres is None else len(p.spheres))
    with mesh_log(p.work):
        if p.spheres is not None:
            write_sphere_file(p.work.spheres, p.spheres, cfg.sphere_grid)
        numbers = count_numbers(model)
        surface = {"kind": p.kind, "shell": p.shell}
        for bits in [cfg.codec_bits] + cfg.extra_bits:
            to_ship, steps = fits[bits][:2] if bits in fits else (model, None)
            size = codec.write(p.work.compressed if bits == cfg.codec_bits else p.work.compressed_at(bits),
                               to_ship.cpu(), arch, model_args, bits, p.normalization, surface, steps)
            if bits == cfg.codec_bits:
                ksdf_bytes = size
        if arch == "nglod":  # one file per LOD: its levels of features and its decoder (model.ksdf: all LODs)
            for lod in range(model.lods):
                coarse = model.truncated(lod)
                codec.write(p.work.compressed_at_lod(lod + 1), coarse, arch,
                            {**model_args, "lods": lod + 1, "decoders_from": lod}, cfg.codec_bits, p.normalization,
                            surface)
        decoded, _ = codec.read(p.work.compressed)  # everything downstream sees exactly what ships
        seconds = sum(p.timings.values())
        save_checkpoint(p.work.checkpoint, model, arch, model_args, {
            "normalization": p.normalization, **surface, "config": dataclasses.asdict(cfg),
            "loss": float(history["final_loss"]), "loss_history": history, "mesh": p.mesh, "numbers": numbers,
            "bytes": 4 * numbers, "ksdf_bytes": ksdf_bytes, "seconds": float(seconds),
            "timings": {k: float(v) for k, v in p.timings.items()}, "torch": str(torch.__version__)})
        plot_losses(p.work.loss_plot, history, f"{p.mesh['name']} ({arch})")
        try:  # without a reconstruction the row's status is "ok (no surface)" (row_from_checkpoint)
            save_mesh(mesh_model(decoded.to(device), cfg.mesh_res, device, shell=p.shell), p.work.reconstruction)
        except InputError as exc:
            log.warning("%s: %s", p.path.name, exc)
        watch.lap("mesh")
        log.info("%s: loss %.6f, %d numbers, %d bytes shipped, %s", p.path.name, history["final_loss"], numbers,
                 ksdf_bytes, ", ".join(f"{k} {v:.1f} s" for k, v in p.timings.items()))
    final = RunPaths(p.work.dir.parent / p.mesh["name"])
    replace_dir(p.work.dir, final.dir)
    failure_record(final).unlink(missing_ok=True)
    return {**row_from_checkpoint(p.mesh["name"], final), "timings": p.timings}  # as --merge will list it


# ----------------------------------------------------------------------------------------------------------
# Rows, failures, resuming


def failure_record(paths: RunPaths) -> Path:
    """``<out>/<mesh>.failed.txt``: the reason a mesh failed, kept on disk so ``--merge`` can list it."""
    return paths.dir.with_name(paths.dir.name + FAILED_SUFFIX)


def start_work(out: Path, name: str) -> RunPaths:
    """A fresh temporary folder ``<out>/.<mesh>.tmp`` (a leftover of a killed run is removed)."""
    work = RunPaths(out / f".{name}.tmp")
    shutil.rmtree(work.dir, ignore_errors=True)
    work.dir.mkdir(parents=True)
    return work


def failed_row(mesh_path: Path, out: Path, exc: BaseException, seconds: float = 0.0) -> dict:
    """Log a mesh's failure, record it on disk, remove its temporary folder and return its summary row."""
    name = mesh_name(mesh_path)
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = reason.replace(f"{mesh_path}: ", "")
    log.error("%s: failed: %s", mesh_path, reason)
    shutil.rmtree(out / f".{name}.tmp", ignore_errors=True)
    atomic_write_text(failure_record(RunPaths(out / name)), reason + "\n")
    return {"mesh": name, "status": f"failed: {reason}", "seconds": f"{seconds:.1f}"}


def row_from_checkpoint(name: str, paths: RunPaths) -> dict:
    """Summary row of a mesh done earlier (the checkpoint is self-describing)."""
    data = torch.load(paths.checkpoint, map_location="cpu", weights_only=True)
    status = "ok" if paths.reconstruction.is_file() else "ok (no surface)"
    return {"mesh": name, "status": status, "kind": data["mesh"].get("kind", ""), "seconds": f"{data['seconds']:.1f}",
            "final_loss": f"{data['loss']:.6g}", "numbers": data["numbers"], "bytes": data["bytes"],
            "ksdf_bytes": data.get("ksdf_bytes", ""), "checkpoint_bytes": paths.checkpoint.stat().st_size,
            "watertight": data["mesh"]["watertight"]}


def done_row(mesh_path: Path, out: Path, force: bool) -> dict | None:
    """The row of a mesh already trained into ``out`` (None when it must be trained)."""
    name = mesh_name(mesh_path)
    paths = RunPaths(out / name)
    if force or not paths.checkpoint.is_file():
        return None
    try:
        row = row_from_checkpoint(name, paths)
    except Exception:  # an unreadable old result is retrained
        log.warning("%s: existing checkpoint unreadable, retraining", name)
        return None
    log.info("%s: done already, skipped (use --force to retrain)", name)
    return row


def merged_rows(out: Path) -> list[dict]:
    """Summary rows of everything on disk in ``out``: every finished mesh folder and every failure record
    without one, sorted by mesh name. Folders in progress (``.<mesh>.tmp``) are not rows."""
    rows = {}
    for path in sorted(out.iterdir()):
        if path.is_dir() and not path.name.startswith(".") and RunPaths(path).checkpoint.is_file():
            try:
                rows[path.name] = row_from_checkpoint(path.name, RunPaths(path))
            except Exception:
                rows[path.name] = {"mesh": path.name, "status": "failed: unreadable checkpoint"}
    for path in sorted(out.glob(f"*{FAILED_SUFFIX}")):
        name = path.name[:-len(FAILED_SUFFIX)]
        if name not in rows:
            rows[name] = {"mesh": name, "status": f"failed: {path.read_text().strip()}"}
    return [rows[name] for name in sorted(rows)]


def write_summary(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------------------
# A series: one mesh at a time per process, or groups on a GPU


def train_mesh(mesh_path: Path, out: Path, arch: str, cfg: TrainConfig, device: torch.device,
               cache_dir: Path | None, force: bool, quiet: bool, refit: bool = False) -> dict:
    """Train ``mesh_path`` into ``out/<mesh>/`` unless it is done already (``refit``: then fit its float
    network to the codec again, ``refit_mesh``); returns its summary row. A failure is logged and becomes the
    row's status, and leaves nothing but its failure record behind."""
    done = RunPaths(out / mesh_name(mesh_path)).checkpoint.is_file()
    row = None if refit and done else done_row(mesh_path, out, force)
    if row is not None:
        return row
    start = time.perf_counter()
    try:
        work = start_work(out, mesh_name(mesh_path))
        if refit and done:
            return refit_mesh(mesh_path, work, arch, cfg, device, cache_dir, quiet)
        p = prepare_mesh(mesh_path, arch, cfg, work, cache_dir, device)
        with mesh_log(work):
            [(trained, fits)] = train_prepared([p], arch, cfg, device, quiet)
        p.field = None
        return finish_mesh(p, trained, fits, arch, cfg, device)
    except Exception as exc:  # any failure of one mesh is reported in its row; the series goes on
        return failed_row(mesh_path, out, exc, time.perf_counter() - start)


def refit_mesh(mesh_path: Path, work: RunPaths, arch: str, cfg: TrainConfig, device: torch.device,
               cache_dir: Path | None, quiet: bool) -> dict:
    """Fit the float network of a mesh trained earlier to the codec again (``codec_bits``, ``rd_bits``) on
    freshly drawn training points, and rewrite its files in ``work`` then in place: no training. Re-encodes a
    run at other bit depths, or one written by an older version. ``cfg`` must sample as the training did."""
    final = RunPaths(work.dir.parent / mesh_name(mesh_path))
    model, info = load_checkpoint(final.checkpoint)
    if info["arch"] != arch:
        raise InputError(f"{final.checkpoint}: a {info['arch']} model, not {arch}")
    if final.log.is_file():
        shutil.copyfile(final.log, work.log)
    p = prepare_mesh(mesh_path, arch, cfg, work, cache_dir, device)
    p.timings["train"] = float(info.get("timings", {}).get("train", 0.0))
    [member] = members_of([p], cfg, device)
    points, sdf = member.points, member.sdf
    if member.field is not None and cfg.mine_fraction > 0:  # as training ends: with hard examples (films)
        stack = stack_for(arch)([model], device)
        data = training_set(stack, points[None].clone(), sdf[None].clone(), [member.spheres], cfg)
        mine_hard_points(stack, data, [member.field], cfg, cfg.seed)
        points, sdf = data.points[0], data.sdf[0]
    trained = Trained(model.to(device), info["loss_history"], points, sdf)
    with mesh_log(work):
        log.info("%s: fitting the trained network to the codec again (--refit)", mesh_path.name)
        [fits] = fit_codec([p], [trained], [member], arch, info["model_args"], cfg, device, quiet)
    p.field = None
    return finish_mesh(p, trained, fits, arch, cfg, device)


def prepare_job(mesh_path: Path, out: Path, arch: str, cfg: TrainConfig, cache_dir: Path | None) -> Prepared | dict:
    """Pool job of the group path: a prepared mesh (on the CPU), or the failed row."""
    start = time.perf_counter()
    try:
        return prepare_mesh(mesh_path, arch, cfg, start_work(out, mesh_name(mesh_path)), cache_dir, "cpu")
    except Exception as exc:
        return failed_row(mesh_path, out, exc, time.perf_counter() - start)


def finish_job(p: Prepared, trained: Trained, fits: dict, arch: str, cfg: TrainConfig) -> dict:
    """Pool job of the group path: ``finish_mesh`` on the CPU, a failure becomes the row."""
    try:
        return finish_mesh(p, trained, fits, arch, cfg, "cpu")
    except Exception as exc:
        return failed_row(p.path, p.work.dir.parent, exc, sum(p.timings.values()))


def group_key(p: Prepared) -> tuple:
    """Meshes train in one group only when their tensors stack: same sphere and point counts."""
    return (None if p.spheres is None else len(p.spheres), len(p.points))


def run_groups(meshes: list[Path], out: Path, arch: str, cfg: TrainConfig, device: torch.device,
               cache_dir: Path | None, group: int, workers: int, quiet: bool, verbose: bool, on_row) -> None:
    """The GPU path: a pool of ``workers`` CPU processes prepares meshes (load, spheres, samples) and finishes
    them (codec, checkpoint, marching cubes) while the main process trains groups of up to ``group`` networks
    on ``device``. At most two groups' worth of prepared meshes wait at a time (bounded memory)."""
    context = multiprocessing.get_context("spawn")
    pending = collections.deque(meshes)
    preparing, finishing, ready = {}, {}, collections.defaultdict(list)  # futures -> mesh paths
    with ProcessPoolExecutor(workers, context, initializer=_worker_init, initargs=(1, True, verbose)) as pool:
        def top_up():
            while pending and len(preparing) + sum(map(len, ready.values())) < 2 * group:
                path = pending.popleft()
                preparing[pool.submit(prepare_job, path, out, arch, cfg, cache_dir)] = path

        def collect(done):
            for future in done:
                if future in finishing:
                    on_row(result_or_failure(future, finishing.pop(future), out))
                    continue
                path = preparing.pop(future)
                result = result_or_failure(future, path, out)
                if isinstance(result, Prepared):
                    ready[group_key(result)].append(result)
                else:
                    on_row(result)

        top_up()
        while preparing or any(ready.values()):
            full = next((key for key, items in ready.items() if len(items) >= group), None)
            if full is None and not preparing:
                full = next(key for key, items in ready.items() if items)
            if full is None:
                collect(wait(set(preparing) | set(finishing), return_when=FIRST_COMPLETED).done)
                top_up()
                continue
            batch, ready[full] = ready[full][:group], ready[full][group:]
            top_up()
            log.info("training a group of %d networks on %s", len(batch), device)
            try:
                results = train_prepared(batch, arch, cfg, device, quiet)
            except Exception as exc:  # the group's training itself failed: each of its meshes gets the reason
                for p in batch:
                    on_row(failed_row(p.path, out, exc, sum(p.timings.values())))
                continue
            for p, (trained, fits) in zip(batch, results):
                p.field, p.points, p.sdf = None, None, None  # not needed to finish: keep the pickles small
                trained = dataclasses.replace(trained, model=trained.model.cpu(), points=None, sdf=None)
                fits = {bits: (m.cpu(), *rest) for bits, (m, *rest) in fits.items()}
                future = pool.submit(finish_job, p, trained, fits, arch, cfg)
                finishing[future] = p.path
            collect(f for f in list(finishing) if f.done())
        collect(wait(finishing).done)


def result_or_failure(future, path: Path, out: Path):
    """A pool job's result; a dead worker process becomes a failed row."""
    try:
        return future.result()
    except Exception as exc:  # the worker process itself died (killed, out of memory)
        log.error("%s: failed: worker process died (%s)", path, type(exc).__name__)
        return {"mesh": mesh_name(path), "status": "failed: worker process died"}


def _worker_init(threads: int, quiet: bool, verbose: bool) -> None:
    """Start of a worker process: its logging and its share of the cores."""
    setup_logging(quiet, verbose)
    torch.set_num_threads(threads)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``I/N`` (0 <= I < N) -> (I, N)."""
    if text is None:
        return None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise InputError(f"--shard {text}: need 0 <= I < N")
    return index, count


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_group(cfg: TrainConfig, device: torch.device, meshes: int) -> int:
    """``group`` 0: one network at a time on a CPU; on a GPU as many as a quarter of its free memory holds
    (points, targets and inputs of each network, about 44 bytes a point), at most 256 and at most the
    number of meshes."""
    if cfg.group > 0:
        return min(cfg.group, meshes)
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_network = 44 * cfg.num_samples + 4 * cfg.batch_size * cfg.width * 2 * (cfg.layers + 2)
    return max(1, min(256, meshes, int(free / 4 / per_network)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Any config key can be overridden as --key=value.")
    parser.add_argument("--mesh-dir", help="folder of meshes (obj, stl, ply, off, glb, gltf)")
    parser.add_argument("--config", default="auto",
                        help="YAML training config (default auto: configs/default.yaml on a CPU, configs/quality.yaml "
                             "on a GPU, where groups make the paper's budget cheap)")
    parser.add_argument("--arch", choices=ARCHS, default="keysphere",
                        help="keysphere (architecture 1), latent (architecture 2), ni (baseline) or nglod (NGLOD)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<config>-<arch>)")
    parser.add_argument("--force", action="store_true", help="retrain meshes that are already done")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when present)")
    parser.add_argument("--cache-dir", default=str(PROJECT_ROOT / ".cache" / "spheres"),
                        help="key-sphere cache (default: .cache/spheres); 'none' disables it")
    parser.add_argument("--shard", metavar="I/N", help="train only the meshes sorted(...)[I::N]; the summary goes to "
                                                       "<out>/summary.shard-I-of-N.csv")
    parser.add_argument("--refit", action="store_true",
                        help="meshes done already: fit their float networks to the codec again (codec_bits, "
                             "rd_bits) and rewrite their files, without training; give the config they trained with")
    parser.add_argument("--merge", action="store_true",
                        help="rebuild <out>/summary.csv from the mesh folders and failure records on disk, then stop")
    add_logging_flags(parser)
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not (o.startswith("--") and "=" in o)]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    setup_logging(args.quiet, args.verbose)
    if args.merge:
        if not args.out or not Path(args.out).is_dir():
            raise InputError(f"--merge needs --out with an existing run folder, got {args.out!r}")
        rows = merged_rows(Path(args.out))
        write_summary(Path(args.out) / "summary.csv", rows)
        log.info("%d meshes (%d failed) -> %s", len(rows), sum(r["status"].startswith("failed") for r in rows),
                 Path(args.out) / "summary.csv")
        return 0
    if not args.mesh_dir:
        parser.error("--mesh-dir is required (unless --merge)")
    device = pick_device(args.device)
    if args.config == "auto":
        args.config = str(PROJECT_ROOT / "configs" / ("quality.yaml" if device.type == "cuda" else "default.yaml"))
    cfg = TrainConfig.load(args.config, overrides)
    if args.arch == "nglod":  # NGLOD's own rate and bit depth replace the MLPs' (the checkpoint keeps what ran)
        cfg = dataclasses.replace(cfg, lr=cfg.nglod_lr, codec_bits=cfg.nglod_bits)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    shard = parse_shard(args.shard)
    meshes = list_meshes(args.mesh_dir)
    if shard:
        meshes = meshes[shard[0]::shard[1]]
    out = Path(args.out) if args.out else PROJECT_ROOT / "runs" / f"{Path(args.config).stem}-{args.arch}"
    out.mkdir(parents=True, exist_ok=True)
    summary = out / (f"summary.shard-{shard[0]}-of-{shard[1]}.csv" if shard else "summary.csv")
    cache_dir = None if args.cache_dir.lower() == "none" else Path(args.cache_dir)
    log.info("%d meshes -> %s (arch %s, device %s)", len(meshes), out, args.arch, device)

    series_start = time.perf_counter()
    order = {mesh_name(p): i for i, p in enumerate(meshes)}
    rows: dict[str, dict] = {}
    todo = []
    for path in meshes:
        row = None if args.refit else done_row(path, out, args.force)
        if row is None:
            todo.append(path)
        else:
            rows[row["mesh"]] = row
    cores = cpu_cores()
    # NGLOD networks differ in shape (their octrees), so they never stack: one at a time
    group = 1 if args.refit or args.arch == "nglod" else default_group(cfg, device, max(1, len(todo)))
    with tqdm(total=len(meshes), initial=len(rows), desc="meshes", disable=args.quiet) as bar:
        def on_row(row):
            rows[row["mesh"]] = row
            write_summary(summary, sorted(rows.values(), key=lambda r: order.get(r["mesh"], len(order))))
            bar.update(1)

        if rows:
            write_summary(summary, sorted(rows.values(), key=lambda r: order.get(r["mesh"], len(order))))
        if group > 1:
            workers = cfg.workers or max(1, cores - 1)  # one core drives the GPU
            run_groups(todo, out, args.arch, cfg, device, cache_dir, group, workers, args.quiet, args.verbose,
                       on_row)
            at_a_time = f"groups of up to {group} networks, {workers} CPU workers"
        else:
            workers = min(cfg.workers or cores, len(todo)) if device.type == "cpu" else 1
            if workers <= 1:
                for path in todo:
                    on_row(train_mesh(path, out, args.arch, cfg, device, cache_dir, args.force, args.quiet,
                                      args.refit))
            else:
                # one process per mesh at a time: these small matrices keep one core busier than two threads do
                threads = cfg.threads or max(1, cores // workers)
                context = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
                with ProcessPoolExecutor(workers, context, initializer=_worker_init,
                                         initargs=(threads, args.quiet, args.verbose)) as pool:
                    futures = {pool.submit(train_mesh, path, out, args.arch, cfg, device, cache_dir, args.force,
                                           True, args.refit): path for path in todo}
                    for future in as_completed(futures):
                        on_row(result_or_failure(future, futures[future], out))
            at_a_time = f"{max(workers, 1)} at a time"
    failed = [r["mesh"] for r in rows.values() if r["status"].startswith("failed")]
    wall = time.perf_counter() - series_start
    log.info("%d ok, %d failed%s in %.0f s (%.1f s per mesh, %s); summary: %s", len(rows) - len(failed),
             len(failed), f" ({', '.join(failed)})" if failed else "", wall, wall / max(1, len(rows)), at_a_time,
             summary)
    return 0


if __name__ == "__main__":
    run_main(main)

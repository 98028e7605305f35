"""Train one SDF network per mesh of a folder.

    python train_series.py --mesh-dir data/shapes --config configs/default.yaml --arch keysphere --out runs/ks
    python train_series.py ... --epochs=10 --lr=1e-2      # override any config key
    python train_series.py ... --shard 3/16               # the meshes sorted(...)[3::16], e.g. one SLURM task
    python train_series.py --out runs/ks --merge          # rebuild runs/ks/summary.csv from what is on disk

Per mesh ``<out>/<mesh>/`` gets ``model.pt`` (self-describing checkpoint), ``model.ksdf`` (compressed,
see ``codec.py``), ``spheres.txt`` (authors' format), ``loss.png``, ``train.log`` and ``reconstruction.ply``
(normalized frame); ``<out>/summary.csv`` lists every mesh with its status, a failed mesh also leaves
``<out>/<mesh>.failed.txt``. Meshes already done are skipped unless ``--force``; a failing mesh is reported
and skipped. Each mesh directory appears whole or not at all. A mesh whose self-check warns trains once more
(``retry_epochs`` at the next seed) and keeps the better try (the summary's ``second_try``).

On a CPU each mesh trains in its own process (``workers``). On a GPU the meshes train in groups of
``group`` networks stacked into one model (``training.py``), while a pool of CPU processes loads, samples and
meshes the others.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from pathlib import Path

import torch
from tqdm import tqdm

import architectures
from common import (
    PROJECT_ROOT,
    TrainConfig,
    add_logging_flags,
    list_meshes,
    mesh_name,
    pick_device,
    run_main,
    setup_logging,
)
from pipeline import Job, Prepared, finish_mesh, prepare_mesh, train_mesh, train_prepared
from run_records import (
    done_row,
    failed_row,
    keep_better,
    merge_run,
    needs_second_try,
    parse_shard,
    start_work,
    write_summary,
)
from training import Trained

log = logging.getLogger("keysphere")


def prepare_job(mesh_path: Path, job: Job) -> Prepared | dict:
    """Pool job of the group path: a prepared mesh (on the CPU), or the failed row."""
    start = time.perf_counter()
    try:
        return prepare_mesh(mesh_path, job.on("cpu"), start_work(job.out, mesh_name(mesh_path)))
    except Exception as exc:
        return failed_row(mesh_path, job.out, exc, time.perf_counter() - start)


def finish_job(p: Prepared, trained: Trained, fits: dict, job: Job) -> dict:
    """Pool job of the group path: ``finish_mesh`` on the CPU, a failure becomes the row."""
    try:
        return finish_mesh(p, trained, fits, job.on("cpu"))
    except Exception as exc:
        return failed_row(p.path, p.work.dir.parent, exc, sum(p.timings.values()))


def group_key(p: Prepared) -> tuple:
    """Meshes train in one group only when their tensors stack: same sphere and point counts."""
    return (None if p.spheres is None else len(p.spheres), len(p.points))


def run_groups(meshes: list[Path], job: Job, group: int, workers: int, verbose: bool, on_row) -> None:
    """The GPU path: a pool of ``workers`` CPU processes prepares meshes (load, spheres, samples) and finishes
    them (codec, checkpoint, marching cubes) while the main process trains groups of up to ``group`` networks
    on the job's device. At most two groups' worth of prepared meshes wait at a time (bounded memory)."""
    context = multiprocessing.get_context("spawn")
    pending = collections.deque(meshes)
    preparing, finishing, ready = {}, {}, collections.defaultdict(list)  # futures -> mesh paths
    with ProcessPoolExecutor(workers, context, initializer=_worker_init, initargs=(1, True, verbose)) as pool:
        def top_up():
            while pending and len(preparing) + sum(map(len, ready.values())) < 2 * group:
                path = pending.popleft()
                preparing[pool.submit(prepare_job, path, job)] = path

        def collect(done):
            for future in done:
                if future in finishing:
                    on_row(result_or_failure(future, finishing.pop(future)))
                    continue
                path = preparing.pop(future)
                result = result_or_failure(future, path)
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
            log.info("training a group of %d networks on %s", len(batch), job.device)
            try:
                results = train_prepared(batch, job)
            except Exception as exc:  # the group's training itself failed: each of its meshes gets the reason
                for p in batch:
                    on_row(failed_row(p.path, job.out, exc, sum(p.timings.values())))
                continue
            for p, (trained, fits) in zip(batch, results):
                trained = dataclasses.replace(trained, model=trained.model.cpu(), points=None, sdf=None)
                fits = {bits: (m.cpu(), *rest) for bits, (m, *rest) in fits.items()}
                future = pool.submit(finish_job, p.trained(), trained, fits, job)
                finishing[future] = p.path
            collect(f for f in list(finishing) if f.done())
        collect(wait(finishing).done)


def result_or_failure(future, path: Path):
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


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_group(job: Job, meshes: int) -> int:
    """``group`` 0: one network at a time on a CPU; on a GPU as many as a quarter of its free memory holds
    (points, targets and inputs of each network, about 44 bytes a point), at most 256 and at most the
    number of meshes. Architectures that do not stack (NGLOD) and ``--refit`` train one at a time."""
    cfg, device, meshes = job.cfg, job.device, max(1, meshes)
    if job.refit or not job.arch.stacks:
        return 1
    if cfg.group > 0:
        return min(cfg.group, meshes)
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_network = 44 * cfg.num_samples + 4 * cfg.batch_size * cfg.width * 2 * (cfg.layers + 2)
    return max(1, min(256, meshes, int(free / 4 / per_network)))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Any config key can be overridden as --key=value (docs/cli.md).")
    parser.add_argument("--mesh-dir", help="folder of meshes (obj, stl, ply, off, glb, gltf)")
    parser.add_argument("--config", default="auto",
                        help="YAML training config (default auto: configs/default.yaml on a CPU, configs/quality.yaml "
                             "on a GPU, where groups make the paper's budget cheap)")
    parser.add_argument("--arch", choices=architectures.NAMES, default="keysphere",
                        help="; ".join(f"{a.name}: {a.summary}" for a in architectures.REGISTRY.values()))
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
    if not args.merge and not args.mesh_dir:
        parser.error("--mesh-dir is required (unless --merge)")
    return args, overrides


def make_job(args, overrides: list[str]) -> Job:
    device = pick_device(args.device)
    if args.config == "auto":
        args.config = str(PROJECT_ROOT / "configs" / ("quality.yaml" if device.type == "cuda" else "default.yaml"))
    arch = architectures.get(args.arch)
    cfg = arch.resolve(TrainConfig.load(args.config, overrides), overrides)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(args.out) if args.out else PROJECT_ROOT / "runs" / f"{Path(args.config).stem}-{args.arch}"
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = None if args.cache_dir.lower() == "none" else Path(args.cache_dir)
    return Job(out, arch, cfg, device, cache_dir, args.quiet, args.force, args.refit)


def run_cpu(todo: list[Path], job: Job, verbose: bool, on_row) -> str:
    """One mesh per process (``workers``) on a CPU, or one after another; returns how, for the log."""
    cores = cpu_cores()
    workers = min(job.cfg.workers or cores, len(todo)) if job.device.type == "cpu" else 1
    if workers <= 1:
        for path in todo:
            on_row(train_mesh(path, job))
        return "1 at a time"
    # one process per mesh at a time: these small matrices keep one core busier than two threads do
    threads = job.cfg.threads or max(1, cores // workers)
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
    quiet_job = dataclasses.replace(job, quiet=True)
    with ProcessPoolExecutor(workers, context, initializer=_worker_init,
                             initargs=(threads, job.quiet, verbose)) as pool:
        futures = {pool.submit(train_mesh, path, quiet_job): path for path in todo}
        for future in as_completed(futures):
            on_row(result_or_failure(future, futures[future]))
    return f"{workers} at a time"


def train_all(todo: list[Path], job: Job, verbose: bool, on_row) -> str:
    """Train ``todo`` in groups on a GPU (``run_groups``) or a mesh per process on a CPU (``run_cpu``);
    returns how, for the log."""
    group = default_group(job, len(todo))
    if group <= 1:
        return run_cpu(todo, job, verbose, on_row)
    workers = job.cfg.workers or max(1, cpu_cores() - 1)  # one core drives the GPU
    run_groups(todo, job, group, workers, verbose, on_row)
    return f"groups of up to {group} networks, {workers} CPU workers"


def second_tries(meshes: list[Path], rows: dict, job: Job, verbose: bool, on_row) -> None:
    """Train every warned mesh once more (``Job.second_try``: ``retry_epochs`` at the next seed, into
    ``<out>/.retry``) the way the first pass trained; each mesh keeps the try with the lower self-check CD2."""
    second = job.second_try()
    todo = [] if second is None else [p for p in meshes if needs_second_try(rows.get(mesh_name(p)), job.out)]
    if not todo:
        return
    log.info("%d meshes warned: a second try each (%d epochs, seed %d)", len(todo), second.cfg.epochs,
             second.cfg.seed)
    second.out.mkdir(parents=True, exist_ok=True)
    train_all(todo, second, verbose, lambda row: on_row(keep_better(job.out, row)))
    try:
        second.out.rmdir()  # empty once every second try is kept or dropped
    except OSError:
        pass


def main(argv=None) -> int:
    args, overrides = parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    if args.merge:
        return merge_run(args.out)
    job = make_job(args, overrides)
    shard = parse_shard(args.shard)
    meshes = list_meshes(args.mesh_dir)
    meshes = meshes[shard[0]::shard[1]] if shard else meshes
    summary = job.out / (f"summary.shard-{shard[0]}-of-{shard[1]}.csv" if shard else "summary.csv")
    log.info("%d meshes -> %s (arch %s, device %s)", len(meshes), job.out, job.arch.name, job.device)
    start = time.perf_counter()
    order = {mesh_name(p): i for i, p in enumerate(meshes)}
    done = [] if job.refit else [done_row(path, job.out, job.force) for path in meshes]
    rows = {row["mesh"]: row for row in done if row is not None}
    todo = [path for path in meshes if mesh_name(path) not in rows]
    with tqdm(total=len(meshes), initial=len(rows), desc="meshes", disable=args.quiet) as bar:
        def on_row(row):
            if row is not None:
                bar.update(row["mesh"] not in rows)  # a second try replaces its mesh's row
                rows[row["mesh"]] = row
            write_summary(summary, sorted(rows.values(), key=lambda r: order.get(r["mesh"], len(order))))

        if rows:
            on_row(None)
        how = train_all(todo, job, args.verbose, on_row)
        second_tries(meshes, rows, job, args.verbose, on_row)
    failed = [r["mesh"] for r in rows.values() if r["status"].startswith("failed")]
    wall = time.perf_counter() - start
    log.info("%d ok, %d failed%s in %.0f s (%.1f s per mesh, %s); summary: %s", len(rows) - len(failed),
             len(failed), f" ({', '.join(failed)})" if failed else "", wall, wall / max(1, len(rows)), how, summary)
    return 0


if __name__ == "__main__":
    run_main(main)

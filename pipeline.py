"""One mesh through the pipeline: prepare (CPU), train (any device, alone or in a group), finish (CPU).

``train_mesh`` runs all three for one mesh; ``train_series.py`` schedules many (one process per mesh on a
CPU, groups of stacked networks on a GPU) with the same three steps. A ``Job`` says what every mesh of a
series is trained with; a ``Prepared`` carries one mesh from the first step to the last.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import codec
from architectures import Architecture
from checkpoint import count_numbers, load_checkpoint, save_checkpoint
from common import InputError, RunPaths, TrainConfig, atomic_write, mesh_name, replace_dir
from mesh_kind import TargetField
from modelmesher import mesh_model, save_mesh
from nglod import occupied_voxels, sample_in_voxels
from quantization import quantization_aware_finetune
from run_records import RETRY_DIR, done_row, failed_row, failure_record, row_from_checkpoint, start_work
from selfcheck import CHAMFER_SAMPLES, parts, self_check
from sphere_sampler import (
    cached_key_spheres,
    load_mesh,
    normalize_mesh,
    sample_surface,
    sample_training_points,
    write_sphere_file,
)
from training import Member, Trained, mine_hard_points, stack_for, train_group, training_set

log = logging.getLogger("keysphere")


@dataclass(frozen=True)
class Job:
    """What every mesh of a series is trained with: the run folder, the architecture, its resolved config
    (``Architecture.resolve``), the training device, the key-sphere cache (None: none), and whether to keep
    quiet, retrain meshes done already (``force``) or refit their float networks to the codec (``refit``)."""

    out: Path
    arch: Architecture
    cfg: TrainConfig
    device: torch.device
    cache_dir: Path | None = None
    quiet: bool = True
    force: bool = False
    refit: bool = False

    def on(self, device: torch.device | str) -> "Job":
        """The same job on another device (a pool's CPU workers)."""
        return dataclasses.replace(self, device=torch.device(device))

    def second_try(self) -> "Job | None":
        """The job that trains warned meshes once more (``retry_epochs`` epochs at the next seed) into
        ``<out>/.retry``; None when the config has no second try or the job only refits."""
        if self.cfg.retry_epochs == 0 or self.refit:
            return None
        cfg = dataclasses.replace(self.cfg, epochs=self.cfg.retry_epochs, seed=self.cfg.seed + 1, retry_epochs=0)
        return dataclasses.replace(self, out=self.out / RETRY_DIR, cfg=cfg)

    def model_args(self, p: "Prepared") -> dict:
        return self.arch.model_args(self.cfg, 0 if p.spheres is None else len(p.spheres))


@dataclass
class Prepared:
    """A mesh ready to train: what ``prepare_mesh`` computed, kept until ``finish_mesh`` writes it out.

    ``mesh`` describes the file (name, file, vertices, faces, watertight, kind, parts); ``points`` (N, 3) and
    ``sdf`` (N,) are float32 arrays, ``spheres`` (M, 4) or None, ``voxels`` NGLOD's occupied voxels (V, 3) or
    None; ``field`` serves hard-example mining; ``reference`` holds the input's surface samples and their
    normals ((S, 3) each, ``selfcheck``'s); ``timings`` are seconds per stage.
    """

    path: Path
    work: RunPaths
    mesh: dict
    normalization: dict
    shell: float
    field: TargetField | None
    spheres: np.ndarray | None
    points: np.ndarray | None
    sdf: np.ndarray | None
    timings: dict
    voxels: np.ndarray | None = None
    reference: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def kind(self) -> str:
        return self.mesh["kind"]

    def trained(self) -> "Prepared":
        """A copy without what only training needs (the target field, the points): small to pickle."""
        return dataclasses.replace(self, field=None, points=None, sdf=None)


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
# The three steps


def prepare_mesh(mesh_path: Path, job: Job, work: RunPaths) -> Prepared:
    """Load, normalize and classify a mesh, extract its key spheres or octree and sample its training points."""
    cfg, timings = job.cfg, {}
    watch = Stopwatch(timings)
    with mesh_log(work):
        mesh = load_mesh(mesh_path)
        watertight = mesh.watertight
        mesh, norm = normalize_mesh(mesh)
        watch.lap("load")
        field = TargetField.of(mesh, cfg.sheet_shell, cfg.sphere_grid)
        log.info("%s: %d vertices, %d faces, %s (%s)", mesh_path.name, len(mesh.vertices), len(mesh.faces),
                 field.kind, field.analysis.reason)
        watch.lap("classify")
        spheres = voxels = None
        if job.arch.has_spheres:
            spheres = cached_key_spheres(mesh_path, field, cfg.num_spheres, cfg.sphere_grid, cfg.sphere_min_radius,
                                         job.cache_dir)
            watch.lap("spheres")
        in_voxels = 0
        if job.arch.has_octree:  # the voxels the surface passes through, grown by the margin
            finest = cfg.nglod_base_res * 2 ** (cfg.nglod_lods - 1)
            surface, _ = sample_surface(mesh, 64 * finest * finest, seed=cfg.seed)
            voxels = occupied_voxels(surface, finest, cfg.nglod_margin)
            in_voxels = int(round(cfg.num_samples * cfg.nglod_voxel_fraction))
            watch.lap("octree")
        points, sdf = sample_training_points(field, cfg.pool_uniform, cfg.pool_surface, cfg.surface_noise,
                                             cfg.importance_beta, cfg.num_samples - in_voxels, cfg.seed,
                                             cfg.uniform_fraction, job.device)
        if in_voxels:  # the margin's voxels far from the surface get no importance samples (issue 25's floaters)
            extra = torch.as_tensor(sample_in_voxels(voxels, finest, in_voxels, cfg.seed), device=points.device)
            points = torch.cat([points, extra])
            sdf = torch.cat([sdf, torch.as_tensor(field.sdf(extra.cpu().numpy()), dtype=sdf.dtype, device=sdf.device)])
        reference = sample_surface(mesh, CHAMFER_SAMPLES, seed=0)  # what the self-check scores against
        watch.lap("samples")
    info = {"name": mesh_name(mesh_path), "file": mesh_path.name, "vertices": len(mesh.vertices),
            "faces": len(mesh.faces), "watertight": bool(watertight), "kind": field.kind, "parts": parts(mesh)}
    return Prepared(mesh_path, work, info, norm.to_dict(), field.shell, field, spheres,
                    points.cpu().numpy(), sdf.cpu().numpy(), timings, voxels, reference)


def members_of(group: list[Prepared], job: Job) -> list[Member]:
    """What training needs of prepared meshes, on the job's device (fields only for the kinds mined)."""
    device = job.device
    return [Member(p.mesh["name"], None if p.spheres is None else torch.as_tensor(p.spheres, device=device),
                   torch.as_tensor(p.points, device=device), torch.as_tensor(p.sdf, device=device),
                   p.field if p.kind in job.cfg.mine_kinds else None,
                   None if p.voxels is None else torch.as_tensor(p.voxels, device=device))
            for p in group]


def train_prepared(group: list[Prepared], job: Job) -> list[tuple[Trained, dict]]:
    """Train the networks of a group of prepared meshes together, then fit them to the codec. Each mesh is
    charged an equal share of the group's seconds. Returns per mesh (trained network, ``fit_codec``'s fits)."""
    members = members_of(group, job)
    start = time.perf_counter()
    trained = train_group(job.arch, job.model_args(group[0]), job.cfg, members, job.device, job.quiet)
    for p in group:
        p.timings["train"] = (time.perf_counter() - start) / len(group)
    return list(zip(trained, fit_codec(group, trained, members, job)))


def fit_codec(group: list[Prepared], trained: list[Trained], members: list[Member], job: Job) -> list[dict]:
    """Trained networks fitted to the codec (``quantization.py``) at ``codec_bits`` and each of ``rd_bits``:
    per mesh {bits: (quantized copy, its steps, its fine-tuning losses)}; empty without fine-tuning
    (``qat_epochs`` 0, and architectures without a layer-by-layer fit, NGLOD: their files round the float
    network to the nearest step)."""
    cfg, fits = job.cfg, [{} for _ in group]
    start = time.perf_counter()
    for bits in [cfg.codec_bits] + cfg.extra_bits:
        if cfg.qat_epochs > 0 and bits < 32 and job.arch.layerwise_fit:
            depth = dataclasses.replace(cfg, codec_bits=bits)
            for fit, result in zip(fits, quantization_aware_finetune(trained, members, job.arch,
                                                                     job.model_args(group[0]), depth, job.device,
                                                                     job.quiet)):
                fit[bits] = result
    for p in group:
        p.timings["qat"] = (time.perf_counter() - start) / len(group)
    return fits


def write_files(p: Prepared, model: torch.nn.Module, fits: dict, job: Job) -> int:
    """The ``.ksdf`` files of a trained mesh: the shipped one, one per ``rd_bits`` depth and, for an
    architecture with levels of detail, one per LOD. Returns the shipped file's bytes."""
    cfg, arch, model_args = job.cfg, job.arch, job.model_args(p)
    surface = {"kind": p.kind, "shell": p.shell}
    shipped = 0
    for bits in [cfg.codec_bits] + cfg.extra_bits:
        to_ship, steps = fits[bits][:2] if bits in fits else (model, None)
        size = codec.write(p.work.compressed if bits == cfg.codec_bits else p.work.compressed_at(bits),
                           to_ship.cpu(), arch.name, model_args, bits, p.normalization, surface, steps)
        shipped = size if bits == cfg.codec_bits else shipped
    if arch.has_lods:  # one file per LOD: its levels of features and its decoder (model.ksdf: all LODs)
        for lod in range(model.lods):
            level = model.truncated(lod)
            codec.write(p.work.compressed_at_lod(lod + 1), level, arch.name,
                        {**model_args, "lods": lod + 1, "decoders_from": lod, "margin": level.margin},
                        cfg.codec_bits, p.normalization, surface)
    return shipped


def finish_mesh(p: Prepared, trained: Trained, fits: dict, job: Job) -> dict:
    """Write everything of a trained mesh into its work folder (the shipped ``model.ksdf`` first: the
    reconstruction is meshed from what it decodes to), move the folder into place and return the summary row.
    ``fits``: ``fit_codec``'s for this mesh."""
    watch = Stopwatch(p.timings)
    cfg, model, history = job.cfg, trained.model.cpu(), dict(trained.history)
    if cfg.codec_bits in fits:
        history["quantization_aware"] = fits[cfg.codec_bits][2]
    with mesh_log(p.work):
        if p.spheres is not None:
            write_sphere_file(p.work.spheres, p.spheres, cfg.sphere_grid)
        numbers = count_numbers(model)
        ksdf_bytes = write_files(p, model, fits, job)
        decoded, _ = codec.read(p.work.compressed)  # everything downstream sees exactly what ships
        seconds = float(sum(p.timings.values()))
        plot_losses(p.work.loss_plot, history, f"{p.mesh['name']} ({job.arch.name})")
        check = reconstruct(p, decoded, job)
        if job.arch.has_lods:
            check = with_lod_checks(check, p, decoded, job)
        watch.lap("mesh")
        save_checkpoint(p.work.checkpoint, model, job.arch.name, job.model_args(p), {
            "normalization": p.normalization, "kind": p.kind, "shell": p.shell, "config": dataclasses.asdict(cfg),
            "loss": float(history["final_loss"]), "loss_history": history, "mesh": p.mesh, "numbers": numbers,
            "bytes": 4 * numbers, "ksdf_bytes": ksdf_bytes, "seconds": seconds, "self_check": check,
            "timings": {k: float(v) for k, v in p.timings.items()}, "torch": str(torch.__version__)})
        log.info("%s: loss %.6f, %d numbers, %d bytes shipped, %s", p.path.name, history["final_loss"], numbers,
                 ksdf_bytes, ", ".join(f"{k} {v:.1f} s" for k, v in p.timings.items()))
    final = RunPaths(p.work.dir.parent / p.mesh["name"])
    replace_dir(p.work.dir, final.dir)
    failure_record(final).unlink(missing_ok=True)
    return {**row_from_checkpoint(p.mesh["name"], final), "timings": p.timings}  # as --merge will list it


def reconstruct(p: Prepared, decoded: torch.nn.Module, job: Job) -> dict:
    """Mesh the shipped model into ``reconstruction.ply`` and score it against the input (``selfcheck``); the
    log says the result in one line, a warning when there is one. Returns the self-check."""
    try:  # without a reconstruction the row's status is "ok (no surface)" (row_from_checkpoint)
        recon = mesh_model(decoded.to(job.device), job.cfg.mesh_res, job.device, shell=p.shell)
        save_mesh(recon, p.work.reconstruction)
    except InputError as exc:
        log.warning("%s: %s", p.path.name, exc)
        recon = None
    check = self_check(*p.reference, p.mesh["parts"], recon)
    if check["self_cd2"] is not None:
        log.info("%s: self-check CD2 %.4f (input to reconstruction %.4f, back %.4f), %d parts -> %d, %d floaters",
                 p.path.name, check["self_cd2"], check["self_cd2_gt_to_rec"], check["self_cd2_rec_to_gt"],
                 check["parts_in"], check["parts_out"], check["floaters"])
    if check["warning"]:
        log.warning("%s: %s (self-check CD2 %s)", p.path.name, check["warning"],
                    "-" if check["self_cd2"] is None else f"{check['self_cd2']:.4f}")
    return check


def with_lod_checks(check: dict, p: Prepared, decoded: torch.nn.Module, job: Job) -> dict:
    """The shipped file's self-check with those of its coarser LOD files (each ships too): ``lods`` holds
    each LOD's ``self_cd2``, ``floaters`` and ``warning``, and ``warning`` names every LOD that has one
    (e.g. ``LOD 3: floaters``), so a fine level's floaters never hide behind a clean finest level."""
    lods, reasons = {}, [check["warning"]] if check["warning"] else []
    for lod in range(1, decoded.lods):
        model = codec.read(p.work.compressed_at_lod(lod))[0].to(job.device)
        try:
            recon = mesh_model(model, job.cfg.mesh_res, job.device, shell=p.shell)
        except InputError:
            recon = None
        one = self_check(*p.reference, p.mesh["parts"], recon)
        lods[lod] = {k: one[k] for k in ("self_cd2", "floaters", "warning")}
        if one["warning"]:
            reasons.append(f"LOD {lod}: {one['warning']}")
            log.warning("%s: LOD %d: %s (self-check CD2 %s)", p.path.name, lod, one["warning"],
                        "-" if one["self_cd2"] is None else f"{one['self_cd2']:.4f}")
    return {**check, "lods": lods, "warning": "; ".join(reasons)}


# ----------------------------------------------------------------------------------------------------------
# A whole mesh


def train_mesh(mesh_path: Path, job: Job) -> dict:
    """Train ``mesh_path`` into ``<out>/<mesh>/`` (``job.refit``: fit the float network of a mesh done
    already to the codec again, ``refit_mesh``); returns its summary row. A mesh done already is skipped
    unless ``job.force``. A failure is logged and becomes the row's status, and leaves nothing but its
    failure record behind."""
    done = RunPaths(job.out / mesh_name(mesh_path)).checkpoint.is_file()
    row = None if job.refit and done else done_row(mesh_path, job.out, job.force)
    if row is not None:
        return row
    start = time.perf_counter()
    try:
        work = start_work(job.out, mesh_name(mesh_path))
        if job.refit and done:
            return refit_mesh(mesh_path, work, job)
        p = prepare_mesh(mesh_path, job, work)
        with mesh_log(work):
            [(trained, fits)] = train_prepared([p], job)
        return finish_mesh(p.trained(), trained, fits, job)
    except Exception as exc:  # any failure of one mesh is reported in its row; the series goes on
        return failed_row(mesh_path, job.out, exc, time.perf_counter() - start)


def refit_mesh(mesh_path: Path, work: RunPaths, job: Job) -> dict:
    """Fit the float network of a mesh trained earlier to the codec again (``codec_bits``, ``rd_bits``) on
    freshly drawn training points, and rewrite its files in ``work`` then in place: no training. Re-encodes a
    run at other bit depths, or one written by an older version. The job's config must sample as the
    training did."""
    final = RunPaths(work.dir.parent / mesh_name(mesh_path))
    model, info = load_checkpoint(final.checkpoint)
    if info["arch"] != job.arch.name:
        raise InputError(f"{final.checkpoint}: a {info['arch']} model, not {job.arch.name}")
    if final.log.is_file():
        shutil.copyfile(final.log, work.log)
    p = prepare_mesh(mesh_path, job, work)
    p.timings["train"] = float(info.get("timings", {}).get("train", 0.0))
    [member] = members_of([p], job)
    points, sdf = member.points, member.sdf
    if member.field is not None and job.cfg.mine_fraction > 0:  # as training ends: with hard examples (films)
        stack = stack_for(job.arch)([model], job.device)
        data = training_set(stack, points[None].clone(), sdf[None].clone(), [member.spheres], job.cfg)
        mine_hard_points(stack, data, [member.field], job.cfg, job.cfg.seed)
        points, sdf = data.points[0], data.sdf[0]
    trained = Trained(model.to(job.device), info["loss_history"], points, sdf)
    with mesh_log(work):
        log.info("%s: fitting the trained network to the codec again (--refit)", mesh_path.name)
        [fits] = fit_codec([p], [trained], [member], job)
    return finish_mesh(p.trained(), trained, fits, job)

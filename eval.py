"""Score reconstructions against their ground-truth meshes: Chamfer, IoU, F-score, normals, SDF errors.

    python eval.py --mesh-dir data/shapes --results runs/keysphere runs/ni --csv results/eval.csv
    python eval.py ... --rd        # also a rate-distortion report: results/eval-rd.{csv,md,png}
    python eval.py ... --render    # also pictures, results/eval-render/<mesh>.png, and results/eval-report.md
    python eval.py ... --lod 3     # NGLOD runs scored at one level of detail

Every metric is computed in the normalized frame (smallest enclosing ball of the ground truth scaled to
radius 0.9) with fixed seeds; see ``docs/metrics.md`` for the exact definitions. A run folder holds, per mesh,
``<mesh>/reconstruction.{ply,obj,stl}`` (or ``<mesh>.{ply,obj,stl}``) and optionally ``<mesh>/model.pt``
(or a released ``*.pth`` of the authors or ``*.h5`` of NI) and ``<mesh>/model.ksdf``; without a
reconstruction the model is meshed at 128^3. ``bytes`` is the size of ``model.ksdf`` when there is one (the
file a user ships; its decoded model also gives the SDF errors), else 4 bytes per stored number
(``float_bytes``).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import architectures
import rate_distortion as rd
from checkpoint import count_numbers
from codec import load_model
from common import (
    InputError,
    RunPaths,
    add_logging_flags,
    atomic_write_text,
    list_meshes,
    mesh_name,
    pick_device,
    run_main,
    setup_logging,
)
from grid import cell_centres
from mesh_kind import TargetField, winding_number
from metrics import chamfer, exact_chamfer, fscore, iou
from modelmesher import mesh_model
from render import COLORS, Camera, render_field, render_mesh, save_panels, sphere_meshes
from selfcheck import CHAMFER_SAMPLES, far_surface, surface_scores, warning
from sphere_sampler import Mesh, load_mesh, normalize_mesh, sample_surface

log = logging.getLogger("keysphere")

IOU_SAMPLES = 100_000
NEAR_SURFACE_STD = 0.01
SDF_GRID_RES = 32
METRICS = ("cd2", "cd2_gt_to_rec", "cd2_rec_to_gt", "cd1", "cd2_exact", "cd1_exact", "giou", "iou",
           "normal_consistency", "fscore", "sdf_grid", "sdf_surface", "sdf_importance", "floor_cd2", "far_area",
           "floaters")
TABLE_METRICS = (("cd2", "CD2", "{:.4f}"), ("giou", "gIoU", "{:.2f}"), ("fscore", "F@0.01", "{:.3f}"),
                 ("normal_consistency", "NC", "{:.3f}"), ("numbers", "numbers", "{:.0f}"), ("bytes", "bytes", "{:.0f}"),
                 ("seconds", "s", "{:.0f}"))


# ----------------------------------------------------------------------------------------------------------
# One mesh, one run


class GroundTruth:
    """Normalized ground-truth mesh with its kind and fixed, seeded samples (shared by every run of a mesh).

    Occupancy (gIoU, IoU) follows the kind's sign (``mesh_kind``); a sheet has no inside, so no IoU. The
    SDF errors compare with the kind's target: the signed distance, or for a sheet the unsigned distance
    minus the run's shell.
    """

    def __init__(self, path: Path):
        self.mesh, _ = normalize_mesh(load_mesh(path))
        field = TargetField.of(self.mesh, sheet_shell=0.0)  # for a sheet: the unsigned distance
        self.kind = field.kind
        self.points, self.normals = sample_surface(self.mesh, CHAMFER_SAMPLES, seed=0)
        rng = np.random.default_rng(0)
        # gIoU as NGLOD draws it: half uniform in the cube, half near the surface
        uniform = rng.uniform(-1, 1, (IOU_SAMPLES, 3))
        near = sample_surface(self.mesh, IOU_SAMPLES, seed=3)[0] + rng.normal(0, NEAR_SURFACE_STD, (IOU_SAMPLES, 3))
        self.iou_points = np.concatenate([uniform, near])
        self.iou_inside = field.inside(self.iou_points) if self.kind != "sheet" else None
        axis = cell_centres(SDF_GRID_RES)
        self.grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        self.grid_sdf = field.sdf(self.grid)
        self.near = near[: IOU_SAMPLES // 4]
        self.near_sdf = field.sdf(self.near)
        resample, _ = sample_surface(self.mesh, CHAMFER_SAMPLES, seed=2)
        self.floor_cd2 = chamfer(resample, self.points)["cd2"]


@torch.no_grad()
def sdf_errors(model: torch.nn.Module, gt: GroundTruth, device, shell: float = 0.0) -> dict:
    """Mean |predicted - true target| on a regular grid, on surface samples and near the surface; the target
    is the signed distance, or for a sheet's shell (``shell`` > 0) the unsigned distance minus ``shell``."""
    def predict(points):
        return model(torch.as_tensor(points, dtype=torch.float32, device=device)).cpu().double().numpy()

    model = model.to(device).eval()
    return {"sdf_grid": np.abs(predict(gt.grid) - (gt.grid_sdf - shell)).mean(),
            "sdf_surface": np.abs(predict(gt.points[:32768]) + shell).mean(),
            "sdf_importance": np.abs(predict(gt.near) - (gt.near_sdf - shell)).mean()}


def find_run_files(run_dir: Path, name: str) -> tuple[Path | None, Path | None]:
    """(reconstruction, model) of mesh ``name`` in a run folder; either may be None."""
    paths = RunPaths(run_dir / name)
    recon = next((p for p in [paths.dir / f"reconstruction{s}" for s in (".ply", ".obj", ".stl")]
                  + [run_dir / f"{name}{s}" for s in (".ply", ".obj", ".stl")] if p.is_file()), None)
    model = paths.checkpoint if paths.checkpoint.is_file() else None
    if model is None and paths.dir.is_dir():  # a released model: the authors' .pth or NI's .h5
        model = next(iter(sorted([*paths.dir.glob("*.pth"), *paths.dir.glob("*.h5")])), None)
    if model is None and paths.compressed.is_file():
        model = paths.compressed
    return recon, model


def numbers_of(model: torch.nn.Module) -> int:
    """Stored numbers as a table counts them: an NGLOD model's at its LOD (``stored_numbers``), else all."""
    return model.stored_numbers() if hasattr(model, "stored_numbers") else count_numbers(model)


def evaluate_run(gt: GroundTruth, run_dir: Path, name: str, device,
                 lod: int | None = None) -> tuple[dict, torch.nn.Module | None]:
    """All metrics of one run on one mesh, and the model they score (None when only a reconstruction was
    found; ``row["scored"]`` names the file); raises InputError when the run has nothing for this mesh.

    ``lod`` (1-based): an NGLOD run is scored at that LOD, from its ``model-lod<k>.ksdf``, meshed here; other
    runs as usual."""
    recon_path, model_path = find_run_files(run_dir, name)
    row = {"kind": gt.kind}
    model, shell = None, 0.0
    compressed = RunPaths(run_dir / name).compressed
    if lod is not None and model_path is not None and model_path.suffix == ".pt":
        float_model, info = load_model(model_path)
        if architectures.get(info["arch"]).has_lods:
            if not 1 <= lod <= float_model.lods:
                raise InputError(f"LOD {lod} not trained (LODs 1..{float_model.lods})")
            compressed = RunPaths(run_dir / name).compressed_at_lod(lod)
            float_model = float_model.truncated(lod - 1)
            numbers = float_model.stored_numbers()
            shell = float(info.get("shell") or 0.0)
            row.update(numbers=numbers, bytes=4 * numbers, float_bytes=4 * numbers,
                       seconds=info.get("seconds", math.nan), lod=lod)
            model, recon_path, model_path = float_model, None, None
            row["scored"] = f"model.pt at LOD {lod}"
    if model_path is not None:
        model, info = load_model(model_path)
        shell = float(info.get("shell") or 0.0)
        numbers = numbers_of(model)
        row.update(numbers=numbers, bytes=4 * numbers, float_bytes=4 * numbers, seconds=info.get("seconds", math.nan),
                   scored=model_path.name)
    if compressed.is_file():
        model, _ = load_model(compressed)
        row.update(bytes=compressed.stat().st_size, ksdf_bytes=compressed.stat().st_size, scored=compressed.name)
        row.setdefault("numbers", numbers_of(model))
    if model is not None:
        row.update(sdf_errors(model, gt, device, shell))
    if recon_path is not None:
        recon = load_mesh(recon_path)
        row.setdefault("scored", recon_path.name)
    elif model is not None:
        tm = mesh_model(model, 128, device, shell=shell)
        recon = Mesh(np.asarray(tm.vertices, dtype=np.float64), np.asarray(tm.faces, dtype=np.int64))
    else:
        raise InputError(f"{run_dir}: no reconstruction or model for {name}")
    points, normals = sample_surface(recon, CHAMFER_SAMPLES, seed=1)
    scores = surface_scores(gt.points, gt.normals, points, normals)
    row.update({k: scores[k] for k in ("cd2", "cd2_rec_to_gt", "cd2_gt_to_rec", "cd1", "normal_consistency")},
               fscore=fscore(scores["d_rec"], scores["d_gt"]), **far_surface(recon, scores["d_rec"], gt.points))
    row["warning"] = warning(scores["cd2"], scores["cd2_gt_to_rec"], scores["cd2_rec_to_gt"], row["floaters"])
    row["cd2_exact"], row["cd1_exact"] = exact_chamfer(points, recon, gt.points, gt.mesh)
    if gt.iou_inside is None:  # a sheet encloses nothing: IoU is undefined, not 0
        row["giou"] = row["iou"] = math.nan
    else:
        pred = winding_number(gt.iou_points, recon.vertices, recon.faces) > 0.5  # the reconstruction is closed
        row["giou"] = iou(pred, gt.iou_inside)
        row["iou"] = iou(pred[:IOU_SAMPLES], gt.iou_inside[:IOU_SAMPLES])
    row["floor_cd2"] = gt.floor_cd2
    return row, model


def render_row(gt: GroundTruth, runs: list[str], run_dirs: list[Path], name: str, rows: list[dict],
               models: dict, path: Path, size: int, device, draco: list[dict] | None = None) -> None:
    """One PNG for a mesh: ground truth | each run's scored model (``models[run]``, what its row measured),
    else its reconstruction | the key spheres of the first model that has them | with ``draco`` (the mesh's
    QEM + Draco points), Draco's best decode within the first run's file bytes. CD2 and bytes in the
    captions."""
    camera = Camera.default()
    images = [render_mesh(gt.mesh.vertices, gt.mesh.faces, camera, size, size)[0]]
    captions = [f"ground truth ({len(gt.mesh.faces):,} faces)"]
    spheres = None
    for run, run_dir in zip(runs, run_dirs):
        row = next((r for r in rows if r["mesh"] == name and r["run"] == run), {})
        model = models.get(run)
        if model is not None:
            image = render_field(model, camera, size, size, device)[0]
            if spheres is None and getattr(model, "spheres", None) is not None:
                spheres = model.spheres.detach().cpu().numpy()
        else:
            recon_path, _ = find_run_files(run_dir, name)
            if recon_path is None:
                continue
            recon = load_mesh(recon_path)
            image = render_mesh(recon.vertices, recon.faces, camera, size, size, COLORS["model"])[0]
        images.append(image)
        caption = run
        if row.get("status") == "ok":
            caption += f": CD2 {row['cd2']:.4f}, {row['bytes']:,.0f} B ({row['scored']})"
        captions.append(caption)
    if spheres is not None:
        images.append(render_mesh(*sphere_meshes(spheres), camera, size, size, COLORS["spheres"])[0])
        captions.append(f"{len(spheres)} key spheres")
    ours = next((r for r in rows if r["mesh"] == name and r.get("status") == "ok" and r.get("bytes")), None)
    found = rd.draco_mesh_within(gt.mesh, draco, int(ours["bytes"])) if draco and ours else None
    if found is not None:
        decoded, point = found
        images.append(render_mesh(decoded.vertices, decoded.faces, camera, size, size)[0])
        captions.append(f"QEM + Draco ({point['setting']}): CD2 {point['cd2']:.4f}, {point['bytes']:,} B")
    save_panels(path, images, captions, title=f"{name} ({gt.kind})")


def write_report(csv_path: Path, table: str, meshes: list[str], render_dir: Path, rd: bool) -> Path:
    """``<csv>-report.md``: the table, the rate-distortion plot and table (with ``--rd``) and every mesh's
    picture, linked relatively so that the folder reads offline."""
    lines = [f"# Run report: {csv_path.stem}", "", table]
    rd_stem = csv_path.with_name(csv_path.stem + "-rd")
    if rd:
        lines += ["## Rate-distortion", "", f"![rate-distortion]({rd_stem.name}.png)", "",
                  rd_stem.with_suffix(".md").read_text()]
    lines += ["## Pictures", ""]
    lines += [f"![{m}]({render_dir.name}/{m}.png)\n" for m in meshes if (render_dir / f"{m}.png").is_file()]
    path = csv_path.with_name(csv_path.stem + "-report.md")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------------
# Tables


def summary_rows(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return (float(np.mean(finite)), float(np.median(finite))) if finite else (math.nan, math.nan)


def cd2_ratio(rows: list[dict], mesh: str, ratio: tuple[str, str] | None) -> float | None:
    """CD2 of run ``ratio[0]`` over CD2 of run ``ratio[1]`` on one mesh (None when either is missing)."""
    if ratio is None:
        return None
    cd2 = {r["run"]: r.get("cd2") for r in rows if r["mesh"] == mesh and r.get("status") == "ok"}
    a, b = cd2.get(ratio[0]), cd2.get(ratio[1])
    return a / b if a is not None and b else None


def markdown_table(rows: list[dict], runs: list[str], meshes: list[str],
                   ratio: tuple[str, str] | None = None) -> str:
    """Side-by-side table: one row per mesh, a column per (metric, run), then mean and median rows.

    With ``ratio = (a, b)`` a last column gives CD2(a) / CD2(b) per mesh, and its mean and median.
    """
    by_key = {(r["mesh"], r["run"]): r for r in rows}
    header = (["mesh", "kind"] + [f"{label} {run}" for _, label, _ in TABLE_METRICS for run in runs]
              + [f"warning {run}" for run in runs] + ["floor CD2"])
    if ratio:
        header.append(f"CD2 {ratio[0]}/{ratio[1]}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(value, fmt):
        return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else fmt.format(value)

    for mesh in meshes:
        kind = next((r["kind"] for r in rows if r["mesh"] == mesh and r.get("kind")), "-")
        cells = [mesh, kind]
        for key, _, fmt in TABLE_METRICS:
            for run in runs:
                r = by_key.get((mesh, run), {})
                status = r.get("status", "missing")
                if status == "ok" and key == "giou" and kind == "sheet":
                    cells.append("n/a")  # a sheet encloses nothing
                else:
                    cells.append(cell(r.get(key), fmt) if status == "ok" else status.split(":")[0])
        cells += [by_key.get((mesh, run), {}).get("warning", "") for run in runs]
        floor = next((r.get("floor_cd2") for r in rows if r["mesh"] == mesh and r.get("floor_cd2")), None)
        cells.append(cell(floor, "{:.4f}"))
        if ratio:
            cells.append(cell(cd2_ratio(rows, mesh, ratio), "{:.3f}"))
        lines.append("| " + " | ".join(cells) + " |")
    for i, label in enumerate(("mean", "median")):
        cells = [f"**{label}**", ""]
        for key, _, fmt in TABLE_METRICS:
            for run in runs:
                vals = [by_key[(m, run)].get(key) for m in meshes
                        if by_key.get((m, run), {}).get("status") == "ok"]
                cells.append(cell(summary_rows(vals)[i], fmt))
        cells += [f"{sum(bool(by_key.get((m, run), {}).get('warning')) for m in meshes)} warned" if i == 0 else ""
                  for run in runs]
        cells.append(cell(summary_rows([r.get("floor_cd2") for r in rows if r["run"] == runs[0]])[i], "{:.4f}"))
        if ratio:
            cells.append(cell(summary_rows([cd2_ratio(rows, m, ratio) for m in meshes])[i], "{:.3f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = ["mesh", "run", "status", "kind", *METRICS, "numbers", "bytes", "float_bytes", "ksdf_bytes", "seconds",
              "lod", "warning"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def rd_rows(gt: GroundTruth, runs: list[str], run_dirs: list[Path], name: str, device,
            joined: list[str] = ()) -> tuple[list[dict], dict]:
    """Rate-distortion points of one mesh: per run every ``.ksdf`` file of the mesh (the shipped one and the
    operating points of config ``rd_bits``) and its float checkpoint; QEM + Draco at several face budgets and
    bits. ``joined`` runs (e.g. two network widths) also form one method, ``a+b``, whose points are all of
    theirs (its shipped file the first run's).

    Returns
    -------
    rows : one dict per point (mesh, method, setting, bytes, cd2)
    curves : {label: points} for the plot: ``draco``, each run, and ``<run> shipped``
    """
    curves = {"draco": rd.draco_points(gt.mesh, gt.points, CHAMFER_SAMPLES)}
    for run, run_dir in zip(runs, run_dirs):
        points = rd.file_points(run_dir / name, gt.points, CHAMFER_SAMPLES, device)
        _, model_path = find_run_files(run_dir, name)
        if model_path is not None and model_path.suffix != ".ksdf":
            model, info = load_model(model_path)
            points.append(rd.float_point(model, info, gt.points, CHAMFER_SAMPLES, device))
        curves[run] = points
        curves[f"{run} shipped"] = [p for p in points if p["setting"].endswith("(shipped)")]
    if joined:
        curves["+".join(joined)] = joined_points(curves, joined)
    rows = [{"mesh": name, "method": label, **p} for label, pts in curves.items() if not label.endswith(" shipped")
            for p in pts]
    return rows, curves


def joined_points(curves: dict, joined: list[str]) -> list[dict]:
    """All points of the ``joined`` runs' curves as one method's, sorted by bytes, each setting prefixed with
    its run; only the first run's shipped file keeps "(shipped)"."""
    union = []
    for i, run in enumerate(joined):
        for p in curves[run]:
            setting = p["setting"] if i == 0 else p["setting"].replace(" (shipped)", "")
            union.append({**p, "setting": f"{run}: {setting}"})
    return sorted(union, key=lambda p: p["bytes"])


def rd_summary(rows: list[dict], runs: list[str], meshes: list[str]) -> tuple[str, dict]:
    """Markdown table per mesh and run: the shipped file and the best point of the run's Pareto front, each
    against QEM + Draco at equal CD2; medians of both ratios.

    Returns
    -------
    (table, {run: {"shipped": ratios, "front": ratios}})
    """
    lines = ["| mesh | run | file bytes | CD2 | float32 CD2 | Draco bytes at equal CD2 | ours / Draco "
             "| best on our front: setting, bytes, CD2 | its ours / Draco |",
             "|---|---|---|---|---|---|---|---|---|"]
    ratios = {run: {"shipped": [], "front": []} for run in runs}
    for mesh in meshes:
        draco = [r for r in rows if r["mesh"] == mesh and r["method"] == "draco"]
        for run in runs:
            ours = [r for r in rows if r["mesh"] == mesh and r["method"] == run]
            shipped = [r for r in ours if r["setting"].endswith("(shipped)")]
            if not shipped:
                continue
            floats = [r["cd2"] for r in ours if r["setting"].endswith("float32")]
            ratio, draco_cell, ratio_cell = ratio_cells(shipped[0], draco)
            ratios[run]["shipped"].append(ratio)
            # the front's best point: the lowest ratio where Draco's curve covers the point's CD2 (no bound)
            exact = []
            for point in rd.pareto(ours):
                front_ratio, _, cell = ratio_cells(point, draco)
                if math.isfinite(front_ratio) and not cell.startswith((">", "<")):
                    exact.append((front_ratio, point))
            best_cells = "- | -"
            if exact:
                best_ratio, best = min(exact, key=lambda rp: rp[0])
                ratios[run]["front"].append(best_ratio)
                best_cells = f"{best['setting']}, {best['bytes']}, {best['cd2']:.4f} | {best_ratio:.2f}"
            lines.append(f"| {mesh} | {run} | {shipped[0]['bytes']} | {shipped[0]['cd2']:.4f} | "
                         f"{f'{floats[0]:.4f}' if floats else '-'} | {draco_cell} | {ratio_cell} | {best_cells} |")
    for run in runs:
        shipped = [r for r in ratios[run]["shipped"] if math.isfinite(r)]
        front = ratios[run]["front"]
        if shipped or front:
            lines.append(f"| **median** | {run} | | | | | {float(np.median(shipped)) if shipped else math.nan:.2f} | "
                         f"| {float(np.median(front)) if front else math.nan:.2f} |")
    return "\n".join(lines) + "\n", ratios


def ratio_cells(point: dict, draco: list[dict]) -> tuple[float, str, str]:
    """ours / Draco at the point's CD2, and the table cells of Draco's bytes and the ratio; outside Draco's
    CD2 range both are bounds, marked as such."""
    draco_bytes, flag = rd.bytes_at_cd2(draco, point["cd2"])
    ratio = point["bytes"] / draco_bytes if math.isfinite(draco_bytes) else math.nan
    return (ratio, ("" if flag == "=" else flag + " ") + f"{draco_bytes:.0f}",
            ("" if flag == "=" else rd.ratio_flag(flag) + " ") + f"{ratio:.2f}")


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh-dir", required=True, help="folder of ground-truth meshes")
    parser.add_argument("--results", required=True, nargs="+", help="one or more run folders (side by side)")
    parser.add_argument("--csv", required=True, help="CSV file to write; the Markdown table goes beside it (.md)")
    parser.add_argument("--ratio", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="add the column CD2(RUN_A) / CD2(RUN_B); runs are named by their folder names")
    parser.add_argument("--rd", action="store_true",
                        help="also a rate-distortion report against QEM + Draco: <csv>-rd.csv, -rd.md, -rd.png")
    parser.add_argument("--rd-join", nargs="+", metavar="RUN",
                        help="with --rd: also one front over these runs together (e.g. two network widths)")
    parser.add_argument("--lod", type=int, help="score NGLOD runs at this LOD (1-based; default: the trained one)")
    parser.add_argument("--render", action="store_true",
                        help="also a picture per mesh, <csv>-render/<mesh>.png, and a run report, <csv>-report.md")
    parser.add_argument("--render-size", type=int, default=512, help="pixels per side of each picture (default 512)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when present)")
    add_logging_flags(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    if args.render_size < 16:
        raise InputError(f"--render-size must be at least 16, got {args.render_size}")
    device = pick_device(args.device)
    run_dirs, runs, mesh_paths = check_runs(args)
    rows, rd_points, rd_curves = [], [], {}
    render_dir = Path(args.csv).with_name(Path(args.csv).stem + "-render")
    for path in tqdm(mesh_paths, desc="meshes", disable=args.quiet):
        name = mesh_name(path)
        try:
            gt = GroundTruth(path)
        except InputError as exc:
            log.warning("%s", exc)
            rows += [{"mesh": name, "run": run, "status": f"failed: {exc}"} for run in runs]
            continue
        models = {}
        for run, run_dir in zip(runs, run_dirs):
            row, models[run] = scored_row(gt, run, run_dir, name, device, args.lod)
            rows.append(row)
        if args.rd:
            points, rd_curves[name] = rd_rows(gt, runs, run_dirs, name, device, args.rd_join or ())
            rd_points += points
        if args.render:
            try:
                render_row(gt, runs, run_dirs, name, rows, models, render_dir / f"{name}.png", args.render_size,
                           device, rd_curves[name]["draco"] if args.rd else None)
            except InputError as exc:
                log.warning("%s: no picture: %s", name, exc)
    csv_path = Path(args.csv)
    write_csv(csv_path, rows)
    table = markdown_table(rows, runs, [mesh_name(p) for p in mesh_paths], tuple(args.ratio) if args.ratio else None)
    atomic_write_text(csv_path.with_suffix(".md"), table)
    sys.stdout.write(table)
    if args.rd:
        write_rd(csv_path, rd_points, rd_curves, runs + (["+".join(args.rd_join)] if args.rd_join else []),
                 [mesh_name(p) for p in mesh_paths])
    if args.render:
        report = write_report(csv_path, table, [mesh_name(p) for p in mesh_paths], render_dir, args.rd)
        log.info("pictures in %s, report %s", render_dir, report)
    return 0


def check_runs(args) -> tuple[list[Path], list[str], list[Path]]:
    """The run folders, their names (folder names, or paths where those repeat) and the meshes any of them
    has a result for; InputError on a missing folder or an option that names no run."""
    run_dirs = [Path(r) for r in args.results]
    for r in run_dirs:
        if not r.is_dir():
            raise InputError(f"{r}: results folder not found")
    runs = [r.name if r.name else str(r) for r in run_dirs]
    if len(set(runs)) != len(runs):
        runs = [str(r) for r in run_dirs]
    if args.ratio and not set(args.ratio) <= set(runs):
        raise InputError(f"--ratio {' '.join(args.ratio)}: runs are named {', '.join(runs)}")
    if args.rd_join and not (args.rd and set(args.rd_join) <= set(runs)):
        raise InputError(f"--rd-join {' '.join(args.rd_join)}: needs --rd and runs among {', '.join(runs)}")
    mesh_paths = [p for p in list_meshes(args.mesh_dir)
                  if any(any(x is not None for x in find_run_files(r, mesh_name(p))) for r in run_dirs)]
    if not mesh_paths:
        raise InputError(f"{args.mesh_dir}: none of its meshes has a result in {', '.join(args.results)}")
    return run_dirs, runs, mesh_paths


def scored_row(gt: GroundTruth, run: str, run_dir: Path, name: str, device, lod: int | None
               ) -> tuple[dict, torch.nn.Module | None]:
    """One run's table row for one mesh (``evaluate_run``; a failure becomes the row's status) and the model
    it scored."""
    try:
        fields, model = evaluate_run(gt, run_dir, name, device, lod)
        row = {"mesh": name, "run": run, "status": "ok", **fields}
    except InputError as exc:
        log.warning("%s / %s: %s", run, name, exc)
        row, model = {"mesh": name, "run": run, "status": f"failed: {exc}"}, None
    log.debug("%s", row)
    return row, model


def write_rd(csv_path: Path, points: list[dict], curves: dict, runs: list[str], meshes: list[str]) -> None:
    """``<csv>-rd.csv`` (every point), ``-rd.md`` (shipped files against Draco) and ``-rd.png``."""
    stem = csv_path.with_name(csv_path.stem + "-rd")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["mesh", "method", "setting", "bytes", "cd2"])
    writer.writeheader()
    for p in points:
        writer.writerow({**p, "cd2": f"{p['cd2']:.6g}"})
    atomic_write_text(stem.with_suffix(".csv"), buf.getvalue())
    table, _ = rd_summary(points, runs, meshes)
    atomic_write_text(stem.with_suffix(".md"), table)
    rd.plot(stem.with_suffix(".png"), curves)
    sys.stdout.write("\n" + table)


if __name__ == "__main__":
    run_main(main)

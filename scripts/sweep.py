"""Robustness sweep: train every mesh of a folder (or a stratified sample of it) and tabulate how good each
shipped file is against its input.

    python scripts/sweep.py --mesh-dir ../shared/corpus/meshes --out runs/sweep/default --sample 48
    python scripts/sweep.py --mesh-dir ../shared/corpus/meshes --out runs/sweep/full --shard 0/4   # resumable
    python scripts/sweep.py --out runs/sweep/full --table                                         # tables only

The meshes are linked into ``<out>/meshes`` and trained by ``train_series.py`` into ``<out>/run`` (finished
meshes are skipped, so a killed sweep resumes; shards share one ``--out``). Each mesh's score is the run's
self-check (``selfcheck.py``: the paper's CD2 with its two one-sided terms, normal consistency, parts of the
input and of the reconstruction, the warning), computed from the files for runs that predate it. Writes
``<out>/sweep.csv`` (one row per mesh) and ``<out>/sweep.md``: per category the CD2 distribution (median,
p90, worst), the share at CD2 <= 0.1 and the meshes warned, then the worst meshes. Categories come from a
``manifest.csv`` beside the mesh folder (``../shared/corpus``'s), else every mesh is ``all``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train_series  # noqa: E402
from common import InputError, RunPaths, atomic_write_text, list_meshes, mesh_name, run_main  # noqa: E402
from mesh_kind import TargetField  # noqa: E402
from run_records import row_from_checkpoint, second_try_record  # noqa: E402
from selfcheck import CHAMFER_SAMPLES, WARN_CD2, parts, self_check, target_reconstruction  # noqa: E402
from sphere_sampler import load_mesh, normalize_mesh, sample_surface  # noqa: E402

FIELDS = ["mesh", "category", "kind", "faces", "parts_in", "parts_out", "status", "self_cd2", "self_cd2_gt_to_rec",
          "self_cd2_rec_to_gt", "normal_consistency", "warning", "target_cd2", "target_cd2_gt_to_rec",
          "target_cd2_rec_to_gt", "target_parts", "seconds", "first_cd2", "first_warning", "second_try"]
WORST = 15


def categories(mesh_dir: Path, manifest: Path | None) -> dict[str, str]:
    """Mesh name -> category from a manifest (``file`` and ``category`` columns; default: beside the folder the
    meshes, or the sweep's links to them, come from), {} without one."""
    if manifest is None:
        first = next(iter(sorted(mesh_dir.iterdir())), None) if mesh_dir.is_dir() else None
        source = first.resolve().parent if first is not None else mesh_dir
        manifest = source.parent / "manifest.csv"
    if not manifest.is_file():
        return {}
    return {mesh_name(Path(r["file"])): r["category"] for r in csv.DictReader(open(manifest))}


def stratified(meshes: list[Path], category: dict[str, str], count: int, seed: int = 0) -> list[Path]:
    """``count`` meshes drawn per category in proportion to its share (at least one each), seeded."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[Path]] = {}
    for path in meshes:
        groups.setdefault(category.get(mesh_name(path), "all"), []).append(path)
    chosen = []
    for name in sorted(groups):
        share = max(1, round(count * len(groups[name]) / len(meshes)))
        picks = rng.choice(len(groups[name]), min(share, len(groups[name])), replace=False)
        chosen += [groups[name][i] for i in sorted(picks)]
    return sorted(chosen)


def link_meshes(meshes: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in meshes:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path.resolve())


def score(mesh_path: Path, run: Path) -> dict:
    """The self-check of one trained mesh: from its checkpoint, or computed from its files for a checkpoint
    that has none."""
    paths = RunPaths(run / mesh_name(mesh_path))
    info = torch.load(paths.checkpoint, map_location="cpu", weights_only=True)
    check = info.get("self_check")
    if check is None:
        mesh, _ = normalize_mesh(load_mesh(mesh_path))
        recon = load_mesh(paths.reconstruction) if paths.reconstruction.is_file() else None
        check = self_check(*sample_surface(mesh, CHAMFER_SAMPLES, seed=0), parts(mesh), recon)
    second = second_try_record(paths)  # a warned mesh's first try, when its second one ships
    first, first_warning = check["self_cd2"], check["warning"]
    if second is not None and second["kept"] == "second":
        first, first_warning = second["first_self_cd2"], second["first_warning"]
    row = row_from_checkpoint(mesh_name(mesh_path), paths)
    return {**check, "kind": info["kind"], "faces": info["mesh"]["faces"], "seconds": float(row["seconds"]),
            "first_cd2": None if first in (None, "") else float(first), "first_warning": first_warning,
            "second_try": row["second_try"]}


def target_score(mesh_path: Path, run: Path, cache: Path) -> dict:
    """The self-check of the mesh's training target meshed at the run's ``mesh_res``
    (``selfcheck.target_reconstruction``), as ``target_*`` keys; cached in ``cache/<mesh>.json``."""
    cached = cache / f"{mesh_name(mesh_path)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    cfg = torch.load(RunPaths(run / mesh_name(mesh_path)).checkpoint, map_location="cpu", weights_only=True)["config"]
    mesh, _ = normalize_mesh(load_mesh(mesh_path))
    field = TargetField.of(mesh, cfg["sheet_shell"], cfg["sphere_grid"])
    check = self_check(*sample_surface(mesh, CHAMFER_SAMPLES, seed=0), parts(mesh),
                       target_reconstruction(field, cfg["mesh_res"]))
    result = {"target_cd2": check["self_cd2"], "target_cd2_gt_to_rec": check.get("self_cd2_gt_to_rec"),
              "target_cd2_rec_to_gt": check.get("self_cd2_rec_to_gt"), "target_parts": check["parts_out"]}
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cached, json.dumps(result))
    return result


def sweep_rows(mesh_folder: Path, run: Path, category: dict[str, str], with_target: bool = True) -> list[dict]:
    rows = []
    failed = {p.name[:-len(".failed.txt")]: p.read_text().strip() for p in run.glob("*.failed.txt")}
    for path in list_meshes(mesh_folder):
        name = mesh_name(path)
        row = {"mesh": name, "category": category.get(name, "all")}
        if RunPaths(run / name).checkpoint.is_file():
            row.update(status="ok", **score(path, run))
            if with_target:
                row.update(target_score(path, run, run.parent / "target"))
        else:
            row.update(status=f"failed: {failed[name]}" if name in failed else "not trained")
        rows.append(row)
    return rows


def distribution(rows: list[dict], first_try: bool = False) -> str:
    """Per category: meshes, median, p90 and worst CD2, the share at CD2 <= WARN_CD2, meshes warned: of the
    shipped files, or (``first_try``) of the first tries."""
    key, warned = ("first_cd2", "first_warning") if first_try else ("self_cd2", "warning")
    lines = ["| category | meshes | trained | median CD2 | p90 CD2 | worst CD2 | at CD2 <= 0.1 | warned |",
             "|---|---|---|---|---|---|---|---|"]
    for name in sorted({r["category"] for r in rows}) + ["all"]:
        group = [r for r in rows if name in ("all", r["category"])]
        values = [math.inf if r.get(key) is None else r[key] for r in group if r["status"] == "ok"]
        if not values:
            continue
        good = sum(v <= WARN_CD2 for v in values)
        lines.append(f"| {'**all**' if name == 'all' else name} | {len(group)} | {len(values)} | "
                     f"{np.median(values):.4f} | {np.quantile(values, 0.9):.4f} | {max(values):.4f} | "
                     f"{100 * good / len(values):.0f}% | {sum(bool(r.get(warned)) for r in group)} |")
    return "\n".join(lines) + "\n"


def worst_table(rows: list[dict]) -> str:
    ok = sorted((r for r in rows if r["status"] == "ok"),
                key=lambda r: -(math.inf if r.get("self_cd2") is None else r["self_cd2"]))[:WORST]
    lines = ["| mesh | category | kind | faces | parts in -> out | CD2 | input to recon. | recon. to input | warning "
             "| target CD2 | cause |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ok:
        cd2 = "-" if r.get("self_cd2") is None else f"{r['self_cd2']:.4f}"
        target = r.get("target_cd2", math.nan)
        target = math.inf if target is None else target
        cause = "-" if not r["warning"] or math.isnan(target) else ("target" if target > WARN_CD2 else "network")
        lines.append(f"| {r['mesh']} | {r['category']} | {r['kind']} | {r['faces']} | {r['parts_in']} -> "
                     f"{r['parts_out']} | {cd2} | {r.get('self_cd2_gt_to_rec', math.nan):.4f} | "
                     f"{r.get('self_cd2_rec_to_gt', math.nan):.4f} | {r['warning'] or '-'} | {target:.4f} | {cause} |")
    return "\n".join(lines) + "\n"


def write_tables(out: Path, rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    failed = [r for r in rows if r["status"].startswith("failed")]
    retried = [r for r in rows if r.get("second_try")]
    text = (f"# Sweep of {len(rows)} meshes\n\n{distribution(rows)}\nFailed to train: {len(failed)}"
            + "".join(f"\n- {r['mesh']}: {r['status']}" for r in failed)
            + f"\n\nTrained a second time (warned): {len(retried)}; the first tries alone:\n\n"
            + distribution(rows, first_try=True)
            + f"\n## The {WORST} worst\n\n{worst_table(rows)}")
    atomic_write_text(out / "sweep.md", text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Other --key=value flags go to train_series.py (config keys).")
    parser.add_argument("--mesh-dir", help="folder of meshes (default: the sweep's own <out>/meshes)")
    parser.add_argument("--out", required=True, help="sweep folder: meshes/, run/, sweep.csv, sweep.md")
    parser.add_argument("--sample", type=int, help="a stratified sample of this many meshes (by manifest category)")
    parser.add_argument("--manifest", help="CSV with file and category columns (default: beside the mesh folder)")
    parser.add_argument("--config", default="configs/default.yaml", help="training config (default: default.yaml)")
    parser.add_argument("--shard", metavar="I/N", help="train only shard I of N of the sweep's meshes")
    parser.add_argument("--table", action="store_true", help="only tabulate what is on disk")
    parser.add_argument("--no-target", action="store_true",
                        help="skip the target's own score (target_cd2: the training target meshed at mesh_res)")
    args, overrides = parser.parse_known_args(argv)
    out = Path(args.out)
    mesh_dir = Path(args.mesh_dir) if args.mesh_dir else out / "meshes"
    category = categories(mesh_dir, Path(args.manifest) if args.manifest else None)
    if not args.table:
        if not args.mesh_dir:
            raise InputError("--mesh-dir is required unless --table")
        meshes = list_meshes(mesh_dir)
        link_meshes(stratified(meshes, category, args.sample) if args.sample else meshes, out / "meshes")
        train_series.main(["--mesh-dir", str(out / "meshes"), "--out", str(out / "run"), "--config", args.config,
                           "--quiet", *(["--shard", args.shard] if args.shard else []), *overrides])
    if not (out / "meshes").is_dir() or not (out / "run").is_dir():
        raise InputError(f"{out}: no sweep there (no meshes/ or run/)")
    sys.stdout.write(write_tables(out, sweep_rows(out / "meshes", out / "run", category, not args.no_target)))
    return 0


if __name__ == "__main__":
    run_main(main)

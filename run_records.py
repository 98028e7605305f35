"""The records of a run folder: one summary row per mesh, failure records, resuming and ``--merge``.

A run folder ``<out>/`` holds a folder per finished mesh (``RunPaths``), ``<mesh>.failed.txt`` per failed
one, ``.<mesh>.tmp`` while a mesh is in progress, and ``summary.csv`` (or one per shard).
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from pathlib import Path

import torch

from common import RunPaths, atomic_write_text, mesh_name

log = logging.getLogger("keysphere")
SUMMARY_FIELDS = ["mesh", "status", "kind", "seconds", "final_loss", "numbers", "bytes", "ksdf_bytes",
                  "checkpoint_bytes", "watertight", "self_cd2", "floaters", "warning"]
FAILED_SUFFIX = ".failed.txt"




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
    check = data.get("self_check") or {}  # runs written before the self-check have none
    self_cd2 = check.get("self_cd2")
    return {"mesh": name, "status": status, "kind": data["mesh"].get("kind", ""), "seconds": f"{data['seconds']:.1f}",
            "final_loss": f"{data['loss']:.6g}", "numbers": data["numbers"], "bytes": data["bytes"],
            "ksdf_bytes": data.get("ksdf_bytes", ""), "checkpoint_bytes": paths.checkpoint.stat().st_size,
            "watertight": data["mesh"]["watertight"], "self_cd2": "" if self_cd2 is None else f"{self_cd2:.6g}",
            "floaters": check.get("floaters", ""), "warning": check.get("warning", "")}


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

"""The records of a run folder: one summary row per mesh, failure records, resuming and ``--merge``.

A run folder ``<out>/`` holds a folder per finished mesh (``RunPaths``), ``<mesh>.failed.txt`` per failed
one, ``.<mesh>.tmp`` while a mesh is in progress, ``.retry/`` (a run folder of its own) while warned meshes
train a second time, and ``summary.csv`` (or one per shard). A mesh that had a second try keeps the better of
the two in its folder, with ``retry.json`` saying what each scored.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
from pathlib import Path

import torch

from common import InputError, RunPaths, atomic_write_text, mesh_name, replace_dir

log = logging.getLogger("keysphere")
SUMMARY_FIELDS = ["mesh", "status", "kind", "seconds", "final_loss", "numbers", "bytes", "ksdf_bytes",
                  "checkpoint_bytes", "watertight", "self_cd2", "floaters", "warning", "second_try"]
FAILED_SUFFIX = ".failed.txt"
RETRY_DIR = ".retry"  # the run folder of second tries, inside the run folder
RETRY_RECORD = "retry.json"


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
    second = second_try_record(paths)  # the seconds of a mesh trained twice count both tries
    seconds = data["seconds"] + (0.0 if second is None else second["other_seconds"])
    return {"mesh": name, "status": status, "kind": data["mesh"].get("kind", ""), "seconds": f"{seconds:.1f}",
            "final_loss": f"{data['loss']:.6g}", "numbers": data["numbers"], "bytes": data["bytes"],
            "ksdf_bytes": data.get("ksdf_bytes", ""), "checkpoint_bytes": paths.checkpoint.stat().st_size,
            "watertight": data["mesh"]["watertight"], "self_cd2": "" if self_cd2 is None else f"{self_cd2:.6g}",
            "floaters": check.get("floaters", ""), "warning": check.get("warning", ""),
            "second_try": second_try_text(second)}


def second_try_record(paths: RunPaths) -> dict | None:
    """``retry.json`` of a mesh folder: the two tries' scores (None: the mesh had no second try)."""
    record = paths.dir / RETRY_RECORD
    return json.loads(record.read_text()) if record.is_file() else None


def second_try_text(record: dict | None) -> str:
    """The summary's ``second_try`` column: empty, or which try ships and what the other scored."""
    if record is None:
        return ""
    if record["kept"] == "second":
        return f"kept (first {record['first_self_cd2'] or '-'})"
    return f"not kept ({record['second_self_cd2'] or record['second_status']})"


def needs_second_try(row: dict | None, out: Path) -> bool:
    """Whether a mesh's row asks for a second training: it trained, its self-check warned, and it had none."""
    return (row is not None and row["status"].startswith("ok") and bool(row.get("warning"))
            and not (out / row["mesh"] / RETRY_RECORD).is_file())


def keep_better(out: Path, second: dict) -> dict:
    """After a warned mesh's second try (``second``: its row in ``<out>/.retry``), keep the try with the lower
    self-check CD2 in ``<out>/<mesh>`` with a ``retry.json`` of both tries' scores, drop the other; returns the
    kept row."""
    name = second["mesh"]
    first_paths, second_paths = RunPaths(out / name), RunPaths(out / RETRY_DIR / name)
    first = row_from_checkpoint(name, first_paths)

    def cd2(row):
        return float(row["self_cd2"]) if row["status"].startswith("ok") and row.get("self_cd2") else math.inf

    kept = "second" if cd2(second) < cd2(first) else "first"
    record = {"kept": kept, "first_self_cd2": first["self_cd2"], "first_warning": first["warning"],
              "second_self_cd2": second.get("self_cd2", ""), "second_warning": second.get("warning", ""),
              "second_status": second["status"],
              "other_seconds": float(second.get("seconds") or 0) if kept == "first" else float(first["seconds"])}
    log.info("%s: second try CD2 %s, first %s: the %s ships", name, second.get("self_cd2") or second["status"],
             first["self_cd2"], kept)
    if kept == "second":  # the record travels with the folder it describes
        atomic_write_text(second_paths.dir / RETRY_RECORD, json.dumps(record) + "\n")
        replace_dir(second_paths.dir, first_paths.dir)
    else:
        atomic_write_text(first_paths.dir / RETRY_RECORD, json.dumps(record) + "\n")
        shutil.rmtree(second_paths.dir, ignore_errors=True)
    failure_record(second_paths).unlink(missing_ok=True)
    return row_from_checkpoint(name, first_paths)


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


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``--shard I/N`` (0 <= I < N) -> (I, N); None -> None."""
    if text is None:
        return None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise InputError(f"--shard {text}: need 0 <= I < N")
    return index, count


def merge_run(out: str | None) -> int:
    """``--merge``: rebuild ``<out>/summary.csv`` from what is on disk; returns the exit status."""
    if not out or not Path(out).is_dir():
        raise InputError(f"--merge needs --out with an existing run folder, got {out!r}")
    rows = merged_rows(Path(out))
    write_summary(Path(out) / "summary.csv", rows)
    log.info("%d meshes (%d failed) -> %s", len(rows), sum(r["status"].startswith("failed") for r in rows),
             Path(out) / "summary.csv")
    return 0

"""The paper's Table 1 in our harness: one row per system (eval.py CSVs; NGLOD once per ``--lod``).

    python scripts/table1.py results/table1/ks-ni.csv results/table1/nglod-lod2.csv ... > results/table1/table1.md
    python scripts/table1.py results/thingi32/*.csv --exclude 58168     # without a mesh

Every CSV row is one mesh of one run; a system is a run at one LOD. Per system: the number of meshes, mean
and median CD2, mean gIoU (half uniform, half near-surface points), IoU (uniform points), F-score and normal
consistency, mean stored numbers, float32 kilobytes (4 bytes a number), ``.ksdf`` kilobytes and seconds per
mesh (preparation, training and files; "-" for a released model, whose cost is unknown).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path


def systems(paths: list[Path], exclude: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """Rows by system label (run name, and " LOD k" for a row scored at an NGLOD LOD), ok rows only, without
    the meshes named in ``exclude``."""
    out: dict[str, list[dict]] = {}
    for path in paths:
        for row in csv.DictReader(open(path)):
            if row["status"] != "ok" or row["mesh"] in exclude:
                continue
            label = row["run"] + (f" LOD {row['lod']}" if row.get("lod") else "")
            out.setdefault(label, []).append(row)
    return out


def mean(rows: list[dict], key: str, scale: float = 1.0, form: str = ".2f") -> str:
    """The mean of a column over rows that have it, formatted; "-" when none has it."""
    values = [float(r[key]) * scale for r in rows if r.get(key) and math.isfinite(float(r[key]))]
    return format(statistics.fmean(values), form) if values else "-"


def table(groups: dict[str, list[dict]]) -> str:
    lines = ["| system | meshes | CD2 mean | CD2 median | gIoU | IoU | F-score | normal cons. | numbers | float32 KB "
             "| .ksdf KB | s per mesh |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, rows in groups.items():
        cd2 = [float(r["cd2"]) for r in rows]
        lines.append(f"| {label} | {len(rows)} | {statistics.fmean(cd2):.4f} | {statistics.median(cd2):.4f} | "
                     f"{mean(rows, 'giou')} | {mean(rows, 'iou')} | {mean(rows, 'fscore', form='.3f')} | "
                     f"{mean(rows, 'normal_consistency', form='.3f')} | {mean(rows, 'numbers', form=',.0f')} | "
                     f"{mean(rows, 'float_bytes', 1e-3, '.1f')} | {mean(rows, 'ksdf_bytes', 1e-3, '.1f')} | "
                     f"{mean(rows, 'seconds', form='.0f')} |")
    meshes = sorted({r["mesh"] for rows in groups.values() for r in rows})
    lines += ["", "| CD2 per mesh | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for mesh in meshes:
        cells = [next((f"{float(r['cd2']):.4f}" for r in rows if r["mesh"] == mesh), "-") for rows in groups.values()]
        lines.append(f"| {mesh} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="+", help="eval.py CSV files")
    parser.add_argument("--exclude", nargs="*", default=[], help="meshes to leave out of every system")
    args = parser.parse_args(argv)
    missing = [p for p in args.csv if not Path(p).is_file()]
    if missing:
        sys.stderr.write(f"{missing[0]}: file not found\n")
        return 1
    sys.stdout.write(table(systems([Path(p) for p in args.csv], tuple(args.exclude))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One row per run and mesh, a CD2 and floater count per LOD, from ``eval.py --lod k`` CSVs of NGLOD runs.

    python scripts/floater_table.py results/nglod-floaters/252119-lod{1,2,3,4}.csv > results/nglod-floaters/table.md
"""

from __future__ import annotations

import csv
import sys


def main(paths: list[str]) -> int:
    cells: dict[tuple[str, str], dict[int, dict]] = {}
    for path in paths:
        for row in csv.DictReader(open(path)):
            if row["status"] == "ok":
                cells.setdefault((row["run"], row["mesh"]), {})[int(row["lod"])] = row
    lods = sorted({lod for by_lod in cells.values() for lod in by_lod})
    header = ["run", "mesh"] + [f"LOD {k} CD2" for k in lods] + [f"LOD {k} floaters" for k in lods] + ["warnings"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (run, mesh), by_lod in cells.items():
        warnings = "; ".join(f"LOD {k}: {by_lod[k]['warning']}" for k in lods if by_lod.get(k, {}).get("warning"))
        lines.append("| " + " | ".join([run, mesh] + [f"{float(by_lod[k]['cd2']):.4f}" if k in by_lod else "-"
                                                      for k in lods]
                                        + [by_lod[k]["floaters"] if k in by_lod else "-" for k in lods]
                                        + [warnings]) + " |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

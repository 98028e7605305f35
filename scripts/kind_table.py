"""Kind, trust in the winding number, its agreement and classify seconds (one thread) of every corpus mesh whose
surface is not closed (not watertight, or inconsistently oriented): the meshes whose agreement is sampled.

    python scripts/kind_table.py [CORPUS_DIR] > results/preparation/not-closed-classify-after.csv

CORPUS_DIR holds manifest.csv (default ../shared/corpus). Prints CSV with its header line.
"""

from __future__ import annotations

import csv
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mesh_kind  # noqa: E402
from sphere_sampler import load_mesh, normalize_mesh  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    corpus = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpus")
    with open(corpus / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    sys.stdout.write("mesh,kind,trust_winding,agreement_percent,classify_s,faces\n")
    for row in rows:
        mesh, _ = normalize_mesh(load_mesh(corpus / row["file"]))
        if all(mesh_kind.topology(mesh.vertices, mesh.faces)):
            continue
        start = time.perf_counter()
        analysis = mesh_kind.classify(mesh.vertices, mesh.faces)
        seconds = time.perf_counter() - start
        agreement = re.search(r"agrees on ([0-9.]+)%", analysis.reason)
        sys.stdout.write(f"{Path(row['file']).name},{analysis.kind},{analysis.trust_winding},"
                         f"{agreement.group(1) if agreement else '-'},{seconds:.2f},{len(mesh.faces)}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

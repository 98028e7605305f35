"""Meshes of several closed parts: their kind and the target's own score (``selfcheck.target_reconstruction``)
signed as before (one winding number, or the flood fill and the wall band) and as the union of the parts.

    python scripts/union_check.py [CORPUS_DIR] > results/robustness/union-targets.csv

Takes the corpus meshes that are watertight with two or more parts (manifest.csv of CORPUS_DIR, default
../shared/corpus). Prints CSV with its header line; one thread.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mesh_kind  # noqa: E402
from common import TrainConfig  # noqa: E402
from selfcheck import CHAMFER_SAMPLES, self_check, target_reconstruction  # noqa: E402
from sphere_sampler import load_mesh, normalize_mesh, sample_surface  # noqa: E402


def target_score(mesh, reference, parts_in: int) -> tuple[str, str, float | None]:
    """Kind, reason and target CD2 of a normalized mesh under the current classification."""
    cfg = TrainConfig()
    field = mesh_kind.TargetField.of(mesh, cfg.sheet_shell, cfg.sphere_grid)
    check = self_check(*reference, parts_in, target_reconstruction(field, cfg.mesh_res))
    return field.kind, field.analysis.reason, check["self_cd2"]


def main() -> int:
    torch.set_num_threads(1)
    corpus = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpus")
    with open(corpus / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["watertight"] == "true" and int(r["components"]) > 1]
    sys.stdout.write("mesh,category,faces,parts,kind_before,kind_after,union,target_cd2_before,target_cd2_after\n")
    for row in rows:
        mesh, _ = normalize_mesh(load_mesh(corpus / row["file"]))
        reference = sample_surface(mesh, CHAMFER_SAMPLES, seed=0)
        after = target_score(mesh, reference, int(row["components"]))
        union = "signed as their union" in after[1]
        before = after
        if union:
            with mock.patch.object(mesh_kind, "union_kind", lambda *a: None):
                before = target_score(mesh, reference, int(row["components"]))
        cells = [Path(row["file"]).stem, row["category"], row["faces"], row["components"], before[0], after[0],
                 str(union)] + ["-" if s[2] is None else f"{s[2]:.4f}" for s in (before, after)]
        sys.stdout.write(",".join(cells) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training targets two ways, side by side: the exact distance with the winding number's sign, and (where the
classification trusts it) the distance signed by the angle-weighted pseudonormal (one AABB query).

    python scripts/pseudonormal_check.py MESH ... > results/preparation/pseudonormal-check.csv

Per mesh: its kind, whether its classification trusts the pseudonormal, 200,000 training points drawn as
``configs/default.yaml`` draws them (seed 0), the seconds of each way, the points whose sign differs and the
largest |target| among them, and the largest difference of magnitude.
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import replace
from pathlib import Path

import igl
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mesh_kind  # noqa: E402
from common import TrainConfig  # noqa: E402
from mesh_kind import TargetField  # noqa: E402
from sphere_sampler import load_mesh, normalize_mesh, sample_training_points  # noqa: E402

FIELDS = ["mesh", "kind", "pseudonormal", "faces", "points", "seconds_winding", "seconds_pseudonormal",
          "sign_differences", "max_abs_at_difference", "exact_agrees_with_winding", "exact_agrees_with_pseudonormal",
          "max_magnitude_difference"]


def exact_inside(points: np.ndarray, field: TargetField) -> np.ndarray:
    """(n,) bool: inside by igl's exact generalized winding number (the union's: any part's |w| > 1/2)."""
    parts = field.analysis.parts or (np.arange(len(field.faces)),)
    w = [np.abs(igl.winding_number(field.vertices, field.faces[p], points)) for p in parts] if len(points) else []
    return np.max(w, axis=0) > 0.5 if len(points) else np.zeros(0, dtype=bool)


def compare(path: Path, cfg: TrainConfig) -> dict | None:
    """One mesh's row (None for a sheet, whose target has no sign)."""
    mesh, _ = normalize_mesh(load_mesh(path))
    field = TargetField.of(mesh, cfg.sheet_shell, cfg.sphere_grid)
    if field.kind == "sheet":
        return None
    points, _ = sample_training_points(field, cfg.pool_uniform, cfg.pool_surface, cfg.surface_noise,
                                       cfg.importance_beta, 200_000, cfg.seed, cfg.uniform_fraction)
    points = points.numpy().astype(np.float64)
    start = time.perf_counter()
    by_winding = mesh_kind.target_sdf(points, field.vertices, field.faces,
                                      replace(field.analysis, pseudonormal=False), field.shell)
    middle = time.perf_counter()
    shipped = field.sdf(points)
    end = time.perf_counter()
    differ = np.sign(by_winding) != np.sign(shipped)
    # the judge at the points that differ: the exact (slow) generalized winding number, of the union's parts
    exact = exact_inside(points[differ], field)
    return {"mesh": path.stem, "kind": field.kind, "pseudonormal": field.analysis.pseudonormal,
            "faces": len(field.faces), "points": len(points), "seconds_winding": f"{middle - start:.2f}",
            "seconds_pseudonormal": f"{end - middle:.2f}", "sign_differences": int(differ.sum()),
            "max_abs_at_difference": f"{np.abs(by_winding[differ]).max() if differ.any() else 0:.3g}",
            "exact_agrees_with_winding": int((exact == (by_winding[differ] < 0)).sum()),
            "exact_agrees_with_pseudonormal": int((exact == (shipped[differ] < 0)).sum()),
            "max_magnitude_difference": f"{np.abs(np.abs(by_winding) - np.abs(shipped)).max():.3g}"}


def main(argv: list[str]) -> int:
    writer = csv.DictWriter(sys.stdout, FIELDS)
    writer.writeheader()
    for name in argv:
        row = compare(Path(name), TrainConfig())
        if row is not None:
            writer.writerow(row)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Check the closed kind's targets and occupancy against the definitions they replace, mesh by mesh.

    python scripts/target_check.py MESH [MESH ...] > results/preparation/closed-targets.csv

For every mesh classified ``closed``: 450,000 points (200,000 surface samples moved by N(0, 0.03), as many by
N(0, 0.003), 50,000 uniform in the cube, seeded) get ``mesh_kind.target_sdf`` and igl's fast-winding-number
signed distance over all faces, the previous definition of a closed target; the row gives the points whose sign
differs, the largest distance to the surface among them, the largest difference of magnitude (igl's scales
the distance by |1 - 2w| of the approximated winding number w), and the seconds of each (one thread). Then the
occupancy of the 128^3 nodes from ``classify`` against the winding number evaluated at every node.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import igl
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mesh_kind  # noqa: E402
from common import InputError  # noqa: E402
from grid import node_points  # noqa: E402
from sphere_sampler import load_mesh, normalize_mesh, sample_surface  # noqa: E402


def check(path: Path) -> str | None:
    mesh, _ = normalize_mesh(load_mesh(path))
    start = time.perf_counter()
    analysis = mesh_kind.classify(mesh.vertices, mesh.faces)
    classify_s = time.perf_counter() - start
    if analysis.kind != "closed":
        return None
    start = time.perf_counter()
    full = mesh_kind.winding_number(node_points(analysis.grid), mesh.vertices, mesh.faces) > 0.5
    full_s = time.perf_counter() - start
    occupancy_diff = int((full.reshape(analysis.winding.shape) != (analysis.winding > 0.5)).sum())
    rng = np.random.default_rng(0)
    surface, _ = sample_surface(mesh, 200_000, seed=0)
    points = np.concatenate([surface + rng.normal(0, 0.03, surface.shape),
                             surface + rng.normal(0, 0.003, surface.shape), rng.uniform(-1, 1, (50_000, 3))])
    start = time.perf_counter()
    before, *_ = igl.signed_distance(points, mesh.vertices, mesh.faces,
                                     sign_type=igl.SIGNED_DISTANCE_TYPE_FAST_WINDING_NUMBER)
    before_s = time.perf_counter() - start
    start = time.perf_counter()
    after = mesh_kind.target_sdf(points, mesh.vertices, mesh.faces, analysis, 0.0)
    after_s = time.perf_counter() - start
    differ = np.sign(before) != np.sign(after)
    at = np.abs(after[differ]).max() if differ.any() else 0.0
    return (f"{path.name},{len(mesh.faces)},{len(points)},{int(differ.sum())},{at:.2e},"
            f"{np.abs(np.abs(before) - np.abs(after)).max():.2e},{before_s:.2f},{after_s:.2f},{occupancy_diff},"
            f"{full_s:.2f},{classify_s:.2f}")


def main() -> int:
    torch.set_num_threads(1)
    sys.stdout.write("mesh,faces,points,sign_differences,largest_distance_at_a_difference,largest_magnitude_difference,"
                     "igl_fwn_s,target_sdf_s,occupancy_differences,winding_every_node_s,classify_s\n")
    for name in sys.argv[1:]:
        try:
            row = check(Path(name))
        except InputError as err:
            sys.stderr.write(f"{err}\n")
            continue
        if row:
            sys.stdout.write(row + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

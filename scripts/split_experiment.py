"""Targets of a mesh against the same mesh with its long edges split (trimesh.remesh.subdivide_to_size): time,
largest difference of |target| and sign differences on 140,000 seeded points per mesh.

    python scripts/split_experiment.py MAX_EDGE MESH.ply [MESH.ply ...] > results/preparation/split-experiment.csv

Sheets are offset by the default config's ``sheet_shell``, the same on both sides of the comparison.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import trimesh
from trimesh.remesh import subdivide_to_size

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mesh_kind  # noqa: E402
from common import TrainConfig  # noqa: E402
from sphere_sampler import load_mesh, normalize_mesh  # noqa: E402

HEADER = "mesh,kind,faces,split_faces,split_s,target_s,split_target_s,max_abs_diff,sign_differences\n"


def main() -> None:
    max_edge, shell = float(sys.argv[1]), TrainConfig().sheet_shell
    sys.stdout.write(HEADER)
    for path in sys.argv[2:]:
        mesh, _ = normalize_mesh(load_mesh(path))
        vertices, faces = np.asarray(mesh.vertices, float), np.asarray(mesh.faces)
        analysis = mesh_kind.classify(vertices, faces)
        rng = np.random.default_rng(0)
        surface, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False), 60000, seed=0)
        points = np.concatenate([surface + rng.normal(0, 0.03, surface.shape),
                                 surface + rng.normal(0, 0.003, surface.shape), rng.uniform(-1, 1, (20000, 3))])
        start = time.perf_counter()
        base = mesh_kind.target_sdf(points, vertices, faces, analysis, shell)
        base_s = time.perf_counter() - start
        start = time.perf_counter()
        split_vertices, split_faces = subdivide_to_size(vertices, faces, max_edge)
        split_s = time.perf_counter() - start
        start = time.perf_counter()
        split = mesh_kind.target_sdf(points, split_vertices, split_faces, analysis, shell)
        target_s = time.perf_counter() - start
        signs = int((np.sign(base) != np.sign(split)).sum())
        sys.stdout.write(f"{Path(path).stem},{analysis.kind},{len(faces)},{len(split_faces)},{split_s:.2f},"
                         f"{base_s:.2f},{target_s:.2f},{np.abs(np.abs(base) - np.abs(split)).max():.2e},{signs}\n")


if __name__ == "__main__":
    main()

"""Write the project's own demo meshes into data/shapes/: procedural, deterministic, a few KB each.

    python data/make_shapes.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from skimage.measure import marching_cubes

OUT = Path(__file__).resolve().parent / "shapes"


def dumbbell_sdf(p: np.ndarray) -> np.ndarray:
    """Two balls of radius 0.45 at x = +-1 joined by a bar of radius 0.12: the union of their distances."""
    balls = np.minimum(np.linalg.norm(p - [1, 0, 0], axis=-1), np.linalg.norm(p + [1, 0, 0], axis=-1)) - 0.45
    along = np.clip(p[..., 0], -1, 1)
    bar = np.sqrt((p[..., 0] - along) ** 2 + p[..., 1] ** 2 + p[..., 2] ** 2) - 0.12
    return np.minimum(balls, bar)


def shapes() -> dict[str, trimesh.Trimesh]:
    """Closed test shapes with features the method must handle: a hole, a thin part, extremities."""
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3, major_sections=48, minor_sections=16)
    # one clean surface (no internal faces) from the analytic distance by marching cubes
    res = 64
    axis = np.linspace(-1.6, 1.6, res)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    verts, faces, _, _ = marching_cubes(dumbbell_sdf(grid), level=0.0, spacing=(3.2 / (res - 1),) * 3)
    dumbbell = trimesh.Trimesh(verts - 1.6, faces)
    return {"torus": torus, "dumbbell": dumbbell}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, mesh in shapes().items():
        mesh.export(OUT / f"{name}.obj", digits=5)


if __name__ == "__main__":
    main()

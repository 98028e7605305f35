"""Write the project's own demo meshes into data/shapes/: procedural, deterministic, a few KB each.

    python data/make_shapes.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

OUT = Path(__file__).resolve().parent / "shapes"


def shapes() -> dict[str, trimesh.Trimesh]:
    """Closed test shapes with features the method must handle: a hole, thin parts, extremities."""
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3, major_sections=48, minor_sections=16)
    # overlapping parts: the winding number treats their union as the solid
    bar = trimesh.creation.cylinder(radius=0.12, height=2.0, sections=24)
    bar.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    ends = [trimesh.creation.icosphere(subdivisions=3, radius=0.45).apply_translation([s, 0, 0]) for s in (-1, 1)]
    dumbbell = trimesh.util.concatenate([bar, *ends])
    # long thin triangles make the fast winding number slow (it falls back to exact sums near them)
    return {name: trimesh.Trimesh(*trimesh.remesh.subdivide_to_size(m.vertices, m.faces, max_edge=0.3))
            for name, m in {"torus": torus, "dumbbell": dumbbell}.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, mesh in shapes().items():
        mesh.export(OUT / f"{name}.obj", digits=5)


if __name__ == "__main__":
    main()

"""Write a corpus of broken meshes, the kinds of damage real datasets hold, each with the kind it should get.

    python data/make_broken.py OUT_DIR [--large]     # --large adds a 2M-face sphere (about 100 MB as OBJ)

The tests build the same meshes in memory (``broken_meshes``); the files are for training runs and benches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import trimesh


def _sphere(subdivisions: int = 4, radius: float = 1.0, center=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius).apply_translation(center)


def _top_faces(mesh: trimesh.Trimesh, count: int) -> np.ndarray:
    """Indices of the ``count`` faces whose centres are highest (largest z)."""
    return np.argsort(-mesh.triangles_center[:, 2])[:count]


def broken_meshes() -> dict[str, tuple[trimesh.Trimesh, str]]:
    """Small damaged meshes and the kind ``mesh_kind.classify`` should give each (closed, leaky, sheet)."""
    rng = np.random.default_rng(0)
    sphere = _sphere()
    keep = np.ones(len(sphere.faces), dtype=bool)
    keep[_top_faces(sphere, 2)] = False
    with_hole = trimesh.Trimesh(sphere.vertices, sphere.faces[keep], process=False)
    lower = sphere.triangles_center[:, 2] < 0.2
    open_bowl = trimesh.Trimesh(sphere.vertices, sphere.faces[lower], process=False)
    boxes = trimesh.util.concatenate([trimesh.creation.box((1.0, 1.0, 1.0)),
                                      trimesh.creation.box((1.0, 1.0, 1.0)).apply_translation((0.5, 0.4, 0.3))])
    flipped_faces = sphere.faces.copy()
    flip = rng.choice(len(flipped_faces), len(flipped_faces) // 10, replace=False)
    flipped_faces[flip] = flipped_faces[flip][:, ::-1]
    duplicated = np.concatenate([sphere.faces, sphere.faces[rng.choice(len(sphere.faces), 50, replace=False)]])
    partition = trimesh.creation.box((1.6, 1.6, 1e-6))
    partition = trimesh.Trimesh(partition.vertices, partition.faces[partition.vertices[partition.faces][:, :, 2]
                                                                     .mean(1) > 0], process=False)  # one square
    with_inner = trimesh.util.concatenate([trimesh.creation.box((2.0, 2.0, 2.0)), partition])
    grid = np.linspace(-1, 1, 21)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    idx = np.arange(21 * 21).reshape(21, 21)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    square = trimesh.Trimesh(np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1),
                             np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]), process=False)
    parts = trimesh.util.concatenate([_sphere(3, 0.5, (-0.8, 0, 0)), _sphere(3, 0.3, (0.6, 0, 0)),
                                      trimesh.creation.box((0.3, 0.3, 0.3)).apply_translation((0, 0.8, 0))])
    flipped_box = trimesh.creation.box((0.5, 0.9, 0.4)).apply_translation((0.35, 0.2, 0.1))
    flipped_box.faces = flipped_box.faces[:, ::-1]  # inside out
    union = trimesh.util.concatenate([trimesh.creation.box((0.8, 0.6, 0.5)), flipped_box,
                                      trimesh.creation.box((0.3, 0.3, 0.3)).apply_translation((-0.5, -0.3, 0.3))])
    n = len(sphere.vertices)
    slivers = np.stack([np.arange(0, 60), np.arange(0, 60), np.arange(1, 61)], 1)  # a repeated vertex: zero area
    degenerate = trimesh.Trimesh(sphere.vertices, np.concatenate([sphere.faces, slivers % n]), process=False)
    return {
        "sphere-with-hole": (with_hole, "leaky"),
        "open-bowl": (open_bowl, "sheet"),
        "intersecting-boxes": (boxes, "leaky"),
        "overlapping-parts-one-inside-out": (union, "leaky"),  # UNION_BOXES: its analytic SDF
        "flipped-faces": (trimesh.Trimesh(sphere.vertices, flipped_faces, process=False), "leaky"),
        "duplicated-faces": (trimesh.Trimesh(sphere.vertices, duplicated, process=False), "leaky"),
        "inner-faces": (with_inner, "leaky"),
        "square-sheet": (square, "sheet"),
        "disjoint-parts": (parts, "closed"),
        "degenerate-faces": (degenerate, "closed"),
    }


# (centre, half extents) of the boxes of "overlapping-parts-one-inside-out": its solid is their union, whose
# signed distance as the min of the parts' (the target of a mesh of closed parts) is min_k box_k(p)
UNION_BOXES = (((0.0, 0.0, 0.0), (0.4, 0.3, 0.25)), ((0.35, 0.2, 0.1), (0.25, 0.45, 0.2)),
               ((-0.5, -0.3, 0.3), (0.15, 0.15, 0.15)))


def large_sphere(faces: int = 2_000_000) -> trimesh.Trimesh:
    """A closed UV sphere with about ``faces`` faces."""
    count = int(np.sqrt(faces / 4))  # a UV sphere of count x count segments has about 4 count^2 faces
    return trimesh.creation.uv_sphere(radius=1.0, count=(count, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write the meshes into (OBJ)")
    parser.add_argument("--large", action="store_true", help="also a closed sphere of about 2M faces")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (mesh, _) in broken_meshes().items():
        mesh.export(out / f"{name}.obj", digits=6)
    if args.large:
        large_sphere().export(out / "sphere-2M.obj", digits=6)


if __name__ == "__main__":
    main()

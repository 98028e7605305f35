"""Write randomly rotated copies of meshes: a dataset of many distinct meshes for benches (copy 0 is the mesh).

    python scripts/rotated_copies.py --copies 8 --out DIR MESH [MESH ...]

A rotation changes what the network must learn (the normalized frame is axis-aligned), so each copy is a
training problem of its own with the same difficulty as its original. Seeded: the same call writes the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("meshes", nargs="+", help="mesh files")
    parser.add_argument("--copies", type=int, default=8, help="copies per mesh, the first unrotated (default 8)")
    parser.add_argument("--out", required=True, help="output folder (OBJ files <mesh>-rNN.obj)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.meshes):
        mesh = trimesh.load(path, force="mesh", process=False)
        rotations = Rotation.random(args.copies, random_state=np.random.default_rng(0)).as_matrix()
        for k, rotation in enumerate(rotations):
            copy = mesh.copy()
            if k:
                copy.vertices = copy.vertices @ rotation.T
            copy.export(out / f"{path.stem}-r{k:02d}.obj", digits=7)


if __name__ == "__main__":
    main()

"""Check the closed kind's classification against the winding number at every node, mesh by mesh.

    python scripts/classify_check.py MESH [MESH ...] > results/preparation/classify-check.csv

For every mesh classified ``closed``: the nodes of the 128^3 grid whose occupancy (``MeshKind.winding`` above
1/2, which ``classify`` evaluates only at the wall and once per off-wall region) differs from the winding
number evaluated at every node, and the seconds of each (one thread).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mesh_kind  # noqa: E402
from common import InputError  # noqa: E402
from grid import node_points  # noqa: E402
from sphere_sampler import load_mesh, normalize_mesh  # noqa: E402


def check(path: Path) -> str | None:
    mesh, _ = normalize_mesh(load_mesh(path))
    start = time.perf_counter()
    analysis = mesh_kind.classify(mesh.vertices, mesh.faces)
    classify_s = time.perf_counter() - start
    if analysis.kind != "closed":
        return None
    start = time.perf_counter()
    every = mesh_kind.winding_number(node_points(analysis.grid), mesh.vertices, mesh.faces) > 0.5
    every_s = time.perf_counter() - start
    differ = int((every.reshape(analysis.winding.shape) != (analysis.winding > 0.5)).sum())
    return f"{path.name},{len(mesh.faces)},{differ},{classify_s:.2f},{every_s:.2f}"


def main() -> int:
    torch.set_num_threads(1)
    sys.stdout.write("mesh,faces,occupancy_differences,classify_s,winding_every_node_s\n")
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

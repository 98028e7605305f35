"""CD2 of runs of ``overlapping-parts-one-inside-out`` (``data/make_broken.py``) against the union's boundary:
the input's surface samples that lie on no other box (its buried faces are not on the solid).

    python data/make_broken.py runs/broken && mkdir -p runs/union1
    cp runs/broken/overlapping-parts-one-inside-out.obj runs/union1/
    python train_series.py --mesh-dir runs/union1 --out runs/union-after --cache-dir none --threads=1
    python scripts/union_boundary.py runs/union-before runs/union-after
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402
from make_broken import UNION_BOXES, broken_meshes  # noqa: E402

from metrics import chamfer  # noqa: E402
from sphere_sampler import Mesh, Normalization, sample_surface  # noqa: E402

tm, _ = broken_meshes()["overlapping-parts-one-inside-out"]


def box_sdf(p, c, h):
    q = np.abs(p - c) - h
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
pts, _ = sample_surface(Mesh(np.asarray(tm.vertices), np.asarray(tm.faces)), 400000, seed=0)
d = np.min([box_sdf(pts, np.array(c), np.array(h)) for c, h in UNION_BOXES], axis=0)
boundary = pts[np.abs(d) < 1e-9]

sys.stdout.write(f"boundary share of the input's area {len(boundary) / len(pts):.3f}\n")
for r in sys.argv[1:]:
    run = Path(r) / "overlapping-parts-one-inside-out"
    ck = torch.load(run / "model.pt", weights_only=True)
    norm = Normalization.from_dict(ck["normalization"])
    rec = trimesh.load(run / "reconstruction.ply")
    rp, _ = sample_surface(Mesh(np.asarray(rec.vertices), np.asarray(rec.faces)), 131072, seed=1)
    b = norm.apply(boundary)[:131072]
    c = chamfer(rp, b)
    sys.stdout.write(f"{r}: CD2 against the union's boundary {c['cd2']:.4f} (reconstruction -> boundary "
                     f"{c['cd2_ab']:.4f}, boundary -> reconstruction {c['cd2_ba']:.4f})\n")

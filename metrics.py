"""Surface metrics as the paper and NGLOD report them: pure functions of point sets, meshes and occupancies.

``eval.py`` puts them together per mesh and run; ``rate_distortion.py`` scores decoded files with ``chamfer``.
"""

from __future__ import annotations

import igl
import numpy as np
from scipy.spatial import cKDTree

FSCORE_TAU = 0.01


def chamfer(a: np.ndarray, b: np.ndarray) -> dict:
    """Chamfer distances between point sets as the paper reports them.

    Parameters
    ----------
    a : (N, 3) array
    b : (M, 3) array

    Returns
    -------
    dict with ``cd2`` (mean squared nearest distance a->b plus b->a, x1e3), its two terms ``cd2_ab`` and
    ``cd2_ba``, ``cd1`` (same, unsquared, x1e3), and the raw nearest distances ``d_ab`` (N,), ``d_ba`` (M,),
    ``i_ab``, ``i_ba`` (nearest indices).
    """
    # compact_nodes=False: same exact answers, 4-8x faster when one set lies far from the other (a failed
    # reconstruction against its input), where shrunk node boxes make the search visit most leaves
    d_ab, i_ab = cKDTree(b, compact_nodes=False).query(a, workers=-1)
    d_ba, i_ba = cKDTree(a, compact_nodes=False).query(b, workers=-1)
    cd2_ab, cd2_ba = 1e3 * np.mean(d_ab ** 2), 1e3 * np.mean(d_ba ** 2)
    return {"cd2": cd2_ab + cd2_ba, "cd2_ab": cd2_ab, "cd2_ba": cd2_ba, "cd1": 1e3 * (d_ab.mean() + d_ba.mean()),
            "d_ab": d_ab, "d_ba": d_ba, "i_ab": i_ab, "i_ba": i_ba}


def exact_chamfer(a_points: np.ndarray, a_mesh, b_points: np.ndarray, b_mesh) -> tuple[float, float]:
    """Chamfer without a sampling floor: samples of each surface against the other mesh itself (meshes: anything
    with ``vertices`` (V, 3) and ``faces`` (F, 3)).

    Returns
    -------
    (cd2, cd1), both x1e3, squared and unsquared distances as in ``chamfer``.
    """
    d2_ab = igl.point_mesh_squared_distance(a_points, b_mesh.vertices, b_mesh.faces)[0]
    d2_ba = igl.point_mesh_squared_distance(b_points, a_mesh.vertices, a_mesh.faces)[0]
    return (1e3 * (d2_ab.mean() + d2_ba.mean()),
            1e3 * (np.sqrt(d2_ab).mean() + np.sqrt(d2_ba).mean()))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean occupancy arrays of the same shape, in percent."""
    union = np.logical_or(a, b).sum()
    return 100.0 * np.logical_and(a, b).sum() / union if union else 100.0


def fscore(d_ab: np.ndarray, d_ba: np.ndarray, tau: float = FSCORE_TAU) -> float:
    """F-score at ``tau``: harmonic mean of precision (a within tau of b) and recall (b within tau of a)."""
    precision, recall = np.mean(d_ab < tau), np.mean(d_ba < tau)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def normal_consistency(n_a: np.ndarray, n_b: np.ndarray, i_ab: np.ndarray, i_ba: np.ndarray) -> float:
    """Mean |cos| between each sample's normal and its nearest neighbour's, averaged over both directions."""
    return 0.5 * (np.abs(np.sum(n_a * n_b[i_ab], axis=1)).mean() + np.abs(np.sum(n_b * n_a[i_ba], axis=1)).mean())

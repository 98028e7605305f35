"""How good a reconstruction is, and a one-word warning when it is not: the run's self-check.

Every finished mesh is scored against its input by the paper's CD2 (the same samples, seeds and count as
``eval.py``, so ``self_cd2`` equals eval's ``cd2`` for the same reconstruction), its two one-sided terms and the
parts (connected components) of the input and of the reconstruction. ``warning`` turns those into a short
reason a user can sort a summary by; ``eval.py`` applies the same rule to its own scores.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from field import dense_grid
from grid import cell_size, lattice
from mesh_kind import TargetField, nearest_surface
from metrics import chamfer, normal_consistency
from modelmesher import mesh_from_volume
from sphere_sampler import sample_surface

CHAMFER_SAMPLES = 131072   # area-uniform samples per surface (the paper's count); ground truth seed 0, reconstruction 1
WARN_CD2 = 0.1             # a shipped file above this CD2 (x1e3) is not what a user asked for
WARN_SIDE = 0.8            # the reason names the side that holds this share of the CD2
FAR = cell_size(128)       # one voxel of a 128^3 grid: reconstructed surface farther than this from the input is
                           # surface that is not there (~4x the rms error of a good reconstruction)


def parts(mesh) -> int:
    """Connected components of a mesh's faces once coincident vertices are merged (an STL soup is one part per
    connected piece, not per triangle)."""
    tm = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces))
    if len(tm.faces) == 0:
        return 0
    return len(trimesh.graph.connected_components(tm.face_adjacency, nodes=np.arange(len(tm.faces)), min_len=1))


def part_labels(mesh) -> np.ndarray:
    """(V,) int: the connected component (0-based) of each vertex of a mesh whose faces share vertices (a
    marching-cubes mesh); vertices in no face get their own labels."""
    tm = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=False)
    return trimesh.graph.connected_component_labels(tm.edges, node_count=len(tm.vertices))


def far_surface(reconstruction, d_rec: np.ndarray, gt_points: np.ndarray) -> dict:
    """Reconstructed surface away from the input: ``far_area``, the percent of the reconstruction's area (its
    area-uniform samples' nearest distances ``d_rec`` (N,)) farther than ``FAR`` from the input's samples
    ``gt_points`` (M, 3), and ``floaters``, its parts whose vertices lie at a median distance over ``FAR`` from
    them (pieces that float free of the input: a spurious zero crossing of the field, never input geometry)."""
    vertices = np.asarray(reconstruction.vertices)
    labels = part_labels(reconstruction)
    distance = cKDTree(gt_points, compact_nodes=False).query(vertices, workers=-1)[0]
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0])
    medians = np.array([np.median(d) for d in np.split(distance[order], starts[1:])]) if len(order) else []
    return {"far_area": 100.0 * float(np.mean(d_rec > FAR)) if len(d_rec) else 0.0,
            "floaters": int(np.sum(np.asarray(medians) > FAR))}


def surface_scores(gt_points: np.ndarray, gt_normals: np.ndarray, rec_points: np.ndarray,
                   rec_normals: np.ndarray) -> dict:
    """The surface metrics of a reconstruction's samples against the ground truth's: ``cd2`` and its terms
    ``cd2_gt_to_rec`` (large: parts missing) and ``cd2_rec_to_gt`` (large: surface that is not there), ``cd1``,
    ``normal_consistency`` and the raw nearest distances ``d_rec``, ``d_gt`` (for the F-score)."""
    cd = chamfer(rec_points, gt_points)
    return {"cd2": cd["cd2"], "cd2_rec_to_gt": cd["cd2_ab"], "cd2_gt_to_rec": cd["cd2_ba"], "cd1": cd["cd1"],
            "normal_consistency": normal_consistency(rec_normals, gt_normals, cd["i_ab"], cd["i_ba"]),
            "d_rec": cd["d_ab"], "d_gt": cd["d_ba"]}


def warning(cd2: float | None, cd2_gt_to_rec: float, cd2_rec_to_gt: float, floaters: int = 0) -> str:
    """A short reason to distrust a reconstruction, or "" when it is fine: ``no surface`` without one; above
    ``WARN_CD2`` ``parts missing`` when the ground truth's side holds most of the CD2 (input surface far from
    any reconstructed one), ``extra surface`` when the reconstruction's does (films, floaters), else
    ``wrong shape``; at any CD2, ``floaters`` when parts of the reconstruction float free of the input
    (``far_surface``: small ones barely move the CD2). Input part counts are not used: overlapping shells
    rightly come back as fewer parts."""
    if cd2 is None or not np.isfinite(cd2):
        return "no surface"
    if cd2 > WARN_CD2 and cd2_gt_to_rec >= WARN_SIDE * cd2:
        return "parts missing"
    if floaters > 0:
        return "floaters"
    if cd2 <= WARN_CD2:
        return ""
    if cd2_rec_to_gt >= WARN_SIDE * cd2:
        return "extra surface"
    return "wrong shape"


def self_check(gt_points: np.ndarray, gt_normals: np.ndarray, parts_in: int, reconstruction) -> dict:
    """The self-check of one finished mesh: its reconstruction (a mesh, or None when the field had no surface)
    against the input's samples (``sample_surface(mesh, CHAMFER_SAMPLES, seed=0)``). Returns ``self_cd2``, its
    two terms, ``normal_consistency``, ``parts_in``, ``parts_out``, ``far_area``, ``floaters`` and ``warning``."""
    if reconstruction is None:
        return {"self_cd2": None, "parts_in": parts_in, "parts_out": 0, "floaters": 0,
                "warning": warning(None, 0.0, 0.0)}
    rec_points, rec_normals = sample_surface(reconstruction, CHAMFER_SAMPLES, seed=1)
    scores = surface_scores(gt_points, gt_normals, rec_points, rec_normals)
    far = far_surface(reconstruction, scores["d_rec"], gt_points)
    return {"self_cd2": float(scores["cd2"]), "self_cd2_gt_to_rec": float(scores["cd2_gt_to_rec"]),
            "self_cd2_rec_to_gt": float(scores["cd2_rec_to_gt"]),
            "normal_consistency": float(scores["normal_consistency"]), "parts_in": parts_in,
            "parts_out": parts(reconstruction), **far,
            "warning": warning(scores["cd2"], scores["cd2_gt_to_rec"], scores["cd2_rec_to_gt"], far["floaters"])}


def target_reconstruction(field: TargetField, res: int) -> trimesh.Trimesh | None:
    """The training target itself meshed as a trained network is (marching cubes on the mesher's ``res``^3
    lattice; a sheet's shell moved back onto its faces, as ``modelmesher`` projects a shell field): the best a
    perfect network can ship at that resolution. None when the target has no zero crossing on the grid.

    Its self-check (``target_cd2``) separates the two ways a row goes wrong: a high ``self_cd2`` over a low
    ``target_cd2`` is the network's failure; a high ``target_cd2`` says the target (kind, sign) or the
    resolution cannot represent the input (walls thinner than a node step, inner faces a solid cannot have).
    """
    volume = field.sdf(dense_grid(lattice(res), np.arange(res)).numpy()).reshape(res, res, res)
    if not volume.min() < 0 < volume.max():
        return None
    vertices, faces = mesh_from_volume(volume, level=0.0)
    if field.kind == "sheet":
        vertices = nearest_surface(vertices, field.vertices, field.faces)[1]
    return trimesh.Trimesh(vertices, faces, process=False)

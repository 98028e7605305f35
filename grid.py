"""The grids over the cube [-1, 1]^3 of the normalized frame, and the flood fill of a grid's exterior.

Two lattices, each defined here once:

- **The voxel grid** of ``res`` cells per axis, cell size h = 2 / res: cell i spans [-1 + i h, -1 + (i + 1) h).
  Its *nodes* -1 + i h (i = 0 .. res - 1) are what the key-sphere authors call voxel centres: the 128^3
  occupancy, the key spheres' centres and their sphere files use them. ``cell_of`` gives the cell holding a
  point (NGLOD's octree, the importance sampler's lookup table), ``nearest_node`` the node nearest a point,
  ``cell_centres`` the cells' midpoints (eval's SDF grid).
- **The marching-cubes lattice**: ``res`` points ``linspace(-1, 1, res)`` per axis, spacing 2 / (res - 1), both
  faces of the cube included (``lattice``): meshing and pictures.

Index arrays are [x, y, z], C order. Functions take NumPy arrays or torch tensors where they say so.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch


def cell_size(res: int) -> float:
    """h = 2 / res, the side of a cell of the voxel grid."""
    return 2.0 / res


def nodes(res: int) -> np.ndarray:
    """(res,) node coordinates of the voxel grid along one axis: (i - res/2) / (res/2) = -1 + i h."""
    return node_coords(np.arange(res), res)


def node_coords(index, res: int):
    """Coordinates of (fractional) node indices, (index - res/2) / (res/2); array or tensor of any shape."""
    return (index - res / 2) / (res / 2)


def node_index(points, res: int):
    """Fractional node index of points, points * res/2 + res/2 (the inverse of ``node_coords``)."""
    return points * (res / 2) + res / 2


def node_points(res: int) -> np.ndarray:
    """(res^3, 3) every node of the voxel grid, C order."""
    axis = nodes(res)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def nearest_node(points: np.ndarray, res: int) -> np.ndarray:
    """(N, 3) int64 index of the node nearest each of (N, 3) points, clipped to the grid."""
    return np.clip(np.round(node_index(np.asarray(points), res)), 0, res - 1).astype(np.int64)


def cell_coords(points, res: int):
    """Points in cell units, (p + 1) * res/2: cell i holds [i, i + 1). Array or tensor."""
    return (points + 1) * (res / 2)


def cell_of(points, res: int):
    """(N, 3) int64 index of the cell holding each point, clipped to the grid; NumPy array or torch tensor
    (returned as the same kind)."""
    if isinstance(points, torch.Tensor):
        return torch.floor(cell_coords(points, res)).long().clamp(0, res - 1)
    return np.clip(np.floor(cell_coords(np.asarray(points), res)).astype(np.int64), 0, res - 1)


def cell_centres(res: int) -> np.ndarray:
    """(res,) midpoints of the voxel grid's cells along one axis, -1 + (i + 1/2) h."""
    return (np.arange(res) + 0.5) / res * 2 - 1


def lattice(res: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(res,) the marching-cubes lattice along one axis, linspace(-1, 1, res)."""
    return torch.linspace(-1, 1, res, device=device)


def lattice_step(res: int) -> float:
    """Spacing of the marching-cubes lattice, 2 / (res - 1)."""
    return 2 / (res - 1)


def exterior(blocked: np.ndarray) -> np.ndarray:
    """The flood fill of a grid's exterior: (X, Y, Z) bool, True where a cell is not ``blocked`` and connects
    (6-neighbours, through cells that are not blocked) to the grid's border.

    Parameters
    ----------
    blocked : (X, Y, Z) bool array
        Cells the fill cannot enter (a mesh's wall, NGLOD's occupied voxels).
    """
    components, _ = scipy.ndimage.label(~blocked)
    border = np.unique(np.concatenate([components[[0, -1]].ravel(), components[:, [0, -1]].ravel(),
                                       components[:, :, [0, -1]].ravel()]))
    return np.isin(components, border[border > 0])

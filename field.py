"""A network's field on many points and on grids over [-1, 1]^3, in chunks (meshing, pictures, mining)."""

from __future__ import annotations

import numpy as np
import torch

from grid import lattice, lattice_step


@torch.no_grad()
def evaluate_points(model: torch.nn.Module, points: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
    """The network on (N, 3) points in chunks of ``chunk``; returns (N,) float32 on the points' device."""
    return torch.cat([model(points[i:i + chunk]).float() for i in range(0, len(points), chunk)]) \
        if len(points) else torch.zeros(0, device=points.device)


def dense_grid(axis: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """(len(idx)^3, 3) points of the grid ``axis[idx]`` per dimension, in C order."""
    a = axis[torch.as_tensor(idx, device=axis.device)]
    return torch.stack(torch.meshgrid(a, a, a, indexing="ij"), dim=-1).reshape(-1, 3)


@torch.no_grad()
def evaluate_grid(model: torch.nn.Module, res: int, device: torch.device | str = "cpu",
                  chunk: int = 1 << 18, block: int = 4, band: float = 2.0) -> np.ndarray:
    """The network's SDF on the res^3 grid of points linspace(-1, 1, res) per axis.

    Narrow band: the field is first evaluated every ``block`` points; only blocks with a sign change or a
    corner value within ``band`` block diagonals of zero are evaluated in full, the rest get the sign of their
    corners times that margin (no surface can pass through them for a field that is roughly a distance).
    ``block=1`` evaluates every point.

    Returns
    -------
    (res, res, res) float32 array, indexed [x, y, z].
    """
    model = model.to(device).eval()
    axis = lattice(res, device)
    if block <= 1 or res <= 4 * block:
        return evaluate_points(model, dense_grid(axis, np.arange(res)), chunk).reshape(res, res, res).cpu().numpy()
    coarse_idx = np.unique(np.r_[np.arange(0, res, block), res - 1])
    nc = len(coarse_idx)
    coarse = evaluate_points(model, dense_grid(axis, coarse_idx), chunk).reshape(nc, nc, nc).cpu().numpy()
    corners = np.stack([coarse[i:nc - 1 + i, j:nc - 1 + j, k:nc - 1 + k]
                        for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    margin = band * block * lattice_step(res) * np.sqrt(3)
    active = ((corners > 0).any(0) & (corners < 0).any(0)) | (np.abs(corners).min(0) < margin)
    # a fine index belongs to the cells on both sides of it: evaluate it when either is active
    cell = np.searchsorted(coarse_idx, np.arange(res), side="right") - 1
    lo, hi = np.clip(cell - (np.isin(np.arange(res), coarse_idx)), 0, nc - 2), np.clip(cell, 0, nc - 2)
    needed = np.zeros((res, res, res), dtype=bool)
    for a in (lo, hi):
        for b in (lo, hi):
            for c in (lo, hi):
                needed |= active[a[:, None, None], b[None, :, None], c[None, None, :]]
    volume = (np.sign(coarse[hi[:, None, None], hi[None, :, None], hi[None, None, :]]) * margin).astype(np.float32)
    where = np.nonzero(needed.ravel())[0]
    flat = volume.reshape(-1)
    for start in range(0, len(where), chunk):
        ids = where[start:start + chunk]
        i, j, k = np.unravel_index(ids, (res, res, res))
        pts = torch.stack([axis[torch.as_tensor(v, device=axis.device)] for v in (i, j, k)], dim=1)
        flat[ids] = model(pts).float().cpu().numpy()
    return volume

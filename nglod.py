"""NGLOD (Takikawa et al., CVPR 2021) in plain PyTorch: feature grids on a sparse voxel octree, one small decoder
per level of detail. The third system of the key-sphere paper's Table 1.

Level l (0-based) of a network with ``base_res`` 4 is a grid of 4 * 2^l voxels per axis over [-1, 1]^3; its
features live at the corners of the voxels the surface occupies (the finest level's voxels within a margin of
the surface, and their ancestors). A point's feature at LOD k is the sum over levels 0..k of the trilinear
interpolation of that level's corner features (a corner no occupied voxel has contributes zero); decoder k,
Linear(3 + F, hidden), ReLU, Linear(hidden, 1), maps [xyz, feature] to the signed distance. Outside the
octree the field takes the octree's own sign (a flood fill of its empty voxels) and at least half a voxel's
magnitude: NGLOD's renderer meets surfaces only inside its octree, and so do our marching cubes. In the
margin's outer layer, where no surface passed, it keeps that sign too (``confine``). "LOD k" in tables is
1-based as in the NGLOD paper: LOD 3 is level 2, a grid of 16^3.
"""

from __future__ import annotations

import zlib

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import nn

from grid import cell_coords, cell_of, exterior

OFFSETS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)  # (8, 3)


def occupied_voxels(surface_points: np.ndarray, res: int, margin: int = 1) -> np.ndarray:
    """Voxels of a ``res``^3 grid over [-1, 1]^3 that hold a surface point, grown by ``margin`` voxels.

    Parameters
    ----------
    surface_points : (N, 3) array, dense samples of the surface
    res : voxels per axis
    margin : Chebyshev dilation in voxels

    Returns
    -------
    (V, 3) int64 array of voxel indices in [0, res), sorted, unique.
    """
    idx = np.unique(cell_of(surface_points, res), axis=0)
    if margin > 0:
        r = np.arange(-margin, margin + 1)
        shifts = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        idx = np.unique(np.clip((idx[:, None] + shifts[None]).reshape(-1, 3), 0, res - 1), axis=0)
    return idx


def sample_in_voxels(voxels: np.ndarray, res: int, count: int, seed: int) -> np.ndarray:
    """Points uniform in the union of voxels of a ``res``^3 grid over [-1, 1]^3 (every voxel equally likely).

    Parameters
    ----------
    voxels : (V, 3) int array of voxel indices, V > 0
    res : voxels per axis
    count : points drawn
    seed : seeds the draw

    Returns
    -------
    (count, 3) float32 array.
    """
    rng = np.random.default_rng(seed)
    cells = np.asarray(voxels, dtype=np.float64)[rng.integers(0, len(voxels), count)]
    return ((cells + rng.random((count, 3))) * (2.0 / res) - 1.0).astype(np.float32)


def octree_levels(finest: np.ndarray, levels: int) -> list[np.ndarray]:
    """The occupied voxels of every level, coarse to fine, from those of the finest: each coarser level holds
    the parents of the next (so the levels form an octree).

    Parameters
    ----------
    finest : (V, 3) int array of voxel indices at the finest level
    levels : number of levels

    Returns
    -------
    list of ``levels`` (V_l, 3) int64 arrays, sorted, unique.
    """
    out = [np.unique(np.asarray(finest, dtype=np.int64), axis=0)]
    for _ in range(levels - 1):
        out.append(np.unique(out[-1] // 2, axis=0))
    return out[::-1]


def voxel_corners(voxels: np.ndarray) -> np.ndarray:
    """(C, 3) int64 corners (grid points, in [0, res]) of the (V, 3) voxels, sorted, unique."""
    return np.unique((np.asarray(voxels, dtype=np.int64)[:, None] + OFFSETS[None]).reshape(-1, 3), axis=0)


def corner_lookup(corners: np.ndarray, res: int) -> torch.Tensor:
    """(res + 1)^3 int64 tensor: the row of each grid point in ``corners``, len(corners) where it has none."""
    table = torch.full(((res + 1) ** 3,), len(corners), dtype=torch.int64)
    flat = (corners[:, 0] * (res + 1) + corners[:, 1]) * (res + 1) + corners[:, 2]
    table[torch.as_tensor(flat)] = torch.arange(len(corners))
    return table


def trilinear(points: torch.Tensor, features: torch.Tensor, lookup: torch.Tensor, res: int) -> torch.Tensor:
    """Trilinear interpolation of corner features of a ``res``^3 grid over [-1, 1]^3.

    Parameters
    ----------
    points : (N, 3) tensor; points outside the cube take the value of its nearest face's cell, extrapolated
    features : (C + 1, F) tensor, one row per stored corner and a last row of zeros
    lookup : ((res + 1)^3,) int64 tensor from ``corner_lookup``
    res : voxels per axis

    Returns
    -------
    (N, F) tensor.
    """
    u = cell_coords(points, res)
    base = torch.floor(u).clamp(0, res - 1)
    t = u - base                                     # (N, 3) position in the cell
    base = base.long()
    offsets = torch.as_tensor(OFFSETS, device=points.device)
    grid = base[:, None, :] + offsets[None]           # (N, 8, 3)
    rows = lookup[(grid[..., 0] * (res + 1) + grid[..., 1]) * (res + 1) + grid[..., 2]]
    w = torch.where(offsets[None].bool(), t[:, None, :], 1.0 - t[:, None, :]).prod(-1)  # (N, 8)
    # a weighted bag of 8 rows per point: ~4x faster on a CPU than gathering (N, 8, F) and contracting
    return F.embedding_bag(rows, features, per_sample_weights=w.to(features.dtype), mode="sum")


def outside_signs(voxels: np.ndarray, res: int, surface_voxels: np.ndarray | None = None) -> np.ndarray:
    """The sign a level's field is held to, per voxel of a ``res``^3 grid whose occupied ``voxels`` (V, 3) hold
    the surface and its margin. (res, res, res) int8 array:

    - 0 in the ``surface_voxels`` (S, 3), those the surface may pass through (default: all occupied ones):
      the network's own field;
    - +-1 in the other occupied voxels (the margin, where no surface is): the sign only;
    - +-2 in the empty voxels: the sign and at least half a voxel's magnitude.

    The sign is + where a voxel connects (6-neighbours, outside the surface voxels) to the grid's border and
    - where the surface voxels enclose it."""
    occupied = np.zeros((res,) * 3, dtype=bool)
    occupied[tuple(np.asarray(voxels, dtype=np.int64).reshape(-1, 3).T)] = True
    surface = occupied
    if surface_voxels is not None:
        surface = np.zeros_like(occupied)
        surface[tuple(np.asarray(surface_voxels, dtype=np.int64).reshape(-1, 3).T)] = True
    signs = np.where(exterior(surface), 1, -1).astype(np.int8) * np.where(occupied, 1, 2).astype(np.int8)
    signs[surface] = 0
    return signs


def surface_superset(voxels: np.ndarray, res: int, margin: int) -> np.ndarray:
    """The occupied ``voxels`` (V, 3) of a ``res``^3 grid, grown by ``margin`` (``occupied_voxels``), shrunk by
    it again: (S, 3) voxels that hold every voxel the surface passed through (the margin's outer layers,
    where it did not, removed). ``margin`` 0: the voxels themselves."""
    if margin == 0 or len(voxels) == 0:
        return np.asarray(voxels, dtype=np.int64).reshape(-1, 3)
    grid = np.zeros((res,) * 3, dtype=bool)
    grid[tuple(np.asarray(voxels, dtype=np.int64).T)] = True
    kept = scipy.ndimage.binary_erosion(grid, np.ones((3, 3, 3), dtype=bool), iterations=margin, border_value=1)
    return np.argwhere(kept)


def octree_bytes(voxels: np.ndarray, levels: int, base_res: int) -> bytes:
    """The octree of the finest ``voxels`` as bits: the coarsest level's occupancy (``base_res``^3 bits), then
    per occupied voxel of each level, in sorted order, the 8-bit mask of its occupied children; deflated."""
    tree = octree_levels(voxels, levels) if len(voxels) else [np.zeros((0, 3), dtype=np.int64)] * levels
    root = np.zeros((base_res,) * 3, dtype=bool)
    root[tuple(tree[0].T)] = True
    parts = [np.packbits(root.ravel()).tobytes()]
    for coarse, fine in zip(tree, tree[1:]):
        parent = {tuple(v): i for i, v in enumerate(coarse)}
        masks = np.zeros(len(coarse), dtype=np.uint8)
        for v in fine:
            o = v % 2
            masks[parent[tuple(v // 2)]] |= np.uint8(1 << int(o[0] * 4 + o[1] * 2 + o[2]))
        parts.append(masks.tobytes())
    return zlib.compress(b"".join(parts), 9)


def voxels_from_octree(data: bytes, levels: int, base_res: int) -> np.ndarray:
    """The finest level's voxels (V, 3), sorted, from ``octree_bytes``; raises ValueError on bad data."""
    raw = zlib.decompress(data)
    root_bytes = (base_res ** 3 + 7) // 8
    root = np.unpackbits(np.frombuffer(raw[:root_bytes], dtype=np.uint8))[:base_res ** 3].astype(bool)
    voxels = np.argwhere(root.reshape((base_res,) * 3))
    offset = root_bytes
    for _ in range(levels - 1):
        masks = np.frombuffer(raw[offset:offset + len(voxels)], dtype=np.uint8)
        if len(masks) != len(voxels):
            raise ValueError("octree data ends early")
        offset += len(voxels)
        bits = np.unpackbits(masks[:, None], axis=1, bitorder="little").astype(bool)  # (V, 8), bit b = child b
        parent, child = np.nonzero(bits)
        voxels = np.unique(2 * voxels[parent] + OFFSETS[child], axis=0).reshape(-1, 3)
    if offset != len(raw):
        raise ValueError("octree data too long")
    return voxels.astype(np.int64)


class NGLODSDF(nn.Module):
    """NGLOD: summed trilinear feature grids of ``lods`` octree levels and one decoder per LOD.

    Parameters
    ----------
    voxels : (V, 3) int tensor or array
        Occupied voxels of the finest level (``occupied_voxels``), grid ``base_res * 2^(lods - 1)``.
    lods : int
        Levels of detail trained (NGLOD's ``num_lods``).
    base_res : int
        Voxels per axis of the coarsest level (NGLOD's ``feature_size``, 4).
    feature_dim : int
        Features per corner (NGLOD: 32).
    hidden : int
        Hidden width of each decoder (NGLOD: 128).
    decoders_from : int
        The first LOD (0-based) with a decoder: a file of one LOD (``truncated``) needs no coarser decoders.
    margin : int
        The margin ``voxels`` were grown by: level l knows the surface lies within the occupied voxels shrunk by
        ``margin // 2^(lods - 1 - l)`` (``surface_superset``) and holds the voxels outside to a sign
        (``confine``). 0 (files written before it was stored): every occupied voxel may hold surface.
    """

    def __init__(self, voxels=None, lods: int = 4, base_res: int = 4, feature_dim: int = 32, hidden: int = 128,
                 decoders_from: int = 0, margin: int = 0):
        super().__init__()
        self.lods, self.base_res, self.feature_dim, self.hidden = lods, base_res, feature_dim, hidden
        self.decoders_from, self.margin = decoders_from, margin
        self.lod = lods - 1  # the LOD forward() uses (0-based); ``at_lod`` changes it
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(3 + feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            if lod >= decoders_from else nn.Identity() for lod in range(lods))
        self.features = nn.ParameterList()
        self._build(np.zeros((0, 3), dtype=np.int64) if voxels is None else np.asarray(voxels, dtype=np.int64))

    def resolution(self, level: int) -> int:
        return self.base_res * 2 ** level

    def level_margin(self, level: int) -> int:
        """Voxels of ``level`` every surface voxel's neighbourhood is sure to fill (the margin, coarsened)."""
        return self.margin // 2 ** (self.lods - 1 - level)

    def _build(self, voxels: np.ndarray) -> None:
        """Octree, corners and lookups from the finest voxels; fresh feature tables (NGLOD: N(0, 0.01))."""
        self.register_buffer("voxels", torch.as_tensor(voxels, dtype=torch.int16).reshape(-1, 3))
        device = self.decoders[-1][0].weight.device
        self.lookups, self.signs = [], []
        tables = []
        for level, vox in enumerate(octree_levels(voxels, self.lods)):
            corners = voxel_corners(vox) if len(vox) else np.zeros((0, 3), dtype=np.int64)
            res = self.resolution(level)
            self.lookups.append(corner_lookup(corners, res).to(device))
            surface = surface_superset(vox, res, self.level_margin(level))
            self.signs.append(torch.as_tensor(outside_signs(vox, res, surface), device=device))
            tables.append(nn.Parameter(0.01 * torch.randn(len(corners), self.feature_dim, device=device)))
        self.features = nn.ParameterList(tables)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.lookups = [fn(t) for t in self.lookups]  # integer tables: fn moves them, never casts them
        self.signs = [fn(t) for t in self.signs]
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Rebuild the octree from the stored voxels first: the feature tables' shapes depend on them."""
        voxels = state_dict.get("voxels")
        if voxels is not None and not torch.equal(voxels.to(self.voxels), self.voxels):
            self._build(voxels.long().cpu().numpy())
        return super().load_state_dict(state_dict, strict, assign)

    def at_lod(self, lod: int) -> NGLODSDF:
        """Set the LOD (0-based) ``forward`` evaluates; returns the model."""
        if not self.decoders_from <= lod < self.lods:
            raise ValueError(f"LOD {lod + 1} is not among this model's LODs {self.decoders_from + 1}..{self.lods}")
        self.lod = lod
        return self

    def truncated(self, lod: int) -> NGLODSDF:
        """A model of its own that evaluates LOD ``lod`` (0-based) of this one: the features of levels 0..lod
        and decoder ``lod`` only, what a file of that LOD holds."""
        if not self.decoders_from <= lod < self.lods:
            raise ValueError(f"LOD {lod + 1} is not among this model's LODs {self.decoders_from + 1}..{self.lods}")
        out = NGLODSDF(None, lod + 1, self.base_res, self.feature_dim, self.hidden, decoders_from=lod,
                       margin=self.level_margin(lod))
        state = {k: v for k, v in self.state_dict().items()
                 if not k.startswith(("features.", "decoders.")) or int(k.split(".")[1]) <= lod}
        state = {k: v for k, v in state.items() if not k.startswith("decoders.") or int(k.split(".")[1]) == lod}
        state["voxels"] = torch.unique(self.voxels.long() // 2 ** (self.lods - 1 - lod), dim=0).to(self.voxels.dtype)
        out.load_state_dict(state)
        return out.to(self.voxels.device).eval()

    def level_feature(self, points: torch.Tensor, level: int) -> torch.Tensor:
        """(N, F) trilinear interpolation of ``level``'s corner features at (N, 3) points (zero at corners
        no occupied voxel has)."""
        table = torch.cat([self.features[level], self.features[level].new_zeros(1, self.feature_dim)])
        return trilinear(points, table, self.lookups[level], self.resolution(level))

    def feature(self, points: torch.Tensor, lod: int) -> torch.Tensor:
        """(N, F) summed features of levels 0..``lod`` at (N, 3) points."""
        return sum(self.level_feature(points, level) for level in range(lod + 1))

    def decode(self, points: torch.Tensor, feature: torch.Tensor, lod: int, hold_margin: bool = True) -> torch.Tensor:
        """(N,) field of LOD ``lod`` from the summed ``feature`` (N, F): its decoder on [xyz, feature], kept
        inside the octree (``confine``)."""
        field = self.decoders[lod](torch.cat([points, feature], 1)).squeeze(-1)
        return self.confine(points, field, lod, hold_margin)

    def forward(self, points: torch.Tensor, lod: int | str | None = None) -> torch.Tensor:
        """(N, 3) points -> (N,) signed distances at ``lod`` (default ``self.lod``); ``lod="all"``: (lods, N),
        every LOD's as training fits them (``all_lods``)."""
        if lod == "all":
            return torch.stack(self.all_lods(points))
        lod = self.lod if lod is None else lod
        return self.decode(points, self.feature(points, lod), lod)

    def confine(self, points: torch.Tensor, field: torch.Tensor, level: int, hold_margin: bool = True) -> torch.Tensor:
        """The (N,) ``field`` held to the level's signs (``outside_signs``): free where the surface may be, the
        octree's sign in its margin (no zero crossing where no surface passed), and outside the octree its sign
        and at least half a voxel's magnitude: as in NGLOD, where rays meet surfaces only inside the octree, no
        floaters far from the mesh. Training fits the margin free (``hold_margin`` False): held, a wrong sign
        there costs nothing and spreads into the voxels next to it."""
        res = self.resolution(level)
        idx = cell_of(points, res)
        rule = self.signs[level][idx[:, 0], idx[:, 1], idx[:, 2]]
        if not hold_margin:
            rule = torch.where(rule.abs() == 1, torch.zeros_like(rule), rule)
        sign = rule.sign().to(field.dtype)
        held = torch.where(rule.abs() == 2, field.abs().clamp_min(1.0 / res), field.abs())
        return torch.where(rule == 0, field, sign * held)

    def all_lods(self, points: torch.Tensor) -> list[torch.Tensor]:
        """Every decoded LOD's (N,) prediction, the interpolations shared: what training fits (one loss per
        LOD), the margin free (``confine``)."""
        out, feature = [], 0
        for level in range(self.lods):
            feature = feature + self.level_feature(points, level)
            if level >= self.decoders_from:
                out.append(self.decode(points, feature, level, hold_margin=False))
        return out

    def precompute(self, points: torch.Tensor) -> torch.Tensor:
        """Nothing to precompute: (N, 3) -> (N, 3)."""
        return points

    def stored_numbers(self, lod: int | None = None) -> int:
        """Numbers a model of LOD ``lod`` alone stores (``truncated``): the corner features of levels 0..lod
        and decoder lod, as NGLOD counts them (the octree's bits come on top, in the codec)."""
        lod = self.lod if lod is None else lod
        return sum(t.numel() for t in self.features[:lod + 1]) + sum(p.numel() for p in self.decoders[lod].parameters())

"""Meshes in, training data out: loading, normalization, ground-truth SDF, key spheres, training points.

All functions are pure (inputs in, arrays out) except the file readers and writers. Coordinates are in the
normalized frame (the mesh's smallest enclosing ball scaled to radius 0.9 at the origin) unless a docstring
says otherwise. Signed distances are negative inside.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import miniball
import numpy as np
import scipy.ndimage
import torch
import trimesh
from scipy.spatial import ConvexHull, QhullError

from common import InputError, atomic_write_text
from grid import cell_of, cell_size, nearest_node, node_coords, node_index, nodes
from mesh_kind import TargetField, topology

log = logging.getLogger("keysphere")

BALL_RADIUS = 0.9


# ----------------------------------------------------------------------------------------------------------
# Meshes


@dataclass
class Mesh:
    """A triangle mesh: ``vertices`` (V, 3) float64, ``faces`` (F, 3) int64."""

    vertices: np.ndarray
    faces: np.ndarray

    @property
    def watertight(self) -> bool:
        """Closed and manifold (``mesh_kind.topology``)."""
        return topology(self.vertices, self.faces)[0]


def load_mesh(path: str | Path) -> Mesh:
    """Read any triangle mesh trimesh reads (scenes are concatenated) and check it is usable.

    Raises
    ------
    InputError
        With one line naming the file: missing, not a mesh, no faces (a point cloud), empty, NaN vertices.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        loaded = trimesh.load(path, process=False)
        if isinstance(loaded, trimesh.Scene):
            geometry = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
            loaded = trimesh.util.concatenate(geometry) if geometry else trimesh.Trimesh()
    except Exception as exc:  # trimesh raises many types for files it cannot parse
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable mesh ({reason[:120]})") from None
    if isinstance(loaded, trimesh.PointCloud) and len(loaded.vertices):
        raise InputError(f"{path}: has points but no faces (a point cloud, not a mesh)")
    if not isinstance(loaded, trimesh.Trimesh):
        raise InputError(f"{path}: not a triangle mesh")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    faces = np.asarray(loaded.faces, dtype=np.int64)
    if len(vertices) == 0:
        raise InputError(f"{path}: empty mesh (no vertices)")
    if len(faces) == 0:
        raise InputError(f"{path}: has points but no faces (a point cloud, not a mesh)")
    if not np.isfinite(vertices).all():
        raise InputError(f"{path}: vertices contain NaN or infinite coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise InputError(f"{path}: faces index missing vertices")
    areas = trimesh.triangles.area(vertices[faces])
    if not areas.sum() > 0:
        raise InputError(f"{path}: all faces are degenerate (zero area)")
    return Mesh(vertices, faces)


@dataclass
class Normalization:
    """``normalized = (original - center) * scale``."""

    center: np.ndarray
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.center) * self.scale

    def invert(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) / self.scale + self.center

    def to_dict(self) -> dict:
        return {"center": [float(c) for c in self.center], "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(np.asarray(d["center"], dtype=np.float64), float(d["scale"]))


MINIBALL_POINTS = 2000  # miniball's run time and memory explode on a few thousand co-spherical points


def miniball_of(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Smallest enclosing ball (centre (3,), radius) of at most a few thousand points, by ``miniball``."""
    for attempt in range(5):  # miniball pivots at random and now and then hits a singular system: try again
        try:  # seeded: the same mesh gets the same frame to the last bit, so reruns write identical files
            center, r2 = miniball.get_bounding_ball(points, rng=np.random.default_rng(attempt))
            return np.asarray(center, dtype=np.float64), float(np.sqrt(r2))
        except np.linalg.LinAlgError:
            continue
    center, radius = trimesh.nsphere.minimum_nsphere(points)  # approximate (Voronoi-based), slightly larger
    return np.asarray(center, dtype=np.float64), float(radius)


def smallest_enclosing_ball(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact smallest enclosing ball of (N, 3) points: centre (3,) and radius.

    Up to ``MINIBALL_POINTS`` points go to ``miniball`` whole. More (a finely tessellated smooth convex mesh has
    every vertex on its hull: a 100k-face sphere held miniball for minutes in 15 GB) are solved on a core set:
    the ball of a seeded subset, then of the subset plus the points that ball leaves out, until it leaves out
    none; the ball of a subset that encloses every point is the ball of all of them.
    """
    if len(points) <= MINIBALL_POINTS:
        return miniball_of(points)
    rng = np.random.default_rng(0)
    subset = points[rng.choice(len(points), MINIBALL_POINTS // 2, replace=False)]
    while True:
        center, radius = miniball_of(subset)
        distance = np.linalg.norm(points - center, axis=1)
        outside = np.nonzero(distance > radius * (1 + 1e-12))[0]
        if len(outside) == 0:
            return center, radius
        worst = outside[np.argsort(-distance[outside])[:MINIBALL_POINTS // 10]]
        subset = np.concatenate([subset, points[worst]])


def fit_normalization(vertices: np.ndarray) -> Normalization:
    """Smallest enclosing ball of the vertices, mapped to the ball of radius 0.9 at the origin.

    The ball is computed on the convex hull's vertices only: same ball, and on the 34k-vertex bunny
    ``miniball`` takes minutes on all vertices but well under a second on the hull.

    Parameters
    ----------
    vertices : (V, 3) array
    """
    points = np.unique(np.asarray(vertices, dtype=np.float64), axis=0)
    if len(points) >= 4:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # flat sets have no 3D hull; joggling gives one with a superset of the ball's support
            points = points[ConvexHull(points, qhull_options="QJ").vertices]
    center, radius = smallest_enclosing_ball(points)
    if not radius > 0:
        raise InputError("mesh has zero extent")
    return Normalization(center, BALL_RADIUS / radius)


def normalize_mesh(mesh: Mesh) -> tuple[Mesh, Normalization]:
    """Return the mesh in the normalized frame and the transform that maps it there."""
    norm = fit_normalization(mesh.vertices)
    return Mesh(norm.apply(mesh.vertices), mesh.faces), norm


# ----------------------------------------------------------------------------------------------------------
# Ground truth: the target and sign of a point depend on the mesh's kind (closed, leaky, sheet), see mesh_kind.py


def sample_surface(mesh, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform surface samples of a ``Mesh`` (or anything with ``vertices`` and ``faces``): points
    (count, 3) and their face normals (count, 3)."""
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    points, face_idx = trimesh.sample.sample_surface(tm, count, seed=seed)
    return np.asarray(points), np.asarray(tm.face_normals[face_idx])


# ----------------------------------------------------------------------------------------------------------
# Key spheres (SN-Graph, ICME 2021)


def sn_graph_centres(radius: np.ndarray, count: int, min_radius: float) -> np.ndarray:
    """The SN-Graph rule for sphere centres, on a grid of inscribed-sphere radii.

    First the largest sphere; then, repeatedly, the candidate j that maximizes min_i (d_ij - r_i + 2 r_j)
    over the chosen spheres i, among candidates that overlap no chosen sphere (d_ij > r_i + r_j). The
    ``2 r_j`` term prefers large spheres, the ``d_ij`` term spreads them out, and the no-overlap rule leaves
    room for small spheres at the extremities. Same rule as the ``sn-graph`` package, written incrementally
    (O(M C) instead of O(M^2 C) for M spheres and C candidates). When no candidate fits without overlap,
    the rest are placed by farthest-point sampling among the candidates.

    Parameters
    ----------
    radius : (X, Y, Z) array
        Inscribed radius per voxel in voxel units, <= 0 outside.
    count : int
        Maximum number of spheres.
    min_radius : float
        Voxels with a smaller radius are not candidates.

    Returns
    -------
    (K, 3) int array of voxel indices, K = min(count, number of candidates).
    """
    cand = np.argwhere(radius >= min_radius)
    if len(cand) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    r = radius[tuple(cand.T)].astype(np.float64)
    pos = cand.astype(np.float64)
    best = np.full(len(cand), np.inf)  # min_i (d_ij - r_i + 2 r_j) over chosen spheres
    valid = np.ones(len(cand), dtype=bool)
    nearest = np.full(len(cand), np.inf)  # distance to the nearest chosen centre
    chosen = [int(np.argmax(r))]
    while len(chosen) < min(count, len(cand)):
        i = chosen[-1]
        d = np.linalg.norm(pos - pos[i], axis=1)
        valid &= d > r[i] + r
        np.minimum(best, d - r[i] + 2 * r, out=best)
        np.minimum(nearest, d, out=nearest)
        if valid.any():
            chosen.append(int(np.argmax(np.where(valid, best, -np.inf))))
        else:
            # no sphere fits without overlap any more (a convex blob holds one): place the rest by farthest-point
            # sampling, so every mesh gets the same number of spheres, spread over its interior
            chosen.append(int(np.argmax(nearest)))
    return cand[chosen]


def extract_key_spheres(field: TargetField, count: int = 128, grid: int = 128, min_radius: float = 0.5) -> np.ndarray:
    """Key spheres of a normalized mesh.

    Occupancy of the ``grid``^3 voxel centres by the mesh's sign (``TargetField.inside``: the fast winding
    number for closed meshes), inscribed radius by a Euclidean distance transform (distance to the nearest
    outside voxel centre minus half a voxel), centres by the SN-Graph rule, and the target at each centre as
    the stored radius. A mesh that encloses no voxel (a sheet) gets its spheres spread over the voxels its
    surface passes through.

    Parameters
    ----------
    field : TargetField
        The mesh (normalized frame) with its kind.
    count, grid, min_radius
        Number of spheres, grid resolution, smallest candidate radius in voxels.

    Returns
    -------
    (K, 4) float32 array: centre xyz and the target at the centre (negative inside), K <= count.
    """
    occupied = field.occupancy(grid)
    if occupied.any():
        radius = scipy.ndimage.distance_transform_edt(np.pad(occupied, 1))[1:-1, 1:-1, 1:-1] - 0.5
        radius[~occupied] = 0
    else:
        # a sheet encloses nothing: spread unit spheres over the voxels the surface passes through
        log.info("the mesh encloses no voxel of the %d^3 grid; key spheres are spread over its surface", grid)
        surface, _ = sample_surface(field, 20 * grid * grid, seed=0)
        radius = np.zeros((grid, grid, grid))
        v = nearest_node(surface, grid)
        radius[v[:, 0], v[:, 1], v[:, 2]] = 1.0
    voxels = sn_graph_centres(radius, count, min_radius)
    if len(voxels) < count:
        log.warning("only %d key spheres fit (asked for %d)", len(voxels), count)
    centres = node_coords(voxels, grid)
    sdf = field.sdf(centres)
    return np.concatenate([centres, sdf[:, None]], axis=1).astype(np.float32)


def write_sphere_file(path: str | Path, spheres: np.ndarray, grid: int = 128) -> None:
    """Write spheres in the authors' text format: the count, then ``x y z r flag`` in voxel units.

    Centres become (v - grid/2) / (grid/2) again on reading; r is the inscribed radius (-SDF) in voxels.

    Parameters
    ----------
    spheres : (M, 4) array
        Centre and signed SDF at the centre, normalized frame.
    """
    spheres = np.asarray(spheres, dtype=np.float64).reshape(-1, 4)
    lines = [str(len(spheres))]
    for centre, sdf in zip(node_index(spheres[:, :3], grid), spheres[:, 3]):
        x, y, z = centre
        lines.append(f"{x:.6g} {y:.6g} {z:.6g} {-sdf * (grid / 2):.6f} 0")
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_sphere_file(path: str | Path, grid: int = 128) -> np.ndarray:
    """Read the authors' sphere format (count line, ``x y z r flag`` rows, optional trailing lines).

    Returns
    -------
    (M, 4) float32 array: centre (normalized frame) and -r (the signed SDF when r is the inscribed radius).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    lines = path.read_text(errors="replace").split("\n")
    try:
        count = int(lines[0].split()[0])
        rows = np.array([[float(v) for v in line.split()[:4]] for line in lines[1:count + 1]], dtype=np.float64)
    except (ValueError, IndexError):
        raise InputError(f"{path}: not a sphere file (expected a count line, then 'x y z r flag' rows)") from None
    if count < 1 or rows.shape != (count, 4) or not np.isfinite(rows).all():
        raise InputError(f"{path}: sphere file announces {count} spheres but holds {len(rows)} valid rows")
    return np.concatenate([node_coords(rows[:, :3], grid), -rows[:, 3:] / (grid / 2)], axis=1).astype(np.float32)


def sphere_cache_key(mesh_path: Path, count: int, grid: int, min_radius: float, kind: str = "closed",
                     shell: float = 0.0) -> str:
    """Cache key of a mesh's spheres: hash of the file's bytes, the extraction settings and, unless the mesh
    is closed, its kind and shell (their targets differ)."""
    digest = hashlib.sha256(Path(mesh_path).read_bytes()).hexdigest()[:16]
    suffix = "" if kind == "closed" else f"_{kind}{shell:g}"
    return f"{digest}_{count}_{grid}_{min_radius:g}{suffix}"


def cached_key_spheres(mesh_path: Path, field: TargetField, count: int, grid: int, min_radius: float,
                       cache_dir: Path | None) -> np.ndarray:
    """``extract_key_spheres`` with a per-mesh cache of sphere files in ``cache_dir`` (None: no cache)."""
    if cache_dir is None:
        return extract_key_spheres(field, count, grid, min_radius)
    sign = field.kind if field.analysis.parts is None else f"{field.kind}-union"  # a union is signed otherwise
    key = sphere_cache_key(mesh_path, count, grid, min_radius, sign, field.shell)
    cached = Path(cache_dir) / f"{key}.txt"
    if cached.is_file():
        try:
            return read_sphere_file(cached, grid)
        except InputError:
            log.warning("%s: unreadable cache entry, extracting again", cached)
    spheres = extract_key_spheres(field, count, grid, min_radius)
    write_sphere_file(cached, spheres, grid)
    return read_sphere_file(cached, grid)  # so cached and fresh runs see identical numbers


# ----------------------------------------------------------------------------------------------------------
# Training points


def approx_surface_distance(points: torch.Tensor, surface: np.ndarray, normals: np.ndarray,
                            res: int = 128) -> torch.Tensor:
    """Cheap unsigned distance to a surface given by dense samples, for importance weights (not targets).

    Each cell of a ``res``^3 grid over [-1, 1]^3 (``grid.cell_of``) knows its nearest voxel holding a surface sample (a
    Euclidean distance transform, 0.3 s at 128^3) and that voxel's sample. A point in a surface voxel gets
    the distance to that sample's tangent plane; any other point the distance to the sample. A k-d tree on
    the samples gives the exact nearest sample but costs about 1 ms per far point.

    Parameters
    ----------
    points : (N, 3) tensor
    surface, normals : (S, 3) arrays
        Surface samples and their unit normals.

    Returns
    -------
    (N,) tensor on the device of ``points``.
    """
    owner = np.full((res, res, res), -1, dtype=np.int64)
    vs = cell_of(surface, res)
    owner[vs[:, 0], vs[:, 1], vs[:, 2]] = np.arange(len(surface))
    _, nearest = scipy.ndimage.distance_transform_edt(owner < 0, return_indices=True)
    nearest_owner = owner[nearest[0], nearest[1], nearest[2]]  # (res, res, res) sample index per voxel
    occupied = torch.as_tensor(owner >= 0, device=points.device)
    table = torch.as_tensor(nearest_owner, device=points.device)
    surface_t = torch.as_tensor(surface, dtype=points.dtype, device=points.device)
    normals_t = torch.as_tensor(normals, dtype=points.dtype, device=points.device)
    v = cell_of(points, res)
    v = (v[:, 0], v[:, 1], v[:, 2])
    offset = points - surface_t[table[v]]
    plane = (offset * normals_t[table[v]]).sum(dim=1).abs()
    return torch.where(occupied[v], plane, offset.norm(dim=1))


def sample_training_points(field: TargetField, pool_uniform: int, pool_surface: int, surface_noise: float,
                           beta: float, count: int, seed: int, uniform_fraction: float = 0.0,
                           device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-sampled training points with their targets (the NI paper's sampler; ``field.sdf``: exact
    signed distances for closed and leaky meshes, the shell's for sheets).

    A pool of ``pool_uniform`` points uniform in [-1, 1]^3 and ``pool_surface`` surface points moved by
    N(0, surface_noise) is drawn on ``device``; ``count`` of them are kept without replacement with weight
    exp(-beta |sdf|). The weights use a cheap distance (``approx_surface_distance``); only the kept points
    get the exact target, which is the expensive part. A ``uniform_fraction`` of the ``count`` points
    is instead taken uniformly from the cube: it supervises the far field, where importance sampling puts
    almost nothing, and pulls the network away from the trivial all-zero field early in training.

    Returns
    -------
    points : (count, 3) float32 tensor on ``device``
    sdf : (count,) float32 tensor on ``device``
    """
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    surface, normals = sample_surface(field, max(pool_surface, 100_000), seed)
    surface_t = torch.as_tensor(surface[:pool_surface], dtype=torch.float32, device=device)
    pool = torch.cat([
        torch.rand(pool_uniform, 3, generator=gen, device=device) * 2 - 1,
        surface_t + surface_noise * torch.randn(len(surface_t), 3, generator=gen, device=device),
    ])
    uniform = int(round(count * uniform_fraction))
    count = min(count - uniform, len(pool))
    weight = torch.exp(-beta * approx_surface_distance(pool, surface, normals))
    # weighted sampling without replacement (Efraimidis-Spirakis): the largest u^(1/w) win
    keys = torch.log(torch.rand(len(pool), generator=gen, device=device)) / weight.clamp_min(1e-30)
    points = torch.cat([pool[torch.topk(keys, count).indices],
                        torch.rand(uniform, 3, generator=gen, device=device) * 2 - 1])
    sdf = field.sdf(points.cpu().numpy())
    return points, torch.as_tensor(sdf, dtype=torch.float32, device=device)


def sample_hard_points(predict, field: TargetField, count: int, res: int, band: float, min_error: float,
                       seed: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Points where a partly trained network is most wrong near its surface, with their targets, for the rest
    of its training (hard-example mining: films over holes and gaps, floaters).

    A grid of ``res``^3 points jittered within their cells is evaluated by ``predict``; where the network puts
    its surface or inside (prediction below ``band``) the targets are computed, and the points whose error
    exceeds ``min_error`` while the prediction or the target lies within ``band`` of zero are the seeds. The
    worst seeds, each with copies moved by N(0, cell / 2), make up ``count`` points: the error regions are
    thin, so a coarse grid alone would hold only a few points of each.

    Parameters
    ----------
    predict : callable
        (N, 3) float32 tensor on ``device`` -> (N,) tensor, the network's field.
    field : TargetField
    count, res : int
    band, min_error : float
    seed : int

    Returns
    -------
    points : (K, 3) float32 tensor on ``device``, K <= count (0 when the network errs nowhere)
    sdf : (K,) float32 tensor on ``device``
    """
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    axis = torch.as_tensor(nodes(res), dtype=torch.float32, device=device)  # the cells' lower corners
    cells = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    grid = cells + torch.rand(len(cells), 3, generator=gen, device=device) * cell_size(res)
    pred = predict(grid)
    candidates = torch.nonzero(pred < band).squeeze(1)
    empty = (torch.zeros(0, 3, device=device), torch.zeros(0, device=device))
    if len(candidates) == 0:
        return empty
    target = torch.as_tensor(field.sdf(grid[candidates].cpu().numpy()), dtype=torch.float32, device=device)
    error = (pred[candidates] - target).abs()
    hard = (error > min_error) & ((pred[candidates].abs() < band) | (target.abs() < band))
    if not hard.any():
        return empty
    order = torch.argsort(error[hard], descending=True)[:count]
    seeds = grid[candidates[hard]][order]
    copies = math.ceil(count / len(seeds))
    points = seeds.repeat(copies, 1)[:count]
    points[len(seeds):] += torch.randn(len(points) - len(seeds), 3, generator=gen, device=device) * (1 / res)
    points.clamp_(-1, 1)
    sdf = field.sdf(points.cpu().numpy())
    return points, torch.as_tensor(sdf, dtype=torch.float32, device=device)

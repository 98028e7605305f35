"""Meshes in, training data out: loading, normalization, ground-truth SDF, key spheres, training points.

All functions are pure (inputs in, arrays out) except the file readers and writers. Coordinates are in the
normalized frame (the mesh's smallest enclosing ball scaled to radius 0.9 at the origin) unless a docstring
says otherwise. Signed distances are negative inside.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import igl
import miniball
import numpy as np
import scipy.ndimage
import torch
import trimesh
from scipy.spatial import ConvexHull, QhullError

from common import InputError, atomic_write_text

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
        """Closed and manifold once duplicate vertices are merged (STL files repeat every vertex)."""
        return bool(trimesh.Trimesh(self.vertices, self.faces).is_watertight)


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
    for _ in range(5):  # miniball pivots at random and now and then hits a singular system: try again
        try:
            center, r2 = miniball.get_bounding_ball(points)
            radius = float(np.sqrt(r2))
            break
        except np.linalg.LinAlgError:
            continue
    else:  # an approximate ball (Voronoi-based), slightly larger than the minimum on some shapes
        center, radius = trimesh.nsphere.minimum_nsphere(points)
    if not radius > 0:
        raise InputError("mesh has zero extent")
    return Normalization(np.asarray(center, dtype=np.float64), BALL_RADIUS / radius)


def normalize_mesh(mesh: Mesh) -> tuple[Mesh, Normalization]:
    """Return the mesh in the normalized frame and the transform that maps it there."""
    norm = fit_normalization(mesh.vertices)
    return Mesh(norm.apply(mesh.vertices), mesh.faces), norm


# ----------------------------------------------------------------------------------------------------------
# Ground truth


def signed_distance(points: np.ndarray, mesh: Mesh) -> np.ndarray:
    """Signed distance to the mesh, sign from the fast winding number (so meshes with holes get a sign).

    Parameters
    ----------
    points : (N, 3) array
    mesh : Mesh

    Returns
    -------
    (N,) float64 array, negative inside.
    """
    points = np.ascontiguousarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros(0)
    s, *_ = igl.signed_distance(points, mesh.vertices, mesh.faces,
                                sign_type=igl.SIGNED_DISTANCE_TYPE_FAST_WINDING_NUMBER)
    return np.asarray(s, dtype=np.float64)


def inside(points: np.ndarray, mesh: Mesh) -> np.ndarray:
    """(N,) bool: generalized winding number above 1/2."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    return igl.fast_winding_number(mesh.vertices, mesh.faces, points) > 0.5


def sample_surface(mesh: Mesh, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform surface samples: points (count, 3) and their face normals (count, 3)."""
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    points, face_idx = trimesh.sample.sample_surface(tm, count, seed=seed)
    return np.asarray(points), np.asarray(tm.face_normals[face_idx])


# ----------------------------------------------------------------------------------------------------------
# Key spheres (SN-Graph, ICME 2021)


def grid_points(res: int) -> np.ndarray:
    """(res^3, 3) voxel centres (i - res/2) / (res/2), i = 0..res-1, in C order: the authors' convention."""
    axis = (np.arange(res) - res / 2) / (res / 2)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


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


def extract_key_spheres(mesh: Mesh, count: int = 128, grid: int = 128, min_radius: float = 0.5) -> np.ndarray:
    """Key spheres of a normalized mesh.

    Occupancy of the ``grid``^3 voxel centres by the fast winding number, inscribed radius by a Euclidean
    distance transform (distance to the nearest outside voxel centre minus half a voxel), centres by the
    SN-Graph rule, and the exact signed distance at each centre as the stored radius. A mesh that encloses
    no voxel (an open sheet) gets its spheres spread over the voxels its surface passes through.

    Parameters
    ----------
    mesh : Mesh
        In the normalized frame.
    count, grid, min_radius
        Number of spheres, grid resolution, smallest candidate radius in voxels.

    Returns
    -------
    (K, 4) float32 array: centre xyz and signed SDF at the centre (negative inside), K <= count.
    """
    occupied = inside(grid_points(grid), mesh).reshape(grid, grid, grid)
    if occupied.any():
        radius = scipy.ndimage.distance_transform_edt(np.pad(occupied, 1))[1:-1, 1:-1, 1:-1] - 0.5
        radius[~occupied] = 0
    else:
        # an open sheet encloses nothing: spread unit spheres over the voxels the surface passes through
        log.warning("the mesh encloses no voxel of the %d^3 grid; key spheres are spread over its surface", grid)
        surface, _ = sample_surface(mesh, 20 * grid * grid, seed=0)
        radius = np.zeros((grid, grid, grid))
        v = np.clip(np.round((surface + 1) * (grid / 2)).astype(np.int64), 0, grid - 1)
        radius[v[:, 0], v[:, 1], v[:, 2]] = 1.0
    voxels = sn_graph_centres(radius, count, min_radius)
    if len(voxels) < count:
        log.warning("only %d key spheres fit (asked for %d)", len(voxels), count)
    centres = (voxels - grid / 2) / (grid / 2)
    sdf = signed_distance(centres, mesh)
    return np.concatenate([centres, sdf[:, None]], axis=1).astype(np.float32)


def write_sphere_file(path: str | Path, spheres: np.ndarray, grid: int = 128) -> None:
    """Write spheres in the authors' text format: the count, then ``x y z r flag`` in voxel units.

    Centres become (v - grid/2) / (grid/2) again on reading; r is the inscribed radius (-SDF) in voxels.

    Parameters
    ----------
    spheres : (M, 4) array
        Centre and signed SDF at the centre, normalized frame.
    """
    half = grid / 2
    lines = [str(len(spheres))]
    for x, y, z, sdf in np.asarray(spheres, dtype=np.float64):
        lines.append(f"{x * half + half:.6g} {y * half + half:.6g} {z * half + half:.6g} {-sdf * half:.6f} 0")
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
    half = grid / 2
    return np.concatenate([(rows[:, :3] - half) / half, -rows[:, 3:] / half], axis=1).astype(np.float32)


def sphere_cache_key(mesh_path: Path, count: int, grid: int, min_radius: float) -> str:
    """Cache key of a mesh's spheres: hash of the file's bytes and the extraction settings."""
    digest = hashlib.sha256(Path(mesh_path).read_bytes()).hexdigest()[:16]
    return f"{digest}_{count}_{grid}_{min_radius:g}"


def cached_key_spheres(mesh_path: Path, mesh: Mesh, count: int, grid: int, min_radius: float,
                       cache_dir: Path | None) -> np.ndarray:
    """``extract_key_spheres`` with a per-mesh cache of sphere files in ``cache_dir`` (None: no cache)."""
    if cache_dir is None:
        return extract_key_spheres(mesh, count, grid, min_radius)
    cached = Path(cache_dir) / f"{sphere_cache_key(mesh_path, count, grid, min_radius)}.txt"
    if cached.is_file():
        try:
            return read_sphere_file(cached, grid)
        except InputError:
            log.warning("%s: unreadable cache entry, extracting again", cached)
    spheres = extract_key_spheres(mesh, count, grid, min_radius)
    write_sphere_file(cached, spheres, grid)
    return read_sphere_file(cached, grid)  # so cached and fresh runs see identical numbers


# ----------------------------------------------------------------------------------------------------------
# Training points


def approx_surface_distance(points: torch.Tensor, surface: np.ndarray, normals: np.ndarray,
                            res: int = 128) -> torch.Tensor:
    """Cheap unsigned distance to a surface given by dense samples, for importance weights (not targets).

    Each voxel of a ``res``^3 grid over [-1, 1]^3 knows its nearest voxel holding a surface sample (a
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
    def voxel_of(p):
        return np.clip(((p + 1) * (res / 2)).astype(np.int64), 0, res - 1)

    owner = np.full((res, res, res), -1, dtype=np.int64)
    vs = voxel_of(surface)
    owner[vs[:, 0], vs[:, 1], vs[:, 2]] = np.arange(len(surface))
    _, nearest = scipy.ndimage.distance_transform_edt(owner < 0, return_indices=True)
    nearest_owner = owner[nearest[0], nearest[1], nearest[2]]  # (res, res, res) sample index per voxel
    occupied = torch.as_tensor(owner >= 0, device=points.device)
    table = torch.as_tensor(nearest_owner, device=points.device)
    surface_t = torch.as_tensor(surface, dtype=points.dtype, device=points.device)
    normals_t = torch.as_tensor(normals, dtype=points.dtype, device=points.device)
    v = ((points + 1) * (res / 2)).long().clamp_(0, res - 1)
    v = (v[:, 0], v[:, 1], v[:, 2])
    offset = points - surface_t[table[v]]
    plane = (offset * normals_t[table[v]]).sum(dim=1).abs()
    return torch.where(occupied[v], plane, offset.norm(dim=1))


def sample_training_points(mesh: Mesh, pool_uniform: int, pool_surface: int, surface_noise: float,
                           beta: float, count: int, seed: int, uniform_fraction: float = 0.0,
                           device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-sampled training points with exact signed distances (the NI paper's sampler).

    A pool of ``pool_uniform`` points uniform in [-1, 1]^3 and ``pool_surface`` surface points moved by
    N(0, surface_noise) is drawn on ``device``; ``count`` of them are kept without replacement with weight
    exp(-beta |sdf|). The weights use a cheap distance (``approx_surface_distance``); only the kept points
    get the exact signed distance, which is the expensive part. A ``uniform_fraction`` of the ``count`` points
    is instead taken uniformly from the cube: it supervises the far field, where importance sampling puts
    almost nothing, and pulls the network away from the trivial all-zero field early in training.

    Returns
    -------
    points : (count, 3) float32 tensor on ``device``
    sdf : (count,) float32 tensor on ``device``
    """
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    surface, normals = sample_surface(mesh, max(pool_surface, 100_000), seed)
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
    sdf = signed_distance(points.cpu().numpy(), mesh)
    return points, torch.as_tensor(sdf, dtype=torch.float32, device=device)

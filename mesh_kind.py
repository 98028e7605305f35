"""What a mesh encloses, and the sign and training target of a point for each kind of mesh.

Real meshes are messy. Each mesh is classified once, on a voxel grid over [-1, 1]^3 (normalized frame):

- ``closed``: watertight, consistently oriented, and its winding number is 0 or 1 everywhere (no
  self-intersections, inner faces or duplicated shells). Targets are the exact distance to the faces, inside
  where the winding number is above 1/2. Its classification and ``inside`` evaluate the winding number only
  near the surface: off the wall of the flood fill (below) a closed surface's winding number is constant on
  each connected region, so it is evaluated once per region and a point nearer a node than the surface takes
  the node's (the fast winding number is slow near large triangles). Where the pseudonormal (the
  angle-weighted normal at the nearest surface point, exact for such a surface) agrees with the winding number
  on every clear node of the wall, it signs the targets instead: one distance query per point, whatever the
  triangles' size. A self-intersection the grid does not reveal shows as a disagreement and keeps the winding
  number.
- ``leaky``: a solid with holes, cracks, flipped, duplicated or inner faces: it encloses a volume once gaps
  narrower than the wall (``WALL_VOXELS`` voxels either side of the surface) are closed. A flood fill of the
  exterior from the grid's border through the voxels outside the wall finds that volume. Targets are the exact
  distance to the original faces with a robust sign (below), so the zero set stays on the original surface.
- ``sheet``: encloses nothing (a relief, a leaf, a car body open underneath). Targets describe a thin shell
  around the faces, distance - ``shell``; the mesher moves the shell's vertices back onto the faces.

Robust sign (leaky): a point whose voxel lies outside the wall takes the flood fill's answer, which is exact
there. Inside the wall the generalized winding number decides (above 1/2: inside) when it agrees with the
flood fill on the voxels outside the wall; when it does not (flipped faces), the point steps away from its
nearest surface point to just beyond the wall and takes the flood fill's answer there. A leaky mesh made
of closed parts (``closed_parts``: overlapping, or some inside out) is signed as their union instead: inside
the wall by the parts' own winding numbers (``union_winding``), and its targets are the min of the parts'
signed distances (``union_depth``), so a part's faces buried in another are no zero of the target; by the
parts' pseudonormals (``pseudonormal_sdf``) when they agree with the winding numbers on the wall.

Why not igl's fast-winding-number signed distance: it returns (1 - 2|w|) d, which equals the signed distance
only where w is 0 or 1 (on closed meshes the approximate w makes it up to ~1% short). Near a hole or an open
sheet w is about 1/2 and the "distance" about 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import igl
import numpy as np
import scipy.ndimage
import trimesh

from grid import cell_size, exterior, nearest_node, node_coords, node_points

KINDS = ("closed", "leaky", "sheet")
CLASSIFY_GRID = 128        # voxels per axis over [-1, 1]^3 (the key spheres' grid)
WALL_VOXELS = 1.5          # voxel centres nearer the surface than this many voxels form the wall
MIN_INTERIOR_VOXELS = 27   # fewer enclosed voxels than this (a 3^3 block) is not a volume: a sheet
WINDING_AGREEMENT = 0.995  # share of off-wall voxels where the winding number must match the flood fill to be used
AGREEMENT_SAMPLES = 65536  # off-wall voxels that estimate that share when the surface is not closed
FOLD_DEGREES = 120         # adjacent faces whose normals differ more than this turn back on each other: a fold
MAX_PARTS = 64             # a mesh of more closed parts than this is not signed part by part (cost: parts x points)

OUTSIDE, INSIDE, WALL = 0, 1, 2


def winding_number(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,) generalized winding number of the (V, 3), (F, 3) mesh at (N, 3) points (fast approximation)."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros(0)
    return np.asarray(igl.fast_winding_number(vertices, faces, points), dtype=np.float64)


def nearest_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact unsigned distance (N,) of (N, 3) points to the faces, and the nearest surface points (N, 3)."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros(0), np.zeros((0, 3))
    d2, _, closest = igl.point_mesh_squared_distance(points, vertices, faces)
    return np.sqrt(np.maximum(d2, 0)), np.asarray(closest)


def fold_geometry(tm: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The folds of a mesh, edges whose two faces turn back on each other (normals more than ``FOLD_DEGREES``
    apart), where meshes of CAD exports self-intersect: (F,) bool faces touching a fold's vertex, (V,) bool
    vertices on a fold, and the folds' edges as sorted keys ``low * V + high`` (E,)."""
    adjacency, normals = tm.face_adjacency, tm.face_normals
    fold = (normals[adjacency[:, 0]] * normals[adjacency[:, 1]]).sum(1) < np.cos(np.radians(FOLD_DEGREES))
    edges = np.sort(tm.face_adjacency_edges[fold], axis=1)
    at_fold = np.zeros(len(tm.vertices), dtype=bool)
    at_fold[edges.ravel()] = True
    return at_fold[tm.faces].any(axis=1), at_fold, np.unique(edges[:, 0] * len(tm.vertices) + edges[:, 1])


def on_fold(tm: trimesh.Trimesh, nearest_face: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """(N,) bool: whether each nearest surface point (N, 3), on face ``nearest_face`` (N,), lies on a fold's
    edge or vertex (``fold_geometry``): the only places where a pseudonormal can face the wrong way."""
    faces_at, vertices_at, edges = fold_geometry(tm)
    result = np.zeros(len(nearest), dtype=bool)
    near = np.flatnonzero(faces_at[nearest_face])
    if len(near) == 0:
        return result
    corners = tm.faces[nearest_face[near]]
    weights = trimesh.triangles.points_to_barycentric(tm.vertices[corners], nearest[near])
    small = weights < 1e-7
    at_vertex = small.sum(axis=1) >= 2  # the corner of the largest weight
    vertex = corners[np.arange(len(near)), np.argmax(weights, axis=1)]
    ends = np.sort(np.take_along_axis(corners, np.argsort(small, axis=1, kind="stable")[:, :2], axis=1), axis=1)
    on_edge = (small.sum(axis=1) == 1) & np.isin(ends[:, 0] * len(tm.vertices) + ends[:, 1], edges)
    result[near] = (at_vertex & vertices_at[vertex]) | on_edge  # on the edge opposite the small corner
    return result


def pseudonormal_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,) exact distance of (N, 3) points to a closed, consistently oriented mesh, negative inside: the sign of
    the angle-weighted pseudonormal at the nearest surface point (Baerentzen and Aanaes 2005), exact for such a
    mesh without self-intersections at the cost of the distance query alone. A point whose nearest surface
    point is on a fold (``on_fold``), where such a mesh may cross itself, takes the sign of igl's exact winding
    number. The mesh is taken on merged vertices without zero-area faces (an STL repeats every vertex; a
    sliver has no normal)."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros(0)
    areas = trimesh.triangles.area(vertices[faces])
    tm = trimesh.Trimesh(vertices, faces[areas > 0])  # merges repeated vertices
    merged_vertices, merged_faces = np.asarray(tm.vertices, dtype=np.float64), np.asarray(tm.faces, dtype=np.int64)
    signed, nearest_face, nearest, _ = igl.signed_distance(points, merged_vertices, merged_faces,
                                                           sign_type=igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL)
    signed = np.asarray(signed, dtype=np.float64)
    at_fold = np.flatnonzero(on_fold(tm, np.asarray(nearest_face), np.asarray(nearest)))
    if len(at_fold):
        w = igl.winding_number(merged_vertices, merged_faces, points[at_fold])
        signed[at_fold] = np.where(np.asarray(w) > 0.5, -1.0, 1.0) * np.abs(signed[at_fold])
    return signed


def pseudonormal_sdf(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                     parts: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """(N,) signed distance of (N, 3) points to a closed mesh (``pseudonormal_distance``), or to the union of
    closed ``parts``: the min of the parts' signed distances (a part inside out counts by its enclosed side),
    each evaluated only inside its bounding box (outside it the distance to all faces is the smaller)."""
    if parts is None:
        return pseudonormal_distance(points, vertices, faces)
    points = np.ascontiguousarray(points, dtype=np.float64)
    result = nearest_surface(points, vertices, faces)[0]
    for part in parts:
        near = in_part_box(points, vertices, faces, part)
        signed = pseudonormal_distance(points[near], vertices, faces[part])
        result[near] = np.minimum(result[near], signed if signed_volume(vertices, faces[part]) >= 0 else -signed)
    return result


def pseudonormal_agrees(winding: np.ndarray, labels: np.ndarray, pseudonormal_inside: np.ndarray) -> bool:
    """Whether the pseudonormal's sign matches the winding number's at every node of the wall where the winding
    number is clear (within 1/4 of 0 or 1): it can err near a self-intersection, which the winding number's
    range on the grid does not always reveal. Arrays of nodes, all (res, res, res) or all (n,): the winding
    number, ``wall_labels``'s labels and whether the pseudonormal puts the node inside."""
    check = (labels == WALL) & (np.abs(winding - 0.5) > 0.25)
    return bool(np.array_equal(pseudonormal_inside[check], winding[check] > 0.5))


def union_pseudonormal_agrees(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray,
                              parts: tuple[np.ndarray, ...]) -> bool:
    """``pseudonormal_agrees`` for a union of closed ``parts`` at up to ``AGREEMENT_SAMPLES`` wall nodes, where
    ``union_winding`` and ``pseudonormal_sdf`` are evaluated."""
    wall = np.flatnonzero(labels == WALL)
    if len(wall) > AGREEMENT_SAMPLES:
        wall = np.sort(np.random.default_rng(0).choice(wall, AGREEMENT_SAMPLES, replace=False))
    xyz = node_coords(np.stack(np.unravel_index(wall, labels.shape), axis=1), labels.shape[0])
    return pseudonormal_agrees(union_winding(xyz, vertices, faces, parts), labels.ravel()[wall],
                               pseudonormal_sdf(xyz, vertices, faces, parts) < 0)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh, negative when its faces point inwards."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def topology(vertices: np.ndarray, faces: np.ndarray) -> tuple[bool, bool]:
    """(watertight, consistently oriented): the one definition of watertight. On merged vertices (STL files
    repeat every vertex) without zero-area faces (slivers add no surface)."""
    areas = trimesh.triangles.area(vertices[faces])
    tm = trimesh.Trimesh(vertices, faces[areas > 0])
    return bool(tm.is_watertight), bool(tm.is_winding_consistent)


@dataclass
class MeshKind:
    """The classification of one normalized mesh and what its sign needs.

    Attributes
    ----------
    kind : str
        ``closed``, ``leaky`` or ``sheet``.
    grid : int
        Voxels per axis of ``labels`` and ``winding``.
    winding : (grid, grid, grid) float array or None
        Winding number at the voxel centres (``grid.node_points``) of a watertight, consistently oriented mesh
        (``winding_grid``); None for other meshes, which never use it.
    labels : (grid, grid, grid) uint8 array
        OUTSIDE (reached by the flood fill), INSIDE (enclosed) or WALL.
    trust_winding : bool
        Whether the winding number decides the sign inside the wall (leaky meshes).
    reason : str
        Why the mesh got its kind, for the log.
    parts : tuple of (F_k,) int arrays, or None
        A leaky mesh made of closed parts (overlapping, or some inside out): each part's faces. Its solid is
        their union: inside where any part's own winding number is (``union_winding``), and inside, the
        target's magnitude is the largest distance to the faces of a part holding the point (the union as the
        min of the parts' signed distances: no zero on a part's faces buried in another).
    pseudonormal : bool
        Whether the sign near the surface of a closed mesh or a union of closed parts comes from the
        pseudonormal at the nearest surface point (``pseudonormal_sdf``: the target is one distance query, no
        winding number): set where it agrees with the winding number on the wall (``pseudonormal_agrees``).
    """

    kind: str
    grid: int
    winding: np.ndarray | None
    labels: np.ndarray
    trust_winding: bool
    reason: str
    parts: tuple[np.ndarray, ...] | None = None
    pseudonormal: bool = False


def wall_labels(vertices: np.ndarray, faces: np.ndarray, res: int, wall: float = WALL_VOXELS,
                seed: int = 0, signed: bool = False):
    """Flood fill of the exterior on a ``res``^3 voxel grid: (res, res, res) uint8 of OUTSIDE, INSIDE, WALL.

    The wall is every voxel centre within ``wall`` voxels of the faces (exact distance). Exact distances are
    computed only in a band found by rasterizing dense surface samples, so the cost grows with the surface's
    area, not with the grid's volume. Voxels outside the wall connected (6-neighbours) to the grid's border are
    OUTSIDE; the others INSIDE.

    Parameters
    ----------
    vertices : (V, 3) array, faces : (F, 3) int array
        The mesh in the normalized frame.
    res : int
    wall : float
        Half-thickness of the wall in voxels.
    seed : int
        Seed of the surface samples.
    signed : bool
        For a closed, consistently oriented mesh: the band's distances signed by the pseudonormal
        (``pseudonormal_distance``, at the same cost), and also returned: (labels, (res, res, res) bool, True
        at the wall's nodes the pseudonormal puts inside).
    """
    h = cell_size(res)
    area = float(trimesh.triangles.area(vertices[faces]).sum())
    count = int(min(max(4 * area / (h * h), 10_000), 4_000_000))  # ~2 samples per voxel side
    tm = trimesh.Trimesh(vertices, faces, process=False)
    samples, _ = trimesh.sample.sample_surface(tm, count, seed=seed)
    touched = np.zeros((res, res, res), dtype=bool)
    v = nearest_node(np.concatenate([samples, vertices]), res)
    touched[v[:, 0], v[:, 1], v[:, 2]] = True
    # voxel centres within (wall + 1.5) voxels of a touched centre: every centre that can be within the wall
    band = scipy.ndimage.distance_transform_edt(~touched) <= wall + 1.5
    candidates = np.argwhere(band)
    points = node_coords(candidates, res)
    d = pseudonormal_distance(points, vertices, faces) if signed else nearest_surface(points, vertices, faces)[0]
    is_wall = np.zeros((res, res, res), dtype=bool)
    is_wall[tuple(candidates[np.abs(d) <= wall * h].T)] = True
    labels = np.full((res, res, res), INSIDE, dtype=np.uint8)
    labels[exterior(is_wall)] = OUTSIDE
    labels[is_wall] = WALL
    if not signed:
        return labels
    pseudonormal_inside = np.zeros((res, res, res), dtype=bool)
    pseudonormal_inside[tuple(candidates[(np.abs(d) <= wall * h) & (d < 0)].T)] = True
    return labels, pseudonormal_inside


def winding_grid(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(res, res, res) winding number of a watertight, consistently oriented mesh at the nodes of the grid of
    ``labels`` (``wall_labels``).

    Such a surface's winding number is constant off its faces, so it is evaluated at the wall's nodes and at
    three nodes of each connected region of off-wall nodes (their median fills the region): no segment between
    two 6-neighbours off the wall can cross a face, both ends lying more than ``WALL_VOXELS`` voxels from it.
    The cost follows the surface's area, not the grid's volume (the fast winding number is slow near large
    triangles, which CAD meshes are made of).
    """
    res = labels.shape[0]
    wall = labels == WALL
    winding = np.zeros(labels.shape)
    winding[wall] = winding_number(node_coords(np.argwhere(wall), res), vertices, faces)
    regions, count = scipy.ndimage.label(~wall)
    if count:
        flat = regions.ravel()
        order = np.argsort(flat, kind="stable")
        start = np.searchsorted(flat[order], np.arange(1, count + 2))
        picks = order[np.stack([start[:-1], (start[:-1] + start[1:] - 1) // 2, start[1:] - 1])]  # (3, count)
        nodes_xyz = node_coords(np.stack(np.unravel_index(picks.ravel(), labels.shape), axis=1), res)
        values = np.median(winding_number(nodes_xyz, vertices, faces).reshape(3, count), axis=0)
        winding[~wall] = values[flat[~wall.ravel()] - 1]
    return winding


def winding_agreement(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray,
                      winding: np.ndarray | None = None, samples: int = AGREEMENT_SAMPLES,
                      seed: int = 0) -> tuple[float, float, float]:
    """How far the winding number can be trusted off the wall: the share of off-wall nodes where it is above
    1/2 exactly where the flood fill (``labels``) says INSIDE, and its (min, max) there.

    With the (res, res, res) ``winding`` at every node (a closed surface's ``winding_grid``) every off-wall node
    counts; without it a seeded random ``samples`` of them are evaluated (a surface that is not closed has no
    constant regions to exploit, and its winding number over the whole grid costs nodes x faces near large
    triangles; the share's standard error is then about 3e-4 at the 0.995 of ``WINDING_AGREEMENT``).
    """
    off_wall = np.flatnonzero(labels != WALL)
    if len(off_wall) == 0:
        return 1.0, 0.0, 0.0
    if winding is None:
        if len(off_wall) > samples:
            off_wall = np.sort(np.random.default_rng(seed).choice(off_wall, samples, replace=False))
        nodes_xyz = node_coords(np.stack(np.unravel_index(off_wall, labels.shape), axis=1), labels.shape[0])
        values = winding_number(nodes_xyz, vertices, faces)
    else:
        values = winding.ravel()[off_wall]
    agree = float(((values > 0.5) == (labels.ravel()[off_wall] == INSIDE)).mean())
    return agree, float(values.min()), float(values.max())


def closed_parts(vertices: np.ndarray, faces: np.ndarray, max_parts: int = MAX_PARTS) -> tuple[np.ndarray, ...] | None:
    """The faces (F_k,) of each connected part when there are 2 to ``max_parts`` parts and every one is closed
    (watertight and consistently oriented on its own, on merged vertices); else None."""
    tm = trimesh.Trimesh(vertices, faces)  # merges an STL's repeated vertices
    if len(tm.faces) != len(faces):
        return None  # merging dropped faces: the face indices would no longer be the mesh's
    groups = trimesh.graph.connected_components(tm.face_adjacency, nodes=np.arange(len(faces)), min_len=1)
    if not 2 <= len(groups) <= max_parts:
        return None
    groups = tuple(np.sort(np.asarray(g, dtype=np.int64)) for g in groups)
    for g in groups:
        part = trimesh.Trimesh(tm.vertices, tm.faces[g])
        if not (part.is_watertight and part.is_winding_consistent):
            return None
    return groups


def in_part_box(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Indices (n,) of the (N, 3) points inside the bounding box of the faces ``part`` (F_k,): outside it a
    closed part holds no point, so its winding number is 0 and its signed distance positive."""
    corners = vertices[np.unique(faces[part])]
    return np.nonzero(np.all((points >= corners.min(0)) & (points <= corners.max(0)), axis=1))[0]


def part_windings(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, parts: tuple[np.ndarray, ...]):
    """Per closed part: (its faces (F_k,), the indices (n,) of the (N, 3) points inside its bounding box, their
    absolute winding number (n,) of that part). Outside the box a closed part's winding number is 0, so it is
    not evaluated there."""
    for part in parts:
        near = in_part_box(points, vertices, faces, part)
        yield part, near, np.abs(winding_number(points[near], vertices, faces[part]))


def union_winding(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                  parts: tuple[np.ndarray, ...]) -> np.ndarray:
    """(N,) the largest absolute winding number of any closed part at (N, 3) points: above 1/2 inside their
    union, whatever each part's orientation and however they overlap."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    result = np.zeros(len(points))
    for _, near, w in part_windings(points, vertices, faces, parts):
        result[near] = np.maximum(result[near], w)
    return result


def union_depth(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                parts: tuple[np.ndarray, ...]) -> np.ndarray:
    """(N,) for (N, 3) points inside the union of closed ``parts``: the largest exact distance to the faces of
    a part that holds the point (the magnitude of the union's min of part signed distances)."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    depth = np.zeros(len(points))
    for part, near, w in part_windings(points, vertices, faces, parts):
        held = near[w > 0.5]
        if len(held):
            depth[held] = np.maximum(depth[held], nearest_surface(points[held], vertices, faces[part])[0])
    return depth


def union_kind(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, grid: int) -> MeshKind | None:
    """A mesh of closed parts whose union agrees with the flood fill (``closed_parts``): leaky, signed as the
    union; None when it is not one."""
    parts = closed_parts(vertices, faces)
    if parts is None:
        return None
    off_wall = np.flatnonzero(labels != WALL)
    if len(off_wall) > AGREEMENT_SAMPLES:
        off_wall = np.sort(np.random.default_rng(0).choice(off_wall, AGREEMENT_SAMPLES, replace=False))
    nodes_xyz = node_coords(np.stack(np.unravel_index(off_wall, labels.shape), axis=1), grid)
    agree = float(((union_winding(nodes_xyz, vertices, faces, parts) > 0.5)
                   == (labels.ravel()[off_wall] == INSIDE)).mean()) if len(off_wall) else 1.0
    if agree < WINDING_AGREEMENT or (labels == INSIDE).sum() < MIN_INTERIOR_VOXELS:
        return None
    return MeshKind("leaky", grid, None, labels, True,
                    f"{len(parts)} closed parts, overlapping or inside out: signed as their union (their winding "
                    f"numbers agree on {100 * agree:.2f}% of the voxels off the wall)", parts,
                    union_pseudonormal_agrees(vertices, faces, labels, parts))


def classify(vertices: np.ndarray, faces: np.ndarray, grid: int = CLASSIFY_GRID) -> MeshKind:
    """Classify a normalized mesh as closed, leaky or sheet (see the module docstring).

    Parameters
    ----------
    vertices : (V, 3) array, faces : (F, 3) int array
        In the normalized frame (inside [-0.9, 0.9]^3).
    grid : int
        Voxels per axis of the analysis.
    """
    watertight, consistent = topology(vertices, faces)
    closed_surface = watertight and consistent
    if closed_surface:  # the wall's distances come signed by the pseudonormal, at no extra cost
        labels, pseudonormal_inside = wall_labels(vertices, faces, grid, signed=True)
    else:
        labels, pseudonormal_inside = wall_labels(vertices, faces, grid), None
    winding = winding_grid(vertices, faces, labels) if closed_surface else None
    if winding is not None and winding.min() > -0.5 and winding.max() < 1.5:
        return MeshKind("closed", grid, winding, labels, True, "watertight and consistently oriented", None,
                        pseudonormal_agrees(winding, labels, pseudonormal_inside))
    union = union_kind(vertices, faces, labels, grid) if watertight else None
    if union is not None:
        return union
    agreement, low, high = winding_agreement(vertices, faces, labels, winding)
    one_layer = not closed_surface and low > -0.5 and high < 1.5  # a closed surface got here for its layers
    interior = labels == INSIDE
    problems = ", ".join(p for p, bad in (("not watertight", not watertight),
                                          ("inconsistently oriented", not consistent),
                                          ("self-intersecting or with inner surfaces", not one_layer)) if bad)
    if interior.sum() < MIN_INTERIOR_VOXELS:
        return MeshKind("sheet", grid, winding, labels, False, f"{problems}; encloses no volume")
    return MeshKind("leaky", grid, winding, labels, agreement >= WINDING_AGREEMENT,
                    f"{problems}; encloses {int(interior.sum())} voxels of {grid}^3 "
                    f"(winding number agrees on {100 * agreement:.2f}% of them and the exterior)")


def wall_sign(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, mk: MeshKind,
              signed: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool: inside, for (n, 3) points next to the surface of a closed mesh or a union of closed parts,
    where the grid cannot tell: by the pseudonormal where the classification trusts it (``signed``: its
    ``pseudonormal_sdf`` at these points, when known), else by the winding number (of any part)."""
    if mk.pseudonormal:
        return (pseudonormal_sdf(points, vertices, faces, mk.parts) if signed is None else signed) < 0
    if mk.parts is not None:
        return union_winding(points, vertices, faces, mk.parts) > 0.5
    return winding_number(points, vertices, faces) > 0.5


def closed_inside(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, mk: MeshKind,
                  distance: np.ndarray | None = None, signed: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: inside a closed mesh, winding number above 1/2, evaluated at as few points as possible.

    A point takes its nearest node's winding number (``mk.winding``) when the segment between them cannot cross
    a face: the node is off the wall (over ``WALL_VOXELS`` voxels from the surface, the point within half a voxel
    diagonal of it), or, given the points' exact ``distance`` (N,) to the faces, the node is nearer the point
    than the surface is. The other points pay for their own sign (``wall_sign``; ``signed`` (N,): the
    pseudonormal's signed distances, when known).
    """
    v = nearest_node(points, mk.grid)
    result = mk.winding[v[:, 0], v[:, 1], v[:, 2]] > 0.5
    own = np.nonzero(mk.labels[v[:, 0], v[:, 1], v[:, 2]] == WALL)[0]
    if distance is not None:
        to_node = np.linalg.norm(points[own] - node_coords(v[own], mk.grid), axis=1)
        own = own[distance[own] <= to_node * (1 + 1e-9) + 1e-12]
    result[own] = wall_sign(points[own], vertices, faces, mk, None if signed is None else signed[own])
    return result


def inside(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, mk: MeshKind,
           nearest: np.ndarray | None = None, distance: np.ndarray | None = None,
           signed: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: whether each (N, 3) point lies inside the solid the mesh describes.

    closed: ``closed_inside`` (``distance``, the (N,) exact distances, lets more points take a node's sign).
    leaky: the robust sign of the module docstring (``nearest``, the (N, 3) nearest surface points, saves
    recomputing them); a union of closed parts by ``wall_sign`` in the wall. sheet: nothing is inside.
    ``signed`` (N,): the pseudonormal's signed distances when known (``pseudonormal_target``).
    """
    points = np.ascontiguousarray(points, dtype=np.float64)
    if mk.kind == "closed":
        return closed_inside(points, vertices, faces, mk, distance, signed)
    if mk.kind == "sheet":
        return np.zeros(len(points), dtype=bool)
    res, h = mk.grid, cell_size(mk.grid)
    v = nearest_node(points, res)
    label = mk.labels[v[:, 0], v[:, 1], v[:, 2]]
    result = label == INSIDE
    in_wall = np.nonzero(label == WALL)[0]
    if len(in_wall) == 0:
        return result
    if mk.parts is not None:
        result[in_wall] = wall_sign(points[in_wall], vertices, faces, mk, None if signed is None else signed[in_wall])
        return result
    if mk.trust_winding:
        result[in_wall] = winding_number(points[in_wall], vertices, faces) > 0.5
        return result
    if nearest is None:
        _, nearest = nearest_surface(points, vertices, faces)
    offset = points[in_wall] - nearest[in_wall]
    length = np.linalg.norm(offset, axis=1)
    # step from the nearest surface point along the point's side to just beyond the wall
    step = (WALL_VOXELS + 1.5) * h
    away = nearest[in_wall] + offset / np.maximum(length, 1e-12)[:, None] * step
    w = nearest_node(away, res)
    beyond = mk.labels[w[:, 0], w[:, 1], w[:, 2]]
    decided = (beyond != WALL) & (length > 1e-9)
    result[in_wall] = beyond == INSIDE
    undecided = in_wall[~decided]  # the winding number only where stepping out did not settle it
    result[undecided] = winding_number(points[undecided], vertices, faces) > 0.5
    return result


def target_sdf(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, mk: MeshKind,
               shell: float) -> np.ndarray:
    """(N,) training target of (N, 3) points, negative inside: closed and leaky: the exact distance to the faces
    with the kind's sign (``closed_inside``, the robust sign); sheet: distance - ``shell`` (a shell of
    half-thickness shell)."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    if mk.pseudonormal:
        return pseudonormal_target(points, vertices, faces, mk)
    distance, nearest = nearest_surface(points, vertices, faces)
    if mk.kind == "sheet":
        return distance - shell
    held = inside(points, vertices, faces, mk, nearest, distance)
    if mk.parts is not None:  # inside a union: the depth in its deepest part, not the distance to buried faces
        distance = distance.copy()
        distance[held] = union_depth(points[held], vertices, faces, mk.parts)
    return np.where(held, -distance, distance)


def pseudonormal_target(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, mk: MeshKind) -> np.ndarray:
    """(N,) ``target_sdf`` of a closed mesh or a union of closed parts whose classification trusts the
    pseudonormal: one distance query per point (per part holding it), signed off the wall by the grid as
    always and next to the surface by the pseudonormal, which the wall check compared with the winding number
    there. The few points where the grid's sign differs from the pseudonormal's (a defect of the mesh far from
    the wall) get the winding number's target."""
    signed = pseudonormal_sdf(points, vertices, faces, mk.parts)
    held = inside(points, vertices, faces, mk, distance=np.abs(signed) if mk.parts is None else None, signed=signed)
    differ = np.flatnonzero(held != (signed < 0))
    if len(differ):
        signed[differ] = target_sdf(points[differ], vertices, faces, dataclasses.replace(mk, pseudonormal=False), 0.0)
    return signed


def occupancy_grid(vertices: np.ndarray, faces: np.ndarray, mk: MeshKind, res: int) -> np.ndarray:
    """(res, res, res) bool: ``inside`` at the voxel centres ``grid.node_points(res)`` (reuses the classification's
    winding numbers when ``res`` is its grid)."""
    if mk.kind == "closed" and res == mk.grid:
        return mk.winding > 0.5
    return inside(node_points(res), vertices, faces, mk).reshape(res, res, res)


@dataclass
class TargetField:
    """The field a network is trained to reproduce for one normalized mesh: its kind and the target and sign
    of any point. Built once per mesh with ``TargetField.of``.

    Attributes
    ----------
    vertices : (V, 3) float64 array, faces : (F, 3) int64 array
    analysis : MeshKind
    shell : float
        Half-thickness of the shell that stands in for a sheet (0 for closed and leaky meshes).
    """

    vertices: np.ndarray
    faces: np.ndarray
    analysis: MeshKind
    shell: float

    @classmethod
    def of(cls, mesh, sheet_shell: float, grid: int = CLASSIFY_GRID) -> "TargetField":
        """Classify ``mesh`` (anything with ``vertices`` and ``faces``, normalized frame); ``sheet_shell`` is
        the shell's half-thickness used if it is a sheet."""
        analysis = classify(mesh.vertices, mesh.faces, grid)
        return cls(mesh.vertices, mesh.faces, analysis, sheet_shell if analysis.kind == "sheet" else 0.0)

    @property
    def kind(self) -> str:
        return self.analysis.kind

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """(N,) targets of (N, 3) points (``target_sdf``)."""
        return target_sdf(points, self.vertices, self.faces, self.analysis, self.shell)

    def inside(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool (``inside``); all False for a sheet."""
        return inside(points, self.vertices, self.faces, self.analysis)

    def occupancy(self, res: int) -> np.ndarray:
        """(res, res, res) bool occupancy of the voxel centres ``grid.node_points(res)``."""
        return occupancy_grid(self.vertices, self.faces, self.analysis, res)

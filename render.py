"""Headless pictures: an SDF network sphere-traced in torch, triangle meshes rasterized in NumPy, no OpenGL.

Every image of one mesh uses the same camera (``Camera.default``: the normalized frame is the same for every
mesh) and the same light, fixed to the camera; surfaces are Lambert-shaded by their normals, lit from both
sides so that open sheets show. ``eval.py --render`` and ``modelmesher.py --png`` call this module.

Pixel (row i, column j) looks through the point (j + 0.5, i + 0.5) of the image plane, row 0 at the top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import atomic_write
from field import evaluate_grid
from grid import lattice_step

AMBIENT = 0.25       # light reaching a surface facing away from the light
DIFFUSE = 0.75       # Lambert share; AMBIENT + DIFFUSE = 1 for a surface facing the light
BACKGROUND = (1.0, 1.0, 1.0)
COLORS = {"truth": (0.80, 0.80, 0.80), "model": (0.55, 0.70, 0.90), "spheres": (0.95, 0.65, 0.35)}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking at ``target``; ``fov`` is the vertical field of view in degrees."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)
    fov: float = 36.0

    @classmethod
    def default(cls, azimuth: float = 30.0, elevation: float = 20.0, distance: float = 3.0) -> Camera:
        """The camera of every picture: the unit ball (where meshes are normalized) fills most of the image;
        angles in degrees, azimuth about +y from +z."""
        a, e = math.radians(azimuth), math.radians(elevation)
        return cls(eye=(distance * math.cos(e) * math.sin(a), distance * math.sin(e),
                        distance * math.cos(e) * math.cos(a)))

    def frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(right, up, forward) unit vectors of the camera."""
        forward = _unit(np.subtract(self.target, self.eye, dtype=np.float64))
        right = _unit(np.cross(forward, self.up))
        return right, np.cross(right, forward), forward

    def focal(self, height: int) -> float:
        """Focal length in pixels."""
        return height / 2 / math.tan(math.radians(self.fov) / 2)

    def light(self) -> np.ndarray:
        """(3,) unit vector towards the light: over the camera's left shoulder."""
        right, up, forward = self.frame()
        return _unit(-forward + 0.6 * up - 0.4 * right)

    def rays(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Origins (H * W, 3) and unit directions (H * W, 3) of the pixels' rays, rows first."""
        right, up, forward = self.frame()
        f = self.focal(height)
        j, i = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        d = forward + ((j - width / 2) / f)[..., None] * right - ((i - height / 2) / f)[..., None] * up
        d = _unit(d.reshape(-1, 3))
        return np.broadcast_to(np.asarray(self.eye, dtype=np.float64), d.shape).copy(), d

    def project(self, points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel coordinates (x = column, y = row, continuous) and depth along the view axis of (N, 3) points."""
        right, up, forward = self.frame()
        rel = np.asarray(points, dtype=np.float64) - np.asarray(self.eye)
        z = rel @ forward
        f = self.focal(height)
        safe = np.where(z > 1e-9, z, 1e-9)
        return width / 2 + f * (rel @ right) / safe, height / 2 - f * (rel @ up) / safe, z


def shade(normals: np.ndarray, view: np.ndarray, light: np.ndarray, color=COLORS["model"]) -> np.ndarray:
    """Lambert shading, lit from both sides: a normal facing away from the viewer is flipped first.

    Parameters
    ----------
    normals : (N, 3) array, unit normals
    view : (N, 3) array, directions from the eye towards the points
    light : (3,) unit vector towards the light
    color : RGB in [0, 1]

    Returns
    -------
    (N, 3) RGB in [0, 1].
    """
    n = np.where((np.sum(normals * view, axis=1) > 0)[:, None], -normals, normals)
    intensity = AMBIENT + DIFFUSE * np.clip(n @ light, 0.0, None)
    return intensity[:, None] * np.asarray(color)[None, :]


def compose(pixels: np.ndarray, mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) image: ``pixels`` (mask.sum(), 3) where ``mask`` (H * W,), the background elsewhere."""
    image = np.broadcast_to(np.asarray(BACKGROUND), (height * width, 3)).copy()
    image[mask] = pixels
    return image.reshape(height, width, 3)


# ----------------------------------------------------------------------------------------------------------
# SDF networks: sphere tracing


def ray_box(origins: np.ndarray, directions: np.ndarray, half: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances of rays through the cube [-half, half]^3 (entry > exit: the ray misses).

    Parameters
    ----------
    origins, directions : (N, 3) arrays

    Returns
    -------
    t_near, t_far : (N,) arrays, t_near >= 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / directions
        t0, t1 = (-half - origins) * inv, (half - origins) * inv
    lo = np.nan_to_num(np.minimum(t0, t1), nan=-np.inf).max(axis=1)
    hi = np.nan_to_num(np.maximum(t0, t1), nan=np.inf).min(axis=1)
    return np.maximum(lo, 0.0), hi


def proxy_grid(model: torch.nn.Module, grid_res: int, device, volume: np.ndarray | None = None
               ) -> tuple[torch.Tensor, float]:
    """The field on the lattice (``field.evaluate_grid``, or ``volume`` when given) as a (1, 1, D, H, W) tensor
    for ``grid_sample``, and one cell diagonal of that lattice."""
    if volume is None:
        volume = evaluate_grid(model, grid_res, device)
    proxy = torch.as_tensor(volume, device=device).permute(2, 1, 0)[None, None].contiguous()  # (x, y, z) as (W, H, D)
    return proxy, lattice_step(volume.shape[0]) * math.sqrt(3)


@torch.no_grad()
def trace_field(model: torch.nn.Module, origins: np.ndarray, directions: np.ndarray, device="cpu",
                grid_res: int = 64, max_steps: int = 160, hit_eps: float = 1e-3,
                volume: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First zero of the field along each ray, by sphere tracing.

    The network is first evaluated on a narrow-band grid of ``grid_res``^3 (``field.evaluate_grid``);
    rays step through its trilinear interpolation while it stays more than a cell diagonal above zero, and
    step with the network itself (t += f) only near the surface, so a 512^2 image costs a few network
    evaluations per covered pixel instead of dozens per pixel.

    Parameters
    ----------
    model : (N, 3) -> (N,) signed distance, negative inside
    origins, directions : (N, 3) arrays, unit directions
    grid_res : resolution of the proxy grid over [-1, 1]^3
    max_steps : steps before a ray that has not converged is given up (counted as a miss unless within
        4 ``hit_eps`` of the surface)
    hit_eps : |f| that counts as a hit
    volume : (grid_res, grid_res, grid_res) array, optional
        That grid when the caller has it already (several views of one model)

    Returns
    -------
    t : (N,) float array, distance along the ray to the hit (inf for a miss)
    hit : (N,) bool array
    """
    model = model.to(device).eval()
    proxy, near = proxy_grid(model, grid_res, device, volume)
    o = torch.as_tensor(origins, dtype=torch.float32, device=device)
    d = torch.as_tensor(directions, dtype=torch.float32, device=device)
    t_near, t_far = (torch.as_tensor(a, dtype=torch.float32, device=device) for a in ray_box(origins, directions))
    t = t_near.clone()
    result = torch.full_like(t, math.inf)
    last = torch.full_like(t, math.inf)
    active = torch.nonzero(t_near < t_far).squeeze(1)
    for _ in range(max_steps):
        if len(active) == 0:
            break
        p = o[active] + t[active, None] * d[active]
        s = F.grid_sample(proxy, p[None, None, None], align_corners=True).reshape(-1)
        step = s - near / 2                     # the proxy is within half a diagonal of the field
        close = s < near
        if close.any():
            f = model(p[close]).float()
            last[active[close]] = f
            step[close] = torch.where(f > 0, 0.9 * f.clamp_min(hit_eps / 2), f)
            hit = close.clone()
            hit[close] = (f.abs() < hit_eps) | ((f < 0) & (t[active[close]] <= t_near[active[close]]))
            result[active[hit]] = t[active[hit]]
        else:
            hit = torch.zeros_like(close)
        t[active] = torch.maximum(t[active] + step, t_near[active])
        active = active[~hit & (t[active] < t_far[active])]
    # rays still stepping along a surface they nearly touch count as hits
    late = active[last[active].abs() < 4 * hit_eps]
    result[late] = t[late]
    result = result.cpu().numpy().astype(np.float64)
    return result, np.isfinite(result)


def field_normals(model: torch.nn.Module, points: np.ndarray, device="cpu", chunk: int = 1 << 16) -> np.ndarray:
    """(N, 3) unit gradients of the field at (N, 3) points."""
    model = model.to(device).eval()
    out = []
    for start in range(0, len(points), chunk):
        x = torch.as_tensor(points[start:start + chunk], dtype=torch.float32, device=device).requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(model(x).sum(), x)
        out.append(F.normalize(g, dim=1).cpu().double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3))


def render_field(model: torch.nn.Module, camera: Camera, width: int = 512, height: int = 512, device="cpu",
                 color=COLORS["model"], grid_res: int = 64,
                 volume: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image of a network's zero level set (``volume``: see ``trace_field``).

    Returns
    -------
    image : (H, W, 3) float array in [0, 1]
    mask : (H, W) bool array, pixels that show the surface
    """
    origins, directions = camera.rays(width, height)
    t, hit = trace_field(model, origins, directions, device, grid_res, volume=volume)
    points = origins[hit] + t[hit, None] * directions[hit]
    pixels = shade(field_normals(model, points, device), directions[hit], camera.light(), color)
    return compose(pixels, hit, width, height), hit.reshape(height, width)


# ----------------------------------------------------------------------------------------------------------
# Triangle meshes: a z-buffer in NumPy


def rasterize(vertices: np.ndarray, faces: np.ndarray, camera: Camera, width: int, height: int,
              max_candidates: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Nearest face per pixel.

    Each face is tested at the pixel centres of its screen bounding box (in chunks of at most
    ``max_candidates`` tests); depth is interpolated perspective-correctly. Faces with a vertex behind the
    camera are skipped.

    Parameters
    ----------
    vertices : (V, 3) array
    faces : (F, 3) int array

    Returns
    -------
    face : (H * W,) int array, the face seen at each pixel or -1
    depth : (H * W,) float array, its depth along the view axis (inf where no face)
    """
    x, y, z = camera.project(vertices, width, height)
    faces = np.asarray(faces, dtype=np.int64)
    fx, fy, fz = x[faces], y[faces], z[faces]
    area = (fx[:, 1] - fx[:, 0]) * (fy[:, 2] - fy[:, 0]) - (fx[:, 2] - fx[:, 0]) * (fy[:, 1] - fy[:, 0])
    c0 = np.clip(np.ceil(fx.min(1) - 0.5), 0, width).astype(np.int64)
    c1 = np.clip(np.floor(fx.max(1) - 0.5), -1, width - 1).astype(np.int64)
    r0 = np.clip(np.ceil(fy.min(1) - 0.5), 0, height).astype(np.int64)
    r1 = np.clip(np.floor(fy.max(1) - 0.5), -1, height - 1).astype(np.int64)
    ncol, nrow = c1 - c0 + 1, r1 - r0 + 1
    keep = np.nonzero((fz.min(1) > 1e-6) & (np.abs(area) > 1e-12) & (ncol > 0) & (nrow > 0))[0]
    count = ncol[keep] * nrow[keep]
    face_at = np.full(height * width, -1, dtype=np.int64)
    depth = np.full(height * width, np.inf)
    cum = np.cumsum(count)
    start = 0
    while start < len(keep):
        stop = max(int(np.searchsorted(cum, (cum[start - 1] if start else 0) + max_candidates, side="right")),
                   start + 1)
        ids, n = keep[start:stop], count[start:stop]
        start = stop
        rep = np.repeat(np.arange(len(ids)), n)
        local = np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)
        f = ids[rep]
        col = c0[f] + local % ncol[f]
        row = r0[f] + local // ncol[f]
        px, py = col + 0.5, row + 0.5
        X, Y = fx[f], fy[f]
        w0 = ((X[:, 1] - px) * (Y[:, 2] - py) - (X[:, 2] - px) * (Y[:, 1] - py)) / area[f]
        w1 = ((X[:, 2] - px) * (Y[:, 0] - py) - (X[:, 0] - px) * (Y[:, 2] - py)) / area[f]
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        f, pix = f[inside], (row * width + col)[inside]
        Z = fz[f]
        z_pix = 1.0 / (w0[inside] / Z[:, 0] + w1[inside] / Z[:, 1] + w2[inside] / Z[:, 2])
        order = np.lexsort((z_pix, pix))
        pix, first = np.unique(pix[order], return_index=True)
        z_first, f_first = z_pix[order][first], f[order][first]
        nearer = z_first < depth[pix]
        depth[pix[nearer]] = z_first[nearer]
        face_at[pix[nearer]] = f_first[nearer]
    return face_at, depth


def render_mesh(vertices: np.ndarray, faces: np.ndarray, camera: Camera, width: int = 512, height: int = 512,
                color=COLORS["truth"]) -> tuple[np.ndarray, np.ndarray]:
    """Image of a triangle mesh, flat-shaded by face normals (a mesh is shown as it is).

    Returns
    -------
    image : (H, W, 3) float array in [0, 1]
    mask : (H, W) bool array
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    face_at, depth = rasterize(vertices, faces, camera, width, height)
    mask = face_at >= 0
    tri = vertices[faces[face_at[mask]]]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
    _, directions = camera.rays(width, height)
    pixels = shade(normals, directions[mask], camera.light(), color)
    return compose(pixels, mask, width, height), mask.reshape(height, width)


def sphere_meshes(spheres: np.ndarray, subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One icosphere per key sphere (x, y, z, signed SDF at the centre; radius |SDF|), as one mesh."""
    import trimesh

    unit = trimesh.creation.icosphere(subdivisions=subdivisions)
    spheres = np.asarray(spheres, dtype=np.float64).reshape(-1, 4)
    nv = len(unit.vertices)
    vertices = (unit.vertices[None] * np.abs(spheres[:, None, 3:4]) + spheres[:, None, :3]).reshape(-1, 3)
    faces = (unit.faces[None] + nv * np.arange(len(spheres))[:, None, None]).reshape(-1, 3)
    return vertices, faces


# ----------------------------------------------------------------------------------------------------------
# Files


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] -> uint8."""
    return (255 * np.clip(image, 0, 1)).round().astype(np.uint8)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) image in [0, 1] as PNG, atomically."""
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(to_uint8(image)).save(tmp, format="PNG"))


def save_turntable(path: str | Path, model: torch.nn.Module, frames: int = 24, size: int = 256, device="cpu",
                   seconds: float = 3.0) -> None:
    """An animated GIF of the model turning once about +y (the default camera's elevation and distance)."""
    from PIL import Image

    volume = evaluate_grid(model.to(device).eval(), 64, device)
    images = [Image.fromarray(to_uint8(render_field(model, Camera.default(azimuth=360.0 * k / frames), size, size,
                                                    device, volume=volume)[0]))
              for k in range(frames)]
    atomic_write(path, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                  duration=round(1000 * seconds / frames), loop=0))


def save_panels(path: str | Path, images: list[np.ndarray], captions: list[str], title: str = "") -> None:
    """Images side by side, a caption under each, as one PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = images[0].shape[:2]
    fig, axes = plt.subplots(1, len(images), squeeze=False,
                             figsize=(len(images) * width / 100, height / 100 + 0.6 + (0.3 if title else 0)))
    for ax, image, caption in zip(axes[0], images, captions):
        ax.imshow(np.clip(image, 0, 1))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_xlabel(caption, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(pad=0.3)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)

"""Export a trained SDF network as a triangle mesh by marching cubes.

    python modelmesher.py --model runs/default/cow/model.pt --res 256 --out cow.ply [--original-frame]
    python modelmesher.py --model runs/default/cow/model.ksdf --png cow.png [--size 512] [--turntable cow.gif]

Reads our checkpoints and files, the key-sphere authors' released ``.pth`` and NI's released ``.h5``. The
field is evaluated in chunks, so 512^3 needs memory for the volume (512 MB of float32) but not for 134M
network activations.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from skimage.measure import marching_cubes

import architectures
from codec import load_model
from common import InputError, add_logging_flags, atomic_write, pick_device, run_main, setup_logging
from field import evaluate_grid
from grid import lattice_step
from render import Camera, render_field, save_png, save_turntable
from sphere_sampler import Normalization

log = logging.getLogger("keysphere")
OUT_SUFFIXES = (".obj", ".ply", ".stl")


def mesh_from_volume(volume: np.ndarray, level: float | str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Level set of an SDF volume over [-1, 1]^3 (negative inside), faces pointing outward.

    ``level="auto"`` is 0, except for a field that never goes negative but comes within two grid steps of
    zero (an open sheet: nothing is inside): then one grid step above its minimum, a thin closed shell.

    Raises
    ------
    InputError
        When the field never crosses the level (the network learned no surface).
    """
    res = volume.shape[0]
    step = lattice_step(res)
    lo, hi = float(volume.min()), float(volume.max())
    if level == "auto":
        level = lo + step if 0 <= lo < 2 * step and lo + step < hi else 0.0
        if level:
            log.warning("the field never goes negative (an open surface?): meshed at level %.4f", level)
    if not lo < level < hi:
        raise InputError(f"the field never crosses {level:g} (min {lo:.4f}, max {hi:.4f}): the network learned no "
                         "surface; train longer or check the sign")
    verts, faces, _, _ = marching_cubes(volume, level=float(level), spacing=(step,) * 3,
                                        gradient_direction="descent")
    return verts - 1.0, faces.astype(np.int64)


def project_onto_sheet(model: torch.nn.Module, vertices: np.ndarray, shell: float,
                       device: torch.device | str = "cpu", chunk: int = 1 << 16) -> np.ndarray:
    """Move the vertices of a shell field's zero set back onto the sheet it surrounds.

    A sheet's network learns f = distance - ``shell``; a vertex v of f = 0 sits ``shell`` off the sheet, so
    v - (f(v) + shell) grad f / |grad f| lies on it. Both sides of the shell land on the sheet: the mesh has
    two coincident layers, facing opposite ways.

    Parameters
    ----------
    vertices : (V, 3) array
    shell : float

    Returns
    -------
    (V, 3) float64 array.
    """
    model = model.to(device).eval()
    moved = []
    for start in range(0, len(vertices), chunk):
        v = torch.as_tensor(vertices[start:start + chunk], dtype=torch.float32, device=device).requires_grad_(True)
        with torch.enable_grad():
            f = model(v)
            (grad,) = torch.autograd.grad(f.sum(), v)
        direction = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-6)
        moved.append((v - (f + shell).unsqueeze(1) * direction).detach().cpu().double().numpy())
    return np.concatenate(moved) if moved else np.zeros((0, 3))


def mesh_model(model: torch.nn.Module, res: int = 128, device: torch.device | str = "cpu",
               level: float | str = "auto", shell: float = 0.0) -> trimesh.Trimesh:
    """Marching cubes of a network at ``res``^3 in the normalized frame. A sheet's shell field (``shell`` > 0,
    stored with the model) is meshed at level 0 and its vertices moved back onto the sheet."""
    if shell > 0:
        verts, faces = mesh_from_volume(evaluate_grid(model, res, device), 0.0 if level == "auto" else level)
        return trimesh.Trimesh(project_onto_sheet(model, verts, shell, device), faces, process=False)
    verts, faces = mesh_from_volume(evaluate_grid(model, res, device), level)
    return trimesh.Trimesh(verts, faces, process=False)


def save_mesh(mesh: trimesh.Trimesh, path: str | Path) -> None:
    """Write obj/ply/stl (by suffix) atomically."""
    path = Path(path)
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise InputError(f"{path}: output must end in {', '.join(OUT_SUFFIXES)}")
    atomic_write(path, lambda tmp: mesh.export(tmp))


def parse_args(argv) -> argparse.Namespace:
    """The command line, checked: a bad value is an InputError."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="our model.pt or model.ksdf, the key-sphere authors' .pth or NI's .h5")
    parser.add_argument("--res", type=int, default=128, help="grid resolution per axis (default 128)")
    parser.add_argument("--out", help="output mesh: .obj, .ply or .stl")
    parser.add_argument("--png", help="also (or only) a picture of the model's surface, sphere-traced (render.py)")
    parser.add_argument("--size", type=int, default=512, help="pixels per side of --png (default 512)")
    parser.add_argument("--turntable", help="also (or only) an animated GIF of the model turning, 24 frames of 256^2")
    parser.add_argument("--original-frame", action="store_true",
                        help="write in the input mesh's original coordinates instead of the normalized frame")
    parser.add_argument("--level", default="auto",
                        help="iso-level (default auto: 0; for models older than mesh kinds, just above the minimum of "
                             "a field that never goes negative)")
    parser.add_argument("--lod", type=int, help="NGLOD models: the LOD to use (1-based; default the finest)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when present)")
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    if args.out is None and args.png is None and args.turntable is None:
        raise InputError("give --out (a mesh), --png (a picture), --turntable (a GIF), or several")
    if args.res < 2:
        raise InputError(f"--res must be at least 2, got {args.res}")
    if args.size < 16:
        raise InputError(f"--size must be at least 16, got {args.size}")
    if args.png and Path(args.png).suffix.lower() != ".png":
        raise InputError(f"{args.png}: --png must end in .png")
    if args.turntable and Path(args.turntable).suffix.lower() != ".gif":
        raise InputError(f"{args.turntable}: --turntable must end in .gif")
    if args.out and Path(args.out).suffix.lower() not in OUT_SUFFIXES:
        raise InputError(f"{args.out}: output must end in {', '.join(OUT_SUFFIXES)}")
    if args.level != "auto":
        try:
            args.level = float(args.level)
        except ValueError:
            raise InputError(f"--level must be a number or auto, got {args.level!r}") from None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    device = pick_device(args.device)
    model, info = load_model(args.model)
    if args.lod is not None:
        if not architectures.get(info["arch"]).has_lods:
            raise InputError(f"{args.model}: --lod is for NGLOD models, this is {info.get('arch')}")
        try:
            model = model.truncated(args.lod - 1)
        except ValueError as exc:
            raise InputError(f"{args.model}: {exc}") from None
    if args.png:
        start = time.perf_counter()
        save_png(args.png, render_field(model, Camera.default(), args.size, args.size, device)[0])
        log.info("%s: %d x %d in %.2f s", args.png, args.size, args.size, time.perf_counter() - start)
    if args.turntable:
        start = time.perf_counter()
        save_turntable(args.turntable, model, device=device)
        log.info("%s: 24 frames in %.2f s", args.turntable, time.perf_counter() - start)
    if args.out is None:
        return 0
    start = time.perf_counter()
    try:
        mesh = mesh_model(model, args.res, device, args.level, shell=float(info.get("shell") or 0.0))
    except InputError as exc:
        raise InputError(f"{args.model}: {exc}") from None
    if args.original_frame:
        if not info.get("normalization"):
            raise InputError(f"{args.model}: stores no normalization, so there is no original frame to go back to")
        mesh.vertices = Normalization.from_dict(info["normalization"]).invert(mesh.vertices)
    save_mesh(mesh, args.out)
    log.info("%s: %d vertices, %d faces at %d^3 in %.2f s", args.out, len(mesh.vertices), len(mesh.faces),
             args.res, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    run_main(main)

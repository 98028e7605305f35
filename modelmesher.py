"""Export a trained SDF network as a triangle mesh by marching cubes.

    python modelmesher.py --model runs/default/cow/model.pt --res 256 --out cow.ply [--original-frame]

Reads our checkpoints and the authors' released ``.pth``. The field is evaluated in chunks, so 512^3 needs
memory for the volume (512 MB of float32) but not for 134M network activations.
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

from common import InputError, add_logging_flags, atomic_write, load_checkpoint, pick_device, run_main, setup_logging
from sphere_sampler import Normalization

log = logging.getLogger("keysphere")
OUT_SUFFIXES = (".obj", ".ply", ".stl")


@torch.no_grad()
def evaluate_grid(model: torch.nn.Module, res: int, device: torch.device | str = "cpu",
                  chunk: int = 1 << 18) -> np.ndarray:
    """The network's SDF on the res^3 grid of points linspace(-1, 1, res) per axis.

    Returns
    -------
    (res, res, res) float32 array, indexed [x, y, z].
    """
    axis = torch.linspace(-1, 1, res, device=device)
    volume = np.empty((res, res, res), dtype=np.float32)
    yz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    slabs = max(1, chunk // len(yz))  # x-slices per forward pass
    model = model.to(device).eval()
    for start in range(0, res, slabs):
        xs = axis[start:start + slabs]
        pts = torch.cat([xs.repeat_interleave(len(yz))[:, None], yz.repeat(len(xs), 1)], dim=1)
        volume[start:start + len(xs)] = model(pts).reshape(len(xs), res, res).float().cpu().numpy()
    return volume


def mesh_from_volume(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero level set of an SDF volume over [-1, 1]^3 (negative inside), faces pointing outward.

    Raises
    ------
    InputError
        When the field never crosses zero (the network learned no surface).
    """
    lo, hi = float(volume.min()), float(volume.max())
    if not lo < 0 < hi:
        raise InputError(f"the field never crosses zero (min {lo:.4f}, max {hi:.4f}): the network learned no "
                         "surface; train longer or check the sign")
    res = volume.shape[0]
    verts, faces, _, _ = marching_cubes(volume, level=0.0, spacing=(2 / (res - 1),) * 3,
                                        gradient_direction="descent")
    return verts - 1.0, faces.astype(np.int64)


def mesh_model(model: torch.nn.Module, res: int = 128, device: torch.device | str = "cpu") -> trimesh.Trimesh:
    """Marching cubes of a network at ``res``^3 in the normalized frame."""
    verts, faces = mesh_from_volume(evaluate_grid(model, res, device))
    return trimesh.Trimesh(verts, faces, process=False)


def save_mesh(mesh: trimesh.Trimesh, path: str | Path) -> None:
    """Write obj/ply/stl (by suffix) atomically."""
    path = Path(path)
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise InputError(f"{path}: output must end in {', '.join(OUT_SUFFIXES)}")
    atomic_write(path, lambda tmp: mesh.export(tmp))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="our model.pt or the authors' .pth")
    parser.add_argument("--res", type=int, default=128, help="grid resolution per axis (default 128)")
    parser.add_argument("--out", required=True, help="output mesh: .obj, .ply or .stl")
    parser.add_argument("--original-frame", action="store_true",
                        help="write in the input mesh's original coordinates instead of the normalized frame")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when present)")
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    if args.res < 2:
        raise InputError(f"--res must be at least 2, got {args.res}")
    if Path(args.out).suffix.lower() not in OUT_SUFFIXES:
        raise InputError(f"{args.out}: output must end in {', '.join(OUT_SUFFIXES)}")
    device = pick_device(args.device)
    model, info = load_checkpoint(args.model)
    start = time.perf_counter()
    try:
        mesh = mesh_model(model, args.res, device)
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

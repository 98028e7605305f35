"""Rate-distortion points of our codec and of QEM decimation + Draco, for ``eval.py --rd``.

Every point is (bytes of the file a user would ship, CD2 of its decoded surface against the ground truth),
CD2 exactly as ``eval.py`` computes it (normalized frame, 131072 samples each way, squared, x1e3).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

import architectures
import codec
from common import InputError, atomic_write
from metrics import chamfer
from modelmesher import mesh_model
from sphere_sampler import Mesh, sample_surface

DRACO_FACES = (250, 500, 1000, 2000, 4000, 8000, 16000)
DRACO_BITS = (8, 10, 12)              # Draco position quantization
DRACO_LEVEL = 10                      # Draco compression level (its best)


def surface_cd2(mesh: Mesh, gt_points: np.ndarray, samples: int) -> float:
    """CD2 (x1e3) of a mesh's area-uniform samples (seed 1, as eval.py) against ground-truth samples."""
    return chamfer(sample_surface(mesh, samples, seed=1)[0], gt_points)["cd2"]


def model_mesh(model: torch.nn.Module, device, shell: float = 0.0) -> Mesh | None:
    """Marching cubes at 128^3 (as eval.py; a sheet's shell moved back onto the sheet); None when the field
    has no surface."""
    try:
        tm = mesh_model(model, 128, device, shell=shell)
    except InputError:
        return None
    return Mesh(np.asarray(tm.vertices, dtype=np.float64), np.asarray(tm.faces, dtype=np.int64))


def file_points(mesh_dir: Path, gt_points: np.ndarray, samples: int, device) -> list[dict]:
    """One point per ``.ksdf`` file of a mesh's run folder (``model.ksdf`` is the shipped one, the others the
    operating points of config ``rd_bits``), sorted by bytes. A field without surface gets CD2 inf."""
    points = []
    for path in sorted(Path(mesh_dir).glob("model*.ksdf")):
        model, info = codec.read(path)
        mesh = model_mesh(model, device, info["shell"])
        lod = f"LOD {info['model_args']['lods']}, " if architectures.get(info["arch"]).has_lods else ""
        points.append({"setting": lod + f"{info['bits']}-bit" + (" (shipped)" if path.name == "model.ksdf" else ""),
                       "bytes": path.stat().st_size,
                       "cd2": surface_cd2(mesh, gt_points, samples) if mesh is not None else math.inf})
    return sorted(points, key=lambda p: p["bytes"])


def float_point(model: torch.nn.Module, info: dict, gt_points: np.ndarray, samples: int, device) -> dict:
    """The float checkpoint as a point: its float32 file's bytes and its own CD2."""
    surface = codec.surface_info(info)
    data = codec.encode(model, info["arch"], info["model_args"], 32, info.get("normalization"), surface)
    mesh = model_mesh(model, device, surface["shell"])
    return {"setting": "float32", "bytes": len(data),
            "cd2": surface_cd2(mesh, gt_points, samples) if mesh is not None else math.inf}


def draco_levels(mesh: Mesh, faces_list=DRACO_FACES) -> list[tuple[np.ndarray, np.ndarray]]:
    """(vertices float32, faces int32) of QEM decimation (fast-simplification) to each face budget below the
    mesh's own, and of the full mesh, by face count."""
    import fast_simplification

    vertices, faces = mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32)
    levels = []
    for target in sorted({f for f in faces_list if f < len(faces)} | {len(faces)}):
        if target == len(faces):
            levels.append((vertices, faces))
        else:
            v, f = fast_simplification.simplify(vertices, faces, target_reduction=1 - target / len(faces))
            levels.append((np.asarray(v, dtype=np.float32), np.asarray(f, dtype=np.int32)))
    return levels


def draco_round_trip(vertices: np.ndarray, faces: np.ndarray, bits: int) -> tuple[Mesh, int]:
    """The mesh Draco decodes from its file at ``bits`` quantization, and the file's bytes."""
    import DracoPy

    data = DracoPy.encode(vertices, faces, quantization_bits=bits, compression_level=DRACO_LEVEL)
    back = DracoPy.decode(data)
    return Mesh(np.asarray(back.points, dtype=np.float64).reshape(-1, 3),
                np.asarray(back.faces, dtype=np.int64).reshape(-1, 3)), len(data)


def draco_points(mesh: Mesh, gt_points: np.ndarray, samples: int, faces_list=DRACO_FACES,
                 bits_list=DRACO_BITS) -> list[dict]:
    """QEM decimation to each face budget below the mesh's own, plus the full mesh, each compressed by Draco
    at each quantization: one point per (faces, bits)."""
    points = []
    for v, f in draco_levels(mesh, faces_list):
        for bits in bits_list:
            decoded, size = draco_round_trip(v, f, bits)
            points.append({"setting": f"{len(f)} faces, {bits}-bit", "bytes": size,
                           "cd2": surface_cd2(decoded, gt_points, samples)})
    return points


def draco_mesh_within(mesh: Mesh, draco: list[dict], budget: int,
                      faces_list=DRACO_FACES) -> tuple[Mesh, dict] | None:
    """The decoded mesh of Draco's best point (lowest CD2 on its front) that fits in ``budget`` bytes, with
    the point; None when no point fits."""
    fits = [p for p in pareto(draco) if p["bytes"] <= budget]
    if not fits:
        return None
    point = fits[-1]
    faces_text, bits_text = point["setting"].split(", ")  # "<faces> faces, <bits>-bit", as draco_points names it
    faces, bits = int(faces_text.split()[0]), int(bits_text.split("-")[0])
    for v, f in draco_levels(mesh, faces_list):  # the decimations of draco_points (deterministic)
        if len(f) == faces:
            return draco_round_trip(v, f, bits)[0], point
    return None


def pareto(points: list[dict]) -> list[dict]:
    """The points no other point beats in both bytes and CD2, sorted by bytes (CD2 then decreases)."""
    front, best = [], math.inf
    for p in sorted(points, key=lambda p: (p["bytes"], p["cd2"])):
        if p["cd2"] < best:
            front.append(p)
            best = p["cd2"]
    return front


def bytes_at_cd2(points: list[dict], cd2: float) -> tuple[float, str]:
    """Bytes the Pareto front of ``points`` needs to reach ``cd2``, interpolated linearly in
    (log bytes, log CD2). Outside the front's CD2 range returns its end point and a bound flag:
    ``"<="`` when even its smallest file is better than ``cd2`` (so fewer bytes would do), ``">="`` when
    its largest file is still worse; ``"="`` when interpolated.

    Returns
    -------
    (bytes, flag)
    """
    front = pareto(points)
    if not math.isfinite(cd2) or not front:
        return math.nan, "="
    if cd2 >= front[0]["cd2"]:
        return float(front[0]["bytes"]), "<="
    if cd2 <= front[-1]["cd2"]:
        return float(front[-1]["bytes"]), ">="
    for a, b in zip(front, front[1:]):
        if b["cd2"] <= cd2 <= a["cd2"]:
            t = (math.log(cd2) - math.log(a["cd2"])) / (math.log(b["cd2"]) - math.log(a["cd2"]))
            return math.exp(math.log(a["bytes"]) + t * (math.log(b["bytes"]) - math.log(a["bytes"]))), "="
    raise AssertionError("unreachable: cd2 lies within the front")


def ratio_flag(draco_flag: str) -> str:
    """Bound on ours/Draco implied by a bound on Draco's bytes (fewer Draco bytes: a larger ratio)."""
    return {"<=": ">=", ">=": "<=", "=": "="}[draco_flag]


def plot(path, curves: dict, title_suffix: str = "") -> None:
    """One panel per mesh: bytes (log) vs CD2 (log). ``curves[mesh][label] = list of points``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meshes = list(curves)
    cols = min(4, len(meshes))
    rows = math.ceil(len(meshes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, mesh in zip(axes.ravel(), meshes):
        for label, pts in curves[mesh].items():
            pts = [p for p in pts if math.isfinite(p["cd2"])]
            if not pts:
                continue
            if label == "draco":
                ax.scatter([p["bytes"] for p in pts], [p["cd2"] for p in pts], s=8, color="gray", alpha=0.5)
                front = pareto(pts)
                ax.plot([p["bytes"] for p in front], [p["cd2"] for p in front], color="gray", label="QEM + Draco")
            elif label.endswith("shipped"):
                ax.scatter([p["bytes"] for p in pts], [p["cd2"] for p in pts], marker="*", s=90, zorder=3,
                           label=label)
            else:
                ax.plot([p["bytes"] for p in pts], [p["cd2"] for p in pts], marker="o", ms=3,
                        label=f"{label}: " + ", ".join(p["setting"].split()[0] for p in pts))
        ax.set(xscale="log", yscale="log", title=mesh, xlabel="bytes", ylabel="CD2 x1e3")
        ax.grid(True, which="both", alpha=0.2)
    for ax in axes.ravel()[len(meshes):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6)
    fig.suptitle(f"rate-distortion{title_suffix}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)

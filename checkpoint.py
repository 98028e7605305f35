"""Checkpoints: self-describing (``arch``, ``model_args``, weights and what training stored), loadable with
``weights_only=True`` (no code runs on load); also the authors' released ``.pth`` files."""

from __future__ import annotations

from pathlib import Path

import torch

from architectures import build_model
from common import InputError, atomic_write
from NeuralImplicit import KeySphereSDF

CHECKPOINT_FORMAT = 1


def count_numbers(model: torch.nn.Module) -> int:
    """Stored numbers of a model: its parameters and buffers (the spheres are a buffer)."""
    return sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())


def save_checkpoint(path: Path, model: torch.nn.Module, arch: str, model_args: dict, extra: dict) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "model_args": model_args,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_torch_file(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types, with pages of advice, for truncated or foreign files
        raise InputError(f"{path}: not a readable checkpoint (truncated, corrupt, or not a checkpoint file)") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a checkpoint (expected a dict)")
    return data


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Load our checkpoint or the authors' released ``.pth``; return ``(model, info)`` (``codec.load_model``
    also reads ``.ksdf`` files).

    ``info`` holds ``arch``, ``model_args`` and, for our checkpoints, ``normalization`` and the rest of what
    training stored. The authors' file has no normalization: its frame is the normalized frame.
    """
    path = Path(path)
    data = _load_torch_file(path)
    if {"net", "sphereNet", "sphere32"} <= set(data):
        return _load_authors_model(path, data)
    if "format" not in data or "state_dict" not in data:
        raise InputError(f"{path}: not a key-sphere checkpoint (no 'format'/'state_dict' keys)")
    if data["format"] != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: checkpoint format {data['format']} is not supported (expected {CHECKPOINT_FORMAT})")
    model = build_model(data["arch"], data["model_args"])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not match the stored sizes ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, data


def _load_authors_model(path: Path, data: dict) -> tuple[torch.nn.Module, dict]:
    """The authors' file: ``net`` (model.0 ... model.2L Linear layers), ``sphereNet``, ``sphere32`` (M x 4)."""
    net, spheres = data["net"], data["sphere32"]
    linear_ids = sorted(int(k.split(".")[1]) for k in net if k.endswith(".weight"))
    width = net[f"model.{linear_ids[0]}.weight"].shape[0]
    feature_dim = data["sphereNet"]["model.0.weight"].shape[0]
    model_args = {
        "num_spheres": int(spheres.shape[0]),
        "layers": len(linear_ids) - 1,
        "width": width,
        "feature_dim": feature_dim,
    }
    model = KeySphereSDF(**model_args)
    state = {"spheres": spheres.float()}
    state.update({f"mlp.{k}": v for k, v in net.items()})
    state.update({f"sphere_encoder.{k.rsplit('.', 1)[1]}": v for k, v in data["sphereNet"].items()})
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: unexpected layout of the authors' model ({str(exc).splitlines()[0]})") from None
    model.eval()
    info = {"arch": "keysphere", "model_args": model_args, "normalization": None, "source": "authors"}
    return model, info

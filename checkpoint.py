"""Checkpoints: self-describing (``arch``, ``model_args``, weights and what training stored), loadable with
``weights_only=True`` (no code runs on load); also what both papers released: the key-sphere authors' ``.pth``
files (any depth and width) and NI's Keras HDF5 weight files (read with h5py, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from architectures import build_model
from common import InputError, atomic_write
from NeuralImplicit import NISDF, KeySphereSDF, mlp_layer_names

CHECKPOINT_FORMAT = 1
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


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


def _starts_with(path: Path, magic: bytes) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Load our checkpoint or the authors' released ``.pth``; return ``(model, info)`` (``codec.load_model``
    also reads ``.ksdf`` files).

    ``info`` holds ``arch``, ``model_args`` and, for our checkpoints, ``normalization`` and the rest of what
    training stored. The released files have no normalization: both were trained in the normalized frame
    (the smallest enclosing ball at radius 0.9, ``../shared/thingi32/README.md``).
    """
    path = Path(path)
    if _starts_with(path, HDF5_MAGIC):
        return _load_ni_weights(path)
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
    try:
        linear_ids = sorted(int(k.split(".")[1]) for k in net if k.endswith(".weight"))
        width = net[f"model.{linear_ids[0]}.weight"].shape[0]
        feature_dim = data["sphereNet"]["model.0.weight"].shape[0]
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        raise InputError(f"{path}: unexpected layout of the authors' model (no net.model.<i> / sphereNet.model.0 "
                         "Linear layers)") from None
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


def _keras_dense_layers(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel (in, out), bias (out,)) of every layer of a Keras weight file, in its ``layer_names`` order."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            layers = []
            for name in (n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]):
                weights = {w.decode().rsplit("/", 1)[-1].split(":")[0]: np.asarray(f[name][w.decode()])
                           for w in f[name].attrs["weight_names"]}
                layers.append((weights["kernel"], weights["bias"]))
            return layers
    except (OSError, KeyError) as exc:
        raise InputError(f"{path}: not a Keras weight file of dense layers ({exc})") from None


def _load_ni_weights(path: Path) -> tuple[torch.nn.Module, dict]:
    """NI's released file (``neuralGeomKey.json``'s layout): Dense(3 -> w, relu), d - 1 Dense(w -> w, relu),
    Dense(w -> 1, tanh), each x @ kernel + bias; loaded as an ``NISDF`` of d layers of w with ReLU (slope 0)."""
    layers = _keras_dense_layers(path)
    width = layers[0][0].shape[1] if layers and layers[0][0].ndim == 2 else 0
    shapes = [(k.shape, b.shape) for k, b in layers]
    expected = [((3, width), (width,))] + [((width, width), (width,))] * (len(layers) - 2) + [((width, 1), (1,))]
    if len(layers) < 2 or shapes != expected:
        raise InputError(f"{path}: unexpected layout of an NI weight file (layer shapes {shapes})")
    model_args = {"layers": len(layers) - 1, "width": int(width), "slope": 0.0}
    model = NISDF(**model_args)
    state = {}
    for (weight, bias), (kernel, b) in zip(mlp_layer_names(len(layers) - 1), layers):
        state[weight], state[bias] = torch.from_numpy(kernel.T.copy()).float(), torch.from_numpy(b).float()
    model.load_state_dict(state)
    model.eval()
    return model, {"arch": "ni", "model_args": model_args, "normalization": None, "source": "ni"}

"""The compressed model file (``.ksdf``): quantized weights and spheres, entropy coded, checksummed.

    python codec.py --model runs/x/cow/model.pt --bits 8 --out cow.ksdf     # encode a checkpoint
    python codec.py --info cow.ksdf                                        # describe a file

Layout (all integers little-endian):

    magic  b"KSDF" | version u8 | coder u8 (1 = LZMA) | payload length u32 | payload | CRC-32 u32

The CRC-32 covers every byte before it. The payload, once decompressed, is a u32 length, a JSON header
(architecture, model_args, bits, normalization, optionally the mesh's kind and the sheet's shell, and per
tensor its name, shape and scheme) and the tensor
data in header order. Scheme ``q``: per output row a float16 scale and the row's values as signed integers
of ``bits`` bits, bit-packed (value = integer * scale). Scheme ``f32``: raw float32. Sphere centres and SDFs
are quantized like weights (one row per coordinate). Decoding runs no code from the file: no pickle.
"""

from __future__ import annotations

import argparse
import json
import logging
import lzma
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

from common import (
    InputError,
    add_logging_flags,
    atomic_write,
    build_model,
    load_checkpoint,
    run_main,
    setup_logging,
)

log = logging.getLogger("keysphere")

MAGIC = b"KSDF"
VERSION = 2  # 2: float16 row scales (version 1 stored them as float32)
CODER_LZMA = 1
SUFFIX = ".ksdf"
SUPPORTED_BITS = tuple(range(2, 17)) + (32,)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Signed integers in [-2^(bits-1), 2^(bits-1)) packed at ``bits`` bits each, little-endian bit order."""
    unsigned = (values.astype(np.int64) + (1 << (bits - 1))).astype(np.uint32)
    planes = ((unsigned[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of ``pack_bits``: (count,) int64."""
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    unsigned = (planes.reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)
    return unsigned - (1 << (bits - 1))


def quantization_rows(name: str, w: torch.Tensor, stacked: bool = False) -> torch.Tensor:
    """The 2-D rows a tensor is quantized by: output rows of weights (a 1-D bias is one row), coordinate
    columns of the (M, 4) spheres (centres and SDFs have different ranges). ``stacked``: ``w`` holds K
    networks' tensors (leading dimension K, not spheres) and the rows are those of each network in turn."""
    if stacked:
        return w.reshape(w.shape[0] * w.shape[1], -1) if w.ndim > 2 else w.reshape(w.shape[0], -1)
    return w.T if name == "spheres" else w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)


def quantize_rows(rows: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization of (R, C) float32 rows: integers (R, C) as float32 and per-row scales
    (R,), float16-exact. Quantizing with the stored scale keeps decoding exact."""
    levels = (1 << (bits - 1)) - 1
    scale = row_scales(rows.abs().amax(dim=1), levels)
    return torch.clamp(torch.round(rows / scale[:, None]), -levels, levels), scale


@torch.no_grad()
def fake_quantize(name: str, w: torch.Tensor, bits: int, stacked: bool = False) -> torch.Tensor:
    """``w`` as the decoder will see it after ``encode`` at ``bits`` bits: the encoder's own quantization,
    on ``w``'s device, so quantization-aware training trains through exactly what ships.

    Parameters
    ----------
    name : str
        State-dict name (``spheres`` is quantized per coordinate column, weights per output row).
    w : tensor of any shape
    bits : int
    stacked : bool
        ``w`` holds K networks' tensors along its first dimension (see ``quantization_rows``).

    Returns
    -------
    float32 tensor of ``w``'s shape and device: the decoded values.
    """
    w = w.detach().float()
    if bits == 32:
        return w.clone()
    q, scale = quantize_rows(quantization_rows(name, w, stacked), bits)
    values = q * scale[:, None]
    return (values.T if name == "spheres" and not stacked else values.reshape(w.shape)).contiguous()


def row_scales(max_abs: torch.Tensor, levels: int) -> torch.Tensor:
    """Per-row scales for rows whose largest magnitude is ``max_abs`` (R,): stored as float16 (half the
    bytes), rounded up so the row maximum still fits in ``levels``; zero rows get 1. Returns float32 (R,)."""
    exact = max_abs.float() / levels
    half = exact.half()
    half = torch.where(half.float() < exact, torch.nextafter(half, torch.full_like(half, float("inf"))), half)
    scale = half.float()
    return torch.where(scale == 0, torch.ones_like(scale), scale)


def encode(model: torch.nn.Module, arch: str, model_args: dict, bits: int, normalization: dict | None,
           surface: dict | None = None) -> bytes:
    """Bytes of a ``.ksdf`` file for ``model`` with weights at ``bits`` bits (32: float32); ``surface``
    (``kind``, ``shell``) says how to mesh the field (a sheet's shell is moved back onto the sheet)."""
    if bits not in SUPPORTED_BITS:
        raise InputError(f"bits must be one of 2..16 or 32, got {bits}")
    tensors, blobs = [], []
    for name, value in model.state_dict().items():
        w = value.detach().cpu().float()
        if bits == 32:
            tensors.append({"name": name, "shape": list(w.shape), "scheme": "f32"})
            blobs.append(w.numpy().tobytes())
            continue
        q, scale = quantize_rows(quantization_rows(name, w), bits)
        tensors.append({"name": name, "shape": list(w.shape), "scheme": "q", "rows": len(scale)})
        blobs.append(scale.numpy().astype("<f2").tobytes() + pack_bits(q.long().numpy().ravel(), bits))
    header = json.dumps({"arch": arch, "model_args": model_args, "bits": bits, "normalization": normalization,
                         **surface_info(surface), "tensors": tensors}, separators=(",", ":")).encode()
    payload = struct.pack("<I", len(header)) + header + b"".join(struct.pack("<I", len(b)) + b for b in blobs)
    packed = lzma.compress(payload, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
    body = MAGIC + struct.pack("<BBI", VERSION, CODER_LZMA, len(packed)) + packed
    return body + struct.pack("<I", zlib.crc32(body))


def decode(data: bytes, name: str = "<bytes>") -> tuple[torch.nn.Module, dict]:
    """Model and info from ``.ksdf`` bytes; any damage is an InputError naming ``name``."""
    if len(data) < 14 or data[:4] != MAGIC:
        raise InputError(f"{name}: not a .ksdf file (bad magic)")
    version, coder, length = struct.unpack("<BBI", data[4:10])
    if version != VERSION:
        raise InputError(f"{name}: .ksdf format version {version} is not supported (this version reads {VERSION})")
    if len(data) != 10 + length + 4:
        raise InputError(f"{name}: truncated or padded (.ksdf says {10 + length + 4} bytes, file has {len(data)})")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise InputError(f"{name}: corrupt (checksum mismatch)")
    if coder != CODER_LZMA:
        raise InputError(f"{name}: unknown entropy coder {coder}")
    try:
        payload = lzma.decompress(data[10:-4], format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
        (hlen,) = struct.unpack("<I", payload[:4])
        header = json.loads(payload[4:4 + hlen])
        offset, state = 4 + hlen, {}
        bits = header["bits"]
        for t in header["tensors"]:
            (blen,) = struct.unpack("<I", payload[offset:offset + 4])
            blob = payload[offset + 4:offset + 4 + blen]
            offset += 4 + blen
            shape = tuple(t["shape"])
            if t["scheme"] == "f32":
                w = np.frombuffer(blob, dtype=np.float32).reshape(shape)
            else:
                rows = t["rows"]
                scale = np.frombuffer(blob[:2 * rows], dtype="<f2").astype(np.float32)
                q = unpack_bits(blob[2 * rows:], int(np.prod(shape)), bits).reshape(rows, -1)
                w = (q * scale[:, None]).astype(np.float32)
                w = w.T if t["name"] == "spheres" else w.reshape(shape)
            state[t["name"]] = torch.from_numpy(np.array(w, dtype=np.float32))
        model = build_model(header["arch"], header["model_args"])
        model.load_state_dict(state)
    except InputError:
        raise
    except Exception as exc:  # a valid checksum over inconsistent content: written by something else
        raise InputError(f"{name}: inconsistent .ksdf content ({type(exc).__name__}: {str(exc)[:80]})") from None
    info = {k: header[k] for k in ("arch", "model_args", "bits", "normalization")}
    info.update(surface_info(header), bytes=len(data))
    return model.eval(), info


def surface_info(info: dict | None) -> dict:
    """``kind`` (closed, leaky, sheet; None when unknown) and ``shell`` (0 unless a sheet) of a header or a
    checkpoint's info; files written before meshes had kinds have neither."""
    info = info or {}
    return {"kind": info.get("kind"), "shell": float(info.get("shell") or 0.0)}


def write(path: str | Path, model, arch, model_args, bits, normalization, surface: dict | None = None) -> int:
    """Write a ``.ksdf`` file atomically; returns its size in bytes."""
    data = encode(model, arch, model_args, bits, normalization, surface)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return len(data)


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Any model file: a ``.ksdf`` (by its magic bytes), else our checkpoint or the authors' ``.pth``
    (``common.load_checkpoint``). Returns ``(model, info)``."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) == MAGIC:
                return read(path)
    return load_checkpoint(path)


def read(path: str | Path) -> tuple[torch.nn.Module, dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return decode(path.read_bytes(), str(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint to encode (model.pt)")
    parser.add_argument("--bits", type=int, default=10, help="bits per weight: 2..16, or 32 for float32")
    parser.add_argument("--out", help="output .ksdf file")
    parser.add_argument("--info", help="describe a .ksdf file")
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    if args.info:
        _, info = read(args.info)
        sys.stdout.write(json.dumps(info) + "\n")
        return 0
    if not (args.model and args.out):
        raise InputError("give --model and --out to encode, or --info FILE")
    model, info = load_checkpoint(args.model)
    size = write(args.out, model, info["arch"], info["model_args"], args.bits, info.get("normalization"),
                 surface_info(info))
    log.info("%s: %d bytes at %d bits", args.out, size, args.bits)
    return 0


if __name__ == "__main__":
    run_main(main)

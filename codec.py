"""The compressed model file (``.ksdf``): quantized weights and spheres, entropy coded, checksummed.

    python codec.py --model runs/x/cow/model.pt --bits 6 --out cow.ksdf     # encode a checkpoint
    python codec.py --info cow.ksdf                                        # describe a file

Layout (all integers little-endian):

    magic  b"KSDF" | version u8 | coder u8 | payload length u32 | payload | CRC-32 u32

The CRC-32 covers every byte before it. Version 3 (coder 2: range coder) payload:

    u16 n | n bytes: JSON header (arch, model_args, bits, kind, shell, normalized), raw DEFLATE with the preset
          dictionary HEADER_DICTIONARY (a usual header costs ~6 bytes)
    4 x f32: normalization centre xyz and scale (when normalized)
    NGLOD only: u32 n | n bytes: its octree, deflated bits (``nglod.octree_bytes``)
    per stored tensor: f16 step, u8 Laplace scale code (spheres: u8 centre step exponent, then per column
          i16 mean and u8 scale code)
    u32 words of one range-coded stream (``constriction``): every tensor's integers under a quantized
          Laplace model (mean 0, the coded scale; sphere centres sorted, their x delta coded), then a
          16-bit end mark

What is stored is ``coded_form`` of the model: a key-sphere model with its sphere encoder folded into the
first layer (the same function with 945 fewer numbers) and its spheres sorted. Weights are quantized per
tensor with a uniform step, rms * 2^(3 - bits) (``tensor_steps``; biases get 3 bits more); the integers
carry no tight bound (``weight_bound``): the Laplace model makes large ones rare and cheap to allow.
Sphere centres keep the voxel grid they come from (exactly, when they lie on a dyadic grid), their SDFs a
step of 1/256. ``bits`` 32 stores float32 instead.
Version 2 (coder 1: LZMA of per-row 8..16-bit integers) still decodes. Decoding runs no code from the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import lzma
import math
import struct
import sys
import zlib
from pathlib import Path

import constriction
import numpy as np
import torch

from architectures import build_model, get
from checkpoint import load_checkpoint
from common import (
    InputError,
    add_logging_flags,
    atomic_write,
    run_main,
    setup_logging,
)
from nglod import octree_bytes, voxels_from_octree

log = logging.getLogger("keysphere")

MAGIC = b"KSDF"
VERSION = 3  # 3: range coder, per-tensor steps, folded encoder (2: LZMA, per-row float16 scales; 1: float32 scales)
READABLE = (2, 3)
CODER_LZMA, CODER_RANGE = 1, 2
SUFFIX = ".ksdf"
SUPPORTED_BITS = tuple(range(2, 17)) + (32,)
SPHERE_SDF_EXPONENT = 8      # sphere SDFs stored in steps of 2^-8 (a quarter voxel of the 128^3 grid)
SPHERE_CENTRE_EXPONENT = 8   # centres that lie on no dyadic grid up to 2^-10 are stored in steps of 2^-8
HEADER_DICTIONARY = (b'{"arch":"keysphere","model_args":{"num_spheres":128,"layers":6,"width":32,"feature_dim":4,'
                     b'"weighting":"distance"},"bits":6,"kind":"closed","shell":0.0,"normalized":true}'
                     b'"latent""ni""leaky""sheet""inverse"')
END_MARK = 0x4B53            # 16 bits coded after the last stream (``check_end``)
SCALE_CODE_OFFSET = 64       # Laplace scale = 2^((code - 64) / 8), code in 0..255
BIAS_EXTRA_BITS = 3          # biases get this many more bits: few numbers, each one moves a whole layer's output
SPHERE_TENSORS = ("spheres", "latents")  # per-sphere rows, reordered together when the spheres are sorted


# ----------------------------------------------------------------------------------------------------------
# Quantization: one definition, used by the encoder and by quantization-aware training


def tensor_bits(name: str, bits: int) -> int:
    """The bits a stored tensor gets at a file's ``bits``: BIAS_EXTRA_BITS more for a bias (at most 16)."""
    return min(16, bits + BIAS_EXTRA_BITS) if name.endswith(".bias") else bits


def tensor_steps(w: torch.Tensor, bits: int, name: str = "", stacked: bool = False) -> torch.Tensor:
    """Quantization step of tensor ``name`` at a file's ``bits``: rms(w) * 2^(3 - tensor_bits), as float16
    (what the file stores); 1 for an all-zero tensor. ``stacked``: ``w`` holds K networks' tensors (leading
    dimension K) and each gets its own step. Returns float32 (K,) when stacked, else a 0-d tensor."""
    flat = w.detach().float().reshape(w.shape[0] if stacked else 1, -1)
    rms = flat.square().mean(dim=1).sqrt()
    step = (rms * 2.0 ** (3 - tensor_bits(name, bits))).half().float()
    step = torch.where(step > 0, step, torch.ones_like(step))
    return step if stacked else step[0]


def tensor_bound(name: str, count: int, bits: int) -> int:
    """Largest integer magnitude the file codes for tensor ``name`` of ``count`` numbers at ``bits``."""
    return weight_bound(count, tensor_bits(name, bits))


def broadcast_step(step: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A 0-d step as is, a stacked (K,) step shaped to divide ``w`` (K, ...) network by network."""
    return step.to(w.device).reshape((-1,) + (1,) * (w.dim() - 1)) if step.dim() else step.to(w.device)


def integers(w: torch.Tensor, step: torch.Tensor, bound: int | None = None) -> torch.Tensor:
    """``w`` / ``step`` rounded (``step`` 0-d, or (K,) for a stacked ``w``), clamped to +-``bound`` when given
    (a step fixed before fine-tuning moved a tiny tensor far can otherwise leave the coded range)."""
    q = torch.round(w / broadcast_step(step, w))
    return q if bound is None else q.clamp(-bound, bound)


def quantize(w: torch.Tensor, step: torch.Tensor, bound: int | None = None) -> torch.Tensor:
    """``w`` on the grid of ``step`` (see ``integers``): what the decoder returns."""
    return integers(w, step, bound) * broadcast_step(step, w)


def sphere_centre_exponent(centres: np.ndarray) -> int:
    """Smallest e <= 10 with every centre coordinate a multiple of 2^-e (the grid the key spheres came from:
    6 for the 128^3 grid), else SPHERE_CENTRE_EXPONENT."""
    for e in range(11):
        scaled = centres.astype(np.float64) * 2.0 ** e
        if np.abs(scaled - np.round(scaled)).max(initial=0.0) < 1e-6:
            return e
    return SPHERE_CENTRE_EXPONENT


def quantize_spheres(spheres: torch.Tensor) -> torch.Tensor:
    """(M, 4) spheres as the decoder returns them: centres on their grid (``sphere_centre_exponent``), SDFs in
    steps of 2^-SPHERE_SDF_EXPONENT."""
    e = sphere_centre_exponent(spheres[:, :3].detach().cpu().numpy())
    out = spheres.detach().float().clone()
    out[:, :3] = torch.round(out[:, :3] * 2.0 ** e) / 2.0 ** e
    out[:, 3] = torch.round(out[:, 3] * 2.0 ** SPHERE_SDF_EXPONENT) / 2.0 ** SPHERE_SDF_EXPONENT
    return out


def coded_form(arch: str, model_args: dict, model: torch.nn.Module) -> tuple[torch.nn.Module, dict]:
    """The model a file stores, computing the same function: the architecture's ``fold`` (a key-sphere
    model's encoder folded into its first layer, ``KeySphereSDF.folded``), the spheres (and latents) sorted
    by centre. Idempotent. Returns a new ``(model, model_args)``."""
    entry = get(arch)
    model, model_args = entry.fold(model, model_args)
    if entry.has_octree:  # stored as it is: the octree as bits, the corner features and decoders as weights
        return model, model_args
    state = {k: v.detach().cpu().float().clone() for k, v in model.state_dict().items()}
    if "spheres" in state:
        order = sphere_order(state["spheres"])
        for name in SPHERE_TENSORS:
            if name in state:
                state[name] = state[name][order]
    out = build_model(arch, model_args)
    out.load_state_dict(state)
    return out.eval(), model_args


def sphere_order(spheres: torch.Tensor) -> torch.Tensor:
    """Indices sorting (M, 4) spheres by their quantized centre, x then y then z."""
    e = sphere_centre_exponent(spheres[:, :3].numpy())
    keys = np.round(spheres[:, :3].numpy().astype(np.float64) * 2.0 ** e).astype(np.int64)
    return torch.from_numpy(np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0])).copy())


def stored_tensors(arch: str, state: dict) -> list[str]:
    """Names of the tensors a file stores as numbers, in order: all but a folded (identity) sphere encoder and
    NGLOD's voxels (stored as an octree, ``nglod.octree_bytes``)."""
    return [name for name in state if name not in get(arch).unstored]


def float32_tensors(arch: str, state: dict) -> list[str]:
    """Names of the tensors a float32 file stores, in order: every one but NGLOD's voxels (an octree of bits);
    a float32 file keeps the unfolded encoder."""
    octree = get(arch).has_octree
    return [name for name in state if not (octree and name == "voxels")]


# ----------------------------------------------------------------------------------------------------------
# Entropy coding


class Stream:
    """Integers coded under one quantized Laplace model: (n,) ``values`` in [lo, hi], its ``mean`` and
    ``scale_code`` (Laplace scale 2^((code - 64) / 8))."""

    def __init__(self, values: np.ndarray, lo: int, hi: int, mean: int = 0, scale_code: int | None = None):
        self.values, self.lo, self.hi, self.mean = values.astype(np.int32), lo, hi, mean
        if scale_code is None:
            spread = float(np.abs(self.values - mean).mean()) if len(values) else 1.0
            scale_code = round(8 * math.log2(max(spread, 2.0 ** -8))) + SCALE_CODE_OFFSET
        self.scale_code = int(min(max(scale_code, 0), 255))
        if len(self.values) and (self.values.min() < lo or self.values.max() > hi):
            raise InputError(f"integers outside [{lo}, {hi}]: the step does not fit the tensor (a bug)")

    def model_args(self) -> tuple:
        return (self.lo, self.hi, self.mean, 2.0 ** ((self.scale_code - SCALE_CODE_OFFSET) / 8))


def laplace(lo: int, hi: int, mean: float, scale: float):
    return constriction.stream.model.QuantizedLaplace(lo, hi), float(mean), float(scale)


def range_encode(streams: list[Stream]) -> bytes:
    encoder = constriction.stream.queue.RangeEncoder()
    for s in streams:
        if len(s.values):
            family, mean, scale = laplace(*s.model_args())
            encoder.encode(s.values, family, np.full(len(s.values), mean), np.full(len(s.values), scale))
    encoder.encode(np.array([END_MARK], dtype=np.int32), constriction.stream.model.Uniform(1 << 16))
    return encoder.get_compressed().astype("<u4").tobytes()


def check_end(decoder) -> None:
    """The end mark after the last stream: a stream cut or spliced by something that then wrote a valid
    checksum decodes to garbage here (the range coder itself cannot see where its data ends)."""
    mark = decoder.decode(constriction.stream.model.Uniform(1 << 16), 1)[0]
    if mark != END_MARK or not decoder.maybe_exhausted():
        raise ValueError("the range-coded stream does not end where its header says")


def weight_bound(count: int, bits: int) -> int:
    """Largest integer magnitude a tensor of ``count`` numbers can have at ``bits``: |w| <= sqrt(count) rms,
    with room for a step fixed before fine-tuning moved the weights (x4)."""
    return math.ceil(4 * math.sqrt(count) * 2.0 ** (bits - 3)) + 2


# ----------------------------------------------------------------------------------------------------------
# Files


def encode(model: torch.nn.Module, arch: str, model_args: dict, bits: int, normalization: dict | None,
           surface: dict | None = None, steps: dict | None = None) -> bytes:
    """Bytes of a ``.ksdf`` file for ``model`` with weights at ``bits`` (32: float32); ``surface`` (``kind``,
    ``shell``) says how to mesh the field (a sheet's shell is moved back onto the sheet). ``steps`` (name ->
    step) are the steps quantization-aware fine-tuning used; otherwise ``tensor_steps``."""
    if bits not in SUPPORTED_BITS:
        raise InputError(f"bits must be one of 2..16 or 32, got {bits}")
    if bits != 32:
        model, model_args = coded_form(arch, model_args, model)
    state = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    header = {"arch": arch, "model_args": model_args, "bits": bits, **surface_info(surface),
              "normalized": normalization is not None}
    body = [deflate_header(header)]
    if normalization is not None:
        body.append(struct.pack("<4f", *normalization["center"], normalization["scale"]))
    if get(arch).has_octree:
        tree = octree_bytes(state["voxels"].long().numpy(), model_args["lods"], model_args["base_res"])
        body.append(struct.pack("<I", len(tree)) + tree)
    if bits == 32:
        body += [state[k].numpy().astype("<f4").tobytes() for k in float32_tensors(arch, state)]
    else:
        side, streams = [], []
        for name in stored_tensors(arch, state):
            if name == "spheres":
                side_bytes, sphere_streams = sphere_streams_of(state[name])
                side.append(side_bytes)
                streams += sphere_streams
                continue
            w = state[name]
            step = (steps or {}).get(name)
            step = tensor_steps(w, bits, name) if step is None else torch.as_tensor(step, dtype=torch.float32)
            step = step.half().float()
            bound = tensor_bound(name, w.numel(), bits)
            stream = Stream(integers(w, step, bound).numpy().ravel(), -bound, bound)
            side.append(struct.pack("<eB", float(step), stream.scale_code))
            streams.append(stream)
        body += side + [range_encode(streams)]
    payload = b"".join(body)
    head = MAGIC + struct.pack("<BBI", VERSION, CODER_RANGE, len(payload)) + payload
    return head + struct.pack("<I", zlib.crc32(head))


def sphere_streams_of(spheres: torch.Tensor) -> tuple[bytes, list[Stream]]:
    """Side bytes and streams of sorted (M, 4) spheres: x as deltas from the first x, y, z and SDF around
    their medians."""
    e = sphere_centre_exponent(spheres[:, :3].numpy())
    q = torch.round(quantize_spheres(spheres) * torch.tensor([2.0 ** e] * 3 + [2.0 ** SPHERE_SDF_EXPONENT]))
    q = q.numpy().astype(np.int64)
    centre_bound, sdf_bound = 2 ** (e + 2), 2 ** (SPHERE_SDF_EXPONENT + 2)
    first_x = int(q[0, 0]) if len(q) else 0
    streams = [Stream(np.diff(q[:, 0], prepend=first_x), 0, 2 * centre_bound)]
    for column, bound in ((1, centre_bound), (2, centre_bound), (3, sdf_bound)):
        median = int(np.median(q[:, column])) if len(q) else 0
        streams.append(Stream(q[:, column], -bound, bound, median))
    side = struct.pack("<Bh", e, first_x) + struct.pack("<B", streams[0].scale_code) + b"".join(
        struct.pack("<hB", s.mean, s.scale_code) for s in streams[1:])
    return side, streams


def deflate_header(header: dict) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=HEADER_DICTIONARY)
    packed = packer.compress(raw) + packer.flush()
    return struct.pack("<H", len(packed)) + packed


class Reader:
    """Sequential reads from a payload; running past its end is an error."""

    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise ValueError("payload ends early")
        out = self.data[self.offset:self.offset + count]
        self.offset += count
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def decode(data: bytes, name: str = "<bytes>") -> tuple[torch.nn.Module, dict]:
    """Model and info from ``.ksdf`` bytes; any damage is an InputError naming ``name``."""
    if len(data) < 14 or data[:4] != MAGIC:
        raise InputError(f"{name}: not a .ksdf file (bad magic)")
    version, coder, length = struct.unpack("<BBI", data[4:10])
    if version not in READABLE:
        raise InputError(f"{name}: .ksdf format version {version} is not supported (this version reads "
                         f"{', '.join(map(str, READABLE))})")
    if len(data) != 10 + length + 4:
        raise InputError(f"{name}: truncated or padded (.ksdf says {10 + length + 4} bytes, file has {len(data)})")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise InputError(f"{name}: corrupt (checksum mismatch)")
    if (version, coder) not in ((2, CODER_LZMA), (3, CODER_RANGE)):
        raise InputError(f"{name}: unknown entropy coder {coder} for version {version}")
    try:
        model, header = (decode_v2 if version == 2 else decode_v3)(data[10:-4])
    except InputError:
        raise
    except Exception as exc:  # a valid checksum over inconsistent content: written by something else
        raise InputError(f"{name}: inconsistent .ksdf content ({type(exc).__name__}: {str(exc)[:80]})") from None
    info = {k: header.get(k) for k in ("arch", "model_args", "bits", "normalization")}
    info.update(surface_info(header), bytes=len(data), version=version)
    return model.eval(), info


def decode_v3(payload: bytes) -> tuple[torch.nn.Module, dict]:
    reader = Reader(payload)
    (length,) = reader.unpack("<H")
    unpacker = zlib.decompressobj(-15, zdict=HEADER_DICTIONARY)
    header = json.loads(unpacker.decompress(reader.take(length)) + unpacker.flush())
    if header.pop("normalized"):
        *center, scale = reader.unpack("<4f")
        header["normalization"] = {"center": [float(c) for c in center], "scale": float(scale)}
    else:
        header["normalization"] = None
    arch, bits = header["arch"], header["bits"]
    model_args = header["model_args"]
    if get(arch).has_octree:
        (length,) = reader.unpack("<I")
        try:
            voxels = voxels_from_octree(reader.take(length), model_args["lods"], model_args["base_res"])
        except (ValueError, zlib.error) as exc:
            raise InputError(f"damaged octree ({exc})") from None
        model_args = {**model_args, "voxels": voxels}
    model = build_model(arch, model_args)
    state = {k: v.float() for k, v in model.state_dict().items()}
    if bits == 32:
        for k in float32_tensors(arch, state):
            v = state[k]
            state[k] = torch.from_numpy(np.frombuffer(reader.take(4 * v.numel()), dtype="<f4").reshape(v.shape).copy())
        model.load_state_dict(state)
        return model, header
    plan = read_plan(reader, arch, state, bits)
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(reader.take(len(payload) - reader.offset),
                                                                   dtype="<u4").astype(np.uint32))
    for name, columns, extra in plan:
        values = []
        for count, (lo, hi, mean, code) in columns:
            family, mean_f, scale = laplace(lo, hi, mean, 2.0 ** ((code - SCALE_CODE_OFFSET) / 8))
            values.append(decoder.decode(family, np.full(count, mean_f), np.full(count, scale)).astype(np.int64)
                          if count else np.zeros(0, dtype=np.int64))
        if name == "spheres":
            e, first_x = extra
            q = np.stack([np.cumsum(values[0]) + first_x, values[1], values[2], values[3]], axis=1)
            state[name] = torch.from_numpy(q.astype(np.float32) / np.array(
                [2.0 ** e] * 3 + [2.0 ** SPHERE_SDF_EXPONENT], dtype=np.float32))
        else:
            state[name] = torch.from_numpy(values[0].astype(np.float32)).reshape(state[name].shape) * float(extra)
    check_end(decoder)
    state.update(get(arch).unstored_values(model))
    model.load_state_dict(state)
    return model, header


def read_plan(reader: Reader, arch: str, state: dict, bits: int) -> list[tuple]:
    """The side information of a version 3 payload: per stored tensor (name, its streams as (count, (lo, hi,
    mean, scale code)), how to rebuild it: a step, or for the spheres (centre exponent, first x))."""
    plan = []
    for name in stored_tensors(arch, state):
        count = state[name].numel()
        if name == "spheres":
            m = len(state[name])
            e, first_x, x_code = reader.unpack("<BhB")
            centre_bound, sdf_bound = 2 ** (e + 2), 2 ** (SPHERE_SDF_EXPONENT + 2)
            columns = [(m, (0, 2 * centre_bound, 0, x_code))]
            for bound in (centre_bound, centre_bound, sdf_bound):
                mean, code = reader.unpack("<hB")
                columns.append((m, (-bound, bound, mean, code)))
            plan.append((name, columns, (e, first_x)))
        else:
            step, code = reader.unpack("<eB")
            bound = tensor_bound(name, count, bits)
            plan.append((name, [(count, (-bound, bound, 0, code))], step))
    return plan


def decode_v2(payload: bytes) -> tuple[torch.nn.Module, dict]:
    """Version 2: LZMA of a JSON header and per tensor float16 row scales and bit-packed integers."""
    payload = lzma.decompress(payload, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    (hlen,) = struct.unpack("<I", payload[:4])
    header = json.loads(payload[4:4 + hlen])
    offset, state, bits = 4 + hlen, {}, header["bits"]
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
            planes = np.unpackbits(np.frombuffer(blob[2 * rows:], dtype=np.uint8), bitorder="little")
            count = int(np.prod(shape))
            unsigned = (planes[:count * bits].reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)
            w = ((unsigned - (1 << (bits - 1))).reshape(rows, -1) * scale[:, None]).astype(np.float32)
            w = w.T if t["name"] == "spheres" else w.reshape(shape)
        state[t["name"]] = torch.from_numpy(np.array(w, dtype=np.float32))
    model = build_model(header["arch"], header["model_args"])
    model.load_state_dict(state)
    return model, header


def surface_info(info: dict | None) -> dict:
    """``kind`` (closed, leaky, sheet; None when unknown) and ``shell`` (0 unless a sheet) of a header or a
    checkpoint's info; files written before meshes had kinds have neither."""
    info = info or {}
    return {"kind": info.get("kind"), "shell": float(info.get("shell") or 0.0)}


def write(path: str | Path, model, arch, model_args, bits, normalization, surface: dict | None = None,
          steps: dict | None = None) -> int:
    """Write a ``.ksdf`` file atomically; returns its size in bytes."""
    data = encode(model, arch, model_args, bits, normalization, surface, steps)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return len(data)


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Any model file: a ``.ksdf`` (by its magic bytes), else our checkpoint or a released file, the authors'
    ``.pth`` or NI's ``.h5`` (``checkpoint.load_checkpoint``). Returns ``(model, info)``."""
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
    parser.add_argument("--model", help="model to encode (model.pt, the authors' .pth or NI's .h5): rounded "
                                        "to the nearest step, no fine-tuning")
    parser.add_argument("--bits", type=int, default=8, help="bits per weight: 2..16, or 32 for float32")
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

"""Bytes of a model's quantized weights under several coders: bit-packed, LZMA, our range coder, and the
per-tensor zeroth-order entropy (a bound for any coder that models each tensor's integers without context).

    python scripts/coder_comparison.py runs/x/*/model.pt --bits 4 6 8

The integers are those ``codec.py`` stores (coded form, per-tensor steps) for the float checkpoint; the
spheres are left out (they are coded the same way by every variant here).
"""

from __future__ import annotations

import argparse
import lzma
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import codec  # noqa: E402


def weight_integers(path: Path, bits: int) -> tuple[list[np.ndarray], list, list[int]]:
    """Per stored weight tensor: its integers, the codec's stream of them and its bits."""
    model, info = codec.load_model(path)
    coded, _ = codec.coded_form(info["arch"], info["model_args"], model)
    state = coded.state_dict()
    ints, streams, depths = [], [], []
    for name in codec.stored_tensors(info["arch"], state):
        if name == "spheres":
            continue
        w = state[name]
        bound = codec.tensor_bound(name, w.numel(), bits)
        q = codec.integers(w, codec.tensor_steps(w, bits, name), bound).numpy().astype(np.int64).ravel()
        ints.append(q)
        streams.append(codec.Stream(q, -bound, bound))
        depths.append(codec.tensor_bits(name, bits))
    return ints, streams, depths


def bit_packed(q: np.ndarray, bits: int) -> bytes:
    """Signed integers at ``bits`` bits each (offset binary), as version 2 stored them."""
    unsigned = (q + (1 << (bits - 1))).astype(np.uint32)
    planes = ((unsigned[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="float checkpoints (model.pt)")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 6, 8])
    args = parser.parse_args()
    sys.stdout.write("| model | bits | integers | bit-packed | LZMA of those | range coder | per-tensor entropy |\n"
                     "|---|---|---|---|---|---|---|\n")
    for path in map(Path, args.models):
        for bits in args.bits:
            ints, streams, depths = weight_integers(path, bits)
            every = np.concatenate(ints)
            widths = [int(np.abs(q).max(initial=0)).bit_length() + 1 for q in ints]  # bits that hold every integer
            packed = math.ceil(sum(len(q) * w for q, w in zip(ints, widths)) / 8)
            packed_bytes = b"".join(bit_packed(q, w) for q, w in zip(ints, widths))
            lz = len(lzma.compress(packed_bytes, format=lzma.FORMAT_RAW,
                                   filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}]))
            counts = [np.unique(q, return_counts=True)[1] for q in ints]
            entropy = sum(-(c * np.log2(c / c.sum())).sum() for c in counts)
            sys.stdout.write(f"| {path.parent.name} | {bits} | {every.size} | {packed} | {lz} | "
                             f"{len(codec.range_encode(streams))} | {entropy / 8:.0f} |\n")


if __name__ == "__main__":
    main()

"""Train several architectures on a mesh folder with the same budget and tabulate them side by side.

    python compare.py --mesh-dir ../shared/meshes --out runs/compare [--archs keysphere ni] [--rd] [--render]
                      [--KEY=VALUE ...]

Every architecture gets the same config: the same samples (same seed), the same epochs and batches. The table
(``<out>/compare.md``, also printed) has per mesh CD2, gIoU, stored numbers, bytes and seconds per
architecture, and the ratio CD2(keysphere) / CD2(ni) with its mean and median. ``--render`` adds a picture per
mesh with one column per architecture (``<out>/compare-render/``) and ``<out>/compare-report.md``.
"""

from __future__ import annotations

import argparse

import architectures
import eval as evaluate
import train_series
from common import PROJECT_ROOT, add_logging_flags, run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh-dir", required=True, help="folder of meshes")
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "default.yaml"), help="YAML config")
    parser.add_argument("--archs", nargs="+", choices=architectures.NAMES, default=["keysphere", "latent", "ni"],
                        help="architectures to compare (default: the paper's three; add nglod for NGLOD, ~10x slower)")
    parser.add_argument("--out", required=True, help="output folder: <out>/<arch>/..., <out>/compare.csv and .md")
    parser.add_argument("--force", action="store_true", help="retrain meshes that are already done")
    parser.add_argument("--rd", action="store_true", help="also eval.py's rate-distortion report vs QEM + Draco")
    parser.add_argument("--render", action="store_true", help="also eval.py's pictures and run report")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    add_logging_flags(parser)
    args, overrides = parser.parse_known_args(argv)
    common_flags = ["--device", args.device] + (["--quiet"] if args.quiet else []) + (
        ["--verbose"] if args.verbose else [])
    for arch in args.archs:
        train_series.main(["--mesh-dir", args.mesh_dir, "--config", args.config, "--arch", arch,
                           "--out", f"{args.out}/{arch}", *(["--force"] if args.force else []), *common_flags,
                           *architectures.get(arch).overrides_for(overrides)])
    ratio = ["--ratio", "keysphere", "ni"] if {"keysphere", "ni"} <= set(args.archs) else []
    return evaluate.main(["--mesh-dir", args.mesh_dir, "--results", *[f"{args.out}/{a}" for a in args.archs],
                          "--csv", f"{args.out}/compare.csv", *ratio, *(["--rd"] if args.rd else []),
                          *(["--render"] if args.render else []),
                          *common_flags])


if __name__ == "__main__":
    run_main(main)

"""Run folders of links to what the Thingi32 papers released, for ``eval.py --results``.

    python scripts/released_runs.py ../shared/thingi32 runs/thingi32/released
    python scripts/released_runs.py ../shared/thingi32 runs/thingi32/released --encode 4 6 8   # + our files

Makes ``<out>/authors-<d>x<w>/<ID>/128_<d>_<w>_<ID>.pth`` for each of the key-sphere authors' 16 released
sizes (depth d, width w) and ``<out>/ni-released/<ID>/<ID>_sf.h5`` for NI's released weights, as links into
the Thingi32 folder (nothing is copied). ``eval.py`` meshes each model at 128^3 and scores it like our runs; both
were trained in the frame ``eval.py`` normalizes into (``../shared/thingi32/README.md``, "Frames"). With
``--encode``, each released model is also written by our codec at those bit depths beside its link
(``model-<bits>bit.ksdf``, rounded to the nearest step: their network, our file), the operating points of
``eval.py --rd``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import codec  # noqa: E402
from checkpoint import load_checkpoint  # noqa: E402
from common import InputError, run_main  # noqa: E402

AUTHORS_FILE = re.compile(r"^128_(\d+)_(\d+)_(\d+)\.pth$")


def link(target: Path, link_path: Path, bits: list[int]) -> None:
    """``link_path`` -> ``target``, and the released model in our codec at each of ``bits`` beside it."""
    link_path.parent.mkdir(parents=True, exist_ok=True)
    if not link_path.is_symlink():
        link_path.symlink_to(target.resolve())
    for depth in bits:
        out = link_path.parent / f"model-{depth}bit.ksdf"
        if not out.is_file():
            model, info = load_checkpoint(target)
            codec.write(out, model, info["arch"], info["model_args"], depth, None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("thingi32", help="the Thingi32 folder (authors/, ni/)")
    parser.add_argument("out", help="folder for the run folders")
    parser.add_argument("--encode", nargs="*", type=int, default=[], metavar="BITS",
                        help="also write each model as model-<bits>bit.ksdf at these bit depths")
    args = parser.parse_args(argv)
    root, out = Path(args.thingi32), Path(args.out)
    if not (root / "authors").is_dir() or not (root / "ni").is_dir():
        raise InputError(f"{root}: no authors/ and ni/ folders there")
    count = 0
    for path in sorted((root / "authors").glob("*/*.pth")):
        match = AUTHORS_FILE.match(path.name)
        if match:
            depth, width, mesh = match.groups()
            link(path, out / f"authors-{depth}x{width}" / mesh / path.name, args.encode)
            count += 1
    for path in sorted((root / "ni").glob("*_sf.h5")):
        link(path, out / "ni-released" / path.name[:-len("_sf.h5")] / path.name, args.encode)
        count += 1
    sys.stdout.write(f"{count} links under {out}\n")
    return 0


if __name__ == "__main__":
    run_main(main)

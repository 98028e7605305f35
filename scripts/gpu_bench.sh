#!/usr/bin/env bash
# The GPU figures of README "Speed on a GPU": train_series.py (groups of stacked networks fed by CPU processes)
# on rotated copies of meshes, with the default and the quality config, timed by bench.py --series.
#   scripts/gpu_bench.sh MESH_DIR OUT_DIR [COPIES_DEFAULT] [COPIES_QUALITY] [GROUP_QUALITY]
set -euo pipefail
meshes=$1 out=$2 copies_default=${3:-8} copies_quality=${4:-8} group_quality=${5:-0}
python3 scripts/rotated_copies.py --copies "$copies_default" --out "$out/meshes-default" "$meshes"/*.obj
python3 bench.py --mesh-dir "$out/meshes-default" --series --out "$out/default" --config configs/default.yaml
python3 scripts/rotated_copies.py --copies "$copies_quality" --out "$out/meshes-quality" "$meshes"/*.obj
python3 bench.py --mesh-dir "$out/meshes-quality" --series --out "$out/quality" --config configs/quality.yaml \
    --group="$group_quality"

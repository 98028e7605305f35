#!/usr/bin/env bash
# One SLURM array task = one shard of a mesh folder; resubmitting the same line resumes (done meshes are skipped,
# a killed task's half-written mesh folder is started over).
#
#   sbatch --array=0-15 scripts/slurm_array.sh MESH_DIR OUT_DIR [--config=configs/quality.yaml] [--KEY=VALUE ...]
#   sbatch --dependency=afterany:JOBID --wrap "python train_series.py --out OUT_DIR --merge"   # one summary.csv
#
#SBATCH --job-name=keysphere
#SBATCH --cpus-per-task=16
#SBATCH --gres=gpu:1
#SBATCH --time=12:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
mesh_dir=$1 out=$2
shift 2
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
python train_series.py --mesh-dir "$mesh_dir" --out "$out" \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" --quiet "$@"

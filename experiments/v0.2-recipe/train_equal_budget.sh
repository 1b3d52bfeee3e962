#!/usr/bin/env bash
# Usage: bash experiments/v0.2-recipe/train_equal_budget.sh   (STEPS=3000 by default; extra flags go to both runs)
# The shipped default model and its equal-budget ResShift baseline, trained side by side with one CPU thread each:
# same lossless space-to-depth latent, UNet (64/128/128, per-pixel norms, no attention), residual prediction from a
# zeroed output layer, data (sun_hays80 less every 10th photo, halved), seed, steps and wall time. They differ only in
# the chain: DeltaDiff (kappa 0, eta 0.01..0.99, p 0.3) vs ResShift (kappa 2, its bicx4 eta 0.01..0.9801).
# Prepare the data folders first (see this folder's README).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
RECIPE=@experiments/v0.2-recipe/deltadiff-x4-v0.2.args
prefixed() {  # tag, then trainer flags: the run's console lines, each starting with [tag]
  local tag=$1
  shift
  python training/train_deltadiff.py "$RECIPE" --hr_downscale "${HR_DOWNSCALE:-2}" --max_train_steps "${STEPS:-3000}" \
    "$@" 2>&1 | sed -u "s/^/[$tag] /"
}
mkdir -p outputs
prefixed deltadiff --kappa 0 --output_dir outputs/deltadiff-x4 "$@" &
deltadiff=$!
prefixed resshift --kappa 2 --eta_start 0.01 --eta_end 0.9801 --output_dir outputs/resshift-x4 "$@" &
resshift=$!
wait "$deltadiff"
wait "$resshift"

#!/usr/bin/env bash
# Usage: bash experiments/fidelity2/fidelity2_ablation_eval.sh   (after fidelity2_ablation.sh; reruns skip done work)
# 1. Ablation table: every row of outputs/abl17 at 1, 2 and 4 steps on the held-out photos (heldout40, 320-pixel
#    centre crops: the selection set, never a benchmark), with `deltadiff ablate`.
# 2. Equal-budget table: base (T = 4), t1 (one pass), resshift (kappa 2, 4 steps, seeds 0,1,2) and FSRCNN on Set5,
#    Set14 and BSD68 (benchmarks/quality.py), then the main job's seconds for each (benchmarks/main_job_speed.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
OUT=${OUT:-outputs/abl17}
BENCH=../shared/data/benchmarks
mkdir -p "$OUT/eval"
for row in base t1 resshift nochain mse noema noflip crop192; do
  [ -f "$OUT/$row/model_index.json" ] || continue
  [ -f "$OUT/eval/$row-heldout.md" ] && continue
  deltadiff ablate --hr outputs/data/heldout40 --crop 320 --model "$OUT/$row" --steps 1,2,4 \
    --output "$OUT/eval/$row-heldout.md" 2>&1 | tee -a "$OUT/eval/ablate.log"
done
if [ -f "$OUT/fsrcnn/fsrcnn.safetensors" ] && [ ! -f "$OUT/eval/equal/quality.md" ]; then
  python benchmarks/quality.py --benchmarks $BENCH/Set5 $BENCH/Set14 $BENCH/BSD68 \
    --model "DeltaDiff-T4=$OUT/base" --model "regression-T1=$OUT/t1@1" \
    --model "ResShift-k2=$OUT/resshift" --fsrcnn "FSRCNN=$OUT/fsrcnn/best" \
    --seeds 0,1,2 --output "$OUT/eval/equal" 2>&1 | tee -a "$OUT/eval/quality.log"
fi

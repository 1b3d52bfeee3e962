#!/usr/bin/env bash
# Usage: bash experiments/onepass-x4/onepass_eval.sh [RUN_DIR] [OUT]
#   (after training/recipes/deltadiff-x4.args; reruns skip done work)
# The decision to ship the one-pass model: the one-pass regression trained for the full budget against the shipped fidelity-2 chain,
# v0.2, the FSRCNN trained here and bicubic. The candidate is the run's `best` (chosen on the held-out photos) with
# the 2-pixel border padding measured for the chain model and 1 reverse step by default (what it was trained for).
# 1. Held-out photos (320-pixel centre crops as in training, the selection set) and Set14 at 1/2/4 steps (`deltadiff ablate`);
# 2. the quality table on Set5 / Set14 / BSD68 (benchmarks/quality.py) with every row;
# 3. artifacts on smooth content (v0.2, fidelity-2, the candidate at border padding 0/2/4);
# 4. tiles against the whole image (benchmarks/tiling_consistency.py on Set14);
# 5. the main job's seconds, side by side in one run (candidate, v0.2, fidelity-2, FSRCNN, bicubic).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
RUN=${1:-outputs/x4/main}
OUT=${2:-outputs/x4/eval}
CAND=${CAND:-outputs/x4/candidate}
V02=training/starts/deltadiff-x4-v0.2
SHIPPED=${SHIPPED:-outputs/fid2/candidate}
FSRCNN=${FSRCNN:-outputs/abl17/fsrcnn/best}
B=../shared/data/benchmarks
mkdir -p "$OUT"
python training/make_candidate.py "$RUN/best" "$CAND" --border_padding 2 --default_inference_steps 1
step() { [ -f "$1" ] || { shift; "$@"; }; }  # skip what a previous run finished (every step writes its file last)
step "$OUT/heldout_steps.md" deltadiff ablate --hr outputs/data/heldout40 --crop 320 --model "$CAND" --steps 1,2,4 \
  --output "$OUT/heldout_steps.md"
step "$OUT/set14_steps.md" deltadiff ablate --hr $B/Set14 --model "$CAND" --steps 1,2,4 --output "$OUT/set14_steps.md"
step "$OUT/quality/quality.md" python benchmarks/quality.py --benchmarks $B/Set5 $B/Set14 $B/BSD68 \
  --model "DeltaDiff one-pass=$CAND" --model "DeltaDiff fidelity-2, 4 steps=$SHIPPED" --model "v0.2=$V02" \
  --fsrcnn "FSRCNN trained here=$FSRCNN" --seeds 0 --output "$OUT/quality"
step "$OUT/artifacts.md" python benchmarks/artifacts.py --model "$V02" --model "$SHIPPED" --model "$CAND" \
  --output "$OUT/artifacts.md" --figure "$OUT/artifacts.png"
for pad in 0 4; do
  step "$OUT/artifacts_pad$pad.md" python benchmarks/artifacts.py --model "$CAND" --border-padding $pad \
    --output "$OUT/artifacts_pad$pad.md"
done
step "$OUT/tiling.md" python benchmarks/tiling_consistency.py --hr $B/Set14 --model "$CAND" --output "$OUT/tiling.md"
if [ ! -f "$OUT/main_job_speed.md" ]; then
  python benchmarks/main_job_speed.py $B/Set5 --model "$CAND" --other "$V02" --other "$SHIPPED" \
    --fsrcnn "$FSRCNN" --bicubic --repeats 3 > "$OUT/main_job_speed.md.tmp"
  mv "$OUT/main_job_speed.md.tmp" "$OUT/main_job_speed.md"
fi
cat "$OUT/heldout_steps.md" "$OUT/set14_steps.md" "$OUT/quality/quality.md" "$OUT/artifacts.md" "$OUT/main_job_speed.md"

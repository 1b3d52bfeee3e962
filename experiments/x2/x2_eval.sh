#!/usr/bin/env bash
# Usage: bash experiments/x2/x2_eval.sh [RUN_DIR] [OUT]   (after training/recipes/deltadiff-x2.args; reruns skip done work)
# The measurements for the x2 model, against bicubic x2 and an FSRCNN x2 trained here at equal budget:
# 0. the FSRCNN baseline (training/train_fsrcnn.py --scale 2: same data, 64 px HR crops, batch 16, the same held-out
#    selection), for MINUTES of wall time (default 60; the shipped row used 67, the x2 run's own wall time);
# 1. the candidate = the run's `best` with 2 pixels of border padding (the x4 model's measured value; the artifacts
#    step reports 0 and 4 too); held-out and Set14 at 1/2/4 steps (`deltadiff ablate --scale 2`);
# 2. the quality table on Set5 / Set14 / BSD68 at x2 (crop border 2);
# 3. artifacts on smooth content at x2; 4. tiles against the whole image on Set14;
# 5. the x2 main job's seconds (`deltadiff upscale --scale 2` on Set5), side by side with FSRCNN x2 and bicubic.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
RUN=${1:-outputs/x2/main}
OUT=${2:-outputs/x2/eval}
CAND=${CAND:-outputs/x2/candidate}
FSRCNN=${FSRCNN:-outputs/x2/fsrcnn}
B=../shared/data/benchmarks
mkdir -p "$OUT"
if [ ! -f "$FSRCNN/best/fsrcnn.safetensors" ] || [ ! -f "$FSRCNN/fsrcnn.safetensors" ]; then
  python training/train_fsrcnn.py --scale 2 --train_data_dir outputs/data/train451 \
    --validation_data_dir outputs/data/heldout40 --resolution 64 --train_batch_size 16 \
    --max_minutes "${MINUTES:-60}" --output_dir "$FSRCNN" 2>&1 | tee -a "$FSRCNN.log"
fi
python training/make_candidate.py "$RUN/best" "$CAND" --border_padding 2
step() { [ -f "$1" ] || { shift; "$@"; }; }  # skip what a previous run finished (every step writes its file last)
step "$OUT/heldout_steps.md" deltadiff ablate --scale 2 --hr outputs/data/heldout40 --crop 320 --model "$CAND" \
  --steps 1,2,4 --output "$OUT/heldout_steps.md"
step "$OUT/set14_steps.md" deltadiff ablate --scale 2 --hr $B/Set14 --model "$CAND" --steps 1,2,4 \
  --output "$OUT/set14_steps.md"
step "$OUT/quality/quality.md" python benchmarks/quality.py --scale 2 --benchmarks $B/Set5 $B/Set14 $B/BSD68 \
  --model "DeltaDiff x2 one-pass=$CAND" --fsrcnn "FSRCNN x2 trained here=$FSRCNN/best" --seeds 0 \
  --output "$OUT/quality"
step "$OUT/artifacts.md" python benchmarks/artifacts.py --model "$CAND" --output "$OUT/artifacts.md" \
  --figure "$OUT/artifacts.png"
for pad in 0 4; do
  step "$OUT/artifacts_pad$pad.md" python benchmarks/artifacts.py --model "$CAND" --border-padding $pad \
    --output "$OUT/artifacts_pad$pad.md"
done
step "$OUT/tiling.md" python benchmarks/tiling_consistency.py --hr $B/Set14 --model "$CAND" --output "$OUT/tiling.md"
if [ ! -f "$OUT/main_job_speed.md" ]; then
  python benchmarks/main_job_speed.py $B/Set5 --scale 2 --model "$CAND" --fsrcnn "$FSRCNN/best" --bicubic \
    --repeats 3 > "$OUT/main_job_speed.md.tmp"
  mv "$OUT/main_job_speed.md.tmp" "$OUT/main_job_speed.md"
fi
cat "$OUT/heldout_steps.md" "$OUT/set14_steps.md" "$OUT/quality/quality.md" "$OUT/artifacts.md" "$OUT/main_job_speed.md"

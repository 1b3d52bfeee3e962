#!/usr/bin/env bash
# Usage: bash experiments/fidelity2/fidelity2_eval.sh CANDIDATE_DIR [OUT]   (after the fidelity-2.args run)
# Everything the fidelity-2 release reported, for one candidate pipeline against v0.2 (the shipped default before
# it, training/starts/deltadiff-x4-v0.2) and bicubic: held-out photos at 1/2/4 steps (the selection set), Set14 at 1/2/4 steps
# (`deltadiff ablate`), the quality table on Set5/Set14/BSD68, the artifacts on smooth content, and the main job's
# time as a ratio from one run.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1
CAND=$1
OUT=${2:-outputs/fid2/eval}
OLD=${OLD:-training/starts/deltadiff-x4-v0.2}
B=../shared/data/benchmarks
mkdir -p "$OUT"
# v0.2's benchmark figures are its model card's (same protocol); its held-out figures are measured here
deltadiff ablate --hr outputs/data/heldout40 --model "$OLD" --steps 1,4 --output "$OUT/heldout_steps_v0.2.md"
deltadiff ablate --hr outputs/data/heldout40 --model "$CAND" --steps 1,2,4 --output "$OUT/heldout_steps_candidate.md"
deltadiff ablate --hr $B/Set14 --model "$CAND" --steps 1,2,4 --output "$OUT/set14_steps_candidate.md"
python benchmarks/quality.py --benchmarks $B/Set5 $B/Set14 $B/BSD68 --model "DeltaDiff fidelity-2=$CAND" \
  --output "$OUT/quality"
python benchmarks/artifacts.py --model "$OLD" --model "$CAND" --output "$OUT/artifacts.md" --figure "$OUT/artifacts.png"
python benchmarks/main_job_speed.py $B/Set5 --model "$CAND" --other "$OLD" --repeats 3 | tee "$OUT/main_job_speed.md"

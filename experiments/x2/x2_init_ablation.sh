#!/usr/bin/env bash
# Usage: bash experiments/x2/x2_init_ablation.sh [X4_MODEL]     (reruns skip finished rows)
# Where should the x2 model start? Two short runs of the x2 recipe (training/recipes/deltadiff-x2.args), equal in
# everything else: from scratch (the output layer at zero: bicubic at step 0) and from the x4 model's UNet
# (`--unet_init_from`: its weights, with new input and output convolutions for the 12-channel latent). 400 steps each
# with a 50-step warm-up, scored on the 40 held-out photos at x2 (320-pixel centre crops, 1 pass); prints the held-out
# curves.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
X4=${1:-src/diffusers_deltadiff/pretrained/deltadiff-x4}
OUT=outputs/x2/init
mkdir -p "$OUT"
[ -d outputs/data/train451 ] || python training/prepare_train_data.py ../shared/data/train outputs/data
common=(@training/recipes/deltadiff-x2.args --max_train_steps 400 --lr_warmup_steps 50 --validation_steps 200
  --checkpointing_steps 400)
# the scratch row gives the trainer the x4 UNet's shape from the size flags (no start, so nothing to pin)
[ -f "$OUT/scratch/model_index.json" ] || python training/train_deltadiff.py "${common[@]}" --output_dir "$OUT/scratch" \
  --unet_init_from "" --start_sha256 "" --unet_block_out_channels 64,128,128 --unet_layers_per_block 1
# another X4_MODEL than the shipped one is not the recipe's pinned start: its check is left out
pin=()
[ "$X4" = src/diffusers_deltadiff/pretrained/deltadiff-x4 ] || pin=(--start_sha256 "")
[ -f "$OUT/from_x4/model_index.json" ] || python training/train_deltadiff.py "${common[@]}" --output_dir "$OUT/from_x4" \
  --unet_init_from "$X4" "${pin[@]}"
for row in scratch from_x4; do
  echo "## $row"
  cat "$OUT/$row/validation/metrics.jsonl"
done

#!/usr/bin/env bash
# Usage: bash benchmarks/x2_init_ablation.sh [X4_MODEL]     (reruns skip finished rows)
# Where should the x2 model start (issue 20)? Two short runs of benchmarks/train_x2.sh, equal in everything else:
# from scratch (the output layer at zero: bicubic at step 0) and from the x4 model's UNet (`--unet_init_from`: its
# weights, with new input and output convolutions for the 12-channel latent). 400 steps each with a 50-step warm-up,
# scored on the 40 held-out photos at x2 (320-pixel centre crops, 1 pass); prints the held-out curves.
set -eu
cd "$(dirname "$0")/.."
X4=${1:-src/diffusers_deltadiff/pretrained/deltadiff-x4}
OUT=outputs/x2/init
mkdir -p "$OUT"
common=(--lr_warmup_steps 50 --validation_steps 200 --checkpointing_steps 400)
# (train_x2.sh now starts from the x4 model; the scratch row gives the trainer the x4 UNet's shape from the size flags)
[ -f "$OUT/scratch/model_index.json" ] || STEPS=400 bash benchmarks/train_x2.sh "$OUT/scratch" \
  "${common[@]}" --unet_init_from "" --unet_block_out_channels 64,128,128 --unet_layers_per_block 1
[ -f "$OUT/from_x4/model_index.json" ] || STEPS=400 X4="$X4" bash benchmarks/train_x2.sh "$OUT/from_x4" "${common[@]}"
for row in scratch from_x4; do
  echo "## $row"
  cat "$OUT/$row/validation/metrics.jsonl"
done

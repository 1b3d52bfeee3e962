#!/usr/bin/env bash
# Usage: bash experiments/v0.2-recipe/recipe_ablation.sh [extra train flags]   (STEPS=2000 by default)
# The comparisons behind the default model's recipe, one run after the other (2 cores: never two at once).
# All runs: lossless space-to-depth latent, residual prediction from a zero-initialised output (the untrained model
# is bicubic), UNet 64/128/128 without attention, 128-pixel HR crops, batch 8, AdamW 2e-4 with cosine decay, EMA.
# They differ in the two suspected causes of the Set14 drop of the first residual model:
#   norm:         GroupNorm (image-wide statistics) vs per-pixel norm (LocalUNet2DModel)
#   hr_downscale: 1 (JPEG q75 photos as they are) vs 2 (halved, the blocking shrinks below the pixel)
# Validation is on held-out training photos (outputs/data/val8_half: every 10th sun_hays80 photo, halved, PNG; the
# other 72 are outputs/data/train72), never on a benchmark. Then score them all with
# experiments/v0.2-recipe/recipe_eval.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
# one thread: a second busy process on 2 cores stalls a 2-thread torch (its threads wait on each other)
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
STEPS=${STEPS:-2000}
COMMON=(--lossless_latent --prediction_type residual --zero_init_output --unet_attention_levels ""
  --train_data_dir outputs/data/train72 --resolution 128 --train_batch_size 8
  --learning_rate 2e-4 --lr_scheduler cosine --unet_block_out_channels 64,128,128 --unet_layers_per_block 1
  --max_train_steps "$STEPS" --use_ema --ema_decay 0.999 --checkpointing_steps 500
  --validation_data_dir outputs/data/val8_half --validation_resolution 320 --num_validation_images 8
  --validation_steps 500 --dataloader_num_workers 0 --report_to none --seed 0 --resume_from_checkpoint latest)
mkdir -p outputs/ablate
for norm in group pixel; do
  for ds in 1 2; do
    name=${norm}_ds${ds}
    [ -f outputs/ablate/$name/model_index.json ] && continue
    nice -n -10 python training/train_deltadiff.py "${COMMON[@]}" --unet_norm $norm --hr_downscale $ds \
      --output_dir outputs/ablate/$name "$@"
  done
done

#!/usr/bin/env bash
# Usage: bash benchmarks/train_equal_budget.sh   (STEPS=3000 by default; extra flags go to both runs)
# The shipped default model and its equal-budget ResShift baseline, trained side by side with one CPU thread each:
# same lossless space-to-depth latent, UNet (64/128/128, per-pixel norms, no attention), residual prediction from a
# zeroed output layer, data (sun_hays80 less every 10th photo, halved), seed, steps and wall time. They differ only in
# the chain: DeltaDiff (kappa 0, eta 0.01..0.99, p 0.3) vs ResShift (kappa 2, its bicx4 eta 0.01..0.9801).
# Prepare the data folders first (see README, "Training the default model").
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON=(--lossless_latent --prediction_type residual --zero_init_output --unet_norm pixel --unet_attention_levels ""
  --train_data_dir outputs/data/train72 --hr_downscale "${HR_DOWNSCALE:-2}" --resolution 128 --train_batch_size 8
  --learning_rate 2e-4 --lr_scheduler cosine --unet_block_out_channels 64,128,128 --unet_layers_per_block 1
  --max_train_steps "${STEPS:-3000}" --use_ema --ema_decay 0.999 --checkpointing_steps 500
  --validation_data_dir outputs/data/val8_half --validation_resolution 320 --num_validation_images 8
  --validation_steps 500 --dataloader_num_workers 0 --report_to none --seed 0 --resume_from_checkpoint latest)
mkdir -p outputs
python training/train_deltadiff.py "${COMMON[@]}" --kappa 0 --output_dir outputs/deltadiff-x4 "$@" >> outputs/deltadiff-x4.log 2>&1 &
python training/train_deltadiff.py "${COMMON[@]}" --kappa 2 --eta_start 0.01 --eta_end 0.9801 --output_dir outputs/resshift-x4 "$@" >> outputs/resshift-x4.log 2>&1 &
wait

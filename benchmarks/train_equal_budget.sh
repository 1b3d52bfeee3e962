#!/usr/bin/env bash
# Usage: bash benchmarks/train_equal_budget.sh   (STEPS=1800 by default; needs outputs/vq-f4 from train_vqmodel.py, see README)
# Equal-budget pair: DeltaDiff (kappa 0) and the ResShift baseline (kappa 2, its bicx4 schedule), run side by side
# with the same VQ, UNet size, data, seed, steps and one CPU thread each.
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON=(--vqvae_model_name_or_path outputs/vq-f4 --train_data_dir ../shared/data/train/sun_hays80
  --resolution 128 --train_batch_size 8 --learning_rate 2e-4 --lr_warmup_steps 100
  --unet_block_out_channels 64,128,128 --unet_layers_per_block 1 --unet_attention_levels 2
  --max_train_steps ${STEPS:-1800} --use_ema --ema_decay 0.995 --checkpointing_steps 300 --checkpoints_total_limit 2
  --validation_data_dir ../shared/data/benchmarks/Set5 --validation_steps 100000 --num_validation_images 5
  --validation_resolution 256 --dataloader_num_workers 1 --seed 0)
python training/train_deltadiff.py "${COMMON[@]}" --kappa 0 --output_dir outputs/deltadiff-x4 "$@" > outputs/deltadiff-x4.log 2>&1 &
python training/train_deltadiff.py "${COMMON[@]}" --kappa 2 --eta_start 0.01 --eta_end 0.9801 --output_dir outputs/resshift-x4 "$@" > outputs/resshift-x4.log 2>&1 &
wait

#!/usr/bin/env bash
# Usage: bash benchmarks/train_fidelity2.sh [output_dir] [extra train flags]     (resumable: rerun the same command)
# The fidelity-2 x4 recipe (issue 17): fine-tune the v0.2 default model *through its own 4-step deterministic chain*
# (what inference runs), L1 on the final latent, on bsds400 + t91 (every 10th bsds400 photo held out; see
# training/prepare_train_data.py), 128-pixel HR crops, batch 8, AdamW 1e-4 with warm-up and cosine decay, EMA.
# Checkpoints are chosen on the 40 held-out photos (`<output_dir>/best`), never on a benchmark.
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
OUT=${1:-outputs/fid2/main}
shift || true
STEPS=${STEPS:-4000}
[ -d outputs/data/train451 ] || python training/prepare_train_data.py ../shared/data/train outputs/data
mkdir -p "$OUT"
python training/train_deltadiff.py --lossless_latent \
  --pretrained_model_name_or_path src/diffusers_deltadiff/pretrained/deltadiff-x4 \
  --prediction_type residual --unet_norm pixel --unet_attention_levels "" \
  --train_data_dir outputs/data/train451 --resolution 128 --train_batch_size 8 \
  --train_through_chain --loss l1 \
  --learning_rate 1e-4 --lr_scheduler cosine --lr_warmup_steps 100 --max_train_steps "$STEPS" \
  --use_ema --ema_decay 0.999 \
  --checkpointing_steps 250 --checkpoints_total_limit 2 --resume_from_checkpoint latest \
  --validation_data_dir outputs/data/heldout40 --num_validation_images 40 --validation_resolution 320 \
  --validation_steps 250 --save_best \
  --dataloader_num_workers 0 --report_to none --seed 0 --output_dir "$OUT" "$@" >> "$OUT.log" 2>&1

#!/usr/bin/env bash
# Usage: bash benchmarks/train_onepass.sh [output_dir] [extra train flags]     (resumable: rerun the same command)
# Issue 17's next candidate: the fidelity-2 recipe (benchmarks/train_fidelity2.sh) as a one-pass regression
# (`--chain_steps 1`: one UNet pass from the bicubic start, validated and selected on that one pass), for the same
# number of UNet passes as the shipped model's 2,750 chain steps: 11,000 steps. At equal passes it beat the 4-step
# chain on every set (docs/performance.md, "Equal budget"); this run says whether it still does at the full budget.
# Checkpoints are chosen on the 40 held-out photos (`<output_dir>/best`), never on a benchmark.
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
OUT=${1:-outputs/onepass/main}
shift || true
STEPS=${STEPS:-11000}
[ -d outputs/data/train451 ] || python benchmarks/prepare_train_data.py ../shared/data/train outputs/data
mkdir -p "$OUT"
python training/train_deltadiff.py --lossless_latent \
  --pretrained_model_name_or_path outputs/v0.2 \
  --prediction_type residual --unet_norm pixel --unet_attention_levels "" \
  --train_data_dir outputs/data/train451 --resolution 128 --train_batch_size 8 \
  --train_through_chain --chain_steps 1 --loss l1 \
  --learning_rate 1e-4 --lr_scheduler cosine --lr_warmup_steps 400 --max_train_steps "$STEPS" \
  --use_ema --ema_decay 0.999 \
  --checkpointing_steps 500 --checkpoints_total_limit 2 --resume_from_checkpoint latest \
  --validation_data_dir outputs/data/heldout40 --num_validation_images 40 --validation_resolution 320 \
  --validation_steps 1000 --save_best \
  --dataloader_num_workers 0 --report_to none --seed 0 --output_dir "$OUT" "$@" >> "$OUT.log" 2>&1

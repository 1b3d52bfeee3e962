#!/usr/bin/env bash
# Usage: bash experiments/fidelity2/fidelity2_ablation.sh     (resumable: rerun it; finished rows are skipped)
# The ablation and equal-budget runs, one after the other on one thread (2 cores: never two trainings at once).
# Every row starts from the v0.2 model (training/starts/deltadiff-x4-v0.2) and changes ONE thing of the fidelity-2
# recipe (experiments/fidelity2/fidelity-2.args: the 4-step chain unrolled, L1 on the final latent, 128 px, batch 8, AdamW 1e-4 with
# warm-up and cosine, EMA, flips and rotations). Budget per row: the same number of UNet passes, STEPS (250) chain
# steps = 4 x STEPS single-pass steps (about 10 min each here). Rows:
#   base      the recipe as shipped                           (also the equal-budget DeltaDiff T = 4 row)
#   t1        --chain_steps 1: a one-pass regression          (the equal-budget "what the chain adds" row)
#   resshift  kappa 2 with noise, trained on random x_t (ResShift's way; its bicx4 eta_T 0.9801)
#   nochain   the v0.2 way: random-timestep x_t built from the true x0
#   mse       MSE instead of L1
#   noema     no EMA
#   noflip    no flips and rotations
#   crop192   192-pixel crops (48 px LR), steps cut to the same pixels seen
# Then FSRCNN (training/train_fsrcnn.py) from scratch for FSRCNN_MINUTES of wall time (default: the base row's
# minutes plus v0.2's own 19, as all UNet rows start from v0.2). Score with
# experiments/fidelity2/fidelity2_ablation_eval.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
N=${STEPS:-250}
OUT=${OUT:-outputs/abl17}
[ -d outputs/data/train451 ] || python training/prepare_train_data.py ../shared/data/train outputs/data
V02=training/starts/deltadiff-x4-v0.2
mkdir -p "$OUT"

run() {  # name steps flags...
  local name=$1 steps=$2
  shift 2
  [ -f "$OUT/$name/model_index.json" ] && return 0
  local warmup=$((steps / 10))
  python training/train_deltadiff.py --lossless_latent \
    --pretrained_model_name_or_path "$V02" --start_sha256 f62653aa0f4ac8f8b3af0e7d8a5b96652907392d33dcb01308e9947335db7156 \
    --prediction_type residual --unet_norm pixel --unet_attention_levels "" \
    --train_data_dir outputs/data/train451 --train_batch_size 8 \
    --learning_rate 1e-4 --lr_scheduler cosine --lr_warmup_steps "$warmup" --max_train_steps "$steps" \
    --ema_decay 0.999 --checkpointing_steps $((steps / 2)) --checkpoints_total_limit 1 --resume_from_checkpoint latest \
    --validation_data_dir outputs/data/heldout40 --num_validation_images 40 --validation_resolution 320 \
    --validation_steps "$steps" --dataloader_num_workers 0 --report_to none --seed 0 \
    --output_dir "$OUT/$name" "$@"
}

CHAIN=(--train_through_chain --loss l1)
run base $N "${CHAIN[@]}" --resolution 128 --use_ema
run t1 $((4 * N)) "${CHAIN[@]}" --chain_steps 1 --resolution 128 --use_ema
run resshift $((4 * N)) --loss l1 --kappa 2 --eta_end 0.9801 --resolution 128 --use_ema
if [ ! -f "$OUT/fsrcnn/fsrcnn.safetensors" ]; then
  base_minutes=$( (grep -ho "after $N steps ([0-9.]* min)" "$OUT/base/train.log" "$OUT/base.log" 2>/dev/null || true) |
    tail -1 | sed 's/.*(\([0-9.]*\) min)/\1/')
  minutes=${FSRCNN_MINUTES:-$(python -c "print(round(${base_minutes:-10} + 19, 1))")}
  python training/train_fsrcnn.py --train_data_dir outputs/data/train451 \
    --validation_data_dir outputs/data/heldout40 --max_minutes "$minutes" --max_train_steps 40000 \
    --validation_steps 2000 --output_dir "$OUT/fsrcnn" 2>&1 | tee -a "$OUT/fsrcnn.log"
fi
run nochain $((4 * N)) --loss l1 --resolution 128 --use_ema
run mse $N --train_through_chain --loss mse --resolution 128 --use_ema
run noema $N "${CHAIN[@]}" --resolution 128
run noflip $N "${CHAIN[@]}" --resolution 128 --use_ema --no_random_flip
run crop192 $((N * 128 * 128 / (192 * 192))) "${CHAIN[@]}" --resolution 192 --use_ema
echo "all rows done"

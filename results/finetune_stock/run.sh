#!/usr/bin/env bash
# Making an existing VQ model equivariant (issue 20, part 3), scaled down to our 2-core CPU:
# 1. a stock diffusers.VQModel to start from: the SC cpu-f8 layout with zero padding (diffusers' own network),
#    1,000 steps of the CPU recipe on TextMNIST, saved with diffusers.VQModel.save_pretrained;
# 2. that folder fine-tuned by train_vqgan.py --pretrained_model_name_or_path (TEVQModel.from_vq_model: the same
#    network and outputs, then the orthogonal term, weight 10) for 500 steps;
# 2b. the control: the same 500 steps with the orthogonal weight 0;
# 2c. the same 500 steps with the direct shift-equivariance term (weight 1) as well;
# 3. all three measured by `te-vqgan equivariance` (100 MNIST test digits in five placements, four colours), and by
#    their validation (metrics.json: reconstruction, codes in use) on the same 512 validation images.
# Rerun to continue: finished steps are skipped. Run from the repository root.
set -euo pipefail
OUT=${OUT:-outputs/finetune-stock}
MNIST=${MNIST:-../shared/data/mnist}
PY=${PY:-.venv/bin/python}
TE=${TE:-.venv/bin/te-vqgan}
COMMON=(--mnist_dir "$MNIST" --cache_dir "$OUT/cache" --num_train 5000 --num_validation 512 --num_validation_images 512
        --num_shift_groups 100 --train_batch_size 16 --learning_rate 3e-4 --no-scale_lr --perceptual_weight 0
        --reconstruction_loss l2 --checkpointing_steps 250 --checkpoints_total_limit 1 --validation_steps 10000
        --report_to none --scaled_down "CPU-scale fine-tune demonstration (results/finetune_stock)")
resume() { ls -d "$1"/checkpoint-* > /dev/null 2>&1 && echo --resume_from_checkpoint latest || true; }

if [ ! -f "$OUT/base-train/.complete.json" ]; then
  $PY training/train_vqgan.py --model_config results/finetune_stock/vqgan-mnist-stock-cpu-f8.json \
      --output_dir "$OUT/base-train" --max_train_steps 1000 --kmeans_init_step 300 "${COMMON[@]}" $(resume "$OUT/base-train")
fi
if [ ! -f "$OUT/stock-vqmodel/config.json" ]; then
  # diffusers' own config keys only, as a VQModel trained elsewhere has them (VQModel keeps unknown keys when it saves)
  $PY - "$OUT/base-train" "$OUT/stock-vqmodel" <<'PY'
import inspect, sys
from diffusers import VQModel
trained = VQModel.from_pretrained(sys.argv[1])
keys = inspect.signature(VQModel.__init__).parameters
stock = VQModel.from_config({k: v for k, v in trained.config.items() if k in keys})
stock.load_state_dict(trained.state_dict())
stock.save_pretrained(sys.argv[2])
PY
fi
if [ ! -f "$OUT/finetuned/.complete.json" ]; then
  $PY training/train_vqgan.py --pretrained_model_name_or_path "$OUT/stock-vqmodel" --output_dir "$OUT/finetuned" \
      --max_train_steps 500 "${COMMON[@]}" $(resume "$OUT/finetuned")
fi
# The control: the same 500 steps without the orthogonal term, so that what the term does is told apart from more training.
if [ ! -f "$OUT/finetuned-no-orthogonal/.complete.json" ]; then
  $PY training/train_vqgan.py --pretrained_model_name_or_path "$OUT/stock-vqmodel" --output_dir "$OUT/finetuned-no-orthogonal" \
      --orthogonal_reg_weight 0 --max_train_steps 500 "${COMMON[@]}" $(resume "$OUT/finetuned-no-orthogonal")
fi
# EQ-VAE's recipe for a VQ model: the same 500 steps with the direct shift-equivariance term (weight 1) beside the
# orthogonal one (weight 10).
if [ ! -f "$OUT/finetuned-shift/.complete.json" ]; then
  $PY training/train_vqgan.py --pretrained_model_name_or_path "$OUT/stock-vqmodel" --output_dir "$OUT/finetuned-shift" \
      --shift_equivariance_weight 1 --max_train_steps 500 "${COMMON[@]}" $(resume "$OUT/finetuned-shift")
fi
$TE equivariance --vqmodel "$OUT/finetuned-shift" --mnist-dir "$MNIST" --output "$OUT/after-shift.png" --json "$OUT/after-shift.json"
$TE equivariance --vqmodel "$OUT/finetuned-no-orthogonal" --mnist-dir "$MNIST" --output "$OUT/control.png" --json "$OUT/control.json"
$TE equivariance --vqmodel "$OUT/stock-vqmodel" --mnist-dir "$MNIST" --output "$OUT/before.png" --json "$OUT/before.json"
$TE equivariance --vqmodel "$OUT/finetuned" --mnist-dir "$MNIST" --output "$OUT/after.png" --json "$OUT/after.json"

#!/usr/bin/env bash
# TE-VQGAN on images that are not TextMNIST (issue 20, parts 4 and 5), scaled down to our 2-core CPU:
# the shift-equivariance ablation (SC, TE, TE + the shift term, the shift term alone; 2 seeds) of
# training/collapse_ablation.py on
#   1. Fashion-MNIST (../shared/data/fashion_mnist, read by te_vqgan's IDX reader; the same images as the Hub's
#      `fashion_mnist`), 5,000 training images at 32x32, validation on the first 512 of its test split;
#   2. natural-image crops: 4,000 training crops of 11 photographs that scikit-image ships and 512 validation
#      crops of 4 others (results/real_images/make_natural_crops.py), at 32x32;
# each run 1,000 steps of batch 16 of the CPU recipe (te_vqgan.reproduce.CPU_STAGE1: L2, lr 3e-4, no LPIPS),
# on the CPU configs (f = 4, 128 codes: 8x8 tokens per image); then `te-vqgan equivariance --images` draws
# each seed-0 model's code maps of shifted validation images.
# Rerun to continue: finished runs are read, an interrupted one resumes from its checkpoint.
# Run from the repository root.
set -euo pipefail
OUT=${OUT:-outputs/real-images}
FASHION=${FASHION:-../shared/data/fashion_mnist}
PY=${PY:-.venv/bin/python}
TE=${TE:-.venv/bin/te-vqgan}
ROWS=sc,te,te_shift,sc_shift

$PY training/collapse_ablation.py --dataset fashion_mnist --mnist_dir "$FASHION" --resolution 32 \
    --validation_split test --rows $ROWS --seeds 0,1 --output_dir "$OUT/fashion-ablation"
$PY results/real_images/make_natural_crops.py --output "$OUT/natural-crops"
$PY training/collapse_ablation.py --dataset "$OUT/natural-crops" --resolution 32 --num_train 4000 \
    --validation_split validation --rows $ROWS --seeds 0,1 --output_dir "$OUT/natural-ablation"

for row in sc te te_shift sc_shift; do
  $TE equivariance --vqmodel "$OUT/fashion-ablation/runs/$row-seed0" --images fashion_mnist --mnist-dir "$FASHION" \
      --figure-digits 4 --output "$OUT/fashion-$row-shifted.png" --json "$OUT/fashion-$row-shifted.json"
  $TE equivariance --vqmodel "$OUT/natural-ablation/runs/$row-seed0" --images "$OUT/natural-crops" \
      --figure-digits 4 --output "$OUT/natural-$row-shifted.png" --json "$OUT/natural-$row-shifted.json"
done

# What is committed: each ablation's table, results and scatter, the seed-0 models' reconstructions and shifted code maps.
RESULTS=${RESULTS:-results/real_images}
for set in fashion natural; do
  for file in table.md results.json scatter.png; do cp "$OUT/$set-ablation/$file" "$RESULTS/$set-$file"; done
  for row in sc te te_shift sc_shift; do
    cp "$OUT/$set-ablation/runs/$row-seed0/reconstructions.png" "$RESULTS/$set-$row-reconstructions.png"
    cp "$OUT/$set-$row-shifted.png" "$OUT/$set-$row-shifted.json" "$RESULTS/"
  done
done

#!/usr/bin/env bash
# One run on a lent GPU machine (no internet there: wheels carried in .whl/): the generation benchmark at the authors' size, then a
# scaled-down end-to-end run: stage 1 (te-vqgan-mnist-small, L2, no GAN) -> tokenise -> stage 2 (the
# authors' GPT size) -> image-to-text accuracy on test_seen and test -> samples from the saved pipeline.
#
#   INSTALL_WHEELS=1 bash results/stage2_gpu/run_gpu.sh   # from the repository root, wheels in .whl/, MNIST in .gpudata/mnist/
#   SMOKE=1 bash results/stage2_gpu/run_gpu.sh    # the same on a CPU in a minute (tiny sizes), to check the script
set -euo pipefail
if [ "${INSTALL_WHEELS:-0}" = 1 ]; then  # the device: carried wheels (README "GPU")
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-outputs/stage2_gpu}; mkdir -p "$OUT"
WORK=${WORK:-/tmp/te-vqgan-gpu}; rm -rf "$WORK"; mkdir -p "$WORK"
PY=${PY:-python3}
MNIST=${MNIST:-.gpudata/mnist}
if [ "${SMOKE:-0}" = 1 ]; then
    N_TRAIN=200; S1_STEPS=4; S2_STEPS=4; GPT="--n_layer 2 --n_embd 32 --n_head 2"; BENCH="--quick --batch-sizes 1 --repeats 1"; EVAL=8; S1_BATCH=8; S2_BATCH=8
else
    N_TRAIN=50000; S1_STEPS=1500; S2_STEPS=2500; GPT=""; BENCH=""; EVAL=1000; S1_BATCH=128; S2_BATCH=100
fi
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/timeline.txt"; }

S2_STEPS=${S2_STEPS_OVERRIDE:-$S2_STEPS}
if [ "${SKIP_BENCH:-0}" != 1 ]; then
    log "bench_generate"
    $PY benchmarks/bench_generate.py $BENCH --json "$OUT/bench_generate.json" 2>&1 | grep -v Warning | tee "$OUT/bench_generate.log"
fi

log "stage 1"
$PY training/train_vqgan.py --model_config hub_configs/te-vqgan-mnist-small.json --mnist_dir "$MNIST" \
    --cache_dir "$WORK/cache" --num_train $N_TRAIN --num_validation 1000 --train_batch_size $S1_BATCH --dataloader_num_workers ${WORKERS:-8} \
    --max_train_steps $S1_STEPS --perceptual_weight 0 --disc_start 1000000 --mixed_precision bf16 \
    --checkpointing_steps 100000 --validation_steps 100000 --report_to none \
    --scaled_down "$N_TRAIN images, $S1_STEPS steps of $S1_BATCH, L2, no LPIPS, no GAN" --output_dir "$WORK/te-small" 2>&1 \
    | grep -v "it/s" | tail -n 5
cp "$WORK/te-small/metrics.json" "$OUT/stage1_metrics.json"; cp "$WORK/te-small/reconstructions.png" "$OUT/stage1_reconstructions.png"

log "tokenize"
$PY -m te_vqgan.cli tokenize-dataset --vqmodel "$WORK/te-small" --mnist-dir "$MNIST" --cache-dir "$WORK/cache" \
    --num-train $N_TRAIN --num-validation 1000 --output "$WORK/tokens" 2>&1 | grep -v "examples/s" | tail -n 6

log "stage 2"
$PY training/train_generator.py --tokenized_dataset "$WORK/tokens" --vqmodel "$WORK/te-small" $GPT \
    --train_batch_size $S2_BATCH --dataloader_num_workers ${WORKERS:-8} --max_train_steps $S2_STEPS --mixed_precision bf16 --num_evaluation_examples $EVAL \
    --checkpointing_steps 100000 --validation_steps 1000 --report_to none \
    --scaled_down "$N_TRAIN examples, $S2_STEPS steps of $S2_BATCH" --output_dir "$WORK/generator" 2>&1 \
    | tr '\r' '\n' | grep -v "examples/s" | awk '!/^steps/ || NR % 50 == 0' > "$OUT/stage2.log"
cp "$WORK/generator/metrics.json" "$OUT/stage2_metrics.json"; cp "$WORK/generator/samples.png" "$OUT/stage2_samples.png"

log "generate"
$PY -m te_vqgan.cli generate --pipeline "$WORK/generator" --prompt "the red 3 is on the upper left." \
    --prompt "the white 7 is on the bottom right, and blue 1 on the top right." --prompt "green 5" \
    --num-images 6 --seed 0 --output "$WORK/samples" 2>&1 | tail -n 1
cp "$WORK/samples/grid.png" "$OUT/generate_grid.png"
log "done"

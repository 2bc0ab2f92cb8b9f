#!/usr/bin/env bash
# The `gpu` preset as one prepared call on a lent GPU machine (no internet there: the pinned packages
# carried as wheels in .whl/, MNIST in .gpudata/mnist/, as results/stage2_gpu/run_gpu.sh does):
#   1. bench_train_generator.py at the authors' size in bf16 (tokens/s and the fraction of the bf16 peak),
#      compiled and uncompiled side by side, at the preset's batch of 100;
#   2. `te-vqgan reproduce --preset gpu --jobs 6` under a wall-clock cap (default 540 s): TE and SC, 3 seeds,
#      stages side by side on the one device; cut by the cap, it continues with the same command;
#   3. copies the report, results, figures, per-stage timeline and logs' tails to $OUT.
#
#   INSTALL_WHEELS=1 bash results/gpu_preset/run_gpu_preset.sh         # on the device, from the repository root
#   PRESET=smoke JOBS=2 CAP=60 COMPILE=0 BENCH_ARGS="--repeats 1 --batch 4 --dtype fp32" bash results/gpu_preset/run_gpu_preset.sh
#                                                                       # the same script on a CPU, to check it
set -uo pipefail
if [ "${INSTALL_WHEELS:-0}" = 1 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PY:-python3}
OUT=${OUT:-outputs/gpu_preset}; mkdir -p "$OUT"
RUN=${RUN:-/tmp/te-vqgan-gpu-preset}
MNIST=${MNIST:-.gpudata/mnist}
PRESET=${PRESET:-gpu}; JOBS=${JOBS:-6}; CAP=${CAP:-540}
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/timeline.txt"; }

log "bench_train_generator (authors' size, bf16, batch 100)"
# With --compile the benchmark times the compiled and the uncompiled step side by side, in one run.
$PY benchmarks/bench_train_generator.py --size authors --dtype bf16 --batch 100 \
    $([ "${COMPILE:-1}" = 1 ] && echo --compile) ${BENCH_ARGS:-} --json "$OUT/bench_train_generator.json" 2>&1 \
    | grep -v Warning | tail -n 12 | tee -a "$OUT/bench_train_generator.log"

log "reproduce --preset $PRESET --jobs $JOBS (cap ${CAP} s)"
timeout --signal=TERM --kill-after=20 "$CAP" $PY -m te_vqgan.cli reproduce --preset "$PRESET" --mnist-dir "$MNIST" \
    --output-dir "$RUN" --jobs "$JOBS" 2>&1 | tr '\r' '\n' | grep -a -v "it/s\]\|s/it\]\|examples/s\]" > "$OUT/reproduce.log"
log "reproduce exited with ${PIPESTATUS[0]}"

for file in report.md results.json state.json; do [ -f "$RUN/$file" ] && cp "$RUN/$file" "$OUT/"; done
[ -d "$RUN/figures" ] && cp -r "$RUN/figures" "$OUT/"
mkdir -p "$OUT/logs"
for stage_log in "$RUN"/logs/*.log; do [ -f "$stage_log" ] && tail -n 30 "$stage_log" > "$OUT/logs/$(basename "$stage_log")"; done
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/device.txt" 2>/dev/null || echo "no nvidia-smi" > "$OUT/device.txt"
log "done"

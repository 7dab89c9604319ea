#!/usr/bin/env bash
# The larger EDSR proxy, for a session lent a CUDA machine: one call of about 8-9 minutes on one H100/H200 (not yet
# run on a GPU: the time is an estimate from the eager step times of benchmarks/results/gpu_h200_compiled_step/).
#   benchmarks/proxy_accuracy.py --device cuda, the demo EDSR proxy at w2a2: WCC only, ODM v2 and plain QAT, seed 10
#   then seed 11 (one file per seed, so a call cut short keeps whole seeds; each file is also rewritten after every
#   run), ITERS iterations (default 2400) with batch 16 of 192-pixel HR patches, eager steps, 6 data workers. The
#   CPU table of docs/RESULTS.md runs 1000 iterations with batch 4 of 128-pixel patches: this sees about 5x the
#   pixels per step and 2.4x the steps.
# Needs the demo data (basicsr prepare demo: datasets/demo_*) and python3 with torch (CUDA), basicsr 1.4.2 and lmdb.
# Results go to OUT_DIR (first argument, else $OUT, else benchmarks/results/gpu_proxy); copy them to
# benchmarks/results/ with the card named, then read them with
#   python benchmarks/proxy_table.py OUT_DIR/proxy_gpu_seed*.json --iters 2400 --device cuda
#   bash benchmarks/gpu_proxy.sh [OUT_DIR]
DEFAULT_OUT_DIR=benchmarks/results/gpu_proxy
source "$(dirname "$0")/gpu_setup.sh" "$@"  # cd to the repository, OUT_DIR, PY, step(), the device record
ITERS=${ITERS:-2400}
for seed in 10 11; do
  step "seed $seed: WCC only, ODM v2, plain QAT at w2a2, $ITERS iterations"
  $PY benchmarks/proxy_accuracy.py --device cuda --iters "$ITERS" --seeds "$seed" --bits 2 --no-sweep \
    --variants 'WCC only' 'ODM v2' 'plain QAT' --batch-size 16 --gt-size 192 --workers 6 \
    --json "$OUT_DIR/proxy_gpu_seed$seed.json" 2>&1 | grep -v -E '^\s*$' | tee "$OUT_DIR/proxy_gpu_seed$seed.txt"
done
step "done: results in $OUT_DIR"

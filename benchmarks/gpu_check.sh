#!/usr/bin/env bash
# GPU checks, for a session that is lent a CUDA machine (one call, well under 8 minutes on one H100/H200):
#   1. benchmarks/train_speed.py on CUDA (paper-size EDSR-baseline x4 and the proxy; FP, QAT, ODM v1, ODM v2), each
#      quantized variant eager (the step before the compiled, sync-free one) and compiled (ODMModel's CUDA default: the training
#      forward and backward through torch.compile, the non-finite guard on the device); one more step of each under
#      torch.cuda.set_sync_debug_mode('error') says whether the step synchronizes the host (add compiled_wci to
#      --modes for weight_clip_interval 16: about a minute more of compilation);
#   2. benchmarks/cuda_parity.py: one quantized forward on CUDA against the CPU result;
#   3. a short ODM v1 training on CUDA through BasicSR's train_pipeline (demo data, 200 iterations).
# Results go to OUT_DIR (first argument, else $OUT, else benchmarks/results/gpu); copy them to
# benchmarks/results/ with the card named. Needs python3 with torch (CUDA), basicsr 1.4.2 and lmdb importable.
#   bash benchmarks/gpu_check.sh [OUT_DIR]
DEFAULT_OUT_DIR=benchmarks/results/gpu
source "$(dirname "$0")/gpu_setup.sh" "$@"  # cd to the repository, OUT_DIR, PY, step(), the device record

step "1. training-step speed on CUDA"
$PY benchmarks/train_speed.py --device cuda --iters 20 --warmup 5 --modes eager compiled \
  --json "$OUT_DIR/train_speed_cuda.json" \
  2>&1 | grep -v -E '^(Write|\s*$)' | tee "$OUT_DIR/train_speed_cuda.txt"

step "2. CUDA vs CPU forward parity"
$PY benchmarks/cuda_parity.py --json "$OUT_DIR/cuda_parity.json"

step "3. short ODM v1 training on CUDA through basicsr train"
run_dir=$(mktemp -d)
ln -s "$PWD/datasets" "$run_dir/datasets"
(cd "$run_dir" && $PY -m odm_basicsr train -opt "$OLDPWD/options/demo/train_ODM_EDSR_demo_x4_w4a4.yml" \
   --force_yml name=gpu_check_ODM_demo num_gpu=1 path:pretrain_network_g=~ train:total_iter=200 \
   val:val_freq=200 logger:save_checkpoint_freq=200 logger:print_freq=50 datasets:train:num_worker_per_gpu=4 \
   > "$OUT_DIR/gpu_odm_train.txt" 2>&1) || { tail -40 "$OUT_DIR/gpu_odm_train.txt"; exit 1; }
log=$(ls "$run_dir"/experiments/gpu_check_ODM_demo/train_*.log)
cp "$log" "$OUT_DIR/gpu_odm_train.log"
grep -q "Model \[ODMModel\] is created" "$log"
grep -E "Training step: network" "$log"
grep -q "iter:     200" "$log"
grep -E "sign_conflict_ratio|# psnr" "$log" | tail -3
grep -q "cuda" <(grep -i "device\|cuda" "$OUT_DIR/gpu_odm_train.txt" "$log" || true) || true
step "done: results in $OUT_DIR"

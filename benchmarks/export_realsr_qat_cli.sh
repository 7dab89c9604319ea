#!/usr/bin/env bash
# Integer export of a QAT checkpoint of a network trained by others, from option files: the RealSR DF2K RRDBNet
# (23 blocks), the teacher-only QAT preset (options/distill/train_QAT_teacher_RealSR_RRDBNet_x4_w<B>a<B>.yml) with
# network_g.integer_zero_point: true, calibration without refinement, ITERS iterations of basicsr train on the demo
# LMDB (batch 2, HR 96), then basicsr export of net_g_latest.pth (parity to PyTorch on its calibration images), and
# basicsr infer of a held-out photo with the integer ONNX (tiled) and with PyTorch; compares the two PNGs.
# Usage: bash benchmarks/export_realsr_qat_cli.sh WEIGHTS_DIR [BITS (8|4, default 8)] [ITERS (default 20)]
# (the shared tools' third_party_weights.py fills WEIGHTS_DIR; the demo LMDB is made by benchmarks/common.py).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd); WEIGHTS=$(cd "${1:?usage: export_realsr_qat_cli.sh WEIGHTS_DIR [BITS] [ITERS]}" && pwd)
BITS=${2:-8}; ITERS=${3:-20}
PY=$REPO/.venv/bin/python
(cd $REPO/benchmarks && $PY -c "from common import demo_data; demo_data()")
W=$(mktemp -d); cd $W; echo "work dir: $W"
export REPO WEIGHTS BITS ITERS
$PY - <<'PYEOF'
import os, yaml
REPO, WEIGHTS, BITS, ITERS = os.environ['REPO'], os.environ['WEIGHTS'], os.environ['BITS'], int(os.environ['ITERS'])
opt = yaml.safe_load(open(f'{REPO}/options/distill/train_QAT_teacher_RealSR_RRDBNet_x4_w{BITS}a{BITS}.yml'))
opt['name'] = f'realsr_qat_w{BITS}a{BITS}_izp'
opt['num_gpu'] = 0
opt['network_g']['integer_zero_point'] = True
opt['path']['pretrain_network_g'] = WEIGHTS + '/realsr_df2k_x4.pth'
t = opt['datasets']['train']
t.update(dataroot_gt=REPO + '/datasets/demo/train_HR_sub.lmdb', dataroot_lq=REPO + '/datasets/demo/train_LR_bicubic_X4_sub.lmdb',
         gt_size=96, batch_size_per_gpu=2, num_worker_per_gpu=0)
del opt['datasets']['val'], opt['val']  # no PSNR-to-HR validation: the export below checks the checkpoint
opt['train']['calibration'] = {'num_batches': 4, 'method': 'auto', 'refine': False}
opt['train']['total_iter'] = ITERS
opt['logger'].update(print_freq=max(ITERS // 4, 1), save_checkpoint_freq=ITERS, use_tb_logger=False)
yaml.safe_dump(opt, open('train.yml', 'w'), sort_keys=False)
test = {k: opt[k] for k in ('name', 'model_type', 'scale', 'num_gpu', 'network_g')}
test['path'] = {'pretrain_network_g': f'experiments/{opt["name"]}/models/net_g_latest.pth', 'strict_load_g': True}
yaml.safe_dump(test, open('test.yml', 'w'), sort_keys=False)
PYEOF
T0=$(date +%s)
$PY -m odm_basicsr train -opt train.yml > train.out 2>&1 || { tail -20 train.out; exit 1; }
grep -hE "Calibrat|calibrated|iter:" experiments/*/train_*.log | tail -8
T1=$(date +%s); echo "train wall (calibration + $ITERS iterations): $((T1-T0)) s"
$PY -m odm_basicsr export -opt test.yml --format onnx --out qat.onnx --size 64x64 2>&1 | tail -12
T2=$(date +%s); echo "export wall: $((T2-T1)) s"
mkdir -p lr && cp $REPO/datasets/demo/val/LRbicx4/$(ls $REPO/datasets/demo/val/LRbicx4 | head -1) lr/
$PY -m odm_basicsr infer --onnx qat.onnx --input lr --out out_onnx --tile 64 2>&1 | tail -2
$PY -m odm_basicsr infer -opt test.yml --input lr --out out_torch --tile 64 --device cpu 2>&1 | tail -2
$PY - <<'PYEOF'
import cv2, glob, numpy as np
for x, y in zip(sorted(glob.glob('out_onnx/*')), sorted(glob.glob('out_torch/*'))):
    p, q = cv2.imread(x).astype(np.float64), cv2.imread(y).astype(np.float64)
    mse = ((p - q) ** 2).mean()
    print(x, y, p.shape, 'identical' if mse == 0 else f'PSNR {10*np.log10(255**2/mse):.2f} dB, pixels differing {(p != q).mean():.2%}')
PYEOF

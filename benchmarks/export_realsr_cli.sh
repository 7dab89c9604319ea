#!/usr/bin/env bash
# RealSR DF2K w8a8, integer zero points, from option files: basicsr calibrate -> export --profile -> infer with the
# integer ONNX (tiled) and with PyTorch; compares the two PNGs. Usage: bash benchmarks/export_realsr_cli.sh WEIGHTS_DIR
# (the shared tools' third_party_weights.py fills WEIGHTS_DIR; the demo LMDB is made by benchmarks/common.py).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd); WEIGHTS=$(cd "${1:?usage: export_realsr_cli.sh WEIGHTS_DIR}" && pwd)
PY=$REPO/.venv/bin/python
(cd $REPO/benchmarks && $PY -c "from common import demo_data; demo_data()")
W=$(mktemp -d); cd $W; echo "work dir: $W"
export REPO WEIGHTS
$PY - <<'PYEOF'
import os, yaml
REPO, WEIGHTS = os.environ['REPO'], os.environ['WEIGHTS']
opt = yaml.safe_load(open(REPO + '/options/distill/train_QAT_teacher_RealSR_RRDBNet_x4_w8a8.yml'))
opt['name'] = 'realsr_w8a8_izp'
opt['num_gpu'] = 0
opt['network_g']['integer_zero_point'] = True
opt['path']['pretrain_network_g'] = WEIGHTS + '/realsr_df2k_x4.pth'
t = opt['datasets']['train']
t.update(dataroot_gt=REPO + '/datasets/demo/train_HR_sub.lmdb', dataroot_lq=REPO + '/datasets/demo/train_LR_bicubic_X4_sub.lmdb',
         gt_size=96, batch_size_per_gpu=4, num_worker_per_gpu=0)
opt['datasets']['val'].update(dataroot_gt=REPO + '/datasets/demo/val/HR', dataroot_lq=REPO + '/datasets/demo/val/LRbicx4')
opt['train']['calibration'] = {'num_batches': 4, 'method': 'auto', 'refine': False}
yaml.safe_dump(opt, open('train.yml', 'w'), sort_keys=False)
test = {k: opt[k] for k in ('name', 'model_type', 'scale', 'num_gpu', 'network_g')}
test['path'] = {'pretrain_network_g': 'experiments/realsr_w8a8_izp/models/net_g_calibrated.pth', 'strict_load_g': True}
yaml.safe_dump(test, open('test.yml', 'w'), sort_keys=False)
PYEOF
T0=$(date +%s)
$PY -m odm_basicsr calibrate -opt train.yml 2>&1 | tail -25
T1=$(date +%s); echo "calibrate wall: $((T1-T0)) s"
$PY -m odm_basicsr export -opt test.yml --format onnx --out realsr_w8a8.onnx --size 64x64 --profile 2>&1 | tail -40
T2=$(date +%s); echo "export wall: $((T2-T1)) s"
mkdir -p lr && cp $REPO/datasets/demo/val/LRbicx4/$(ls $REPO/datasets/demo/val/LRbicx4 | head -1) lr/
$PY -m odm_basicsr infer --onnx realsr_w8a8.onnx --input lr --out out_onnx --tile 64 2>&1 | tail -5
T3=$(date +%s); echo "infer onnx wall: $((T3-T2)) s"
$PY -m odm_basicsr infer -opt test.yml --input lr --out out_torch --tile 64 --device cpu 2>&1 | tail -5
T4=$(date +%s); echo "infer torch wall: $((T4-T3)) s"
$PY - <<'PYEOF'
import cv2, glob, numpy as np
a = sorted(glob.glob('out_onnx/*')); b = sorted(glob.glob('out_torch/*'))
for x, y in zip(a, b):
    p, q = cv2.imread(x).astype(np.float64), cv2.imread(y).astype(np.float64)
    mse = ((p - q) ** 2).mean()
    print(x, y, p.shape, 'identical' if mse == 0 else f'PSNR {10*np.log10(255**2/mse):.2f} dB, pixels differing {(p != q).mean():.2%}')
PYEOF

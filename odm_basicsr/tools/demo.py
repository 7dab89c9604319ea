"""``basicsr demo``: the main job end to end on photos that scikit-image ships. A SMALL PROXY, not the paper's setting.

1. prepare the demo data (basicsr prepare demo);
2. evaluate the shipped FP checkpoint (EDSR 32x8, x4, trained by options/demo/train_FP_EDSR_demo_x4.yml) with
   basicsr test;
3. fine-tune it with ``basicsr train`` at w4a4 and w2a2, with plain QAT, ODM v1 and ODM v2 (options/demo/*.yml);
4. write results/demo/summary.{md,json}: each run's own PSNR/SSIM on the Y channel, with bicubic;
5. basicsr compare -opt options/demo/compare_EDSR_demo_x4.yml: the one table it prints holds the same runs side by
   side with bicubic, delta to FP, fidelity, BitOPs and storage; a crop grid and a PSNR-vs-BitOPs plot go to
   results/compare_EDSR_demo_x4/.

Each step is a real basicsr command in a subprocess, run with the option files that ship with the package; its
progress lines are echoed. Everything is written under the current folder (or --work-dir): datasets/, experiments/,
results/, tb_logger/.
"""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

import cv2
import numpy as np
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils.matlab_functions import imresize

from odm_basicsr.data.demo import DEMO_FP_CHECKPOINT, prepare_demo
from odm_basicsr.utils.shipped import PACKAGE_DIR, option_files_dir, resolve_shipped

from .cli_text import command_parser

DEMO_RUNS = (  # (method, bits, option file)
    ('ODM v1', 4, 'options/demo/train_ODM_EDSR_demo_x4_w4a4.yml'),
    ('ODM v2', 4, 'options/demo/train_ODMv2_EDSR_demo_x4_w4a4.yml'),
    ('plain QAT', 4, 'options/demo/train_QAT_EDSR_demo_x4_w4a4.yml'),
    ('ODM v1', 2, 'options/demo/train_ODM_EDSR_demo_x4_w2a2.yml'),
    ('ODM v2', 2, 'options/demo/train_ODMv2_EDSR_demo_x4_w2a2.yml'),
    ('plain QAT', 2, 'options/demo/train_QAT_EDSR_demo_x4_w2a2.yml'),
)
QUICK_ITERS = 2
FP_TEST = 'options/demo/test_FP_EDSR_demo_x4.yml'
COMPARE = 'options/demo/compare_EDSR_demo_x4.yml'
ECHO = re.compile(r'(\[epoch:|# psnr|# ssim|Validation|Calibrating|calibration is skipped|ODM variant|layers got an '
                  r'offset|Testing|End of training|\berror:|Error)')
METRIC = re.compile(r'# (psnr|ssim): ([0-9.]+)')


def _run(args, label, log=print):
    """Run ``python -m odm_basicsr <args>``, echo its progress lines; returns the full output."""
    cmd = [sys.executable, '-m', 'odm_basicsr'] + args
    log(f'\n=== {label}\n$ basicsr {" ".join(args)}')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if ECHO.search(line):
            log('  ' + line.rstrip().split(' INFO: ')[-1].split('. Scores:')[0])
    if proc.wait() != 0:
        tail = ''.join(lines[-30:])
        raise SystemExit(f'error: "{label}" failed (exit {proc.returncode}); last lines:\n{tail}')
    return ''.join(lines)


def _last_metrics(text):
    """The last reported psnr/ssim in a BasicSR log text."""
    found = {}
    for name, value in METRIC.findall(text):
        found[name] = float(value)
    if set(found) != {'psnr', 'ssim'}:
        raise SystemExit('error: no PSNR/SSIM found in the run\'s output')
    return found


def bicubic_metrics(val_gt, val_lq, scale=4):
    """Mean PSNR/SSIM (Y, border crop = scale) of MATLAB-bicubic upscaling of the held-out LR photos."""
    psnr, ssim = [], []
    for gt_path in sorted(glob.glob(osp.join(val_gt, '*.png'))):
        gt = cv2.imread(gt_path)
        lq = cv2.imread(osp.join(val_lq, osp.basename(gt_path)))
        up = np.clip(np.round(imresize(lq.astype(np.float64) / 255., scale) * 255.), 0, 255)
        psnr.append(calculate_psnr(up, gt, scale, test_y_channel=True))
        ssim.append(calculate_ssim(up, gt, scale, test_y_channel=True))
    return {'psnr': float(np.mean(psnr)), 'ssim': float(np.mean(ssim))}


def format_table(rows):
    lines = ['| method | W/A bits | PSNR (dB, Y) | SSIM (Y) |', '|---|---|---|---|']
    for method, bits, m in rows:
        lines.append(f'| {method} | {bits} | {m["psnr"]:.2f} | {m["ssim"]:.4f} |')
    return '\n'.join(lines)


def main(argv=None):
    parser = command_parser('demo', __doc__)
    parser.add_argument('--iters', type=int, default=None, help='fine-tuning iterations (default: the option files)')
    parser.add_argument('--quick', action='store_true',
                        help='a check that everything runs, not a result: one fine-tune (ODM v1 w4a4), 2 iterations')
    parser.add_argument('--work-dir', default='.',
                        help='folder for datasets/, experiments/, results/ and tb_logger/ (default: the current one)')
    args = parser.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    if args.quick:
        args.iters = args.iters or QUICK_ITERS
    options = option_files_dir()
    if options is None:
        raise SystemExit('error: this installation of odm-basicsr has no option files; reinstall it.')
    if not osp.isfile(resolve_shipped(DEMO_FP_CHECKPOINT)):
        raise SystemExit(f'error: the demo FP checkpoint {resolve_shipped(DEMO_FP_CHECKPOINT)} is missing; reinstall '
                         'odm-basicsr (or re-train it: basicsr train -opt options/demo/train_FP_EDSR_demo_x4.yml).')
    work_dir = osp.abspath(args.work_dir)
    if work_dir == PACKAGE_DIR or work_dir.startswith(PACKAGE_DIR + os.sep):
        raise SystemExit(f'error: --work-dir {work_dir} lies inside the installed package; give another folder.')
    os.makedirs(work_dir, exist_ok=True)
    os.chdir(work_dir)  # every relative path of the demo option files (datasets/, experiments/) is under it

    def shipped(rel):
        return osp.join(options, osp.relpath(rel, 'options'))

    start = time.time()
    print(f'odm-basicsr demo in {work_dir}\n=== 1/5 demo data (photos from scikit-image; see datasets/demo/SPLIT.txt)')
    paths = prepare_demo('datasets/demo')
    rows = [('bicubic', '-', bicubic_metrics(paths['val_gt'], paths['val_lq']))]
    out = _run(['test', '-opt', shipped(FP_TEST)], '2/5 FP checkpoint on the held-out photos')
    rows.append(('FP (EDSR 32x8, shipped)', 32, _last_metrics(out)))
    extra = []
    if args.iters:
        extra = ['--force_yml', f'train:total_iter={args.iters}', f'val:val_freq={args.iters}',
                 f'logger:save_checkpoint_freq={args.iters}',
                 f'train:scheduler:milestones=[{max(args.iters * 2 // 3, 1)}]']
    runs = DEMO_RUNS[:1] if args.quick else DEMO_RUNS
    for i, (method, bits, opt_file) in enumerate(runs, 1):
        out = _run(['train', '-opt', shipped(opt_file)] + extra,
                   f'3/5 fine-tune {i}/{len(runs)}: {method} w{bits}a{bits} ({time.time() - start:.0f} s so far)')
        rows.append((method, bits, _last_metrics(out)))
    os.makedirs('results/demo', exist_ok=True)
    with open('results/demo/summary.md', 'w') as f:
        f.write(format_table(rows) + '\n')
    with open('results/demo/summary.json', 'w') as f:
        json.dump([{'method': m, 'bits': b, **v} for m, b, v in rows], f, indent=2)
    print('\n=== 4/5 wrote results/demo/summary.md (PSNR/SSIM as each run validated itself)')
    out = _run(['compare', '-opt', shipped(COMPARE)], '5/5 basicsr compare: the runs side by side, crops and plot')
    print(f'\nResults on the held-out photos ({", ".join(sorted(os.listdir(paths["val_gt"])))}), x4, PSNR/SSIM on Y '
          'with a 4-pixel border crop. A SMALL PROXY (EDSR 32x8, 10 training photos, short fine-tunes), not the '
          'paper\'s setting.')
    print('\n' + out[out.index('# compare_'):] if '# compare_' in out else out)
    print(f'\n(total {time.time() - start:.0f} s, in {work_dir}: logs in experiments/demo_*, tensorboard curves in '
          'tb_logger/, comparison in results/compare_EDSR_demo_x4/)')


if __name__ == '__main__':
    main()

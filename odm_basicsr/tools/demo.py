"""``basicsr demo``: the main job end to end on photos that scikit-image ships. A SMALL PROXY, not the paper's setting.

1. prepare the demo data (``basicsr prepare demo``);
2. evaluate the shipped FP checkpoint (EDSR 32x8, x4, trained by options/demo/train_FP_EDSR_demo_x4.yml) with
   ``basicsr test``;
3. fine-tune it with ``basicsr train`` at w4a4 and w2a2, with plain QAT, ODM v1 and ODM v2 (options/demo/*.yml);
4. print one table of PSNR/SSIM on the Y channel of the held-out photos, with bicubic for reference;
5. ``basicsr compare -opt options/demo/compare_EDSR_demo_x4.yml``: the same runs side by side with Δ, fidelity,
   BitOPs and storage, a crop grid and a PSNR-vs-BitOPs plot in results/compare_EDSR_demo_x4/.

Each step is a real ``basicsr`` command in a subprocess (full logs under experiments/ and results/); its progress
lines are echoed. The table is also written to results/demo/summary.{md,json}.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

DEMO_RUNS = (  # (method, bits, option file)
    ('ODM v1', 4, 'options/demo/train_ODM_EDSR_demo_x4_w4a4.yml'),
    ('ODM v2', 4, 'options/demo/train_ODMv2_EDSR_demo_x4_w4a4.yml'),
    ('plain QAT', 4, 'options/demo/train_QAT_EDSR_demo_x4_w4a4.yml'),
    ('ODM v1', 2, 'options/demo/train_ODM_EDSR_demo_x4_w2a2.yml'),
    ('ODM v2', 2, 'options/demo/train_ODMv2_EDSR_demo_x4_w2a2.yml'),
    ('plain QAT', 2, 'options/demo/train_QAT_EDSR_demo_x4_w2a2.yml'),
)
FP_TEST = 'options/demo/test_FP_EDSR_demo_x4.yml'
COMPARE = 'options/demo/compare_EDSR_demo_x4.yml'
ECHO = re.compile(r'(\[epoch:|# psnr|# ssim|Validation|Calibrating|calibration is skipped|ODM variant|layers got an '
                  r'offset|Testing|End of training|error|Error)')
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
    import cv2
    import numpy as np
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils.matlab_functions import imresize
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
    parser = argparse.ArgumentParser(prog='basicsr demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=None, help='fine-tuning iterations (default: the option files)')
    args = parser.parse_args(argv)
    import odm_basicsr  # noqa: F401
    from odm_basicsr.data.demo import prepare_demo
    from odm_basicsr.data.demo import DEMO_FP_CHECKPOINT
    from odm_basicsr.tools.cli_io import REPO
    if osp.abspath(os.getcwd()) != REPO:
        raise SystemExit(f'error: run the demo from the repository root ({REPO}): its option files use paths '
                         'relative to it.')
    if not osp.isfile(DEMO_FP_CHECKPOINT):
        raise SystemExit(f'error: the demo FP checkpoint {DEMO_FP_CHECKPOINT} is missing; it ships with the '
                         'repository (or re-train it: basicsr train -opt options/demo/train_FP_EDSR_demo_x4.yml).')
    start = time.time()
    print('=== 1/5 demo data (photos from scikit-image; see datasets/demo/SPLIT.txt)')
    paths = prepare_demo('datasets/demo')
    rows = [('bicubic', '-', bicubic_metrics(paths['val_gt'], paths['val_lq']))]
    out = _run(['test', '-opt', FP_TEST], '2/5 FP checkpoint on the held-out photos')
    rows.append(('FP (EDSR 32x8, shipped)', 32, _last_metrics(out)))
    extra = []
    if args.iters:
        extra = ['--force_yml', f'train:total_iter={args.iters}', f'val:val_freq={args.iters}',
                 f'logger:save_checkpoint_freq={args.iters}', f'train:scheduler:milestones=[{args.iters * 2 // 3}]']
    for i, (method, bits, opt_file) in enumerate(DEMO_RUNS, 1):
        out = _run(['train', '-opt', opt_file] + extra,
                   f'3/5 fine-tune {i}/{len(DEMO_RUNS)}: {method} w{bits}a{bits} ({time.time() - start:.0f} s so far)')
        rows.append((method, bits, _last_metrics(out)))
    table = format_table(rows)
    os.makedirs('results/demo', exist_ok=True)
    with open('results/demo/summary.md', 'w') as f:
        f.write(table + '\n')
    with open('results/demo/summary.json', 'w') as f:
        json.dump([{'method': m, 'bits': b, **v} for m, b, v in rows], f, indent=2)
    print(f'\n=== 4/5 results on the held-out photos ({", ".join(sorted(os.listdir(paths["val_gt"])))}), x4, '
          f'PSNR/SSIM on Y with a 4-pixel border crop. A SMALL PROXY (EDSR 32x8, 10 training photos, short '
          f'fine-tunes), not the paper\'s setting.\n')
    print(table)
    out = _run(['compare', '-opt', COMPARE], '5/5 basicsr compare: the runs side by side, crops and plot')
    print('\n' + out[out.index('# compare_'):] if '# compare_' in out else out)
    print(f'\n(total {time.time() - start:.0f} s; table in results/demo/summary.md, logs in experiments/demo_*, '
          'comparison in results/compare_EDSR_demo_x4/)')


if __name__ == '__main__':
    main()

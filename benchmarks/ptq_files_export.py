"""The shipped PTQ files, calibrated and exported as a user runs them: free grids against integer zero points.

For each ``options/ptq/ptq_<ARCH>_demo_x4_w4a4.yml`` and each activation grid (``integer_zero_point: false``, the
paper's free grids, and ``true``, what the files ship), this runs the two commands a user runs, in a scratch folder
with the demo data prepared:

    basicsr calibrate -opt <file> --out <ckpt> --force_yml network_g:integer_zero_point=<grid> [num_batches]
    basicsr export -opt <test file> --out <onnx>          (integer mode, its default 8 calibration images)

and reads their printed lines: PSNR / SSIM vs HR of the calibrated network on the 3 held-out photos, its fidelity to
the FP output, and the export's onnxruntime-vs-PyTorch PSNR (min and mean over the 8 images). For EDSR it also
gives that PSNR per image, and feeds PyTorch onnxruntime's FP head conv output, which takes the head conv's float rounding out of the comparison:
what is left is the integer graph itself.

    python benchmarks/ptq_files_export.py [--archs EDSR ...] [--num-batches N]   # about 13 min for all four
JSON: benchmarks/results/ptq_files_export.json
"""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile

from common import REPO, edsr_after_head, markdown_table, onnx_session_with_head_output, write_json

import yaml

ARCHS = ['EDSR', 'RCAN', 'RRDBNet', 'SRVGGNetCompact']


def run(args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, '-m', 'odm_basicsr'] + args, cwd=cwd, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f'failed: basicsr {" ".join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc.stdout


def per_image_psnr(test_opt, test_file, onnx_path):
    """PSNR (dB) of onnxruntime against the PyTorch EDSR, per export image: as ``basicsr export`` compares them, and
    with PyTorch fed onnxruntime's head conv output."""
    import torch
    from odm_basicsr.tools.cli_io import calibration_images, load_network, psnr
    net = load_network(test_opt, test_file)
    session = onnx_session_with_head_output(onnx_path)
    direct, fed = [], []
    for lr in calibration_images(None, 3, 4):
        got, head_out = session.run(None, {'lr': lr.numpy()})
        with torch.no_grad():
            direct.append(round(psnr(got, net(lr).numpy()), 1))
            fed.append(round(psnr(got, edsr_after_head(net, torch.from_numpy(head_out)).numpy()), 1))
    return direct, fed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', nargs='+', default=ARCHS, choices=ARCHS)
    parser.add_argument('--num-batches', type=int, help='calibration batches (default: what each file says)')
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'ptq_files_export.json'))
    args = parser.parse_args()
    from odm_basicsr.data.demo import prepare_demo
    rows, results = [], []
    with tempfile.TemporaryDirectory() as work:
        prepare_demo(osp.join(work, 'datasets', 'demo'), log=lambda *a: None)
        os.symlink(osp.join(REPO, 'odm_basicsr'), osp.join(work, 'odm_basicsr'))  # the shipped FP checkpoints
        for arch in args.archs:
            recipe = osp.join(REPO, 'options', 'ptq', f'ptq_{arch}_demo_x4_w4a4.yml')
            with open(recipe) as f:
                opt = yaml.safe_load(f)
            for grid in (False, True):
                tag = f'{arch}_{"integer" if grid else "free"}'
                ckpt = osp.join(work, f'{tag}.pth')
                force = [f'network_g:integer_zero_point={str(grid).lower()}']
                if args.num_batches:
                    force.append(f'train:calibration:num_batches={args.num_batches}')
                out = run(['calibrate', '-opt', recipe, '--out', ckpt, '--force_yml'] + force, work)
                quant = re.search(r'\| quantized \(calibrated\) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|', out)
                fp = re.search(r'\| FP \| ([\d.]+) \|', out)
                test_opt = {'name': f'export_{tag}', 'model_type': opt['model_type'], 'scale': opt['scale'],
                            'num_gpu': 0, 'network_g': dict(opt['network_g'], integer_zero_point=grid),
                            'path': {'pretrain_network_g': ckpt, 'strict_load_g': True}}
                test_file = osp.join(work, f'test_{tag}.yml')
                with open(test_file, 'w') as f:
                    yaml.safe_dump(test_opt, f)
                onnx_path = osp.join(work, f'{tag}.onnx')
                out = run(['export', '-opt', test_file, '--out', onnx_path], work)
                export = re.search(r'calibration images: PSNR mean ([\d.]+) dB, min ([\d.]+) dB', out)
                kernels = re.search(r'runs (\d+) integer kernels .* for (\d+) quantized layers', out)
                result = {'arch': arch, 'integer_zero_point': grid, 'fp_psnr': float(fp.group(1)),
                          'psnr': float(quant.group(1)), 'ssim': float(quant.group(2)),
                          'fidelity_to_fp_db': float(quant.group(3)),
                          'export_mean_db': float(export.group(1)), 'export_min_db': float(export.group(2)),
                          'integer_kernels': f'{kernels.group(1)} / {kernels.group(2)}'}
                if arch == 'EDSR':
                    result['export_db_per_image'], result['head_fed_db'] = per_image_psnr(test_opt, test_file,
                                                                                          onnx_path)
                results.append(result)
                rows.append([arch, 'integer' if grid else 'free', f'{result["psnr"]:.4f}', f'{result["ssim"]:.4f}',
                             f'{result["export_min_db"]:.1f} ({result["export_mean_db"]:.1f})',
                             result['integer_kernels'],
                             ' / '.join(map(str, result.get('export_db_per_image', []))) or '-',
                             ' / '.join(map(str, result.get('head_fed_db', []))) or '-'])
                print(rows[-1], flush=True)
    table = markdown_table(['PTQ file (w4a4)', 'grid', 'PSNR vs HR', 'SSIM', 'export vs PyTorch, min (mean) dB',
                            'integer kernels', 'EDSR, dB per image', 'EDSR, PyTorch fed the ONNX head output'], rows)
    print(table)
    write_json(args.json, {'command': ' '.join(['python benchmarks/ptq_files_export.py'] + sys.argv[1:]),
                           'num_batches': args.num_batches, 'results': results, 'table': table})


if __name__ == '__main__':
    main()

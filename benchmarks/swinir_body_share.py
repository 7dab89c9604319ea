"""How much of the small FP SwinIR's output its Swin blocks carry: why its proxy rows cannot rank.

The network of the PTQ and proxy SwinIR rows (options/ptq/train_FP_SwinIR_demo_x4.yml; not shipped, train it first)
is evaluated on the 3 held-out demo photos (PSNR vs HR, Y, border 4) as trained, with every Swin block (window
attention + MLP, the layers ODMSwinIR quantizes) replaced by the identity, and without its RSTBs at all. When the
Swin blocks carry little, quantizing them costs little whatever the quantizer does.

    python benchmarks/swinir_body_share.py      # a few seconds
"""
import os.path as osp

import torch

from common import SWINIR_FP_RECIPE, demo_data, swinir_fp_network

import ptq_fidelity  # noqa: E402  (after common)
from basicsr.archs import build_network  # noqa: E402
from basicsr.metrics import calculate_psnr  # noqa: E402
from basicsr.utils import tensor2img  # noqa: E402
from odm_basicsr.quant import set_quantization  # noqa: E402
from odm_basicsr.utils.safe_load import load_network_state  # noqa: E402


def main():
    network, checkpoint = swinir_fp_network()
    if not osp.isfile(checkpoint):
        raise SystemExit(f'error: {checkpoint} does not exist; train it first: basicsr prepare demo && basicsr train '
                         f'-opt {SWINIR_FP_RECIPE}')
    state = load_network_state(checkpoint)
    net = build_network(dict(network, type='ODMSwinIR')).eval()
    set_quantization(net, False)  # the twin with its quantizers off: the FP SwinIR, padded to the window
    net.load_state_dict(state, strict=False)
    images = ptq_fidelity.heldout(demo_data())

    def psnr():
        with torch.no_grad():
            return sum(calculate_psnr(tensor2img(net(lq)), tensor2img(gt), 4, test_y_channel=True)
                       for lq, gt in images) / len(images)

    rows = [('as trained', psnr())]
    blocks = [m for m in net.modules() if type(m).__name__ == 'SwinTransformerBlock']
    for block in blocks:
        block.forward = lambda x, x_size: x
    rows.append((f'its {len(blocks)} Swin blocks replaced by the identity (RSTB convs kept)', psnr()))
    net.layers = torch.nn.ModuleList()
    rows.append(('no RSTBs at all', psnr()))
    for label, value in rows:
        print(f'{value:7.3f} dB  {label}')


if __name__ == '__main__':
    main()

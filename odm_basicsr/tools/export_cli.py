"""``basicsr export -opt <test option file> --format onnx|packed``: integer export of a trained quantized network.

onnx:   QuantizeLinear -> DequantizeLinear on every quantized layer's input, int8 weight initializers ->
        DequantizeLinear, the FP layers in float (needs the ``export`` extra: onnx, onnxruntime).
packed: the weights as b-bit codes, bit-packed; every other tensor as it is. ``odm_basicsr.quant.export.load_packed``
        rebuilds a network whose output is bit-identical to the exported one.
The mappings are described in ``odm_basicsr/quant/export.py``.
"""
import argparse
import os
import os.path as osp

from .cost_cli import parse_size
from .network_io import input_channels

EXTENSIONS = {'onnx': '.onnx', 'packed': '.packed.pth'}


def _mib(n):
    return f'{n} bytes ({n / 2**20:.2f} MiB)'


def load_network(opt, opt_path):
    """network_g of ``opt`` with path.pretrain_network_g loaded (safe unpickling; BasicSR's param_key rules)."""
    from basicsr.archs import build_network

    from odm_basicsr.quant import CheckpointMismatchError
    from odm_basicsr.utils.safe_load import load_network_state
    path_opt = opt.get('path') or {}
    ckpt_path = path_opt.get('pretrain_network_g')
    if not ckpt_path:
        raise SystemExit(f'error in {opt_path}: path.pretrain_network_g must name the trained quantized checkpoint.')
    net = build_network(dict(opt['network_g']))
    try:
        state = load_network_state(osp.expanduser(str(ckpt_path)), path_opt.get('param_key_g', 'params'))
    except ValueError as err:
        raise SystemExit(f'error: {err}')
    try:
        net.load_state_dict(state, strict=path_opt.get('strict_load_g', True))
    except (CheckpointMismatchError, RuntimeError) as err:
        raise SystemExit(f'error: {ckpt_path} does not fit network_g of {opt_path}:\n{err}')
    return net.eval()


def main(argv):
    parser = argparse.ArgumentParser(prog='basicsr export', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', required=True, help='test option file: network_g and path.pretrain_network_g')
    parser.add_argument('--format', choices=sorted(EXTENSIONS), default='onnx', help='output format (default onnx)')
    parser.add_argument('--out', help='output file (default: <name><.onnx|.packed.pth> in the current folder)')
    parser.add_argument('--input-size', type=parse_size, default=(64, 64),
                        help='LR H x W of the tracing input for onnx (height and width stay dynamic, except for '
                             'SwinIR, whose model keeps this size; default 64x64)')
    args = parser.parse_args(argv)
    import odm_basicsr  # noqa: F401  (registers the ODM archs before the checks build network_g)
    from odm_basicsr.options_check import check_option_file
    # export reads no data: missing test folders are no error
    opt = check_option_file(args.opt, is_train=False, sections=('model_type', 'network_g', 'path'))
    if not isinstance(opt.get('network_g'), dict):
        raise SystemExit(f'error: {args.opt} has no network_g mapping.')
    net = load_network(opt, args.opt)

    import torch

    from odm_basicsr.quant import quantized_layers
    from odm_basicsr.quant import export as qexport
    try:
        qexport.check_calibrated(net)
    except ValueError as err:
        raise SystemExit(f'error: {args.opt}: {err}')
    out = args.out or f'{opt.get("name", "network_g")}{EXTENSIONS[args.format]}'
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    sizes = qexport.size_report(net)
    layers = quantized_layers(net)
    print(f'network_g: {opt["network_g"]["type"]}, {len(layers)} quantized layers')
    if not layers:
        raise SystemExit(f'error: network_g of {args.opt} ({opt["network_g"]["type"]}) has no quantized layers: '
                         'there is nothing to export as integers. Use a quantized arch (ODMEDSR, ODMRDN, '
                         'ODMMSRResNet, ODMSwinIR, or ODMQuant with arch: {type: ...}) with a trained or calibrated checkpoint '
                         '(basicsr calibrate -opt <training option file>).')
    if args.format == 'packed':
        written = qexport.save_packed(net, out)
        print(f'packed checkpoint: {out}: {_mib(written)}')
        print(f'float32 checkpoint of the same network: {_mib(sizes["float_checkpoint_bytes"])} '
              f'(packed / float32 = {written / sizes["float_checkpoint_bytes"]:.3f})')
        print(f'quantized weights: {sizes["quant_weight_packed_bytes"]} bytes packed vs '
              f'{sizes["quant_weight_float_bytes"]} bytes float32 ({sizes["quant_weight_ratio"]:.3f})')
        return
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise SystemExit('error: ONNX export needs onnx and onnxruntime: pip install "odm-basicsr[export]"')
    channels = input_channels(opt['network_g'])
    example = torch.rand(1, channels, *args.input_size, generator=torch.Generator().manual_seed(0))
    info = qexport.export_onnx(net, example, out)
    print(f'onnx model: {out}: {_mib(info["bytes"])} (opset 13, checked), {info["quantize_linear"]} QuantizeLinear, '
          f'{info["dequantize_linear"]} DequantizeLinear, {info["int8_weight_initializers"]} int8 weight initializers')
    if not getattr(net, 'onnx_dynamic_size', True):
        print(f'input size fixed at {args.input_size[0]}x{args.input_size[1]} ({type(net).__name__} traces its '
              'window masks for one size); basicsr infer --onnx tiles images to it')
    print(f'float32 checkpoint of the same network: {_mib(sizes["float_checkpoint_bytes"])}')
    try:
        import onnxruntime as ort
    except ImportError:
        return
    import numpy as np
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    got = session.run(None, {'lr': example.numpy()})[0]
    with torch.no_grad():
        want = net(example).numpy()
    mse = float(np.mean((got - want)**2))
    psnr = 10 * np.log10(1.0 / mse) if mse > 0 else float('inf')
    print(f'onnxruntime vs PyTorch on a random {args.input_size[0]}x{args.input_size[1]} input: '
          f'max |diff| {np.abs(got - want).max():.3g}, PSNR {psnr:.1f} dB')

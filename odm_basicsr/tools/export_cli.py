"""``basicsr export -opt <test option file> --format onnx|packed``: integer export of a trained quantized network.

onnx:   --mode integer (default): the canonical QDQ form onnxruntime runs as integer kernels (QLinearConv /
        QLinearMatMul); integer zero points, conv outputs requantized to uint8 where they do not feed one quantized
        layer (their ranges observed on --calibration images). ``odm_basicsr/quant/export_integer.py``.
        --mode exact: the reference: QuantizeLinear -> DequantizeLinear on every quantized layer's input with the
        fake-quant network's exact grids, int8 weight initializers -> DequantizeLinear, all convs in float.
        Both need the ``export`` extra (onnx, onnxruntime).
packed: the weights as b-bit codes, bit-packed; every other tensor as it is. ``odm_basicsr.quant.export.load_packed``
        rebuilds a network whose output is bit-identical to the exported one.
The mappings are described in ``odm_basicsr/quant/export.py``.
"""
import argparse
import os
import os.path as osp

from .cost_cli import parse_size
from .network_io import input_channels, network_scale

EXTENSIONS = {'onnx': '.onnx', 'packed': '.packed.pth'}
ONNX_MODES = ('integer', 'exact')
CALIBRATION_COUNT = 8  # LR images (64x64 centre crops) whose outputs set the integer mode's requantization ranges


def calibration_batches(folder, channels, scale, size=64, count=CALIBRATION_COUNT):
    """LR crops (1, channels, <= size, <= size) on 0-1: the centre of each of the first ``count`` images of
    ``folder`` (sorted), or, without a folder, of the photos scikit-image ships (bicubic x``scale`` downscaled)."""
    import torch

    from odm_basicsr.data.photos import DEMO_TRAIN, bicubic_downscale, load_photo

    from .infer_cli import IMAGE_EXTENSIONS, read_image

    def centre(t):
        h, w = t.shape[-2:]
        y, x = max((h - size) // 2, 0), max((w - size) // 2, 0)
        return t[..., y:y + size, x:x + size]

    if folder:
        files = [folder] if osp.isfile(folder) else sorted(
            osp.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        return [centre(read_image(f, channels)[0]) for f in files[:count]]
    batches = []
    for name in DEMO_TRAIN[:count]:
        hr = load_photo(name)
        h, w = hr.shape[:2]
        side = min(size * scale, h - h % scale, w - w % scale)
        y, x = (h - side) // 2, (w - side) // 2
        lr = torch.from_numpy(bicubic_downscale(hr[y:y + side, x:x + side], scale)).permute(2, 0, 1).float() / 255
        batches.append((lr.mean(0, keepdim=True) if channels == 1 else lr)[None])
    return batches


def fidelity_note(lowest_db, free_grids):
    """The line ``basicsr export`` adds when the integer graph is under its bar from PyTorch on a real image (None
    otherwise): why, and what to do. ``free_grids``: the network was not built with integer_zero_point. The bars are
    issue 17's: 40 dB for free grids, 60 dB (exact) for integer zero points."""
    if free_grids:
        if lowest_db >= 40:
            return None
        return ('note: under 40 dB on a real image. With the paper\'s free activation grids, the integer kernels '
                'round the residual outputs, the int32 bias and the image border differently from the fake-quant '
                'network, and a 2- or 4-bit network carries each flipped code on (docs/EXPORT.md). This is usual for '
                'a network that is only calibrated. For an exact export, fine-tune or calibrate with '
                'network_g.integer_zero_point: true.')
    if lowest_db >= 60:
        return None
    return ('note: under 60 dB on a real image although the grids have integer zero points. The integer kernels '
            'compute the PyTorch network\'s codes; the FP layers before a quantizer (the head conv) do not round '
            'exactly as PyTorch does, and a value on a rounding tie of that quantizer took the other code, which the '
            'low-bit body carries on. It is one step of the grid, as likely up as down (docs/EXPORT.md).')


def _psnr(got, want):
    """PSNR (dB) of ``got`` against ``want`` (numpy arrays on 0-1, unclipped)."""
    import numpy as np
    mse = float(np.mean((got - want)**2))
    return 10 * np.log10(1.0 / mse) if mse > 0 else float('inf')


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
    parser.add_argument('--mode', choices=ONNX_MODES, default='integer',
                        help='onnx: integer (default; integer kernels in onnxruntime, faster; exact for networks built '
                             'with integer_zero_point: true) or exact (the fake-quant network to float rounding, float '
                             'convs)')
    parser.add_argument('--calibration', metavar='DIR',
                        help='--mode integer: LR images whose conv outputs set the requantization ranges (the centres '
                             f'of the first {CALIBRATION_COUNT}); default: photos that scikit-image ships, downscaled')
    parser.add_argument('--input-size', type=parse_size, default=(64, 64),
                        help='LR H x W of the tracing input for onnx (height and width stay dynamic, except for '
                             'SwinIR, whose model keeps this size; default 64x64)')
    args = parser.parse_args(argv)
    if args.calibration and not (osp.isdir(args.calibration) or osp.isfile(args.calibration)):
        raise SystemExit(f'error: --calibration {args.calibration}: no such folder or image.')
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
    if args.mode == 'exact':
        info = qexport.export_onnx(net, example, out)
    else:
        from odm_basicsr.quant.export_integer import export_onnx_integer
        scale = network_scale(opt['network_g'], opt.get('scale'))
        try:
            batches = calibration_batches(args.calibration, channels, scale)
        except Exception as err:  # unreadable images: one clear line
            raise SystemExit(f'error: --calibration {args.calibration}: {err}')
        if not batches:
            raise SystemExit(f'error: --calibration {args.calibration}: no images there.')
        info = export_onnx_integer(net, example, out, batches)
    print(f'onnx model ({args.mode}): {out}: {_mib(info["bytes"])} (opset 13, checked), {info["quantize_linear"]} '
          f'QuantizeLinear, {info["dequantize_linear"]} DequantizeLinear, {info["int8_weight_initializers"]} int8 '
          'weight initializers')
    if args.mode == 'integer':
        source = ('the trained output requantizers' if info['trained_requantization'] else
                  f'ranges from {len(batches)} calibration images')
        shifted = len(info['grids_shifted'])
        grids = ('all activation grids have integer zero points' if not shifted else
                 f'{shifted} activation grids sit off an integer zero point (by at most {info["largest_shift"]:.2f} '
                 'of a step; none with integer_zero_point: true): their shift is folded into the biases, exact except '
                 'on the border ring of zero-padded convs')
        print(f'integer mode: {info["chained"]} of {info["layers"]} quantized layer outputs go straight onto the next '
              f'layer\'s grid, {info["requantized"]} are requantized to uint8 ({source}); {grids}')
        if info['requantization_mismatches']:
            print(f'warning: {len(info["requantization_mismatches"])} layer(s) were trained with a different '
                  f'requantization than the graph needs ({", ".join(info["requantization_mismatches"][:4])}): '
                  'recalibrate (basicsr calibrate) so that the export is exact')
    if not getattr(net, 'onnx_dynamic_size', True):
        print(f'input size fixed at {args.input_size[0]}x{args.input_size[1]} ({type(net).__name__} traces its '
              'window masks for one size); basicsr infer --onnx tiles images to it')
    print(f'float32 checkpoint of the same network: {_mib(sizes["float_checkpoint_bytes"])}')
    try:
        import onnxruntime as ort
    except ImportError:
        return
    import numpy as np
    if args.mode == 'integer':
        from odm_basicsr.quant.export_integer import onnx_integer_ops
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            kernels = onnx_integer_ops(out, osp.join(tmp, 'optimized.onnx'))
        print(f'onnxruntime runs {kernels["integer_kernels"]} integer kernels (QLinearConv / QLinearMatMul) for '
              f'{len(layers)} quantized layers; {kernels["float_convs"]} quantized layers left in float')
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    got = session.run(None, {'lr': example.numpy()})[0]
    with torch.no_grad():
        want = net(example).numpy()
    print(f'onnxruntime vs PyTorch on a random {args.input_size[0]}x{args.input_size[1]} input: '
          f'max |diff| {np.abs(got - want).max():.3g}, PSNR {_psnr(got, want):.1f} dB')
    if args.mode == 'integer' and getattr(net, 'onnx_dynamic_size', True):  # real images: where the roundings show
        values = []
        for lr in batches:
            with torch.no_grad():
                values.append(_psnr(session.run(None, {'lr': lr.numpy()})[0], net(lr).numpy()))
        print(f'onnxruntime vs PyTorch on the {len(values)} calibration images: PSNR mean {np.mean(values):.1f} dB, '
              f'min {min(values):.1f} dB')
        note = fidelity_note(min(values), not all(layer.act_quantizer.integer_zero_point for _, layer in layers))
        if note:
            print(note)

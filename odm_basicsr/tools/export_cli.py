"""``basicsr export -opt <test option file> --format onnx|packed``: integer export of a trained quantized network.

onnx:   --mode integer (default): the canonical QDQ form onnxruntime runs as integer kernels (QLinearConv /
        QLinearMatMul); integer zero points, conv outputs requantized to uint8 where they do not feed one quantized
        layer (their ranges observed on --calibration images). ``odm_basicsr/quant/export_integer.py``.
        --mode exact: the reference: QuantizeLinear -> DequantizeLinear on every quantized layer's input with the
        fake-quant network's exact grids, int8 weight initializers -> DequantizeLinear, all convs in float.
        Both need the ``export`` extra (onnx, onnxruntime). ``--runtime openvino`` checks parity (and profiles)
        through OpenVINO's CPU plugin instead of onnxruntime (the ``openvino`` extra); ``quant/export_openvino.py``.
packed: the weights as b-bit codes, bit-packed; every other tensor as it is. ``odm_basicsr.quant.export.load_packed``
        rebuilds a network whose output is bit-identical to the exported one.
The mappings are described in ``odm_basicsr/quant/export.py``.
"""
import os
import os.path as osp
import tempfile

import numpy as np
import torch

from odm_basicsr.options_check import check_option_file
from odm_basicsr.quant import export as qexport
from odm_basicsr.quant import export_integer, export_openvino, quantized_layers
from odm_basicsr.quant.export_integer import export_onnx_integer, node_summary, onnx_integer_ops

from .cli_io import (CALIBRATION_COUNT, TRACE_SIZE, calibration_images, input_channels, load_network, network_scale,
                     onnx_session, parse_size, psnr, runtime_missing)
from .cli_text import add_out, add_runtime, add_size, command_parser

EXTENSIONS = {'onnx': '.onnx', 'packed': '.packed.pth'}
ONNX_MODES = ('integer', 'exact')
PROFILE_RUNS = 5  # --profile: timed runs after one warm-up


def fidelity_note(lowest_db, free_grids, runtime='onnxruntime'):
    """The line ``basicsr export`` adds when the integer graph is under its bar from PyTorch on a real image (None
    otherwise): why, and what to do. ``free_grids``: the network was not built with integer_zero_point. The bars are
    the export's: 40 dB for free grids, 60 dB (exact) for integer zero points."""
    if runtime == 'openvino' and lowest_db < (40 if free_grids else 60):
        return ('note: OpenVINO turns each QuantizeLinear / DequantizeLinear pair into a FakeQuantize and computes the '
                'requantizations with its own float arithmetic, not the integer kernels\' (docs/EXPORT.md): a value '
                'near a decision boundary takes the other code, and a deep or low-bit network carries it on. For the '
                'network\'s exact output, run the file with onnxruntime'
                + (' and build the network with network_g.integer_zero_point: true.' if free_grids else '.'))
    if free_grids:
        if lowest_db >= 40:
            return None
        return ('note: under 40 dB on a real image. With the paper\'s free activation grids, the integer kernels '
                'round the residual outputs, the int32 bias and the image border differently from the fake-quant '
                'network, and a 2- or 4-bit network carries each flipped code on (docs/EXPORT_APPENDIX.md), whether '
                'the network was calibrated or fine-tuned. For an exact export, calibrate or fine-tune with '
                'network_g.integer_zero_point: true.')
    if lowest_db >= 60:
        return None
    return ('note: under 60 dB on a real image although the grids have integer zero points. The integer kernels '
            'compute the PyTorch network\'s codes; the FP layers before a quantizer (the head conv) do not round '
            'exactly as PyTorch does, and a value on a rounding tie of that quantizer took the other code, which the '
            'low-bit body carries on. It is one step of the grid, as likely up as down (docs/EXPORT_APPENDIX.md).')


def _mib(n):
    return f'{n} bytes ({n / 2**20:.2f} MiB)'


def main(argv):
    parser = command_parser('export', __doc__)
    parser.add_argument('-opt', required=True, help='test option file: network_g and path.pretrain_network_g')
    parser.add_argument('--format', choices=sorted(EXTENSIONS), default='onnx', help='output format (default onnx)')
    add_out(parser, 'output file (default: <name><.onnx|.packed.pth> in the current folder)')
    parser.add_argument('--mode', choices=ONNX_MODES, default='integer',
                        help='onnx: integer (default; integer kernels in onnxruntime, faster; exact for networks built '
                             'with integer_zero_point: true) or exact (the fake-quant network to float rounding, float '
                             'convs)')
    parser.add_argument('--calibration', metavar='DIR',
                        help='--mode integer: LR images whose conv outputs set the requantization ranges (the centres '
                             f'of the first {CALIBRATION_COUNT}); default: photos that scikit-image ships, downscaled')
    add_size(parser, TRACE_SIZE, 'LR input of the trace for onnx (height and width stay dynamic, except for SwinIR, '
             'whose model keeps this size; default 64x64)', parse_size)
    parser.add_argument('--profile', action='store_true',
                        help=f'onnx: time the optimized graph on the --size input ({PROFILE_RUNS} runs) and print '
                             "each operator type's share of the time, and which ops run in float")
    add_runtime(parser, 'onnx: the CPU runtime of the parity check and the profile (default onnxruntime; openvino '
                'needs the openvino extra and reports which layers it runs in int8)')
    args = parser.parse_args(argv)
    if args.profile and args.format != 'onnx':
        parser.error('--profile times an ONNX graph: it needs --format onnx.')
    if args.runtime != 'onnxruntime' and args.format != 'onnx':
        parser.error(f'--runtime {args.runtime} runs an ONNX graph: it needs --format onnx.')
    missing = runtime_missing(args.runtime) if args.runtime != 'onnxruntime' else None
    if missing:
        raise SystemExit(f'error: {missing}')
    if args.calibration and not (osp.isdir(args.calibration) or osp.isfile(args.calibration)):
        raise SystemExit(f'error: --calibration {args.calibration}: no such folder or image.')
    # export reads no data: missing test folders are no error
    opt = check_option_file(args.opt, is_train=False, sections=('model_type', 'network_g', 'path'))
    if not isinstance(opt.get('network_g'), dict):
        raise SystemExit(f'error: {args.opt} has no network_g mapping.')
    net = load_network(opt, args.opt)

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
                         'ODMMSRResNet, ODMSwinIR, or ODMQuant with arch: {type: ...}) with a trained or calibrated '
                         'checkpoint (basicsr calibrate -opt <training option file>).')
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
    example = torch.rand(1, channels, *args.size, generator=torch.Generator().manual_seed(0))
    if args.mode == 'exact':
        info = qexport.export_onnx(net, example, out)
    else:
        scale = network_scale(opt['network_g'], opt.get('scale'))
        try:
            batches = calibration_images(args.calibration, channels, scale)
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
        print(f'input size fixed at {args.size[0]}x{args.size[1]} ({type(net).__name__} traces its '
              'window masks for one size); basicsr infer --onnx tiles images to it')
    print(f'float32 checkpoint of the same network: {_mib(sizes["float_checkpoint_bytes"])}')
    if runtime_missing(args.runtime):  # onnxruntime without its package: the file is written, nothing to run it
        return
    if args.mode == 'integer' and args.runtime == 'onnxruntime':
        with tempfile.TemporaryDirectory() as tmp:
            kernels = onnx_integer_ops(out, osp.join(tmp, 'optimized.onnx'))
        print(f'onnxruntime runs {kernels["integer_kernels"]} integer kernels (QLinearConv / QLinearMatMul) for '
              f'{len(layers)} quantized layers; {kernels["float_convs"]} quantized layers left in float')
        print(f'optimized graph nodes: {node_summary(kernels["ops"], kernels["uint8_ops"])}')
    # OpenVINO: one compiled model, with per-layer counters for what ran in int8
    session = export_openvino.OpenVINOSession(out, profile=True) if args.runtime == 'openvino' else onnx_session(out)
    got = session.run(None, {'lr': example.numpy()})[0]
    if args.runtime == 'openvino':
        print(f'openvino runs: {export_openvino.layer_summary(export_openvino.executed_layers(session))}')
    with torch.no_grad():
        want = net(example).numpy()
    print(f'{args.runtime} vs PyTorch on a random {args.size[0]}x{args.size[1]} input: '
          f'max |diff| {np.abs(got - want).max():.3g}, PSNR {psnr(got, want):.1f} dB')
    if args.mode == 'integer' and getattr(net, 'onnx_dynamic_size', True):  # real images: where the roundings show
        values = []
        for lr in batches:
            with torch.no_grad():
                values.append(psnr(session.run(None, {'lr': lr.numpy()})[0], net(lr).numpy()))
        print(f'{args.runtime} vs PyTorch on the {len(values)} calibration images: PSNR mean '
              f'{np.mean(values):.1f} dB, min {min(values):.1f} dB')
        note = fidelity_note(min(values), not all(layer.act_quantizer.integer_zero_point for _, layer in layers),
                             args.runtime)
        if note:
            print(note)
    if args.profile:  # the two runtimes' profilers share one interface
        profiler, columns = {
            'onnxruntime': (export_integer, 'op type, time share, ms per run, nodes'),
            'openvino': (export_openvino, 'layer type and kernel precision, time share, ms per run, layers'),
        }[args.runtime]
        shares = profiler.operator_time_shares(out, {'lr': example.numpy()}, runs=PROFILE_RUNS)
        print(f'{args.runtime} profile, {args.size[0]}x{args.size[1]} input, {PROFILE_RUNS} runs ({columns}):')
        print('\n'.join(profiler.time_share_lines(shares)))

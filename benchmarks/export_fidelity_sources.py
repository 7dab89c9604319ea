"""Where the integer ONNX graph's error comes from, for a network with the paper's free activation grids.

The trained demo EDSR (as in ``export_speed.py``, part 2: ODMEDSR body scope, wcc, calibrated, free grids) is
turned into the integer graph's PyTorch copy (``to_integer_module``), and its output is compared with the fake-quant
network's on the 3 held-out demo photos (PSNR, RGB 0-1), with one rounding of the integer graph taken out at a time:

    as exported          the integer graph as ``basicsr export --mode integer`` writes it
    grids moved          the grids moved onto the integer grid instead of shifted (the export before the integer zero points'
                         grid shift)
    no requantization    conv outputs that the graph requantizes to 8 bits (the residual branches' outputs) are
                         left in float
    no requant, float bias  ... and the int32 bias replaced by the float bias it rounds
    ..., exact border    ... and the free grid kept in float, so that a padded zero is 0 and not -δ (what is left:
                         float ties)
    float bias, exact border  the float bias and the exact border with the 8-bit requantization kept: what that
                         requantization alone costs
    per-channel requant  8-bit output grids per channel sharing one zero point, as a per-channel weight scale and a
                         per-channel DequantizeLinear after the kernel could give (not exported; measured to decide)
    mse requant ranges   requantization ranges that minimise the 8-bit squared error on the calibration batches
    own-photo ranges     requantization min/max measured on the evaluated photo itself (an oracle)
    codes to ±127        b-bit weight codes spread to ±127 instead of ±63

As in onnxruntime's graph, an output that goes straight onto the next layer's grid (``chain_requantizations``:
EDSR's conv1 -> ReLU -> conv2) is not requantized to 8 bits in the copy. The first row, the exported graph in
onnxruntime, checks that the copy computes the graph: they differ only by float-order ties.

Part 2, the networks users export: the demo's fine-tuned networks (``make demo``: plain QAT, ODM v1 and ODM v2 at
w4a4 and w2a2, experiments/demo_*/models/net_g_latest.pth), exported as ``basicsr export --format onnx`` does (its
default calibration images) and run in onnxruntime, against their PyTorch output on the 3 held-out photos; with the
grid shift, and with the grids moved onto the integer grid instead (the export before the shift). Skipped, with a
message, where ``make demo`` has not been run.

Part 3, ODM v1 built with integer_zero_point (the demo's ODM v1 option files, FP demo weights, calibrated as the
files say), exported and run in onnxruntime against its PyTorch output; and against PyTorch fed onnxruntime's FP
head output, which takes the head conv's float rounding out.

    python benchmarks/export_fidelity_sources.py [--bits 4 2]     # about 3 min
"""
import argparse
import os.path as osp
import statistics
import tempfile

import torch
import torch.nn.functional as F

from common import REPO, edsr_after_head, markdown_table, onnx_session_with_head_output, write_json

import export_speed as speed  # noqa: E402  (after common)
from basicsr.archs import build_network  # noqa: E402
from basicsr.data import build_dataset  # noqa: E402
from odm_basicsr.data.calibration import calibration_batches  # noqa: E402
from odm_basicsr.quant import calibrate, quantized_layers  # noqa: E402
from odm_basicsr.quant import export_integer as qint  # noqa: E402
from odm_basicsr.quant import integer_kernel  # noqa: E402
from odm_basicsr.quant.calibrate import _SampleObserver  # noqa: E402
from odm_basicsr.quant.export import _QuantizeCodes  # noqa: E402
from odm_basicsr.quant.integer_kernel import UINT8_MAX  # noqa: E402
from odm_basicsr.utils.safe_load import load_network_state  # noqa: E402

VARIANTS = ('as exported', 'grids moved', 'no requantization', 'no requant, float bias',
            'no requant, float bias, exact border', 'float bias, exact border', 'per-channel requant',
            'mse requant ranges', 'own-photo ranges', 'codes to ±127')


def mse_output_ranges(net, batches):
    """{layer name: (l, u)} minimising the 8-bit quantization error of each quantized layer's output."""
    observers, hooks = {}, []
    for name, layer in quantized_layers(net):
        observers[name] = _SampleObserver()
        hooks.append(layer.register_forward_hook(lambda m, i, o, n=name: observers[n](o)))
    with torch.no_grad():
        for batch in batches:
            net(batch)
    for hook in hooks:
        hook.remove()
    return {name: obs.range_for(8) for name, obs in observers.items()}


def channel_output_grids(net, batches):
    """{layer name: (scale, zero_point, gain)}: 8-bit output grids per channel that share one zero point (QLinearConv
    has one), each channel's step (max_c / (255 - zp), -min_c / zp) as fine as its own min/max allows; the zero
    point is the one with the smallest mean step. ``gain`` (C,) = scale / step_c, what a per-channel weight scale
    would multiply channel c by before the per-tensor requantization (and a per-channel DequantizeLinear divide
    back)."""
    ranges, hooks = {}, []

    def keep(name):
        def hook(module, inputs, output):
            low, high = output.amin(dim=(0, 2, 3)), output.amax(dim=(0, 2, 3))
            old = ranges.get(name, (low, high))
            ranges[name] = (torch.minimum(old[0], low), torch.maximum(old[1], high))
        return hook

    for name, layer in quantized_layers(net):
        hooks.append(layer.register_forward_hook(keep(name)))
    with torch.no_grad():
        for batch in batches:
            net(batch)
    for hook in hooks:
        hook.remove()
    grids = {}
    for name, (low, high) in ranges.items():
        low, high = low.clamp(max=0).double(), high.clamp(min=0).double()
        steps = [torch.maximum(high / (UINT8_MAX - zp), -low / zp).clamp(min=1e-8) for zp in range(1, UINT8_MAX)]
        best = min(range(len(steps)), key=lambda i: float(steps[i].mean()))
        step = steps[best]
        grids[name] = (step.max().float(), best + 1, (step.max() / step).float().view(1, -1, 1, 1))
    return grids


def chained_layers(net, batches):
    """The layers whose output the integer ONNX graph quantizes straight onto the next layer's grid (not onto an
    8-bit requantization grid): ``chain_requantizations`` on the traced graph."""
    model, _ = qint.to_integer_module(net, batches)
    return set(qint.chain_requantizations(qint._trace(model, batches[0][:1], True)))


def _exact_border_accumulate(layer, x):
    """``IntegerQuantLayer.accumulate`` with the free grid kept in float (X_q = δ + codes·s), so a padded zero is 0:
    the conv of the fake-quant network's X_q with the float bias, on the integer graph's weights."""
    shift = 0 if layer.grid_shift is None else layer.grid_shift
    x_q = _QuantizeCodes.apply(x - shift, layer.act_scale, layer.zero_point, layer.code_lo, layer.code_hi) + shift
    weight = qint._DequantizeInitializer.apply(layer.weight_codes, layer.weight_scale, layer.weight_axis,
                                               layer.weight_scale_count, False)
    bias = layer.exact_bias - (0 if layer.grid_shift is None else layer.grid_shift * weight.sum(dim=(1, 2, 3)))
    return F.conv2d(x_q, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def run_variant(net, batches, lq, variant, chained):
    """PSNR of the integer graph's PyTorch copy (one ``variant``) against the fake-quant output on ``lq``.

    As in onnxruntime's graph, a ``chained`` layer's output is not requantized to 8 bits (its consumer's input
    quantization is the rounding it gets); every other output is, unless the variant leaves it in float."""
    saved_shift, saved_spread = qint.folded_grid_shift, integer_kernel.code_spread
    saved_forward = qint.IntegerQuantLayer.forward
    ranges = None
    try:
        if variant == 'grids moved':
            qint.folded_grid_shift = lambda quantizer: None
        if variant == 'codes to ±127':
            integer_kernel.code_spread = lambda bits: max(1, 127 // (2**bits - 1))
        if variant == 'mse requant ranges':
            ranges = mse_output_ranges(net, batches)
        if variant == 'own-photo ranges':
            ranges = qint.observe_output_ranges(net, [lq])
        grids = channel_output_grids(net, batches) if variant == 'per-channel requant' else {}
        model, _ = qint.to_integer_module(net, batches, output_ranges=ranges)
        float_bias = 'float bias' in variant
        for name, layer in model.named_modules():
            if isinstance(layer, qint.IntegerQuantLayer):
                layer.requantize = name not in chained and not variant.startswith('no requant')
                layer.exact_border = variant.endswith('exact border')
                layer.channel_grid = grids.get(name)
                if float_bias:  # unrounded "codes": the bias the int32 codes stand for
                    layer.bias_codes = layer.exact_bias.double() / layer.bias_scale.double()

        def forward(layer, x):
            y = _exact_border_accumulate(layer, x) if layer.exact_border else layer.accumulate(x)
            if not layer.requantize:
                return y
            if layer.channel_grid is not None:
                scale, zero_point, gain = layer.channel_grid
                return _QuantizeCodes.apply(y * gain, scale, zero_point, 0, UINT8_MAX) / gain
            return _QuantizeCodes.apply(y, layer.out_scale, layer.out_zero_point, 0, UINT8_MAX)

        qint.IntegerQuantLayer.forward = forward  # the benchmark's EDSR has conv layers only
        with torch.no_grad():
            return speed.psnr(model(lq).numpy(), net(lq).numpy())
    finally:
        qint.folded_grid_shift, integer_kernel.code_spread = saved_shift, saved_spread
        qint.IntegerQuantLayer.forward = saved_forward


DEMO_RUNS = [(f'demo_{method}_EDSR_x4_w{bits}a{bits}', f'options/demo/train_{method}_EDSR_demo_x4_w{bits}a{bits}.yml')
             for method in ('QAT', 'ODM', 'ODMv2') for bits in (4, 2)]


def finetuned_part(photos, tmp):
    """Rows (experiment, shifted grids, PSNR per photo with the shift, with the grids moved) for the demo's
    fine-tuned networks, in onnxruntime."""
    from common import load_yaml
    from odm_basicsr.tools.cli_io import calibration_images as export_batches
    batches = export_batches(None, 3, 4)  # basicsr export's default calibration images
    rows = []
    for name, train_file in DEMO_RUNS:
        checkpoint = osp.join(REPO, 'experiments', name, 'models', 'net_g_latest.pth')
        if not osp.isfile(checkpoint):
            print(f'{name}: no {checkpoint}; run make demo first (skipped)')
            continue
        net = build_network(load_yaml(train_file)['network_g']).eval()
        net.load_state_dict(load_network_state(checkpoint), strict=True)
        result = {}
        for shift in (True, False):
            saved = qint.folded_grid_shift
            if not shift:
                qint.folded_grid_shift = lambda quantizer: None
            try:
                path = osp.join(tmp, f'{name}.onnx')
                info = qint.export_onnx_integer(net, photos[0][1], path, batches)
            finally:
                qint.folded_grid_shift = saved
            session = speed.session(path, 2)
            with torch.no_grad():
                result[shift] = [round(speed.psnr(session.run(None, {'lr': lq.numpy()})[0], net(lq).numpy()), 1)
                                 for _, lq in photos]
            if shift:
                shifted = f'{len(info["grids_shifted"])} / {info["layers"]}'
        rows.append([name, shifted] + [' / '.join(f'{v:.1f}' for v in result[k]) for k in (True, False)])
        print(rows[-1], flush=True)
    return rows


def offsets_part(photos, batches, bits_list, tmp):
    """Rows (bits, offset layers, ORT vs PyTorch per photo, the same with PyTorch fed onnxruntime's head output) for
    ODM v1 built with integer_zero_point: the demo's ODM v1 option files (offsets on the top 25% of layers), FP demo
    weights, calibrated as those files say."""
    from common import load_yaml
    rows = []
    for bits in bits_list:
        opt = load_yaml(f'options/demo/train_ODM_EDSR_demo_x4_w{bits}a{bits}.yml')
        net = build_network(dict(opt['network_g'], integer_zero_point=True)).eval()
        net.load_state_dict(load_network_state(speed.DEMO_CHECKPOINT, 'params'), strict=False)
        cal = opt['train']['calibration']
        calibrate(net, batches, offset_mode=opt['network_g']['offsets'], offset_top_k=cal['offset_top_k'],
                  method=cal['method'], progress=False)
        path = osp.join(tmp, f'v1_w{bits}.onnx')
        qint.export_onnx_integer(net, photos[0][1], path, batches)
        session = onnx_session_with_head_output(path)
        direct, fed = [], []
        with torch.no_grad():
            for _, lq in photos:
                got, head_out = session.run(None, {'lr': lq.numpy()})
                direct.append(round(speed.psnr(got, net(lq).numpy()), 1))
                fed.append(round(speed.psnr(got, edsr_after_head(net, torch.from_numpy(head_out)).numpy()), 1))
        active = sum(1 for _, layer in quantized_layers(net) if layer.offset is not None and layer.offset.active)
        rows.append([f'w{bits}a{bits}', f'{active} / {len(quantized_layers(net))}',
                     ' / '.join(f'{v:.1f}' for v in direct), ' / '.join(f'{v:.1f}' for v in fed)])
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--bits', type=int, nargs='+', default=[4, 2])
    parser.add_argument('--json', default=f'{REPO}/benchmarks/results/export_fidelity_sources.json')
    args = parser.parse_args()
    paths = speed.demo_data()
    dataset = build_dataset(dict(name='heldout', type='PairedImageDataset', dataroot_gt=paths['val_gt'],
                                 dataroot_lq=paths['val_lq'], io_backend={'type': 'disk'}, phase='val', scale=4))
    photos = [(osp.splitext(osp.basename(dataset.paths[i]['gt_path']))[0], dataset[i]['lq'][None])
              for i in range(len(dataset))]
    train = dict(name='cal', type='PairedImageDataset', dataroot_gt=paths['train_gt'], dataroot_lq=paths['train_lq'],
                 io_backend={'type': 'lmdb'}, gt_size=96, use_hflip=False, use_rot=False, batch_size_per_gpu=4)
    batches = calibration_batches(dict(scale=4, manual_seed=0, datasets=dict(train=train)), 8, 'cpu')
    state = load_network_state(speed.DEMO_CHECKPOINT, 'params')
    rows, results = [], []
    for bits in args.bits:
        net = build_network(dict(speed.DEMO_EDSR, w_bit=bits, a_bit=bits)).eval()
        net.load_state_dict(state, strict=False)
        calibrate(net, batches, progress=False)
        chained = chained_layers(net, batches)
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'net.onnx')
            qint.export_onnx_integer(net, photos[0][1], path, batches)
            session = speed.session(path, 2)
            with torch.no_grad():
                per_photo = [round(speed.psnr(session.run(None, {'lr': lq.numpy()})[0], net(lq).numpy()), 1)
                             for _, lq in photos]
        results.append(dict(bits=f'w{bits}a{bits}', variant='onnxruntime', psnr_db=per_photo,
                            photos=[name for name, _ in photos]))
        rows.append([f'w{bits}a{bits}', 'as exported, in onnxruntime',
                     f'{statistics.mean(per_photo):.1f} / {min(per_photo):.1f}',
                     ' / '.join(f'{v:.1f}' for v in per_photo)])
        print(rows[-1], flush=True)
        for variant in VARIANTS:
            per_photo = [round(run_variant(net, batches, lq, variant, chained), 1) for _, lq in photos]
            results.append(dict(bits=f'w{bits}a{bits}', variant=variant, psnr_db=per_photo,
                                photos=[name for name, _ in photos]))
            rows.append([f'w{bits}a{bits}', variant, f'{statistics.mean(per_photo):.1f} / {min(per_photo):.1f}',
                         ' / '.join(f'{v:.1f}' for v in per_photo)])
            print(rows[-1], flush=True)
    table = markdown_table(['bits', 'integer graph (PyTorch copy)', 'vs fake-quant (dB, mean / min)',
                            'per photo (' + ' / '.join(name for name, _ in photos) + ')'], rows)
    print(table)
    with tempfile.TemporaryDirectory() as tmp:
        v1_rows = offsets_part(photos, batches, args.bits, tmp)
        demo_rows = finetuned_part(photos, tmp)
    names = ' / '.join(name for name, _ in photos)
    demo_table = markdown_table(['fine-tuned demo network', 'grids off the integer grid',
                                 f'integer ONNX vs PyTorch, grid shift ({names})',
                                 f'grids moved instead ({names})'], demo_rows) if demo_rows else ''
    print(demo_table)
    v1_table = markdown_table(['ODM v1, integer_zero_point', 'offset layers', f'integer ONNX vs PyTorch ({names})',
                               f'PyTorch fed onnxruntime\'s head output ({names})'], v1_rows)
    print(v1_table)
    write_json(args.json, dict(results=results, table=table, finetuned=demo_rows, finetuned_table=demo_table,
                               v1_integer_zero_point=v1_rows, v1_integer_zero_point_table=v1_table))


if __name__ == '__main__':
    main()

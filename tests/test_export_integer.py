"""Integer ONNX export: integer zero points, every quantized conv / linear fused into an onnxruntime
integer kernel, fidelity to the fake-quant network on a real photo, exactness for networks trained with integer zero
points, and the CLI's two modes.

Networks are small (random weights, calibrated on crops of astronaut); the fidelity input is chelsea, downscaled.
"""
import math

import numpy as np
import pytest
import torch
from basicsr.archs import build_network

from odm_basicsr.quant import ActQuantizer, QuantConfig, calibrate, integer_grid, quantized_layers
from odm_basicsr.quant import export_integer as qint
from odm_basicsr.quant import integer_kernel

from conftest import run_cli, save_basicsr_checkpoint, write_options
from test_export import CASES, make_net, photos, psnr  # noqa: F401  (photos is a fixture)

ort = pytest.importorskip('onnxruntime')

MORE_CASES = {
    'rrdb_w8a8_channel': dict(type='ODMQuant', arch=dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=16,
                                                         num_block=1, num_grow_ch=8, scale=4),
                              w_bit=8, a_bit=8, weight_granularity='channel'),
    'srvgg_w4a4': dict(type='ODMQuant', arch=dict(type='SRVGGNetCompact_basicsr', num_in_ch=3, num_out_ch=3,
                                                  num_feat=16, num_conv=4, upscale=4), w_bit=4, a_bit=4),
    'edsr_all_w4a4_outer8': dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=2,
                                 w_bit=4, a_bit=4, scope='all', outer_bit=8),
    'edsr_w2a2_shift_offsets': dict(CASES['edsr_w4a4_offsets'], w_bit=2, a_bit=2, offsets='shift'),
    'swinir_w4a4': dict(type='ODMSwinIR', upscale=2, in_chans=3, img_size=48, window_size=8, img_range=1.,
                        depths=[2], embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler='pixelshuffledirect',
                        w_bit=4, a_bit=4),
}


def build(case, batches, integer_zero_point=False):
    """A calibrated network; with ``integer_zero_point`` built with it (as a network trained with
    ``integer_zero_point: true``: integer grids, output requantizers switched on by calibration, integer bias)."""
    if case in CASES and not integer_zero_point:
        return make_net(case, batches)
    cfg = dict(CASES.get(case) or MORE_CASES[case], integer_zero_point=integer_zero_point)
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    offsets = cfg.get('offsets', 'none') != 'none'
    calibrate(net, batches, offset_mode=cfg.get('offsets', 'none'), offset_top_k=0.5, progress=False)
    if offsets:  # trained offsets are no longer the calibration values: perturb them
        with torch.no_grad():
            for _, layer in quantized_layers(net):
                layer.offset.shift.add_(0.05 * torch.randn_like(layer.offset.shift))
                layer.offset.scale.mul_(1 + 0.1 * torch.rand_like(layer.offset.scale))
    return net


def export_and_run(net, batches, test, tmp_path):
    """(export info, optimized-graph report, onnxruntime output, fake-quant output)."""
    path = str(tmp_path / 'net.onnx')
    info = qint.export_onnx_integer(net, test, path, batches)
    kernels = qint.onnx_integer_ops(path, str(tmp_path / 'net.optimized.onnx'))
    got = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(None, {'lr': test.numpy()})[0]
    with torch.no_grad():
        want = net(test).numpy()
    return info, kernels, got, want


@pytest.mark.parametrize('bits', [2, 3, 4, 8])
def test_integer_grid_fits_uint8_and_moves_by_at_most_half_a_step(bits):
    levels = 2**bits - 1
    torch.manual_seed(bits)
    lower = torch.randn(200) * 3
    upper = lower + torch.rand(200) * 5 + 0.01
    n, step = integer_grid(lower, upper, bits)
    assert torch.equal(n, torch.round(n))
    zero_point = torch.clamp(-n, min=0)
    assert bool((n + zero_point >= 0).all()) and bool((n + levels + zero_point <= 255).all())
    assert torch.allclose(step, (upper - lower) / levels)
    inside = (lower / step > -255) & (lower / step < 255 - levels)  # not clamped
    assert bool((torch.abs(n * step - lower)[inside] <= step[inside] / 2 + 1e-6).all())
    if bits == 8:  # at 8 bits the codes 0..255 are all the levels: the range must contain 0
        assert bool((n <= 0).all())


@pytest.mark.parametrize('bits, lower, upper, want', [
    (8, 0.4, 0.9, (0.0, 0.9)),  # 8 bits: the range must contain 0, so it grows to it (the clamp moved it to [0, 0.5])
    (8, -0.9, -0.4, (-0.9, 0.0)),
    (7, 0.6, 1.0, (0.502, 1.0)),  # 7 bits: n = l / s <= 128 needs l <= 128 / 255 * u
    (6, 2.0, 2.5, (1.882, 2.5)),
    (4, -0.37, 1.0, (-0.37, 1.0)),  # fits uint8: the width is kept (the grid moves by under half a step)
])
def test_integer_zero_point_grid_keeps_the_calibrated_range(bits, lower, upper, want):
    """An integer-zero-point grid whose codes would not fit uint8 is widened towards 0 to cover the whole calibrated
    range, not moved off it by the clamp of n (which clipped inputs silently at 7-8 bits)."""
    quantizer = ActQuantizer(bits, integer_zero_point=True)
    quantizer.set_range(lower, upper)
    low, high = (float(v) for v in quantizer.valid_range())
    levels = 2**bits - 1
    step = (high - low) / levels
    assert low <= lower + step / 2 and high >= upper - step / 2  # the calibrated range is on the grid
    assert low == pytest.approx(want[0], abs=step / 2 + 1e-3) and high == pytest.approx(want[1], abs=step / 2 + 1e-3)
    n = round(low / step)
    assert abs(low / step - n) < 1e-3 and -255 <= n <= 255 - levels
    x = torch.linspace(lower, upper, 101)
    assert float((quantizer(x) - x).abs().max()) <= step / 2 + 1e-5  # no input of the range is clipped


def test_integer_zero_point_quantizer_levels_and_gradients():
    quantizer = ActQuantizer(4, integer_zero_point=True)
    quantizer.set_range(-0.37, 1.0)
    lower, upper = quantizer.valid_range()
    step = (upper - lower) / 15
    assert abs(float(lower / step) - round(float(lower / step))) < 1e-4  # lower is a whole number of steps
    assert abs(float(upper - lower) - 1.37) < 1e-6  # the width is kept
    x = torch.linspace(-1, 2, 301, requires_grad=True)
    y = quantizer(x)
    codes = (y - lower) / step
    assert torch.allclose(codes, torch.round(codes), atol=1e-4)
    assert float(y.min()) == pytest.approx(float(lower)) and float(y.max()) == pytest.approx(float(upper))
    (y * torch.linspace(-1, 1, 301)).sum().backward()
    assert quantizer.lower.grad is not None and quantizer.upper.grad is not None
    assert float(quantizer.upper.grad) != 0 and x.grad.abs().sum() > 0
    free = ActQuantizer(4)
    free.set_range(-0.37, 1.0)
    assert float(free.valid_range()[0]) == pytest.approx(-0.37)  # the paper's free range is untouched


@pytest.mark.parametrize('case', list(CASES) + list(MORE_CASES))
def test_every_quantized_layer_runs_as_an_integer_kernel(photos, case, tmp_path):
    batches, test = photos
    net = build(case, batches)
    if case.startswith('swinir'):
        test = test[..., :48, :48]  # SwinIR's ONNX graph keeps the traced size
    info, kernels, got, want = export_and_run(net, batches, test, tmp_path)
    layers = len(quantized_layers(net))
    assert kernels['integer_kernels'] == layers, kernels
    assert kernels['float_convs'] == 0, kernels
    assert info['chained'] + info['requantized'] == layers
    fidelity = psnr(got, want)
    print(f'{case}: {layers} layers, {info["chained"]} chained, fidelity {fidelity:.1f} dB')
    assert fidelity >= 40, fidelity


def test_relu_chain_is_quantized_onto_the_next_grid(photos, tmp_path):
    """EDSR's conv1 -> ReLU -> conv2: conv1's output goes straight onto conv2's input grid (no ReLU, no requantize)."""
    batches, test = photos
    net = build('edsr_w2a2_wcc', batches)
    info, kernels, got, want = export_and_run(net, batches, test, tmp_path)
    assert info['chained'] == 2  # one per residual block
    assert kernels['ops'].get('Relu', 0) == 0
    import onnx
    graph = onnx.load(str(tmp_path / 'net.onnx')).graph
    clips = [n for n in graph.node if n.op_type == 'Clip']
    assert clips, 'the 2-bit grids are cut out of uint8 by Clip'


@pytest.mark.parametrize('case', ['edsr_w2a2_wcc', 'edsr_w8a8_offsets', 'edsr_w2a2_shift_offsets', 'srvgg_w4a4',
                                  'edsr_all_w4a4_outer8', 'rdn_w4a4_percentile', 'rrdb_w8a8_channel', 'swinir_w4a4'])
def test_networks_with_integer_zero_points_export_exactly(photos, case, tmp_path):
    """Built with integer_zero_point: nothing moves, the requantized outputs and the int32 bias are part of the
    network, and the 8-bit weights are on the int8 grid. A layer with an offset pads its input before the offset,
    as the graph does. In eval the network computes its quantized layers as the integer kernels do (QLinearConv and
    QLinearMatMul, per-layer and per-channel weights, offsets), so onnxruntime's integer graph reproduces it to the
    rounding of the FP layers (>= 99 dB; ODM v1 at w2a2 was at 30-33 dB on the demo EDSR while its offset layers
    ran the fake-quant forward with the padding after the offset). The exact-mode graph sums in float: >= 60 dB."""
    batches, test = photos
    net = build(case, batches, integer_zero_point=True)
    if case.startswith('swinir'):
        test = test[..., :48, :48]  # SwinIR's ONNX graph keeps the traced size
    info, _, got, want = export_and_run(net, batches, test, tmp_path)
    assert info['grids_shifted'] == [] and info['requantization_mismatches'] == []
    fidelity = psnr(got, want)  # want: the eval forward, which computes the integer kernels' arithmetic
    from odm_basicsr.quant import export as qexport  # the exact mode models the requantization and bias too
    qexport.export_onnx(net, test, str(tmp_path / 'exact.onnx'))
    exact = ort.InferenceSession(str(tmp_path / 'exact.onnx'), providers=['CPUExecutionProvider'])
    exact_fidelity = psnr(exact.run(None, {'lr': test.numpy()})[0], want)
    print(f'{case} with integer zero points: integer {fidelity:.1f} dB, exact {exact_fidelity:.1f} dB')
    assert fidelity >= 90 and exact_fidelity >= 60, (fidelity, exact_fidelity)


def test_integer_kernel_eval_computes_onnxruntimes_codes(tmp_path):
    """conv1 (1x1, 8 bits) -> ReLU -> conv2 (1x1, 4 bits) built with integer_zero_point, on 65536 pixels: conv1's
    output is chained onto conv2's input grid, conv2's is requantized. In eval the network gives onnxruntime's
    output codes everywhere, rounding ties included; its fake-quant forward (training's arithmetic) misses some."""
    import copy

    from odm_basicsr.quant import QuantConv2d, set_integer_kernel_eval, set_integer_zero_point
    torch.manual_seed(0)
    net = torch.nn.Sequential(QuantConv2d(8, 32, 1, w_bit=4, a_bit=8), torch.nn.ReLU(),
                              QuantConv2d(32, 16, 1, w_bit=4, a_bit=4))
    set_integer_zero_point(net, True)
    net[0].act_quantizer.set_range(-1.0, 3.0)
    net[2].act_quantizer.set_range(-0.2, 1.5)
    x = torch.rand(1, 8, 256, 256) * 4 - 1
    assert qint.calibrate_output_requantizers(net, [x[..., :32, :32]]) == ['2']
    assert net[0].output_quantizer.consumer is net[2] and net[2].output_quantizer.consumer is None
    qint.export_onnx_integer(net, x[..., :8, :8], str(tmp_path / 'n.onnx'), [x[..., :32, :32]])
    got = ort.InferenceSession(str(tmp_path / 'n.onnx'), providers=['CPUExecutionProvider']).run(None,
                                                                                               {'lr': x.numpy()})[0]
    net.eval()
    with torch.no_grad():
        want = net(x).numpy()
        fake = set_integer_kernel_eval(copy.deepcopy(net), False)(x).numpy()
    requantizer = net[2].output_quantizer
    codes = lambda y: np.round(y / float(requantizer.scale)) + float(requantizer.zero_point)  # noqa: E731
    assert np.array_equal(codes(got), codes(want))
    assert (codes(got) != codes(fake)).sum() > 0  # ties: the check above can fail


def test_relu_onto_an_8bit_grid_from_zero_needs_no_clip(tmp_path):
    """conv1 -> ReLU -> conv2 whose 8-bit input grid starts at 0 (zero point 0, all of uint8): the ReLU is uint8's own
    lower bound, so the chained graph has no Clip, and onnxruntime still gives the network's codes."""
    import onnx

    from odm_basicsr.quant import QuantConv2d, set_integer_zero_point
    torch.manual_seed(1)
    net = torch.nn.Sequential(QuantConv2d(8, 16, 1, w_bit=8, a_bit=8), torch.nn.ReLU(),
                              QuantConv2d(16, 4, 1, w_bit=8, a_bit=8))
    set_integer_zero_point(net, True)
    net[0].act_quantizer.set_range(-1.0, 3.0)
    net[2].act_quantizer.set_range(0.0, 1.5)
    x = torch.rand(1, 8, 64, 64) * 4 - 1
    qint.calibrate_output_requantizers(net, [x])
    info = qint.export_onnx_integer(net, x[..., :8, :8], str(tmp_path / 'n.onnx'), [x])
    assert info['chained'] == 1
    assert [n.op_type for n in onnx.load(str(tmp_path / 'n.onnx')).graph.node if n.op_type in ('Clip', 'Relu')] == []
    got = ort.InferenceSession(str(tmp_path / 'n.onnx'), providers=['CPUExecutionProvider']).run(None,
                                                                                               {'lr': x.numpy()})[0]
    with torch.no_grad():
        want = net.eval()(x).numpy()
    assert float(np.abs(got - want).max()) < 1e-6
    assert float(net[1](net[0](x)).min()) == 0.0  # the ReLU did clip: some outputs of conv1 are negative


def test_checkpoint_without_consumer_index_loads_as_calibrated(photos):
    """consumer_index came after the other requantizer buffers: a checkpoint without it still counts as calibrated
    (no recalibration) and its layers run the fake-quant forward."""
    batches, _ = photos
    net = build('edsr_w2a2_wcc', batches, integer_zero_point=True)
    assert net.body[0].conv1.output_quantizer.consumer is net.body[0].conv2
    state = {k: v for k, v in net.state_dict().items() if not k.endswith('consumer_index')}
    fresh = build_network(dict(CASES['edsr_w2a2_wcc'], integer_zero_point=True))
    fresh.load_state_dict(state)
    assert fresh.quantizer_state_loaded
    assert all(m.output_quantizer.consumer is None for _, m in quantized_layers(fresh))
    fresh.load_state_dict(net.state_dict())
    assert fresh.body[0].conv1.output_quantizer.consumer is fresh.body[0].conv2


class _ShiftedGrids(torch.nn.Module):
    """conv1 (3x3, no padding) -> ReLU -> conv2 (3x3, no padding), 4 bits, free grids set off the integer grid."""

    def __init__(self):
        super().__init__()
        from odm_basicsr.quant import QuantConv2d
        torch.manual_seed(3)
        self.conv1 = QuantConv2d.from_float(torch.nn.Conv2d(3, 8, 3), QuantConfig(w_bit=4, a_bit=4))
        self.conv2 = QuantConv2d.from_float(torch.nn.Conv2d(8, 3, 3), QuantConfig(w_bit=4, a_bit=4))
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.conv2(self.relu(self.conv1(x)))


@pytest.mark.parametrize('fold', [True, False])
def test_free_grids_are_kept_by_folding_their_shift(photos, tmp_path, monkeypatch, fold):
    """A free grid l + i·s off the integer grid: the graph quantizes X - δ on the integer grid and adds δ back
    through the biases, so the codes are the fake-quant network's. conv1's input grid has δ = +0.375 s (a Sub stays
    before the first QuantizeLinear); conv2's has l = -0.7 s (n = -1, δ = +0.3 s), so its -δ folds into conv1's
    int32 bias and the ReLU becomes a Clip at the code of Q(0 - δ). Without the fold (the grids moved onto the
    integer grid instead) almost every output code is off: the test can fail."""
    batches, test = photos
    net = _ShiftedGrids().eval()
    calibrate(net, batches, progress=False)
    step1 = 1.2 / 15
    net.conv1.act_quantizer.set_range(-0.13, -0.13 + 15 * step1)  # l/s = -1.625: n = -2, δ = 0.375 s
    with torch.no_grad():
        high = float(net.relu(net.conv1(test)).max())
    step2 = high / 14.3
    net.conv2.act_quantizer.set_range(-0.7 * step2, -0.7 * step2 + 15 * step2)
    if not fold:
        monkeypatch.setattr(qint, 'folded_grid_shift', lambda quantizer: None)
    path = str(tmp_path / 'net.onnx')
    info = qint.export_onnx_integer(net, test, path, batches)
    got = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(None, {'lr': test.numpy()})[0]
    model, _ = qint.to_integer_module(net, batches)  # the same output requantization grid, applied to the target
    with torch.no_grad():
        want = qint._QuantizeCodes.apply(net(test), model.conv2.out_scale, model.conv2.out_zero_point, 0, 255)
    steps = np.abs(got - want.numpy()) / float(model.conv2.out_scale)  # in output codes
    off = float((steps > 1e-3).mean())
    if not fold:
        assert off > 0.5 and steps.max() > 5, (off, steps.max())
        return
    # the same codes but for the int32 biases' rounding: a few outputs one code off
    assert steps.max() < 1.001 and off < 0.03, (off, steps.max())
    import onnx
    graph = onnx.load(path).graph
    assert info['grids_shifted'] == ['conv1', 'conv2'] and info['chained'] == 1
    assert [n.op_type for n in graph.node].count('Sub') == 1  # conv2's shift went into conv1's bias
    assert qint.onnx_integer_ops(path, str(tmp_path / 'opt.onnx'))['integer_kernels'] == 2
    relu_clip = [n for n in graph.node if n.op_type == 'Clip' and n.output[0].startswith('odm_relu_codes')
                 or n.op_type == 'Clip' and int(qint._Graph(graph).value(n.input[1])) == 1]
    assert relu_clip, 'the ReLU sits at the code of Q(0 - δ): 1 here'


def test_linear_layers_keep_their_free_grids(photos, tmp_path):
    """SwinIR's Linear inputs (after LayerNorm, GELU, attention) sit off the integer grid: each gets the shift (a
    Sub before its QuantizeLinear, δ·ΣW in its float bias, and the product's requantization range observed on
    X - δ). Measured: 86.7 dB with the shift, 74.9 with the grids moved."""
    batches, test = photos
    net = build('swinir_w4a4', batches)
    info, kernels, got, want = export_and_run(net, batches, test[..., :48, :48], tmp_path)
    assert len(info['grids_shifted']) == info['layers'] == kernels['integer_kernels'] == 8
    assert psnr(got, want) >= 80, psnr(got, want)


def test_code_spread_keeps_weight_codes_within_seven_bits():
    """The largest spread m whose codes m·(2^b - 1) stay within ±63; none at 7 bits."""
    for bits in range(2, 7):
        levels, spread = 2**bits - 1, integer_kernel.code_spread(bits)
        assert spread * levels <= 63 < (spread + 1) * levels, bits
    assert integer_kernel.code_spread(7) == 1
    assert [integer_kernel.code_spread(b) for b in (2, 3, 4)] == [21, 9, 4]


def test_calibration_switches_on_the_requantizers_the_export_needs(photos):
    """EDSR: conv1 -> ReLU -> conv2 is chained (conv1's requantizer stays off), conv2 feeds the residual add (on)."""
    batches, _ = photos
    net = build('edsr_w2a2_wcc', batches, integer_zero_point=True)
    on = {n for n, m in quantized_layers(net) if m.output_quantizer.is_active}
    assert on == {'body.0.conv2', 'body.1.conv2'}
    for block in net.body:  # the chained conv1 records conv2 as the grid its output goes onto
        assert block.conv1.output_quantizer.consumer is block.conv2 and block.conv2.output_quantizer.consumer is None
    requantizer = net.body[0].conv2.output_quantizer
    scale, zero_point = float(requantizer.scale), float(requantizer.zero_point)
    y = torch.linspace(-3, 3, 601, requires_grad=True)
    out = requantizer(y)
    codes = out.detach() / scale + zero_point
    assert torch.allclose(codes, torch.round(codes), atol=1e-3)
    assert float(codes.min()) >= 0 and float(codes.max()) <= 255
    out.sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))  # straight through
    conv = net.body[0].conv2  # its bias sits on the int32 grid s_x·s_w
    with torch.no_grad():
        conv(torch.rand(1, 16, 8, 8))  # sets the weight quantizer's clip value
        lower, upper = conv.act_quantizer.valid_range()
        grid = (upper - lower) / 3 * conv.weight_quantizer.integer_scale(conv.weight_quantizer.last_upper)
        codes = conv.integer_bias() / grid
    assert torch.allclose(codes, torch.round(codes), atol=1e-3)
    assert not torch.allclose(conv.integer_bias(), conv.bias)


def test_int8_weight_grid_at_8_bits(photos, tmp_path):
    """8 bits with integer_zero_point: 255 levels j·u/127 with a zero level; the packed checkpoint keeps them."""
    from odm_basicsr.quant import export as qexport
    batches, test = photos
    net = build('edsr_w8a8_offsets', batches, integer_zero_point=True)
    quantizer = net.body[0].conv1.weight_quantizer
    assert quantizer.int8_grid and quantizer.levels == 254
    w = quantizer(net.body[0].conv1.weight.detach())
    step = quantizer.last_upper / 127
    assert torch.allclose(w / step, torch.round(w / step), atol=1e-3) and bool((w == 0).any())
    qexport.save_packed(net, str(tmp_path / 'p.pth'))
    fresh = qexport.load_packed(str(tmp_path / 'p.pth'), build_network(dict(CASES['edsr_w8a8_offsets'],
                                                                           integer_zero_point=True)).eval())
    with torch.no_grad():
        assert torch.equal(fresh(test), net(test))


def test_integer_zero_point_reaches_the_network_from_the_option():
    net = build_network(dict(CASES['edsr_w4a4_offsets'], integer_zero_point=True))
    assert all(m.act_quantizer.integer_zero_point for _, m in quantized_layers(net))
    assert net.quant_config.integer_zero_point is True
    swin = build_network(dict(MORE_CASES['swinir_w4a4'], quantize_attention=True, integer_zero_point=True))
    from odm_basicsr.quant import activation_points
    assert all(p.act_quantizer.integer_zero_point for _, p in activation_points(swin))


def test_cli_modes_and_calibration_folder(photos, tmp_path):
    batches, test = photos
    case = 'edsr_w4a4_offsets'
    net = build(case, batches)
    ckpt = save_basicsr_checkpoint(net, tmp_path / 'net_g.pth')
    opt = {'name': 'integer_test', 'model_type': 'ODMModel', 'scale': 2, 'num_gpu': 0, 'network_g': dict(CASES[case]),
           'path': {'pretrain_network_g': ckpt, 'strict_load_g': True, 'param_key_g': 'params'}}
    opt_path = write_options(tmp_path / 'test.yml', opt)
    proc = run_cli(['export', '-opt', opt_path, '--format', 'onnx', '--size', '24x32', '--profile'], cwd=tmp_path)
    assert 'onnx model (integer)' in proc.stdout and 'integer kernels' in proc.stdout, proc.stdout
    profile = proc.stdout.split('onnxruntime profile, 24x32 input, 5 runs')[1].splitlines()[1:]
    assert any(line.split()[:1] == ['QLinearConv'] and line.endswith(' 4 nodes') for line in profile), profile
    assert profile[-1].startswith('in float (no integer kernel in this graph): '), profile  # ODM v1's offsets: Sub, Div
    assert 'Sub ' in profile[-1] and 'QLinearConv' not in profile[-1], profile[-1]
    assert '4 integer kernels' in proc.stdout and '0 quantized layers left in float' in proc.stdout, proc.stdout
    assert 'onnxruntime vs PyTorch on the 8 calibration images: PSNR mean' in proc.stdout, proc.stdout
    assert 'Removing initializer' not in proc.stderr and '[W:onnxruntime' not in proc.stderr, proc.stderr[-2000:]
    nodes = next(line for line in proc.stdout.splitlines() if line.startswith('optimized graph nodes: '))
    assert 'integer: 4 QLinearConv' in nodes and '; float: ' in nodes, nodes
    session = ort.InferenceSession(str(tmp_path / 'integer_test.onnx'), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        assert psnr(session.run(None, {'lr': test.numpy()})[0], net(test).numpy()) >= 40

    import cv2
    folder = tmp_path / 'lr'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), (test[0].numpy().transpose(1, 2, 0)[:, :, ::-1] * 255).astype(np.uint8))
    proc = run_cli(['export', '-opt', opt_path, '--calibration', str(folder), '--out', 'c.onnx'], cwd=tmp_path)
    assert 'ranges from 1 calibration images' in proc.stdout, proc.stdout
    proc = run_cli(['export', '-opt', opt_path, '--mode', 'exact', '--out', 'e.onnx'], cwd=tmp_path)
    assert 'onnx model (exact)' in proc.stdout and 'integer kernels' not in proc.stdout, proc.stdout
    proc = run_cli(['export', '-opt', opt_path, '--calibration', str(tmp_path / 'nowhere'), '--out', 'x.onnx'],
                   cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'no such folder' in proc.stderr, proc.stderr
    assert not (tmp_path / 'x.onnx').exists()


def test_export_explains_a_fidelity_under_its_bar():
    from odm_basicsr.tools.export_cli import fidelity_note
    assert fidelity_note(40.0, True) is None and fidelity_note(60.0, False) is None
    assert 'integer_zero_point: true' in fidelity_note(39.9, True)
    assert 'rounding tie' in fidelity_note(59.9, False) and 'rounding tie' in fidelity_note(30.0, False)
    assert fidelity_note(60.0, False, 'openvino') is None and fidelity_note(40.0, True, 'openvino') is None
    assert 'run the file with onnxruntime.' in fidelity_note(36.1, False, 'openvino')
    assert 'integer_zero_point: true' in fidelity_note(30.0, True, 'openvino')


def test_requantization_grid_covers_the_observed_range():
    scale, zero_point = integer_kernel.requantization_grid(-0.5, 2.0)
    assert 0 <= zero_point <= 255
    assert (0 - zero_point) * float(scale) == pytest.approx(-0.5, abs=float(scale))
    assert (255 - zero_point) * float(scale) == pytest.approx(2.0, abs=float(scale))
    scale, zero_point = integer_kernel.requantization_grid(0.2, 3.0)  # the grid always holds 0 (ReLU outputs)
    assert zero_point == 0 and math.isclose(float(scale), 3.0 / 255, rel_tol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['v2', 'v1'])
def test_trained_with_integer_zero_points_through_basicsr_exports_exactly(tiny_data, tmp_path, method):
    """basicsr train (integer_zero_point: true, BasicSR's train_pipeline, 4 iterations from a calibrated start): ODM
    v2 at w4a4, or ODM v1 at w2a2 with shift offsets (whose layers pad before the offset); then basicsr export
    --format onnx: onnxruntime's integer graph computes what was trained."""
    from conftest import base_options, make_test_options, read_log
    network = dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=2, w_bit=4, a_bit=4,
                   weight_clip='wcc', integer_zero_point=True)
    odm_opt = {'type': 'ODMLoss', 'regularizer': 'mismatch', 'loss_weight': 1e-5 / 255}
    calibration = {'num_batches': 2}
    if method == 'v1':
        network.update(w_bit=2, a_bit=2, weight_clip='percentile', offsets='shift')
        odm_opt = {'type': 'ODMLoss', 'regularizer': 'variance', 'stat': 'var', 'loss_weight': 1e-6}
        calibration['offset_top_k'] = 0.5
    opt = base_options(tiny_data, 'izp', network, odm_opt=odm_opt)
    opt['train']['calibration'] = calibration
    run_cli(['train', '-opt', write_options(tmp_path / 'train.yml', opt)], tmp_path)
    exp = tmp_path / 'experiments' / 'izp'
    assert 'Calibrating' in read_log(exp)
    ckpt = exp / 'models' / 'net_g_latest.pth'
    state = torch.load(ckpt, weights_only=True)['params']
    assert float(state['body.0.conv2.output_quantizer.active']) == 1.0
    if method == 'v1':
        assert sum(float(v) for k, v in state.items() if k.endswith('offset.shift_on')) == 2
    else:
        assert float(state['body.0.conv1.output_quantizer.active']) == 0.0
    test_file = write_options(tmp_path / 'test.yml', make_test_options(opt, 'izp_test', ckpt))
    proc = run_cli(['export', '-opt', test_file, '--out', 'net.onnx', '--size', '24x24'], tmp_path)
    assert 'all activation grids have integer zero points' in proc.stdout and '0 quantized layers left in float' in proc.stdout, proc.stdout
    net = build_network(dict(network)).eval()
    net.load_state_dict(state)
    import cv2
    lr = torch.from_numpy(cv2.imread(str(next((tiny_data / 'val' / 'LR').glob('*.png'))))[:, :, ::-1].copy())
    lr = lr.permute(2, 0, 1).float().div(255)[None]
    session = ort.InferenceSession(str(tmp_path / 'net.onnx'), providers=['CPUExecutionProvider'])
    if method == 'v2':
        assert net.body[0].conv1.output_quantizer.consumer is net.body[0].conv2  # the chain, from the checkpoint
    with torch.no_grad():
        assert psnr(session.run(None, {'lr': lr.numpy()})[0], net(lr).numpy()) >= 90


def test_node_summary_separates_integer_kernels_boundaries_and_float_ops():
    from odm_basicsr.quant.export_integer import node_summary
    line = node_summary({'QLinearConv': 16, 'DequantizeLinear': 3, 'QuantizeLinear': 2, 'Conv': 3, 'DepthToSpace': 2,
                         'QLinearAdd': 1, 'Add': 1})
    assert line == ('integer: 16 QLinearConv, 1 QLinearAdd; quantize / dequantize: 3 DequantizeLinear, 2 QuantizeLinear; '
                    'float: 3 Conv, 2 DepthToSpace, 1 Add')
    line = node_summary({'QLinearConv': 4, 'QuantizeLinear': 4, 'Clip': 5, 'Add': 1}, {'Clip': 4})
    assert line == ('integer: 4 QLinearConv, 4 Clip on uint8; quantize / dequantize: 4 QuantizeLinear; '
                    'float: 1 Add, 1 Clip')


def test_residual_scaling_stays_a_float_mul_and_the_rrdbnet_export_is_bit_exact(photos, tmp_path):
    """RRDBNet scales each dense block's output by 0.2 before its residual add. Folded into the requantization's
    DequantizeLinear scale, (c - zp)·(s·0.2) differs from the network's ((c - zp)·s)·0.2 in the last bit, which
    flips codes of the next grid; over the 23 blocks of the RealSR RRDBNet (w8a8, integer zero points) parity fell to
    38.6-41.0 dB on three photos. The graph
    keeps the Mul (one per dense block, one per RRDB), and onnxruntime then computes the network built with
    integer zero points bit for bit."""
    import onnx
    batches, test = photos
    case = dict(MORE_CASES['rrdb_w8a8_channel'], integer_zero_point=True, scope='all')  # every conv quantized
    case['arch'] = dict(case['arch'], num_block=2)
    torch.manual_seed(0)
    net = build_network(case).eval()
    calibrate(net, batches, progress=False)
    info, kernels, got, want = export_and_run(net, batches, test, tmp_path)
    graph = onnx.load(str(tmp_path / 'net.onnx')).graph
    values = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == 'Constant'}
    factors = []
    for node in graph.node:
        if node.op_type == 'Mul':
            tensor = values.get(node.input[1]) or constants.get(node.input[1])
            factors.append(float(onnx.numpy_helper.to_array(tensor)))
    assert factors == [pytest.approx(0.2)] * (2 * 3 + 2), factors  # 3 dense blocks + 1 RRDB, per block
    assert kernels['ops'].get('Mul') == len(factors), kernels['ops']
    assert np.array_equal(got, want), float(np.abs(got - want).max())


def test_operator_time_shares_sum_to_one_and_count_the_optimized_nodes(photos, tmp_path):
    batches, test = photos
    net = build('edsr_w4a4_offsets', batches)
    path = str(tmp_path / 'net.onnx')
    qint.export_onnx_integer(net, test, path, batches)
    shares = qint.operator_time_shares(path, {'lr': test.numpy()}, runs=2)
    import onnx
    options = ort.SessionOptions()  # the graph as a default session runs it: all optimizations, layout included
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / 'optimized.onnx')
    ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    ops = {}
    for node in onnx.load(str(tmp_path / 'optimized.onnx')).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    counted = {}
    for op, _, _, nodes in shares:  # every node of the deployed graph, once per run
        counted[op.replace(' on uint8', '')] = counted.get(op.replace(' on uint8', ''), 0) + nodes
    assert counted == ops, (counted, ops)
    assert math.isclose(sum(share for _, share, _, _ in shares), 1.0, rel_tol=1e-9)
    assert all(ms >= 0 for _, _, ms, _ in shares) and [s[1] for s in shares] == sorted((s[1] for s in shares),
                                                                                        reverse=True)
    lines = qint.time_share_lines(shares)
    floats = {op for op, _, _, _ in shares if not op.startswith(qint.INTEGER_OPS) and op not in qint.BOUNDARY_OPS
              and not op.endswith('on uint8')}
    assert floats and lines[-1].startswith('in float'), lines
    assert set(lines[-1].split(': ', 2)[2].replace(',', '').split()[::2]) == floats, (lines[-1], floats)


def test_profile_needs_an_onnx_graph(capsys):
    from odm_basicsr.tools import export_cli
    with pytest.raises(SystemExit) as stop:
        export_cli.main(['-opt', 'whatever.yml', '--format', 'packed', '--profile'])
    assert stop.value.code == 2 and '--profile times an ONNX graph' in capsys.readouterr().err

"""ODMQuant on any BasicSR arch, per-channel weights, calibration methods, the uncalibrated-forward error, and
``basicsr calibrate`` / test / train / cost / export with ODMQuant for every listed arch."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import)
import glob
import json
import math
import os
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn
import yaml
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY

from conftest import (REPO, base_options, cost_and_export_in_process, make_test_options, read_log, run_cli,
                      save_basicsr_checkpoint, write_options)
from odm_basicsr.options_check import OptionError, check_options
from odm_basicsr.quant import (QuantConfig, UncalibratedQuantizerError, WeightQuantizer, calibrate, cost_report, fake_quantize,
                               is_quantizer_param, quantize_modules, quantized_layers, round_ste)
from odm_basicsr.quant.calibrate import mse_range, quantization_error

# small configs of the archs ODMQuant must cover, with the number of layers of their default (body) scope
ARCHS = {
    'RRDBNet': (dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, num_grow_ch=4, scale=2), 30),
    'SRVGGNetCompact': (dict(type='SRVGGNetCompact_basicsr', num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3,
                             upscale=2), 3),
    'RCAN': (dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=8, num_group=2, num_block=2, squeeze_factor=4,
                  upscale=2), 8),
    'EDSR': (dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2), 4),
    'MSRResNet': (dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2), 4),
}


def build_fp(arch_opt):
    opt = dict(arch_opt)
    return ARCH_REGISTRY.get(opt.pop('type'))(**opt)


def odm_quant(arch_opt, **kwargs):
    return ARCH_REGISTRY.get('ODMQuant')(arch=arch_opt, **kwargs)


@pytest.mark.parametrize('name', list(ARCHS))
def test_odmquant_keeps_the_arch_keys_and_loads_its_fp_checkpoint_strict(name, tmp_path):
    arch_opt, body_layers = ARCHS[name]
    torch.manual_seed(0)
    fp = build_fp(arch_opt)
    net = odm_quant(arch_opt, w_bit=8, a_bit=8)
    assert isinstance(net, type(fp)) and type(net).__name__ == f'ODMQuant_{type(fp).__name__}'
    assert len(net.quantized_names) == body_layers
    extra = set(net.state_dict()) - set(fp.state_dict())
    assert set(fp.state_dict()) <= set(net.state_dict()) and extra and all(is_quantizer_param(k) for k in extra)
    wide = odm_quant(arch_opt, w_bit=8, a_bit=8, scope='all')
    assert len(wide.quantized_names) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in fp.modules())
    # through BasicSR's model, strict, as a user's option file would load a model-zoo checkpoint
    path = save_basicsr_checkpoint(fp, tmp_path / 'fp.pth')
    model = build_model({'name': 'x', 'model_type': 'SRModel', 'is_train': False, 'dist': False, 'rank': 0,
                         'world_size': 1, 'num_gpu': 0, 'scale': 2, 'val': {},
                         'network_g': {'type': 'ODMQuant', 'arch': dict(arch_opt), 'w_bit': 8, 'a_bit': 8},
                         'path': {'pretrain_network_g': path, 'strict_load_g': True, 'param_key_g': 'params'}})
    for key, tensor in fp.state_dict().items():
        assert torch.equal(model.net_g.state_dict()[key], tensor), key
    # the FP function is unchanged with quantizers off; calibrated w8a8 stays close to it
    x = torch.rand(2, 3, 12, 12)
    calibrate(model.net_g, [x], progress=False)
    from odm_basicsr.quant import set_quantization
    with torch.no_grad():
        reference = fp.eval()(x)
        set_quantization(model.net_g, False)
        assert torch.allclose(model.net_g(x), reference, atol=1e-5)
        set_quantization(model.net_g, True)
        error = float(((model.net_g(x) - reference)**2).mean())
    assert 10 * math.log10(reference.abs().max().item()**2 / max(error, 1e-20)) > 30


def test_odmquant_refuses_quantized_or_unknown_archs_and_unmatched_scopes():
    with pytest.raises(ValueError, match='already quantized'):
        odm_quant(dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3))
    with pytest.raises(ValueError, match='no default body scope'):
        ARCH_REGISTRY.get('ODMQuant')(arch=dict(type='ECBSR', num_in_ch=3, num_out_ch=3, num_block=1, num_channel=4,
                                                with_idt=False, act_type='prelu', scale=2), scope='body')
    with pytest.raises(ValueError, match=r"matched no conv/linear layer.*conv_first"):
        odm_quant(ARCHS['EDSR'][0], scope=['body.*.conv9'])


def test_uncalibrated_quantized_forward_is_an_error_that_says_what_to_do():
    net = odm_quant(ARCHS['EDSR'][0], w_bit=4, a_bit=4)
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(UncalibratedQuantizerError, match=r"layer 'body\.0\.conv1'.*basicsr calibrate"):
        net(x)
    calibrate(net, [x], progress=False)
    net(x)
    fresh = odm_quant(ARCHS['EDSR'][0], w_bit=4, a_bit=4)
    fresh.load_state_dict(net.state_dict())  # quantizer state from a checkpoint counts as calibrated
    assert torch.equal(fresh(x), net(x))


def test_per_channel_weights_have_their_own_grid_and_gamma_gradient():
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3) * torch.tensor([0.1, 1.0, 5.0, 20.0]).view(4, 1, 1, 1)
    quantizer = WeightQuantizer(3, 'max', 'channel')
    q = quantizer(weight)
    for c in range(4):
        levels = torch.unique(q[c])
        assert len(levels) <= 8
        assert torch.isclose(levels.abs().max(), weight[c].abs().max())  # each channel's own u_w = max|W_c|
        step = 2 * weight[c].abs().max() / 7
        assert torch.allclose((levels + weight[c].abs().max()) / step, torch.round((levels + weight[c].abs().max())
                                                                                   / step), atol=1e-4)
    per_layer = WeightQuantizer(3, 'max', 'layer')(weight)
    assert len(torch.unique(per_layer[0])) <= 2  # the small channel collapses on the layer's grid
    # WCC gamma (one scalar) gets the composite straight-through gradient summed over channels
    wcc = WeightQuantizer(2, 'wcc', 'channel')
    with torch.no_grad():
        wcc.gamma.fill_(0.8)
    grad_out = torch.randn_like(weight)
    (wcc(weight) * grad_out).sum().backward()
    gamma = torch.tensor(0.8, requires_grad=True)
    upper = wcc.clip_value(weight).detach() / 0.8 * gamma
    lower = -upper
    step = (upper - lower) / 3
    composite = round_ste((torch.minimum(torch.maximum(weight, lower), upper) - lower) / step) * step + lower
    (composite * grad_out).sum().backward()
    assert torch.allclose(wcc.gamma.grad, gamma.grad, rtol=1e-4, atol=1e-5)


def test_fake_quantize_range_gradients_sum_over_the_elements_each_bound_covers():
    x = torch.randn(3, 5, requires_grad=True)
    lower = torch.tensor([[-0.5], [-1.0], [-0.2]], requires_grad=True)
    upper = torch.tensor([[0.5], [0.3], [1.5]], requires_grad=True)
    fake_quantize(x, lower, upper, 2).sum().backward()
    l2, u2 = lower.detach().clone().requires_grad_(), upper.detach().clone().requires_grad_()
    step = (u2 - l2) / 3
    (round_ste((torch.minimum(torch.maximum(x.detach(), l2), u2) - l2) / step) * step + l2).sum().backward()
    assert lower.grad.shape == (3, 1) and torch.allclose(lower.grad, l2.grad, atol=1e-5)
    assert torch.allclose(upper.grad, u2.grad, atol=1e-5)


def test_cost_report_counts_one_weight_clip_per_output_channel():
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1))
    quantize_modules(net, ['0'], QuantConfig(w_bit=4, a_bit=4, weight_granularity='channel'))
    row = cost_report(net, (3, 8, 8))['layers'][0]  # no calibration needed for the cost
    assert row['storage_bits'] == 6 * 3 * 9 * 4 + 6 * 32 + (2 + 6) * 32


def test_mse_range_keeps_zero_for_nonnegative_inputs_and_beats_the_simple_rules():
    torch.manual_seed(0)
    post_relu = torch.relu(torch.randn(20000))**3
    low, high = mse_range(post_relu, torch.ones_like(post_relu), 4)
    assert low == 0.0 and 0 < high < post_relu.max()
    signed = torch.distributions.StudentT(3.0).sample((20000, ))
    ones = torch.ones_like(signed)
    for bits in (2, 4, 8):
        low, high = mse_range(signed, ones, bits)
        found = quantization_error(signed, ones, torch.tensor([low]), torch.tensor([high]), bits).item()
        minmax = quantization_error(signed, ones, signed.min().view(1), signed.max().view(1), bits).item()
        # a dense brute-force grid of symmetric and asymmetric ranges
        grid = torch.linspace(0.02, 1, 60)
        lows, highs = torch.meshgrid(signed.min() * grid, signed.max() * grid, indexing='ij')
        brute = quantization_error(signed, ones, lows.flatten(), highs.flatten(), bits).min().item()
        assert found <= minmax and found <= brute * 1.02, (bits, found, minmax, brute)


def test_auto_calibration_keeps_the_method_with_the_smallest_output_error():
    torch.manual_seed(0)
    arch_opt = ARCHS['RRDBNet'][0]
    fp = build_fp(arch_opt).eval()
    batches = [torch.rand(2, 3, 12, 12) for _ in range(2)]
    net = odm_quant(arch_opt, w_bit=4, a_bit=4)
    net.load_state_dict(fp.state_dict())
    report = calibrate(net, batches, progress=False, method='auto')
    assert set(report['candidates']) == {'mse', 'percentile', 'minmax'}
    assert report['chosen'] == min(report['candidates'], key=report['candidates'].get)
    # every candidate's ranges are those of calibrating with that method alone
    for method in report['candidates']:
        alone = odm_quant(arch_opt, w_bit=4, a_bit=4)
        alone.load_state_dict(fp.state_dict())
        ranges = calibrate(alone, batches, progress=False, method=method)['ranges']
        assert set(ranges) == set(report['candidate_ranges'][method])
        for name, (low, high) in ranges.items():
            assert report['candidate_ranges'][method][name] == pytest.approx((low, high), rel=1e-6), (method, name)
    # the per-layer refinement: each layer holds its method's range, and the network's output error is the one
    # reported, no larger than the best whole-network candidate's
    layers = dict(quantized_layers(net))
    assert set(report['per_layer']) == set(layers) == set(report['ranges'])
    for name, method in report['per_layer'].items():
        assert report['ranges'][name] == report['candidate_ranges'][method][name]
        assert (float(layers[name].act_quantizer.lower), float(layers[name].act_quantizer.upper)) == pytest.approx(
            report['ranges'][name], rel=1e-6, abs=1e-7)
    with torch.no_grad():
        error = sum(float(((net(b) - fp(b))**2).mean()) for b in batches) / 2
    assert error == pytest.approx(report['refined_error'], rel=1e-4)
    assert report['refined_error'] <= report['candidates'][report['chosen']]


def test_a_per_layer_switch_needs_a_drop_of_more_than_one_standard_error():
    from odm_basicsr.quant.calibrate import significantly_lower
    current = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert significantly_lower(current - 0.1, current)  # lower on every batch: no spread
    # lower on average (-0.05) but scattered: standard error 0.46 / 2 = 0.23 > 0.05
    assert not significantly_lower(torch.tensor([0.5, 1.4, 0.6, 1.3], dtype=torch.float64), current)
    # lower on average by 0.25, standard error 0.058 / 2 = 0.03
    assert significantly_lower(torch.tensor([0.7, 0.8, 0.7, 0.8], dtype=torch.float64), current)
    assert not significantly_lower(current, current)
    assert significantly_lower(torch.tensor([0.9]), torch.tensor([1.0]))  # one batch: lower at all


def test_auto_calibration_refines_per_layer_where_one_layer_needs_another_method():
    """Two 1x1 convs on separate inputs, summed, at 4 bits; each passes on one input channel (weight 1) and ignores
    the other (weight 0). The first passes Gaussian values and ignores a channel with one huge outlier: min/max wastes
    its grid on the outlier, P1/P99 and MSE do not. The second passes rare +20 spikes and ignores a dense uniform
    channel: P1/P99 and the layer's own MSE clip the spikes to serve the dense channel, min/max keeps them. No
    whole-network method suits both layers; the per-layer sweep must give them different methods and a far lower
    output error than every candidate's."""
    from odm_basicsr.quant import QuantConv2d
    gen = torch.Generator().manual_seed(0)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = QuantConv2d(2, 1, 1, w_bit=8, a_bit=4)
            self.second = QuantConv2d(2, 1, 1, w_bit=8, a_bit=4)

        def forward(self, x):
            return self.first(x[:, :2]) + self.second(x[:, 2:])

    net = Two()
    with torch.no_grad():
        for conv in (net.first, net.second):
            conv.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
            conv.bias.zero_()
    batches = []
    for _ in range(3):
        x = torch.zeros(4, 4, 32, 32)
        x[:, 0] = torch.randn(4, 32, 32, generator=gen)
        spikes = torch.zeros(4 * 32 * 32)
        spikes[torch.randperm(spikes.numel(), generator=gen)[:2]] = 20.0  # 0.05% of the channel
        x[:, 2] = spikes.view(4, 32, 32)
        x[:, 3] = torch.rand(4, 32, 32, generator=gen) * 6 - 3
        batches.append(x)
    batches[0][0, 1, 0, 0] = 200.0
    report = calibrate(net, batches, progress=False, method='auto')
    assert report['per_layer']['second'] == 'minmax' and report['per_layer']['first'] != 'minmax', report
    assert report['refined_error'] < 0.2 * min(report['candidates'].values()), report['candidates']


def test_option_checks_for_odmquant_name_the_key():
    def errors(network):
        with pytest.raises(OptionError) as info:
            check_options({'network_g': network, 'model_type': 'SRModel'}, is_train=False)
        return str(info.value)

    edsr = ARCHS['EDSR'][0]
    assert "network_g.arch.num_blocks: unknown key (did you mean 'num_block'?)" in errors(
        {'type': 'ODMQuant', 'arch': dict(edsr, num_blocks=2)})
    assert "network_g.arch.type: 'EDSRR' is not a registered arch (did you mean 'EDSR'?)" in errors(
        {'type': 'ODMQuant', 'arch': dict(edsr, type='EDSRR')})
    text = errors({'type': 'ODMQuant', 'arch': edsr, 'scope': ['body.*.conv3']})
    assert 'network_g.scope' in text and 'body.0.conv1' in text and 'conv_last' in text
    assert 'network_g.weight_granularity' in errors({'type': 'ODMQuant', 'arch': edsr, 'weight_granularity': 'row'})
    check_options({'network_g': {'type': 'ODMQuant', 'arch': edsr, 'weight_granularity': 'channel'},
                   'model_type': 'SRModel'}, is_train=False)


class _EvalBypass(nn.Module):
    """A toy arch whose eval forward computes ``second`` from its weight with F.conv2d, as ECBSR's re-parameterized
    eval forward does: the module itself runs in training only."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.first(x))
        if self.training:
            return self.second(x)
        return nn.functional.conv2d(x, self.second.weight, self.second.bias, padding=1)


def test_quantized_layers_that_the_eval_forward_never_runs_are_an_error():
    from odm_basicsr.quant import UnusedQuantizedLayerError, set_quantization, unused_in_eval
    net = _EvalBypass()
    quantize_modules(net, ['first', 'second'], QuantConfig(w_bit=4, a_bit=4))
    net.train()
    assert unused_in_eval(net, torch.rand(1, 3, 8, 8)) == ['second']
    # mode and quantizer switches are restored
    assert net.training and all(layer.act_quantizer.enabled for _, layer in quantized_layers(net))
    set_quantization(net, False)
    assert unused_in_eval(net, torch.rand(1, 3, 8, 8, device='meta')) == ['second']
    assert not any(layer.act_quantizer.enabled for _, layer in quantized_layers(net))
    with pytest.raises(UnusedQuantizedLayerError, match="never runs the quantized layer.s. second: ") as info:
        calibrate(net, [torch.rand(2, 3, 8, 8)], progress=False)
    assert info.value.names == ['second']
    net = _EvalBypass()  # quantizing only the layers that it runs is fine
    quantize_modules(net, ['first'], QuantConfig(w_bit=4, a_bit=4))
    calibrate(net, [torch.rand(2, 3, 8, 8)], progress=False)


def test_option_check_refuses_an_arch_that_bypasses_its_quantized_layers_in_eval():
    """BasicSR's ECBSR convolves with re-parameterized weights in eval mode, so ODMQuant's quantized conv3x3 never
    run in validation, test or export: an option error before anything is written, not FP numbers labelled as
    quantized. RIDNet (whose constructor cannot run on the meta device) builds and passes."""
    ecbsr = dict(type='ECBSR', num_in_ch=3, num_out_ch=3, num_block=2, num_channel=8, with_idt=False,
                 act_type='prelu', scale=2)
    with pytest.raises(OptionError, match=r'the eval forward of ECBSR never runs the quantized layer\(s\) '
                                          r'backbone.0.conv3x3, .*re-parameterized'):
        check_options({'network_g': {'type': 'ODMQuant', 'arch': ecbsr}, 'model_type': 'SRModel'}, is_train=False)
    ridnet = dict(type='RIDNet', in_channels=3, mid_channels=16, out_channels=3)
    check_options({'network_g': {'type': 'ODMQuant', 'arch': ridnet}, 'model_type': 'SRModel'}, is_train=False)


def test_option_check_refuses_a_network_that_quantizes_nothing_and_checks_outer_bit_without_scale():
    def errors(network):
        with pytest.raises(OptionError) as info:
            check_options({'network_g': network, 'model_type': 'SRModel'}, is_train=False)  # no top-level scale
        return str(info.value)

    edsr = ARCHS['EDSR'][0]
    assert 'network_g: quantizes no layer (scope [] matches' in errors({'type': 'ODMQuant', 'arch': edsr, 'scope': []})
    srvgg = dict(ARCHS['SRVGGNetCompact'][0], num_conv=0)  # no middle conv: its body scope is empty
    assert "quantizes no layer (scope 'body'" in errors({'type': 'ODMQuant', 'arch': srvgg})
    assert 'network_g.outer_bit: has no effect with scope body' in errors(
        {'type': 'ODMQuant', 'arch': edsr, 'outer_bit': 8})


def test_odmquant_swinir_exports_a_fixed_size_graph(tmp_path):
    """BasicSR's SwinIR computes its shifted-window masks for img_size, and a graph traced at that size only runs
    there (other sizes failed in onnxruntime's Reshape, or ran with the wrong mask): ODMQuant(SwinIR) keeps the
    traced size, as ODMSwinIR does, so that basicsr export says so and basicsr infer --onnx tiles to it."""
    onnx = pytest.importorskip('onnx')
    from odm_basicsr.quant import export as qexport
    swinir = dict(type='SwinIR', upscale=2, in_chans=3, img_size=16, window_size=4, embed_dim=12, depths=[2],
                  num_heads=[2], mlp_ratio=2, upsampler='pixelshuffledirect')
    net = odm_quant(swinir, w_bit=8, a_bit=8).eval()
    assert net.onnx_dynamic_size is False and odm_quant(ARCHS['EDSR'][0]).onnx_dynamic_size is True
    calibrate(net, [torch.rand(2, 3, 16, 16)], progress=False)
    qexport.export_onnx(net, torch.rand(1, 3, 16, 16), str(tmp_path / 'net.onnx'))
    dims = onnx.load(str(tmp_path / 'net.onnx')).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[2:]] == [16, 16]


# -- through the command line --------------------------------------------------------------------------------------
def quant_options(tiny_data, name, arch_opt, **train_extra):
    network = {'type': 'ODMQuant', 'arch': dict(arch_opt), 'w_bit': 8, 'a_bit': 8, 'weight_granularity': 'channel'}
    opt = base_options(tiny_data, name, network, total_iter=2, **train_extra)
    opt['train']['calibration'] = {'num_batches': 2, 'refine': {'iters': 5}}
    return opt


@pytest.mark.slow
@pytest.mark.parametrize('name', list(ARCHS))
def test_calibrate_then_test_cost_and_export_through_the_cli(name, tiny_data, tmp_path):
    arch_opt, _ = ARCHS[name]
    torch.manual_seed(0)
    fp_path = save_basicsr_checkpoint(build_fp(arch_opt), tmp_path / 'fp.pth')
    opt = quant_options(tiny_data, f'ptq_{name}', arch_opt)
    opt['path']['pretrain_network_g'] = fp_path
    train_file = write_options(tmp_path / 'train.yml', opt)
    out = run_cli(['calibrate', '-opt', train_file], tmp_path).stdout
    calibrated = tmp_path / 'experiments' / f'ptq_{name}' / 'models' / 'net_g_calibrated.pth'
    assert calibrated.is_file() and 'fidelity to FP' in out
    summary = json.loads((calibrated.parent / 'calibration.json').read_text())
    assert summary['validation']['fidelity_db'] > 25 and summary['method'] == 'auto'
    # auto's per-layer choice: one rule per layer in the summary, and the count the command printed
    assert set(summary['per_layer']) == set(summary['ranges'])
    assert set(summary['per_layer'].values()) <= {'mse', 'percentile', 'minmax'}
    switched = sum(m != summary['chosen'] for m in summary['per_layer'].values())
    assert f'judge): {switched} of {len(summary["per_layer"])} layers' in out, out
    # refinement ran (5 iterations, as the file says) and the report gives the held-out fidelity before and after
    assert summary['refine']['iters'] == 5 and 'refine: 5 iterations' in out, out
    assert '| quantized (calibrated) |' in out and '| quantized (refined) |' in out, out
    assert summary['validation_before_refine']['fidelity_db'] > 25
    # the export check: basicsr export's default integer ONNX file on the validation images, as one more row, its
    # parity per image, and (free grids) the key that makes the export exact
    assert '| integer ONNX (basicsr export) |' in out and 'integer ONNX vs this network' in out, out
    validation = summary['validation']
    assert len(validation['onnx_parity_db']) == validation['images'] and min(validation['onnx_parity_db']) > 20
    assert abs(validation['onnx_fidelity_db'] - validation['fidelity_db']) < 10
    assert 'calibrate with network_g.integer_zero_point: true' in out, out
    saved = torch.load(calibrated, weights_only=True)
    state = saved['params']
    assert all(bool(v) for k, v in state.items() if k.endswith('act_quantizer.calibrated'))
    # the quantization record beside params: w8a8, channel weights, on every quantized layer
    assert set(saved['quantization']) == {n for n, _ in quantized_layers(odm_quant(arch_opt, scope=None))}
    assert set(saved['quantization'].values()) == {'w8 a8 max channel'}
    # basicsr test accepts the calibrated checkpoint, and refuses the FP one before writing anything
    test_file = write_options(tmp_path / 'test.yml', make_test_options(opt, f'ptq_{name}_test', calibrated))
    run_cli(['test', '-opt', test_file], tmp_path)
    assert '# psnr:' in read_log(tmp_path / 'results' / f'ptq_{name}_test', prefix='test_')
    if name == next(iter(ARCHS)):  # the refusal does not depend on the arch: one process for it
        refused = write_options(tmp_path / 'test_fp.yml', make_test_options(opt, f'ptq_{name}_fp', fp_path))
        proc = run_cli(['test', '-opt', refused], tmp_path, check=False)
        assert proc.returncode != 0 and 'basicsr calibrate' in proc.stderr + proc.stdout
        assert not (tmp_path / 'results' / f'ptq_{name}_fp').exists()
    # cost and export, in process
    cost_and_export_in_process(test_file, tmp_path)
    cost = json.loads((tmp_path / 'cost.json').read_text())
    assert cost['total']['bitops'] < cost['total']['fp_bitops']
    assert (tmp_path / 'net.onnx').is_file() and (tmp_path / 'net.packed.pth').is_file()


@pytest.mark.slow
@pytest.mark.parametrize('name', list(ARCHS))
def test_odm_v2_training_with_odmquant_through_the_cli(name, tiny_data, tmp_path):
    arch_opt, _ = ARCHS[name]
    torch.manual_seed(0)
    opt = quant_options(tiny_data, f'train_{name}', arch_opt, cooperation='cosine',
                        odm_opt={'type': 'ODMLoss', 'regularizer': 'mismatch', 'loss_weight': 1e-4})
    opt['network_g']['weight_clip'] = 'wcc'
    opt['path']['pretrain_network_g'] = save_basicsr_checkpoint(build_fp(arch_opt), tmp_path / 'fp.pth')
    run_cli(['train', '-opt', write_options(tmp_path / 'train.yml', opt)], tmp_path)
    exp = tmp_path / 'experiments' / f'train_{name}'
    log = read_log(exp)
    assert 'Calibrating' in log and 'grad_cos' in log and '# psnr:' in log
    assert 'Refined the quantizers from the FP output: 5 iterations' in log
    assert (exp / 'models' / 'net_g_2.pth').is_file()


def test_sequential_calibration_measures_with_the_earlier_layers_quantized():
    torch.manual_seed(0)
    arch_opt = ARCHS['EDSR'][0]
    fp_state = build_fp(arch_opt).state_dict()
    batches = [torch.rand(2, 3, 12, 12)]
    ranges = {}
    for sequential in (False, True):
        net = odm_quant(arch_opt, w_bit=2, a_bit=2)
        net.load_state_dict(fp_state)
        ranges[sequential] = calibrate(net, batches, progress=False, method='minmax', sequential=sequential)['ranges']
    first, *rest = net.quantized_names
    assert ranges[True][first] == pytest.approx(ranges[False][first])  # nothing quantized before the first layer
    assert any(ranges[True][n] != pytest.approx(ranges[False][n]) for n in rest)
    # the second pass sees what the 2-bit predecessors produce: the minmax range of layer 2 is that input's range
    observed = {}
    net.body[0].conv2.register_forward_hook(lambda m, i, o: observed.setdefault('x', i[0].detach()))
    with torch.no_grad():
        net(batches[0])
    assert ranges[True][rest[0]] == pytest.approx((observed['x'].min().item(), observed['x'].max().item()), rel=1e-5)


PTQ_FILES = sorted(glob.glob(osp.join(REPO, 'options', 'ptq', '*.yml')))


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    """A working directory with datasets/demo prepared and the shipped checkpoints reachable."""
    from odm_basicsr.data.demo import prepare_demo
    cwd = tmp_path_factory.mktemp('ptq_demo')
    prepare_demo(str(cwd / 'datasets' / 'demo'), log=lambda *a: None)
    os.symlink(osp.join(REPO, 'odm_basicsr'), cwd / 'odm_basicsr')
    return cwd


@pytest.mark.parametrize('path', PTQ_FILES, ids=osp.basename)
def test_ptq_and_fp_recipe_files_pass_the_checks_and_load_their_checkpoint(path, demo_root, monkeypatch):
    with open(path) as f:
        opt = yaml.safe_load(f)
    monkeypatch.chdir(demo_root)
    assert check_options(opt, is_train=True) == []
    pretrain = opt['path']['pretrain_network_g']
    if pretrain is None:  # an FP recipe: its network is the one a shipped checkpoint holds
        name = osp.basename(path).replace('train_FP_', '').replace('_demo_x4.yml', '')
        shipped = glob.glob(osp.join(REPO, 'odm_basicsr', 'pretrained', f'{name}_demo_x4_*_FP.pth'))
        if not shipped:  # a recipe whose result did not meet the bar says so, and its network builds
            with open(path) as f:
                assert 'NOT SHIPPED' in f.read()
            build_fp(opt['network_g'])
            return
        pretrain = shipped[0]
    state = torch.load(pretrain, map_location='cpu', weights_only=True)['params']
    net = build_fp(opt['network_g']) if opt['network_g']['type'] != 'ODMQuant' else ARCH_REGISTRY.get('ODMQuant')(
        **{k: v for k, v in opt['network_g'].items() if k != 'type'})
    net.load_state_dict(state, strict=True)


@pytest.mark.slow
def test_shipped_ptq_recipe_exports_an_integer_graph_that_computes_the_calibrated_network(demo_root, tmp_path):
    """basicsr calibrate with the shipped EDSR PTQ file (2 calibration batches), then basicsr export: every quantized
    layer is an integer kernel, every grid has an integer zero point, and, given the same FP head output, onnxruntime
    computes PyTorch's network on every calibration image (>= 120 dB). Without the shared head a float tie in the head
    conv can flip one code (docs/EXPORT_APPENDIX.md); with the paper's free grids this file gave a min of 34.2 dB."""
    import onnx
    import onnxruntime as ort
    from odm_basicsr.tools.cli_io import calibration_images, load_network
    recipe = osp.join(REPO, 'options', 'ptq', 'ptq_EDSR_demo_x4_w4a4.yml')
    with open(recipe) as f:
        opt = yaml.safe_load(f)
    calibrated = tmp_path / 'net_g_calibrated.pth'
    out = run_cli(['calibrate', '-opt', recipe, '--out', str(calibrated), '--force_yml',
                   'train:calibration:num_batches=2', 'train:calibration:refine=false'], cwd=demo_root).stdout
    # calibrate's export check on the held-out photos: integer zero points, so no advice to switch grids
    assert 'integer ONNX vs this network' in out and 'integer_zero_point: true' not in out, out
    summary = json.loads((tmp_path / 'calibration.json').read_text())
    assert min(summary['validation']['onnx_parity_db']) > 40
    test_opt = make_test_options(opt, 'export_EDSR', calibrated)
    test_file = write_options(tmp_path / 'test.yml', test_opt)
    onnx_path = tmp_path / 'net.onnx'
    out = run_cli(['export', '-opt', test_file, '--out', str(onnx_path)], cwd=demo_root).stdout
    assert 'runs 16 integer kernels' in out and '0 quantized layers left in float' in out, out
    assert 'all activation grids have integer zero points' in out, out
    lowest = float(re.search(r'calibration images: PSNR mean [\d.]+ dB, min ([\d.]+) dB', out).group(1))
    assert ('note: under 60 dB' in out) == (lowest < 60), out  # the tie is explained where one shows

    net = load_network(test_opt, test_file)
    model = onnx.load(str(onnx_path))  # the FP head conv's output as a second graph output
    head = next(node for node in model.graph.node if node.op_type == 'Conv').output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(head, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    for lr in calibration_images(None, 3, 4):
        got, head_out = session.run(None, {'lr': lr.numpy()})
        with torch.no_grad():
            feat = torch.from_numpy(head_out)
            want = net.conv_last(net.upsample(net.conv_after_body(net.body(feat)) + feat)) / net.img_range
            want = (want + net.mean).numpy()  # ODMQuant keeps the EDSR's own modules
        assert 10 * math.log10(1 / max(float(((got - want)**2).mean()), 1e-30)) >= 120


def test_calibrate_reports_the_export_parity_and_names_the_fix_only_for_free_grids():
    from odm_basicsr.tools.calibrate_cli import export_parity_line
    arch_opt = ARCHS['EDSR'][0]
    free, integer = (ARCH_REGISTRY.get('ODMQuant')(arch=dict(arch_opt), w_bit=4, a_bit=4, integer_zero_point=z)
                     for z in (False, True))
    assert export_parity_line([math.inf, math.inf], integer) == \
        'integer ONNX vs this network: bit-identical on every validation image'
    line = export_parity_line([50.0, math.inf, 30.0], integer)
    assert 'PSNR mean 40.0 dB, min 30.0 dB (1 of 3 images bit-identical)' in line and 'integer_zero_point' not in line
    assert 'calibrate with network_g.integer_zero_point: true' in export_parity_line([50.0, 30.0], free)


def test_calibrate_export_check_without_the_export_extra_names_it(monkeypatch, tmp_path):
    from odm_basicsr.tools import calibrate_cli
    net = ARCH_REGISTRY.get('ODMQuant')(arch=dict(ARCHS['EDSR'][0]), w_bit=4, a_bit=4)
    monkeypatch.setattr(calibrate_cli, 'runtime_missing', lambda runtime: f'--runtime {runtime} is not installed')
    session, line = calibrate_cli.export_session(net, {'network_g': {'type': 'ODMQuant'}}, str(tmp_path))
    assert session is None and line == \
        'export check skipped: it needs onnx and onnxruntime: pip install "odm-basicsr[export]"'
    assert not list(tmp_path.iterdir())  # nothing written

"""Unit tests of the ODM components: cooperation, regularizers, offsets, and the regularizer's reach."""
import math

import pytest
import torch
import torch.nn as nn

from odm_basicsr.losses.odm_loss import ODMLoss
from odm_basicsr.quant import (QuantConfig, QuantConv2d, calibrate, combine_gradients, is_quantizer_param, mismatch_loss,
                               quantize_modules, quantized_layers, select_offsets, set_integer_zero_point,
                               set_quantization, variance_loss)
from odm_basicsr.quant.calibrate import offset_init


def T(*values):
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- cooperation on hand-made gradients
def test_sign_mask_aligned_opposed_mixed():
    g_r, g_v = [T(1, -2, 3)], [T(0.5, -0.5, 2)]  # aligned: everything kept
    out, ratio = combine_gradients(g_r, g_v, 'sign')
    assert torch.equal(out[0], T(1.5, -2.5, 5)) and ratio.item() == 0
    out, ratio = combine_gradients([T(1, -2, 3)], [T(-0.5, 0.5, -2)], 'sign')  # opposed: all dropped
    assert torch.equal(out[0], T(1, -2, 3)) and ratio.item() == 1
    # mixed, across two tensors: elements 0 and 3 agree, 1 and 2 conflict, 4 has no regularizer gradient
    out, ratio = combine_gradients([T(1, 1), T(-1, 2, 5)], [T(1, -1), T(1, 3, 0)], 'sign')
    assert torch.equal(out[0], T(2, 1)) and torch.equal(out[1], T(-1, 5, 5))
    assert ratio.item() == pytest.approx(2 / 4)


def test_sign_mask_drops_where_reconstruction_gradient_is_zero():
    out, ratio = combine_gradients([T(0, 1)], [T(1, 1)], 'sign')
    assert torch.equal(out[0], T(0, 2)) and ratio.item() == pytest.approx(0.5)


@pytest.mark.parametrize('g_v, cos', [((2., 0.), 1.0), ((-2., 0.), -1.0), ((0., 3.), 0.0),
                                       ((1., 1.), 1 / math.sqrt(2))])
def test_cosine_weighting(g_v, cos):
    g_r = [T(1, 0)]
    out, stat = combine_gradients(g_r, [T(*g_v)], 'cosine')
    weight = (cos + 1) / 2
    assert stat.item() == pytest.approx(cos, abs=1e-6)
    assert torch.allclose(out[0], T(1, 0) + weight * T(*g_v))


def test_cosine_is_global_over_all_tensors():
    # per tensor the cosines are +1 and -1; globally the vectors are orthogonal -> weight 0.5
    g_r, g_v = [T(1), T(1)], [T(1), T(-1)]
    out, stat = combine_gradients(g_r, g_v, 'cosine')
    assert stat.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(out[0], T(1.5)) and torch.allclose(out[1], T(0.5))


def test_cosine_per_tensor_weights_each_tensor_by_its_own_cosine():
    # the same gradients as above: per tensor the cosines are +1 and -1 -> weights 1 and 0 (globally 0.5 each)
    g_r, g_v = [T(1), T(1)], [T(1), T(-1)]
    out, stat = combine_gradients(g_r, g_v, 'cosine_tensor')
    assert torch.allclose(out[0], T(2.0)) and torch.allclose(out[1], T(1.0))
    assert stat.item() == pytest.approx(0.0, abs=1e-6)  # the mean of +1 and -1
    # an orthogonal pair gets half: cos 0 -> s = 1/2; the statistic is the mean cosine over tensors
    out, stat = combine_gradients([T(1, 0), T(2, 0)], [T(0, 4), T(3, 0)], 'cosine_tensor')
    assert torch.allclose(out[0], T(1, 2)) and torch.allclose(out[1], T(5, 0))
    assert stat.item() == pytest.approx(0.5)


def test_none_adds_full_regularizer_gradient():
    out, _ = combine_gradients([T(1, 2)], [T(-3, 1)], 'none')
    assert torch.equal(out[0], T(-2, 3))
    with pytest.raises(ValueError, match='cooperation'):
        combine_gradients([T(1)], [T(1)], 'both')


# ---------------------------------------------------------------- regularizers against direct formulas
def test_variance_regularizer_matches_direct_formula():
    x = torch.tensor([[[[1., 3.], [5., 7.]], [[0., 0.], [0., 4.]]]])  # (1, 2, 2, 2)
    var_c0 = ((1 - 4)**2 + (3 - 4)**2 + (5 - 4)**2 + (7 - 4)**2) / 4  # 5
    var_c1 = (3 * 1**2 + 3**2) / 4  # 3
    assert variance_loss([x]).item() == pytest.approx((var_c0 + var_c1) / 2)
    assert variance_loss([x, 2 * x]).item() == pytest.approx((var_c0 + var_c1) / 2 * 5)
    assert variance_loss([x], 'std').item() == pytest.approx((math.sqrt(var_c0) + math.sqrt(var_c1)) / 2)


def test_mismatch_regularizer_matches_direct_formula():
    x = torch.tensor([0.1, 0.4, 0.9, 1.6])
    target = torch.tensor([0.0, 0.5, 1.0, 1.0])
    expected = math.sqrt(0.01 + 0.01 + 0.01 + 0.36)
    assert mismatch_loss([x], [target]).item() == pytest.approx(expected, rel=1e-5)
    assert mismatch_loss([x, x], [target, target]).item() == pytest.approx(2 * expected, rel=1e-5)


def test_mismatch_grid_target_is_detached_and_uses_layer_range():
    layer = QuantConv2d(1, 1, 1, w_bit=2, a_bit=2)
    layer.act_quantizer.set_range(0.0, 3.0)  # grid 0, 1, 2, 3
    x = torch.tensor([0.2, 1.6, 2.5, 4.0], requires_grad=True).view(1, 1, 2, 2)
    layer.quant_input = x
    loss = ODMLoss('mismatch', loss_weight=2.0)([layer])
    # targets 0, 2, 3 (or 2: tie rounds to even -> 2), 3
    target = layer.act_quantizer.grid_target(x.detach())
    assert not target.requires_grad
    assert loss.item() == pytest.approx(2.0 * (x.detach() - target).norm().item(), rel=1e-5)
    loss.backward()
    assert layer.act_quantizer.lower.grad is None and layer.act_quantizer.upper.grad is None


def test_mismatch_target_is_the_forwards_own_quantizer_output():
    """With collect_target on, the forward keeps sg(q(X')) (before the offsets' + o/a) so that the regularizer needs
    no second quantize pass; it equals grid_target, and a disabled quantizer keeps none (the loss then falls back)."""
    from odm_basicsr.quant import QuantLinear
    torch.manual_seed(0)
    conv = QuantConv2d(3, 4, 3, padding=1, w_bit=2, a_bit=2, offsets=True)
    linear = QuantLinear(6, 5, w_bit=4, a_bit=4)
    conv.act_quantizer.set_range(-0.7, 1.3)
    linear.act_quantizer.set_range(-1.1, 0.9)
    conv.offset.enable('shift', shift=torch.full((3, ), 0.3))
    for layer, x in ((conv, torch.randn(2, 3, 5, 5)), (linear, torch.randn(2, 7, 6))):
        layer.collect_input = layer.collect_target = True
        layer(x)
        assert torch.equal(layer.quant_target, layer.act_quantizer.grid_target(layer.quant_input))
        assert not layer.quant_target.requires_grad
    loss = ODMLoss('mismatch', loss_weight=1.0)([conv, linear])
    want = mismatch_loss([conv.quant_input, linear.quant_input],
                         [conv.act_quantizer.grid_target(conv.quant_input),
                          linear.act_quantizer.grid_target(linear.quant_input)])
    assert torch.equal(loss, want)
    linear.act_quantizer.enabled = False
    linear(torch.randn(2, 7, 6))
    assert linear.quant_target is None
    assert ODMLoss('mismatch', loss_weight=1.0)([linear]).item() > 0  # grid_target of the unquantized input


# ---------------------------------------------------------------- distribution offsets
def _offset_net(kind):
    torch.manual_seed(0)
    fp = nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, 1, 1), nn.Conv2d(6, 3, 3, 1, 1))
    q = nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, 1, 1), nn.Conv2d(6, 3, 3, 1, 1))
    q.load_state_dict(fp.state_dict())
    quantize_modules(q, ['2', '3'], QuantConfig(w_bit=4, a_bit=4, offsets=kind))
    return fp, q


@pytest.mark.parametrize('integer_zero_point', [False, True])
@pytest.mark.parametrize('kind', ['shift', 'scale'])
def test_offsets_leave_fp_function_unchanged_including_border(kind, integer_zero_point):
    """Also with integer_zero_point, whose offset layers pad before the offset and fold W·(o/a) into the bias."""
    fp, q = _offset_net(kind)
    set_integer_zero_point(q, integer_zero_point)
    x = torch.rand(2, 3, 9, 7) * 5 + 3  # far from zero: a wrong padding compensation shows at the border
    with torch.no_grad():
        # arbitrary, clearly non-trivial offsets on both quantized layers
        for _, layer in quantized_layers(q):
            layer.offset.enable(kind, shift=torch.linspace(-3, 4, 6), scale=torch.linspace(0.3, 2.5, 6))
    assert all(layer.pads_first == integer_zero_point for _, layer in quantized_layers(q))
    set_quantization(q, False)
    out_fp, out_q = fp(x), q(x)
    assert torch.allclose(out_fp, out_q, atol=1e-4), (out_fp - out_q).abs().max()
    border = (out_fp - out_q)[..., 0, :].abs().max()
    assert border < 1e-4


def test_offset_bias_is_the_conv_of_the_constant_and_grouped_convs_get_no_offsets():
    """offset_bias(W, c) = what conv_valid(c broadcast over the kernel window, W) gives: sum of W·c per output
    channel. Offsets are per input channel of an ungrouped conv: a grouped conv is refused one, and conversion
    gives it none."""
    from odm_basicsr.quant.functional import offset_bias
    torch.manual_seed(0)
    weight, constant = torch.randn(6, 4, 3, 3), torch.randn(4)
    want = torch.nn.functional.conv2d(constant.view(1, 4, 1, 1).expand(1, 4, 3, 3), weight).view(6)
    assert torch.allclose(offset_bias(weight, constant), want, atol=1e-5)
    with pytest.raises(ValueError, match='ungrouped'):
        QuantConv2d(4, 6, 3, 1, 1, groups=2, offsets=True)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1, groups=4), nn.Conv2d(4, 4, 3, 1, 1))
    quantize_modules(net, ['*'], QuantConfig(w_bit=4, a_bit=4, offsets='auto'))
    assert net[0].offset is None and net[1].offset is not None


def test_pad_first_offset_layer_computes_the_export_arithmetic_and_hooks_see_the_image():
    """integer_zero_point with a shift offset: a border tap sees q(-o/a) + o/a (the integer graph pads before the
    offset), not the 0 of the paper's form; interior pixels are the same in both forms; the regularizer's X' and
    target keep the image's size (no border ring)."""
    torch.manual_seed(0)
    layer = QuantConv2d(4, 5, 3, 1, 1, w_bit=4, a_bit=2, offsets=True)
    layer.act_quantizer.set_range(-1.0, 2.0)  # 2-bit grid -1, 0, 1, 2: -o/a = -0.4 rounds to 0, not -0.4
    layer.offset.enable('shift', shift=torch.full((4, ), 0.4))
    x = torch.rand(2, 4, 6, 7) * 2
    paper = layer(x)
    set_integer_zero_point(layer, True)
    layer.collect_input = layer.collect_target = True
    padded_first = layer(x)
    assert tuple(layer.quant_input.shape) == tuple(layer.quant_target.shape) == (2, 4, 6, 7)
    assert torch.allclose(layer.quant_input, x - 0.4)
    diff = (padded_first - paper).detach()
    # interior: the same but for the rounding of b + W_q·(o/a) onto the int32 grid, one constant per channel
    rounding = diff[0, :, 2, 3]
    interior = diff[..., 1:-1, 1:-1]
    assert torch.allclose(interior, rounding.view(1, -1, 1, 1).expand_as(interior), atol=1e-5)
    grid = 1.0 * layer.weight_quantizer.integer_scale(layer.weight_quantizer.last_upper)  # s_x·s_w, s_x = 1
    assert float(rounding.abs().max()) <= float(grid) / 2 + 1e-6
    w_q = layer.weight_quantizer(layer.weight).detach()
    # top-left corner: the 5 padded taps see q(-0.4) + 0.4 = 0.4 each, in every input channel, instead of 0
    corner = w_q[:, :, 0, :].sum(dim=(1, 2)) + w_q[:, :, 1:, 0].sum(dim=(1, 2))
    assert float(corner.abs().min()) > 0.05
    assert torch.allclose(diff[0, :, 0, 0] - rounding, 0.4 * corner, atol=1e-5)
    same = QuantConv2d(4, 5, 3, 1, 'same', w_bit=4, a_bit=2, offsets=True)  # a string padding works the same way
    set_integer_zero_point(same, True)
    same.load_state_dict(layer.state_dict())
    assert torch.equal(same(x), padded_first)


def test_asymmetric_same_padding_refused_when_built():
    """An offset layer with integer_zero_point pads first, which needs a symmetric padding: an even kernel with
    padding='same' is refused when the network is built (the option check builds it), not at its first forward."""
    layer = QuantConv2d(4, 5, 2, 1, 'same', w_bit=4, a_bit=4, offsets=True)
    with pytest.raises(ValueError, match='asymmetrically'):
        set_integer_zero_point(layer, True)
    plain = QuantConv2d(4, 5, 2, 1, 'same', w_bit=4, a_bit=4)  # no offset: never pads first, so it is accepted
    set_integer_zero_point(plain, True)
    assert plain.output_quantizer is not None


def test_offset_selection_and_init_from_calibration():
    fp, q = _offset_net('auto')
    batches = [torch.rand(2, 3, 8, 8) for _ in range(2)]
    report = calibrate(q, batches, 'auto', offset_top_k=0.5, progress=False)
    assert len(report['offsets']) == 1
    name, kind, score = report['offsets'][0]
    assert kind in ('shift', 'scale') and score == max(max(s.values()) for s in report['scores'].values())
    layer = dict(quantized_layers(q))[name]
    assert layer.offset.kind == kind
    # the quantized network with quantizers off still equals the FP network
    set_quantization(q, False)
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(fp(x), q(x), atol=1e-5)
    # shift init = channel mean - layer mean: on the calibration data the shifted input has equal channel means
    if kind == 'shift':
        seen = {}
        layer.observer = lambda t: seen.setdefault('x', t)
        with torch.no_grad():
            q(torch.cat(batches))
        means = seen['x'].mean(dim=(0, 2, 3))
        assert means.std() < 1e-4


def test_offset_keep_zero_gives_no_shift_after_a_relu():
    # layer '2' reads the ReLU's output (never negative), layer '3' reads a conv output (signed)
    batches = [torch.rand(2, 3, 8, 8) - 0.5 for _ in range(2)]
    chosen = {}
    for keep_zero in (False, True):
        _, q = _offset_net('shift')
        report = calibrate(q, batches, 'shift', offset_top_k=1.0, progress=False, offset_keep_zero=keep_zero)
        chosen[keep_zero] = sorted(name for name, _, _ in report['offsets'])
        kinds = {name: layer.offset.kind for name, layer in quantized_layers(q)}
        assert all(kinds[name] == 'shift' for name in chosen[keep_zero])
    assert chosen[False] == ['2', '3'] and chosen[True] == ['3']
    # 'auto' may still give the post-ReLU layer a scale, which keeps zero at zero
    _, q = _offset_net('auto')
    report = calibrate(q, batches, 'auto', offset_top_k=1.0, progress=False, offset_keep_zero=True)
    assert 'shift' not in report['scores']['2'] and set(report['scores']['3']) == {'shift', 'scale'}
    assert dict((n, k) for n, k, _ in report['offsets'])['2'] == 'scale'


def test_offset_migration_scales_the_initial_offsets():
    stats = {'mean': T(1, 3, 8), 'layer_mean': torch.tensor(4.0), 'std': T(1, 4, 16), 'layer_std': torch.tensor(4.0)}
    shift, scale = offset_init(stats)  # the paper's full migration
    assert torch.allclose(shift, T(-3, -1, 4)) and torch.allclose(scale, T(0.25, 1, 4))
    shift, scale = offset_init(stats, migration=0.5)
    assert torch.allclose(shift, T(-1.5, -0.5, 2)) and torch.allclose(scale, T(0.5, 1, 2))
    for bad in (0, 1.5, -0.2):
        with pytest.raises(ValueError, match='offset_migration'):
            offset_init(stats, bad)


def test_select_offsets_threshold_and_topk():
    scores = {'a': {'shift': 0.5, 'scale': 0.1}, 'b': {'shift': 0.1, 'scale': 0.3}, 'c': {'shift': 0.05, 'scale': 0.0}}
    assert [(n, k) for n, k, _ in select_offsets(scores, 'auto', threshold=0.2)] == [('a', 'shift'), ('b', 'scale')]
    assert [(n, k) for n, k, _ in select_offsets(scores, 'scale', top_k=0.34)] == [('b', 'scale')]
    with pytest.raises(ValueError):
        select_offsets(scores, 'auto')


# ---------------------------------------------------------------- the regularizer never trains quantizer params
@pytest.mark.parametrize('regularizer', ['variance', 'mismatch'])
def test_regularizer_gradient_reaches_weights_only_through_model_split(regularizer):
    """ODMModel takes the regularizer gradient w.r.t. network weights only; check that the split is right and
    that quantizer parameters would otherwise receive gradient (so the split matters)."""
    fp, q = _offset_net('shift')
    quantize_modules(q, ['0'], QuantConfig(w_bit=4, a_bit=4))
    calibrate(q, [torch.rand(2, 3, 8, 8)], 'shift', offset_top_k=1.0, progress=False)
    layers = [m for _, m in quantized_layers(q)]
    for layer in layers:
        layer.collect_input = True
    q(torch.rand(2, 3, 8, 8))
    loss = ODMLoss(regularizer, loss_weight=1.0)(layers)
    named = dict(q.named_parameters())
    quant = [p for n, p in named.items() if is_quantizer_param(n)]
    weights = [p for n, p in named.items() if not is_quantizer_param(n)]
    assert quant and weights
    grads_q = torch.autograd.grad(loss, quant, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_q)  # would leak without the split
    grads_w = torch.autograd.grad(loss, weights, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_w)


@pytest.mark.parametrize('regularizer', ['variance', 'mismatch'])
def test_regularizer_weights_transfer_across_feature_ranges(regularizer):
    """The same function computed on 0-255 or on 0-1 features (EDSR with img_range 255, and with
    img_range 1 and every bias / 255) must see the same regularizer strength lambda |g_reg| / |g_R| over the body
    weights with the weights the option grid derives for each feature range."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from odm_basicsr.losses.odm_loss import ODMLoss
    from odm_basicsr.quant import calibrate, quantized_layers
    from odm_basicsr.tools.option_grid import scaled_regularizer_weights
    torch.manual_seed(0)
    kwargs = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2, w_bit=4, a_bit=4)
    wide = ARCH_REGISTRY.get('ODMEDSR')(img_range=255., **kwargs)
    unit = ARCH_REGISTRY.get('ODMEDSR')(img_range=1., **kwargs)
    x, target = torch.rand(2, 3, 10, 10), torch.rand(2, 3, 20, 20)
    calibrate(wide, [x], progress=False, method='minmax')
    state = {k: (v / 255 if k.endswith('.bias') or k.endswith('.lower') or k.endswith('.upper') else v)
             for k, v in wide.state_dict().items()}
    unit.load_state_dict(state)
    assert torch.allclose(unit(x), wide(x), atol=1e-5)  # the same function, features / 255
    ratios = {}
    for net, feature_range in ((wide, 255), (unit, 1)):
        v1, v2 = scaled_regularizer_weights(1e-5, feature_range, 32)
        layers = [m for _, m in quantized_layers(net)]
        loss = ODMLoss(regularizer=regularizer, loss_weight=v1 if regularizer == 'variance' else v2)
        body = [m.weight for m in layers]
        for m in layers:
            m.collect_input = True
        out = net(x)
        g_rec = torch.autograd.grad(torch.nn.functional.l1_loss(out, target), body, retain_graph=True)
        g_reg = [g for g in torch.autograd.grad(loss(layers), body, allow_unused=True) if g is not None]
        for m in layers:
            m.collect_input, m.quant_input = False, None
        ratios[feature_range] = (torch.stack([g.norm() for g in g_reg]).norm() /
                                 torch.stack([g.norm() for g in g_rec]).norm()).item()
    assert ratios[1] == pytest.approx(ratios[255], rel=1e-2)
    # v1 sums over layers: a network with 4x the quantized layers gets a quarter of the weight
    assert scaled_regularizer_weights(1e-5, 255, 128)[0] * 128 == pytest.approx(
        scaled_regularizer_weights(1e-5, 255, 32)[0] * 32)

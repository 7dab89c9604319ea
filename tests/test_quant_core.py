"""Unit tests of the quantization core (no BasicSR involved)."""
import ast
import os
import os.path as osp

import pytest
import torch
import torch.nn as nn

from odm_basicsr.quant import (QuantConfig, ActQuantizer, QuantConv2d, WeightQuantizer, calibrate, check_bits, cost_report,
                               fake_quantize, percentile, quantize_modules, quantized_layers, set_quantization)

CORE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'odm_basicsr', 'quant')


def test_core_imports_nothing_from_basicsr():
    for name in os.listdir(CORE):
        if name.endswith('.py'):
            tree = ast.parse(open(osp.join(CORE, name)).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    assert not any(a.name.startswith('basicsr') for a in node.names), name
                if isinstance(node, ast.ImportFrom):
                    assert not (node.module or '').startswith('basicsr'), name


@pytest.mark.parametrize('bits', [2, 3, 4, 8])
def test_levels_are_2_pow_b_inside_range(bits):
    x = torch.linspace(-3, 5, 10001)
    lower, upper = torch.tensor(-1.0), torch.tensor(2.0)
    q = fake_quantize(x, lower, upper, bits)
    levels = torch.unique(q)
    assert len(levels) == 2**bits
    assert levels.min() >= -1.0 - 1e-6 and levels.max() <= 2.0 + 1e-6
    step = 3.0 / (2**bits - 1)
    expected = -1.0 + step * torch.arange(2**bits)
    assert torch.allclose(levels, expected, atol=1e-5)
    # nearest level: error at most half a step inside the range
    inside = (x >= -1) & (x <= 2)
    assert (q[inside] - x[inside]).abs().max() <= step / 2 + 1e-5


def test_ste_gradient_is_one_inside_zero_outside():
    x = torch.tensor([-2.0, -0.5, 0.1, 0.7, 1.5], requires_grad=True)
    q = fake_quantize(x, torch.tensor(-1.0), torch.tensor(1.0), 2)
    q.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_range_gradients_match_lsq_formula_and_finite_difference():
    torch.manual_seed(0)
    x = torch.randn(200) * 2
    lower = torch.tensor(-1.3, requires_grad=True)
    upper = torch.tensor(1.7, requires_grad=True)
    bits = 3
    n = 2**bits - 1
    q = fake_quantize(x, lower, upper, bits)
    q.sum().backward()
    # analytic LSQ+ gradients: inside, q = x + (round(t) - t) s, so dq/du = (round(t) - t)/n = -dq/dl;
    # clipped above q = u (dq/du = 1), clipped below q = l (dq/dl = 1)
    s = (upper - lower).detach() / n
    t = (x.clamp(-1.3, 1.7) + 1.3) / s
    inside = (x > -1.3) & (x < 1.7)
    r = (torch.round(t) - t) / n
    du = torch.where(inside, r, (x >= 1.7).float()).sum()
    dl = torch.where(inside, -r, (x <= -1.3).float()).sum()
    assert torch.allclose(upper.grad, du, atol=1e-4)
    assert torch.allclose(lower.grad, dl, atol=1e-4)

    # finite difference of the STE surrogate (rounding residual frozen at the current point)
    residual = (torch.round(t) - t)

    def surrogate(lo, up):
        step = (up - lo) / n
        c = torch.minimum(torch.maximum(x, lo), up)
        return (((c - lo) / step + residual) * step + lo).sum()

    eps = 1e-3
    fd_u = (surrogate(torch.tensor(-1.3), torch.tensor(1.7 + eps)) -
            surrogate(torch.tensor(-1.3), torch.tensor(1.7 - eps))) / (2 * eps)
    fd_l = (surrogate(torch.tensor(-1.3 + eps), torch.tensor(1.7)) -
            surrogate(torch.tensor(-1.3 - eps), torch.tensor(1.7))) / (2 * eps)
    assert abs(fd_u.item() - upper.grad.item()) < 2e-2
    assert abs(fd_l.item() - lower.grad.item()) < 2e-2


def test_weight_quantizer_modes():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3)
    w[0, 0, 0, 0] = 10.0  # outlier
    q_max = WeightQuantizer(2, 'max')
    assert torch.isclose(q_max.clip_value(w), torch.tensor(10.0))
    q_pct = WeightQuantizer(2, 'percentile')
    p99 = percentile(w.abs(), 99)
    assert torch.isclose(q_pct.clip_value(w), p99)
    assert p99 < 10.0
    out = q_pct(w)
    assert len(torch.unique(out)) == 4  # symmetric, no zero level: +-u/3, +-u
    assert torch.allclose(torch.unique(out).abs().max(), p99)
    assert (torch.unique(out) != 0).all()


def test_wcc_gamma_gets_gradient_and_p99_does_not():
    torch.manual_seed(0)
    w = torch.randn(8, 8, 3, 3, requires_grad=True)
    quantizer = WeightQuantizer(3, 'wcc')
    assert quantizer.gamma.item() == 1.0
    out = quantizer(w)
    (out * torch.randn_like(out)).sum().backward()
    assert quantizer.gamma.grad is not None and quantizer.gamma.grad.abs() > 0
    # P99 is computed from detached weights: the weight gradient is the pure STE mask (0 or the upstream grad)
    w2 = w.detach().clone().requires_grad_(True)
    quantizer(w2).sum().backward()
    u = quantizer.clip_value(w2).item()
    inside, outside = w2.detach().abs() < u, w2.detach().abs() > u
    assert (w2.grad[inside] == 1).all() and (w2.grad[outside] == 0).all() and outside.any()


@pytest.mark.parametrize('bad', [1, 9, 0, 4.0, '4', True, None])
def test_bad_bit_widths_name_the_key(bad):
    with pytest.raises(ValueError, match='w_bit'):
        WeightQuantizer(bad)
    with pytest.raises(ValueError, match='a_bit'):
        ActQuantizer(bad)
    with pytest.raises(ValueError, match='network_g.w_bit'):
        check_bits('network_g.w_bit', bad)


def test_degenerate_activation_range_is_kept_valid():
    quantizer = ActQuantizer(4)
    quantizer.set_range(1.0, 1.0)
    x = torch.linspace(0, 2, 50)
    q = quantizer(x)
    assert torch.isfinite(q).all()
    with torch.no_grad():
        quantizer.upper.fill_(0.5)  # collapsed by training: u < l
    q = quantizer(x)
    assert torch.isfinite(q).all() and len(torch.unique(q)) <= 16


class TinyNet(nn.Module):

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, 1, 1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1))
        self.tail = nn.Conv2d(8, 3, 3, 1, 1)

    def forward(self, x):
        f = self.head(x)
        return self.tail(f + self.body(f))


def test_conversion_shares_parameters_and_keeps_names():
    net = TinyNet()
    fp_keys = set(net.state_dict())
    weight = net.body[0].weight
    names = quantize_modules(net, ['body.*'], QuantConfig(w_bit=4, a_bit=4))
    assert names == ['body.0', 'body.2']
    assert isinstance(net.body[0], QuantConv2d) and net.body[0].weight is weight
    assert fp_keys <= set(net.state_dict())
    with pytest.raises(ValueError, match='matched no'):
        quantize_modules(TinyNet(), ['nothing.*'], QuantConfig(w_bit=4, a_bit=4))


def test_calibrated_w4a4_layers_see_at_most_16_levels():
    torch.manual_seed(0)
    net = TinyNet()
    quantize_modules(net, ['*'], QuantConfig(w_bit=4, a_bit=4))
    batches = [torch.rand(2, 3, 16, 16) for _ in range(3)]
    report = calibrate(net, batches, progress=False)
    assert set(report['ranges']) == {'head', 'body.0', 'body.2', 'tail'}
    seen = {}
    for name, layer in quantized_layers(net):
        layer.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(
            name, len(torch.unique(m.act_quantizer(m.quantizer_input(i[0])[0])))))
        assert bool(layer.act_quantizer.calibrated)
    net(torch.rand(1, 3, 16, 16))
    assert seen and all(v <= 16 for v in seen.values())


def test_calibration_ranges_are_mean_of_batch_percentiles():
    net = nn.Sequential(nn.Conv2d(1, 1, 1))
    quantize_modules(net, ['0'], QuantConfig(w_bit=8, a_bit=8))
    batches = [torch.arange(100.).view(1, 1, 10, 10), torch.arange(100.).view(1, 1, 10, 10) * 2]
    report = calibrate(net, batches, progress=False, method='percentile')
    low, high = report['ranges']['0']
    # nearest-rank percentiles: P1 = 0 / 0, P99 = 98 / 196
    assert low == pytest.approx(0.0) and high == pytest.approx((98 + 196) / 2)


def test_set_quantization_off_gives_fp_function():
    torch.manual_seed(0)
    fp = TinyNet()
    q = TinyNet()
    q.load_state_dict(fp.state_dict())
    quantize_modules(q, ['*'], QuantConfig(w_bit=2, a_bit=2))
    x = torch.rand(1, 3, 12, 12)
    set_quantization(q, False)
    assert torch.allclose(q(x), fp(x), atol=1e-6)
    calibrate(q, [x], progress=False)
    set_quantization(q, True)
    assert not torch.allclose(q(x), fp(x), atol=1e-3)


def test_cost_report_equals_hand_computation():
    net = TinyNet()
    quantize_modules(net, ['body.*'], QuantConfig(w_bit=4, a_bit=2))
    report = cost_report(net, (3, 10, 20))
    pixels = 10 * 20
    macs = {'head': pixels * 8 * 3 * 9, 'body.0': pixels * 8 * 8 * 9, 'body.2': pixels * 8 * 8 * 9,
            'tail': pixels * 3 * 8 * 9}
    bitops = macs['head'] * 1024 + (macs['body.0'] + macs['body.2']) * 4 * 2 + macs['tail'] * 1024
    assert {r['name']: r['macs'] for r in report['layers']} == macs
    assert report['total']['bitops'] == bitops
    assert report['total']['fp_bitops'] == sum(macs.values()) * 1024
    storage = (8 * 3 * 9 + 8) * 32 + 2 * (8 * 8 * 9 * 4 + 8 * 32 + 3 * 32) + (3 * 8 * 9 + 3) * 32
    assert report['total']['storage_bits'] == storage
    assert report['total']['params'] == sum(p.numel() for n, p in net.named_parameters()
                                            if 'quantizer' not in n)


@pytest.mark.parametrize('bits', [2, 4, 8])
def test_fused_fake_quantize_matches_the_straight_through_composite(bits):
    """The fused op's forward equals the composite round_ste expression bit for bit, and its hand-written
    gradients (x: 1 inside the range; l: [x<l] + (t-r)/L; u: [x>u] - (t-r)/L) equal autograd's on the composite."""
    from odm_basicsr.quant.quantizer import round_ste

    def composite(x, lower, upper):
        step = (upper - lower) / (2**bits - 1)
        return round_ste((torch.minimum(torch.maximum(x, lower), upper) - lower) / step) * step + lower

    torch.manual_seed(bits)
    x0 = torch.randn(2, 8, 10, 10, dtype=torch.float64) * 3
    grads = []
    for fn in (fake_quantize, lambda x, lo, up, b: composite(x, lo, up)):
        x = x0.clone().requires_grad_()
        lower = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
        upper = torch.tensor(3.5, dtype=torch.float64, requires_grad=True)
        out = fn(x, lower, upper, bits)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out))
        grads.append((out.detach(), x.grad, lower.grad, upper.grad))
    (out_f, gx_f, gl_f, gu_f), (out_c, gx_c, gl_c, gu_c) = grads
    assert torch.equal(out_f, out_c)
    assert torch.allclose(gx_f, gx_c, atol=1e-12)
    assert torch.allclose(gl_f, gl_c, atol=1e-9) and torch.allclose(gu_f, gu_c, atol=1e-9)
    assert abs(float(gl_f)) > 1e-3 and abs(float(gu_f)) > 1e-3  # the range really receives gradient


def test_offset_gate_state_follows_enable_load_and_refresh():
    """Layers whose offset calibration left off skip the offset arithmetic (exactly X' = X); a state dict that
    switches an offset on takes effect on load, and refresh() picks up buffers written in place."""
    torch.manual_seed(0)
    plain = QuantConv2d(4, 4, 3, padding=1, w_bit=4, a_bit=4)
    plain.act_quantizer.set_range(-1.0, 6.0)
    gated = QuantConv2d(4, 4, 3, padding=1, w_bit=4, a_bit=4, offsets=True)
    gated.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 4, 8, 8) + 3
    assert not gated.offset.active and torch.equal(gated(x), plain(x))
    gated.offset.enable('shift', shift=torch.full((4,), 3.0))
    assert gated.offset.active and not torch.equal(gated(x), plain(x))
    fresh = QuantConv2d(4, 4, 3, padding=1, w_bit=4, a_bit=4, offsets=True)
    fresh.load_state_dict(gated.state_dict())
    assert fresh.offset.active and torch.equal(fresh(x), gated(x))
    copy_target = QuantConv2d(4, 4, 3, padding=1, w_bit=4, a_bit=4, offsets=True)
    for name, buf in gated.named_buffers():
        dict(copy_target.named_buffers())[name].copy_(buf)
    for name, p in gated.named_parameters():
        dict(copy_target.named_parameters())[name].data.copy_(p.data)
    assert not copy_target.offset.active  # in-place writes bypass the mirrors ...
    copy_target.offset.refresh()
    copy_target.act_quantizer.refresh()
    assert copy_target.offset.active and torch.equal(copy_target(x), gated(x))  # ... until refresh()

"""The training step: the compiled step equals the eager one, the device-side non-finite guard (no host
read), gradients as views into one flat buffer, and the weight-clip statistic refreshed every N iterations."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import)
import contextlib

import pytest
import torch
from basicsr.models import build_model

from odm_basicsr.quant import WeightQuantizer, combine_flat, combine_gradients, is_quantizer_param
from test_odm_model import NET, batches, model_options

V1 = dict(odm_opt=dict(type='ODMLoss', regularizer='variance', loss_weight=1e-2), cooperation='sign',
          calibration=dict(num_batches=2, offset_top_k=1.0))
V2 = dict(odm_opt=dict(type='ODMLoss', regularizer='mismatch', loss_weight=1e-2), cooperation='cosine',
          calibration=dict(num_batches=2))


def build(tiny_data, network, **train):
    torch.manual_seed(0)
    return build_model(model_options(tiny_data, network, **train))


@pytest.mark.parametrize('mode', ['sign', 'cosine', 'cosine_tensor', 'none'])
def test_combine_flat_equals_the_per_tensor_lists(mode):
    g = torch.Generator().manual_seed(1)
    shapes = [(4, 3, 3, 3), (4,), (2, 4, 1, 1)]
    rec = [torch.randn(s, generator=g) for s in shapes]
    reg = [torch.randn(s, generator=g) * 0.1 for s in shapes]
    reg[1].zero_()  # a tensor the regularizer does not reach
    expected, expected_stat = combine_gradients(rec, reg, mode)
    flat, stat = combine_flat(torch.cat([t.reshape(-1) for t in rec]), torch.cat([t.reshape(-1) for t in reg]), mode,
                              [t.numel() for t in rec])
    assert torch.allclose(flat, torch.cat([t.reshape(-1) for t in expected]), rtol=0, atol=1e-7)
    assert torch.allclose(stat, expected_stat, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('variant', [V1, V2], ids=['v1', 'v2'])
def test_combined_gradient_lands_in_the_flat_buffer_behind_each_grad(tiny_data, variant):
    network = dict(NET, offsets='shift') if variant is V1 else dict(NET, weight_clip='wcc')
    model = build(tiny_data, network, **variant)
    lq, gt = batches(4, 2)[0]
    weights = [p for n, p in model.net_g.named_parameters() if not is_quantizer_param(n)]
    for layer in model.quant_layers:
        layer.collect_input = True
    output = model.net_g(lq)
    g_rec = torch.autograd.grad(model.cri_pix(output, gt), weights, retain_graph=True)
    g_reg = torch.autograd.grad(model.cri_odm(model.quant_layers), weights, allow_unused=True)
    g_reg = [torch.zeros_like(p) if g is None else g for p, g in zip(weights, g_reg)]
    for layer in model.quant_layers:
        layer.collect_input, layer.quant_input = False, None
    expected, _ = combine_gradients(list(g_rec), g_reg, model.cooperation)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    buffer = model.step._grad_buffer
    start, end = buffer.data_ptr(), buffer.data_ptr() + buffer.numel() * buffer.element_size()
    for param, grad in zip(weights, expected):
        assert start <= param.grad.data_ptr() < end  # a view into the one buffer, not a copy
        assert torch.allclose(param.grad, grad, rtol=1e-5, atol=1e-8)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(2)  # zero_grad keeps the views: the buffer is not rebuilt
    assert model.step._grad_buffer is buffer


@pytest.mark.slow
@pytest.mark.parametrize('variant', [V1, V2], ids=['v1', 'v2'])
def test_compiled_step_equals_the_eager_step(tiny_data, variant):
    """train.compile on CPU: the same forward bit for bit, the same combined gradients within float tolerance."""
    network = dict(NET, offsets='shift') if variant is V1 else dict(NET, weight_clip='wcc')
    eager = build(tiny_data, network, compile=False, **variant)
    compiled = build(tiny_data, network, compile=True, **variant)
    assert compiled.compiled and not eager.compiled
    lq, gt = batches(5, 2)[0]
    for model in (eager, compiled):
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(1)
    assert compiled.compiled  # compilation worked here (gcc), no fallback
    assert torch.equal(compiled.output, eager.output)
    for (name, p_eager), p_compiled in zip(eager.net_g.named_parameters(), compiled.net_g.parameters()):
        assert torch.allclose(p_compiled.grad, p_eager.grad, rtol=1e-4, atol=1e-7), name
    for key, value in eager.log_dict.items():
        assert compiled.log_dict[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key


def test_compile_falls_back_to_eager_when_compilation_fails(tiny_data, monkeypatch, caplog):
    from torch._dynamo.exc import TorchRuntimeError

    def failing_compile(module, *args, **kwargs):
        def run(*inputs):
            raise TorchRuntimeError('no C++ compiler found')
        return run

    monkeypatch.setattr(torch, 'compile', failing_compile)
    model = build(tiny_data, NET, compile=True, **V2)
    assert model.compiled
    lq, gt = batches(6, 2)[0]
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    assert not model.compiled
    assert torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    assert any('could not be compiled' in r.getMessage() and 'continues eager' in r.getMessage()
               for r in caplog.records)


@contextlib.contextmanager
def host_reads():
    """Record every Python-level read of a tensor's value on the host (bool, item, float, int, tolist, numpy): the
    calls that synchronize with a CUDA device. Yields the list of the names called."""
    calls = []
    names = ('__bool__', 'item', '__float__', '__int__', '__index__', 'tolist', 'numpy')
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def recorder(name):
        def read(self, *args, **kwargs):
            calls.append(name)
            return originals[name](self, *args, **kwargs)
        return read

    for name in names:
        setattr(torch.Tensor, name, recorder(name))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def nan_loss(out, target):
    return (out - target).abs().mean() * float('nan')


def test_device_guard_skips_a_non_finite_step_without_a_host_read(tiny_data):
    model = build(tiny_data, NET, guard_on_device=True, max_skipped_steps=2, **V2)
    assert model.guard_on_device and model.optimizer_g.defaults['fused']
    lq, gt = batches(7, 2)[0]
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    with host_reads() as calls:
        model.optimize_parameters(2)  # a steady-state step
    assert calls == []
    weights = {k: v.detach().clone() for k, v in model.net_g.named_parameters()}
    adam = {i: {k: v.clone() for k, v in s.items()} for i, s in model.optimizer_g.state.items()}
    good_pix = model.cri_pix
    model.cri_pix = nan_loss
    with host_reads() as calls:
        model.optimize_parameters(3)
    assert calls == []
    for k, v in model.net_g.named_parameters():
        assert torch.equal(weights[k], v), k
    for i, state in model.optimizer_g.state.items():
        for key, value in state.items():  # moments and the step count untouched
            assert torch.equal(value, adam[i][key]), key
    assert model.skipped_steps == 1
    model.cri_pix = good_pix
    model.optimize_parameters(4)  # a good step ends the run of skips and moves the weights
    assert model.skipped_steps == 0
    assert any(not torch.equal(weights[k], v) for k, v in model.net_g.named_parameters())
    model.cri_pix = nan_loss
    model.optimize_parameters(5)
    model.optimize_parameters(6)
    with pytest.raises(FloatingPointError, match='2 consecutive non-finite steps'):
        model.log_dict  # read at print_freq: the device counters are checked there


def test_host_guard_reads_the_flag_every_step(tiny_data):
    """The control for the test above: the host guard (the CPU default) is seen reading a value each step."""
    model = build(tiny_data, NET, **V2)
    assert not model.guard_on_device
    lq, gt = batches(7, 2)[0]
    model.feed_data({'lq': lq, 'gt': gt})
    with host_reads() as calls:
        model.optimize_parameters(1)
    assert '__bool__' in calls


def test_weight_clip_statistic_is_reused_between_refreshes():
    quantizer = WeightQuantizer(2, weight_clip='percentile').train()
    weight = torch.randn(4, 3, 3, 3)
    first = quantizer.clip_value(weight)
    quantizer.reuse_clip_statistic = True
    assert torch.equal(quantizer.clip_value(weight * 3), first)  # reused
    assert torch.allclose(quantizer.eval().clip_value(weight * 3), first * 3)  # eval: always fresh
    quantizer.train().reuse_clip_statistic = False
    assert torch.allclose(quantizer.clip_value(weight * 3), first * 3)


def test_weight_clip_interval_in_training_and_in_the_training_state(tiny_data, tmp_path):
    model = build(tiny_data, dict(NET, weight_clip='wcc'), weight_clip_interval=2, **V2)
    model.opt['path']['training_states'] = str(tmp_path)
    lq, gt = batches(8, 2)[0]
    model.feed_data({'lq': lq, 'gt': gt})
    seen = []
    for step in (1, 2, 3):
        model.optimize_parameters(step)
        seen.append([q.cached_clip_statistic for q in model.weight_quantizers])
    assert all(a is b for a, b in zip(seen[0], seen[1]))  # iteration 2 reused iteration 1's statistic
    assert all(a is not b for a, b in zip(seen[1], seen[2]))  # iteration 3 refreshed it
    model.save_training_state(epoch=0, current_iter=3)
    state = torch.load(tmp_path / '3.state', weights_only=False)
    resumed = build(tiny_data, dict(NET, weight_clip='wcc'), weight_clip_interval=2, **V2)
    resumed.resume_training(state)
    for quantizer, statistic in zip(resumed.weight_quantizers, seen[2]):
        assert torch.equal(quantizer.cached_clip_statistic, statistic)


def test_skip_range_gradients_leaves_the_input_gradient_and_drops_only_the_ranges():
    from odm_basicsr.quant import fake_quantize, skip_range_gradients
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 3, 6, 6, generator=g) * 2).requires_grad_()
    lower, upper = torch.tensor(-1.5, requires_grad=True), torch.tensor(2.0, requires_grad=True)
    weight = torch.randn(2, 3, 6, 6, generator=g)
    full = torch.autograd.grad((fake_quantize(x, lower, upper, 3) * weight).sum(), [x, lower, upper])
    assert full[1] != 0 and full[2] != 0
    with skip_range_gradients():
        out = (fake_quantize(x, lower, upper, 3) * weight).sum()
        grad_x, grad_lower = torch.autograd.grad(out, [x, lower], allow_unused=True)
    assert torch.equal(grad_x, full[0])
    assert grad_lower is None  # not computed
    again = torch.autograd.grad((fake_quantize(x, lower, upper, 3) * weight).sum(), [lower])[0]
    assert torch.equal(again, full[1])  # the context restored them


def test_range_gradients_of_an_odm_step_are_the_reconstruction_loss_alone(tiny_data):
    """The regularizer's pass skips the range gradients; the ranges still get g_R, exactly."""
    model = build(tiny_data, NET, **V2)
    lq, gt = batches(9, 2)[0]
    ranges = [p for n, p in model.net_g.named_parameters() if n.endswith(('lower', 'upper'))]
    expected = torch.autograd.grad(model.cri_pix(model.net_g(lq), gt), ranges)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    for param, grad in zip(ranges, expected):
        assert torch.allclose(param.grad, grad, rtol=1e-6, atol=1e-9)

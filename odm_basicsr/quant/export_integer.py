"""Integer ONNX export: a graph whose quantized convs and linears run as onnxruntime integer kernels.

The exact export (``export.py``) reproduces the fake-quant network to float rounding, but onnxruntime fuses none
of it: float ops sit between DequantizeLinear and Conv. This mode writes the canonical QDQ form that onnxruntime's
optimizer turns into QLinearConv / QLinearMatMul:

    Q(x; s, zp) -> [Clip(c_lo, c_hi) on uint8] -> DQ -> Conv(DQ(int8 W; s_w, 0), DQ(int32 b; s·s_w, 0)) -> Q(uint8)

What it changes against the fake-quant network, each step named in the export report:

1. **Integer zero point.** The free activation grid l + i·s (i = 0..L) sits δ = l - n·s off the integer grid
   (n + i)·s, n = round(l / s) (``integer_grid``, ``grid_shift``). The graph quantizes X - δ on the integer grid
   and adds δ back through the consumer's bias (b + δ·ΣW): the same levels as the free grid, so nothing moves. The
   -δ folds into the producing conv's bias where its output goes straight onto this grid (step 4); otherwise it is
   one float Sub before the QuantizeLinear. Exact except on the border ring of a zero-padded conv, where the
   padding stands for -δ instead of 0. Codes are uint8 c = n + i + zp with zp = max(-n, 0); a b-bit grid (b < 8)
   is cut out of uint8 by a Clip on the codes.
2. **Weights.** b <= 7: the zero-free grid as odd integers at half the step, times ``code_spread`` (exact). b = 8:
   the 256-level zero-free grid does not fit int8; it is rounded to int8 at scale u/127 (error at most u/254 per
   weight).
3. **Bias** (with the offsets' W·o/a and step 1's δ·ΣW folded in): int32 at scale s·s_w, rounding at most
   s·s_w/2 (finer by the spread, except for a network trained with ``integer_zero_point``, whose bias keeps the
   grid it was trained on).
4. **Conv outputs.** An output that feeds, through a ReLU at most, one quantized layer's input is quantized
   straight onto that layer's input grid (the ReLU becomes the uint8 Clip's lower bound, the code of 0; no Clip
   where that code is 0 and the grid is all of uint8, as for a post-ReLU 8-bit grid from 0): the
   same codes as the fake-quant network. Any other output (a residual add, a concat, the tail) is requantized to
   uint8 on its 8-bit min/max range observed on calibration images; a scalar Mul after it (res_scale) stays a
   float Mul, as the network computes it (folded into the DequantizeLinear scale it would differ in the last bit,
   enough to flip codes of the next grid).
5. **Offsets (ODM v1)**, X' = (X - o)/a: X is zero-padded first, then shifted and scaled, and the conv runs
   unpadded with bias b + W_q·(o/a); border pixels see q(-o/a) + o/a instead of 0.
6. **Linear layers**: MatMul -> requantize -> DequantizeLinear -> Add(bias) (QLinearMatMul has no bias input).
   Quantized matmul operands (SwinIR attention) keep the exact QDQ form; their products run in float.

A network built with ``integer_zero_point: true`` (``set_integer_zero_point``) computes steps 1-4 itself: its grids
have integer zero points, 8-bit weights sit on the int8 grid, the bias on its int32 grid, and calibration switches on
an ``OutputRequantizer`` exactly where step 4 requantizes and records the consumer of each chained output
(``calibrate_output_requantizers``). In eval its quantized layers compute the integer kernels' arithmetic
(``integer_kernel_output``), so the export reproduces it up to the rounding of its float layers.

``onnx_integer_ops`` lists what onnxruntime's optimized graph actually runs.
"""
import copy
import io
import json
import os.path as osp
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .convert import _set_submodule, activation_points, quantized_layers
from .export import ExportQuantOperand, _QuantizeCodes, check_calibrated, describe_onnx, weight_grid
from .functional import explicit_padding, offset_input
from .integer_kernel import (INT8_MAX, UINT8_MAX, folded_bias, folded_grid_shift, integer_bias_codes,
                             requantization_grid, uint8_grid, weight_code_scale)
from .layers import QuantLinear, QuantOperand


class _DequantizeInitializer(torch.autograd.Function):
    """Integer codes -> codes·scale; ONNX: DequantizeLinear with zero point 0, per tensor (``count`` 0, scale 0-dim)
    or along ``axis`` (``count`` scales). ``int32`` marks a bias (int32 codes), otherwise int8 weights."""

    @staticmethod
    def forward(ctx, codes, scale, axis, count, int32):
        if count:
            shape = [1] * codes.dim()
            shape[axis] = -1
            scale = scale.view(shape)
        return codes.float() * scale

    @staticmethod
    def symbolic(g, codes, scale, axis, count, int32):
        dtype = torch.int32 if int32 else torch.int8
        if not count:
            return g.op('DequantizeLinear', codes, scale, g.op('Constant', value_t=torch.tensor(0, dtype=dtype)))
        return g.op('DequantizeLinear', codes, scale, g.op('Constant', value_t=torch.zeros(count, dtype=dtype)),
                    axis_i=axis)


def observe_output_ranges(net, batches):
    """{layer name: (min, max)} of each quantized conv / linear output of the fake-quant ``net`` over ``batches``
    (a list of (N, C, H, W) tensors on the network's device); a linear layer's before its bias."""
    net = getattr(net, 'module', net)
    ranges, hooks = {}, []

    def keep(name):
        def hook(module, inputs, output):
            if isinstance(module, QuantLinear):  # the export requantizes the product before the bias add,
                if module.bias is not None:  # and the product of X - δ (grid_shift)
                    output = output - module.bias
                shift = folded_grid_shift(module.act_quantizer)
                if shift is not None:
                    output = output - shift * module.weight_quantizer(module.weight).sum(dim=1)
            low, high = float(output.min()), float(output.max())
            old = ranges.get(name, (low, high))
            ranges[name] = (min(old[0], low), max(old[1], high))
        return hook

    for name, layer in quantized_layers(net):
        hooks.append(layer.register_forward_hook(keep(name)))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                net(batch)
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return ranges


class IntegerQuantLayer(nn.Module):
    """Export-time stand-in for a QuantConv2d or QuantLinear in the integer graph (module docstring, steps 1-6).

    Args:
        layer (QuantConv2d | QuantLinear): calibrated.
        output_range (tuple[float, float]): observed (min, max) of the layer's output, for the requantization.
    """

    def __init__(self, layer, output_range):
        super().__init__()
        self.is_linear = isinstance(layer, QuantLinear)
        w_bits, a_bits = layer.weight_quantizer.bits, layer.act_quantizer.bits
        with torch.no_grad():
            grid = uint8_grid(*layer.act_quantizer.valid_range(), a_bits)
            self.zero_point, self.code_lo, self.code_hi = grid['zero_point'], grid['code_lo'], grid['code_hi']
            shift = folded_grid_shift(layer.act_quantizer)
            self.grid_shift_steps = 0.0 if shift is None else abs(float(shift) / float(grid['scale']))
            self.register_buffer('act_scale', grid['scale'])
            k, upper = weight_grid(layer)
            levels = layer.weight_quantizer.levels
            scale, spread = weight_code_scale(layer.weight_quantizer, upper)  # u/127 at 8 bits, step/2 = u/L below
            if levels == 254:  # the int8 grid (8 bits, integer_zero_point): exact
                codes = (k.to(torch.int16) - 127).to(torch.int8)
            elif w_bits <= 7:  # odd integers at half the step, times a spread factor: exact
                codes = ((2 * k.to(torch.int16) - (2**w_bits - 1)) * spread).to(torch.int8)
            else:  # the 256-level zero-free grid rounded onto int8 at u/127
                step = 2 * upper / levels
                codes = torch.clamp(torch.round((k.float() * step - upper) / scale), -INT8_MAX, INT8_MAX).to(torch.int8)
            scale = scale.reshape(-1) if scale.numel() > 1 else scale.reshape(())
            weight = codes.float() * (scale.view(-1, *([1] * (codes.dim() - 1))) if scale.dim() else scale)
            self.register_buffer('grid_shift', shift)
            in_shift, in_scale = offset_input(layer)
            bias = folded_bias(layer, weight, in_shift, in_scale, shift)
            self.exact_bias = bias  # what the int32 codes round (not exported; for measuring that rounding)
            if self.is_linear:
                self.register_buffer('weight_codes', codes.t().contiguous())  # (in, out): MatMul's B
                self.weight_axis = 1
                self.register_buffer('bias', None if layer.bias is None and shift is None else bias)
                self.register_buffer('bias_codes', None)
                self.register_buffer('bias_scale', None)
            else:  # always a bias: the chain pass folds the consumer's -δ into it (step 1)
                self.weight_axis = 0
                self.register_buffer('weight_codes', codes)
                bias_scale = (self.act_scale * (scale if scale.dim() else scale.expand(codes.shape[0]))).float()
                # trained with integer_zero_point: the bias rounding it was trained with (s_x·s_w before the spread)
                grid = spread if layer.output_quantizer is not None else 1
                bias_codes = integer_bias_codes(bias, bias_scale, grid)
                self.register_buffer('bias_codes', bias_codes.to(torch.int32))
                self.register_buffer('bias_scale', bias_scale.contiguous())
                self.register_buffer('bias', None)
            self.register_buffer('weight_scale', scale.contiguous())
            # python ints (the ONNX symbolics need them at trace time): per-channel scale counts, 0 per tensor
            self.weight_scale_count = scale.numel() if scale.dim() else 0
            self.bias_count = 0 if self.bias_scale is None else self.bias_scale.numel()
            self.register_buffer('in_shift', None if in_shift is None else in_shift.view(1, -1, 1, 1))
            self.register_buffer('in_scale', None if in_scale is None else in_scale.view(1, -1, 1, 1))
            requantizer = layer.output_quantizer
            if requantizer is not None and requantizer.is_active:  # trained with it: the same grid
                out_scale, self.out_zero_point = requantizer.scale.detach().clone(), int(requantizer.zero_point)
            else:
                out_scale, self.out_zero_point = requantization_grid(*output_range)
            self.register_buffer('out_scale', out_scale)
        if not self.is_linear:
            self.stride, self.dilation, self.groups = layer.stride, layer.dilation, layer.groups
            self.padding = layer.padding
            self.pad_first = in_shift is not None or in_scale is not None
            self.pad_first_padding = explicit_padding(layer) if self.pad_first else None

    def accumulate(self, x):
        """The integer kernel's result before its 8-bit output requantization: the conv with its int32 bias, or the
        linear layer's product (its bias is added after the requantization)."""
        if not self.is_linear and self.pad_first:
            ph, pw = self.pad_first_padding
            x = F.pad(x, (pw, pw, ph, ph))
        if self.in_shift is not None:
            x = x - self.in_shift
        if self.in_scale is not None:
            x = x / self.in_scale
        if self.grid_shift is not None:
            x = x - self.grid_shift
        x = _QuantizeCodes.apply(x, self.act_scale, self.zero_point, self.code_lo, self.code_hi)
        weight = _DequantizeInitializer.apply(self.weight_codes, self.weight_scale, self.weight_axis,
                                              self.weight_scale_count, False)
        if self.is_linear:
            return torch.matmul(x, weight)
        bias = _DequantizeInitializer.apply(self.bias_codes, self.bias_scale, 0, self.bias_count, True)
        return F.conv2d(x, weight, bias, self.stride, 0 if self.pad_first else self.padding, self.dilation,
                        self.groups)

    def forward(self, x):
        y = _QuantizeCodes.apply(self.accumulate(x), self.out_scale, self.out_zero_point, 0, UINT8_MAX)
        return y + self.bias if self.is_linear and self.bias is not None else y


def to_integer_module(net, calibration_batches, output_ranges=None):
    """A deep copy of ``net`` (eval, CPU) with every quantized layer swapped for an IntegerQuantLayer (output ranges
    observed on ``calibration_batches``, or ``output_ranges`` when given) and every quantized matmul operand for an
    ExportQuantOperand (exact QDQ).

    Returns:
        (nn.Module, dict): the module and a report: layers, grids_shifted (layer names whose free grid sits off the
        integer grid, the shift folded into biases: ``grid_shift``), largest_shift (in steps).
    """
    check_calibrated(net)
    source = getattr(net, 'module', net)
    device = next(source.parameters()).device
    ranges = output_ranges or observe_output_ranges(source, [b.to(device) for b in calibration_batches])
    model = copy.deepcopy(source).cpu().eval()
    shifted = {}
    for name, point in activation_points(model):
        if isinstance(point, QuantOperand):
            _set_submodule(model, name, ExportQuantOperand(point))
            continue
        layer = IntegerQuantLayer(point, ranges[name])
        if layer.grid_shift is not None:
            shifted[name] = layer.grid_shift_steps
        _set_submodule(model, name, layer)
    return model, dict(layers=len(quantized_layers(source)), grids_shifted=sorted(shifted),
                       largest_shift=max(shifted.values(), default=0.0))


# ---------------------------------------------------------------------------------------------------------------
# ONNX pass: quantize a conv's output straight onto the next quantized layer's input grid (module docstring, 4)
# ---------------------------------------------------------------------------------------------------------------
class _Graph:
    """Producer / consumer maps and constant lookup over an onnx GraphProto."""

    def __init__(self, graph):
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.constants = {n.output[0]: n for n in graph.node if n.op_type == 'Constant'}
        # the exporter replaces an initializer equal to another one by an Identity of it
        self.identities = {n.output[0]: n.input[0] for n in graph.node if n.op_type == 'Identity'}
        self.outputs = {o.name for o in graph.output}
        self.consumers = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def value(self, name):
        """numpy value of a constant input (initializer, Constant node, or an Identity of one), or None."""
        from onnx import numpy_helper
        while name in self.identities and name not in self.inits:
            name = self.identities[name]
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.constants.get(name)
        if node is not None:
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def only_consumer(self, name, op_type=None):
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs or (op_type and users[0].op_type != op_type):
            return None
        return users[0]

    def add_constant(self, name, array):
        from onnx import numpy_helper
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        self.inits[name] = self.graph.initializer[-1]
        return name


def chain_requantizations(model):
    """Rewrite ``conv -> Q_out -> DQ_out [-> Relu] [-> Sub(δ)] -> Q_in [-> Clip] -> DQ_in`` into
    ``conv(bias - δ) -> Q_in -> Clip -> DQ_in`` in place (the Sub is the consumer's ``grid_shift``); a scalar Mul
    by 1 after a requantization is dropped, and an output scaled by anything else is not chained (its Mul stays).

    Returns:
        dict[str, str | None]: {layer: consumer} for the layers whose output now goes straight onto their consumer's
        grid, both named by their ``<layer>.weight_codes`` initializer (consumer None where it is not a conv or
        linear layer of the graph).
    """
    graph = model.graph
    chained, counter = {}, 0
    for conv in list(graph.node):
        if conv.op_type not in ('Conv', 'MatMul'):
            continue
        g = _Graph(graph)
        q_out = g.only_consumer(conv.output[0], 'QuantizeLinear')
        dq_out = q_out and g.only_consumer(q_out.output[0], 'DequantizeLinear')
        if not dq_out:
            continue
        nxt = g.only_consumer(dq_out.output[0])
        if nxt is not None and nxt.op_type == 'Mul':  # res_scale
            other = nxt.input[1] if nxt.input[0] == dq_out.output[0] else nxt.input[0]
            factor = g.value(other)
            if factor is None or factor.size != 1 or factor.reshape(()) != 1:
                # conv·r onto the next grid would need r in the conv's scales: requantized instead. The Mul stays:
                # folded into the DQ scale, (c - zp)·(s·r) differs from the network's ((c - zp)·s)·r in the last
                # bit, enough to flip a code of the next grid, and flips compound over a deep network
                continue
            _rewire(graph, nxt.output[0], dq_out.output[0])  # by 1: nothing to compute
            graph.node.remove(nxt)
            g = _Graph(graph)
            nxt = g.only_consumer(dq_out.output[0])
        relu = shift = None
        if nxt is not None and nxt.op_type == 'Relu':
            relu, nxt = nxt, g.only_consumer(nxt.output[0])
        if nxt is not None and nxt.op_type == 'Sub':
            delta = g.value(nxt.input[1])
            if delta is None or delta.size != 1 or g.value(nxt.input[0]) is not None:
                continue
            shift, nxt = nxt, g.only_consumer(nxt.output[0])
        if conv.op_type != 'Conv' or nxt is None or nxt.op_type != 'QuantizeLinear':
            continue
        q_in = nxt
        zero_point = g.value(q_in.input[2])
        if zero_point is None or zero_point.dtype != np.uint8 or g.value(dq_out.input[1]) is None:
            continue
        bias_dq = None
        if shift is not None:  # conv - δ: into the int32 bias (the consumer's grid_shift, step 1)
            bias_dq = next((n for n in graph.node if len(conv.input) > 2 and conv.input[2] in n.output), None)
            if (bias_dq is None or bias_dq.op_type != 'DequantizeLinear' or g.value(bias_dq.input[0]) is None
                    or g.value(bias_dq.input[0]).dtype != np.int32):
                continue
        zp = int(zero_point)
        delta = 0.0 if shift is None else float(g.value(shift.input[1]).reshape(()))
        clip = g.only_consumer(q_in.output[0], 'Clip')
        if relu is not None:  # ReLU's 0 sits at the code of Q(0 - δ) (Q is monotone: max commutes with it)
            relu_code = int(min(max(zp + np.round(-delta / float(g.value(q_in.input[1]))), 0), UINT8_MAX))
            if clip is not None:
                low = int(g.value(clip.input[1]))
                if low < relu_code:
                    counter += 1
                    clip.input[1] = g.add_constant(f'odm_clip_low_{counter}', np.array(relu_code, np.uint8))
            elif relu_code > 0:  # the ReLU becomes a uint8 Clip at the zero point (at code 0, uint8 is the clip)
                counter += 1
                clipped = f'odm_relu_codes_{counter}'
                _rewire(graph, q_in.output[0], clipped)
                low = g.add_constant(f'odm_clip_low_{counter}', np.array(relu_code, np.uint8))
                high = g.add_constant(f'odm_clip_high_{counter}', np.array(UINT8_MAX, np.uint8))
                node = _make_node('Clip', [q_in.output[0], low, high], [clipped])
                graph.node.insert(list(graph.node).index(q_in) + 1, node)
        if bias_dq is not None:
            codes, bias_scale = g.value(bias_dq.input[0]), g.value(bias_dq.input[1]).astype(np.float64)
            counter += 1
            shifted = codes.astype(np.int64) - np.round(delta / bias_scale).astype(np.int64)
            bias_dq.input[0] = g.add_constant(f'odm_shifted_bias_{counter}', shifted.astype(np.int32))
        q_in.input[0] = conv.output[0]
        for node in (q_out, dq_out, relu, shift):
            if node is not None:
                graph.node.remove(node)
        g = _Graph(graph)
        consumer = g.only_consumer((g.only_consumer(q_in.output[0], 'Clip') or q_in).output[0], 'DequantizeLinear')
        consumer = consumer and g.only_consumer(consumer.output[0])
        chained[_layer_name(graph, conv)] = _layer_name(graph, consumer) if consumer is not None and \
            consumer.op_type in ('Conv', 'MatMul') else None
    return chained


def _layer_name(graph, node):
    """The quantized layer that a Conv / MatMul node of the integer graph computes: the name of its weight codes
    initializer without ``.weight_codes`` (else the node's name)."""
    weight_dq = next((n for n in graph.node if len(node.input) > 1 and node.input[1] in n.output), None)
    name = weight_dq.input[0] if weight_dq is not None else node.name
    return name[:-len('.weight_codes')] if name.endswith('.weight_codes') else name


def _make_node(op_type, inputs, outputs):
    from onnx import helper
    return helper.make_node(op_type, inputs, outputs)


def _rewire(graph, old, new):
    """Point every consumer of tensor ``old`` (and the graph outputs) at ``new``."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for output in graph.output:
        if output.name == old:
            output.name = new


def export_onnx_integer(net, example_input, path, calibration_batches, opset=13):
    """Write ``net`` as an integer ONNX graph (module docstring): input 'lr', output 'sr', dynamic batch (and height
    and width unless the network sets ``onnx_dynamic_size = False``).

    Args:
        net (nn.Module): a calibrated quantized network.
        example_input (Tensor): (N, C, H, W) for tracing.
        path (str): output .onnx file.
        calibration_batches (list[Tensor]): LR images (N, C, H, W) whose outputs set the requantization ranges.
    Returns:
        dict: ``describe_onnx`` plus mode, chained (conv outputs quantized onto their consumer's grid),
        requantized (the others), layers, grids_shifted, largest_shift.
    """
    import onnx
    model, report = to_integer_module(net, calibration_batches)
    proto = _trace(model, example_input, getattr(getattr(net, 'module', net), 'onnx_dynamic_size', True), opset)
    chained = chain_requantizations(proto)
    onnx.save(proto, path)
    info = describe_onnx(path)
    trained = {n: m.output_quantizer.is_active for n, m in quantized_layers(net) if m.output_quantizer is not None}
    # layers whose trained requantization differs from the export's (none when calibrate() decided them)
    mismatched = sorted(n for n, active in trained.items() if active == (n in chained))
    info.update(report, mode='integer', chained=len(chained), requantized=report['layers'] - len(chained),
                trained_requantization=bool(trained), requantization_mismatches=mismatched)
    return info


def _trace(model, example_input, dynamic_size, opset=13):
    """The TorchScript ONNX export of ``model`` as a ModelProto (input 'lr', output 'sr', dynamic batch)."""
    import onnx
    axes = {0: 'batch', 2: 'height', 3: 'width'} if dynamic_size else {0: 'batch'}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (example_input.cpu(), ), buffer, dynamo=False, opset_version=opset,
                          input_names=['lr'], output_names=['sr'], dynamic_axes={'lr': axes, 'sr': axes})
    return onnx.load_from_string(buffer.getvalue())


def calibrate_output_requantizers(net, batches, reduce_fn=None):
    """Switch on the OutputRequantizers (``set_integer_zero_point``) of exactly the layers whose output the integer
    export requantizes, with the 8-bit grid of the output's min/max on ``batches``, quantizers on; the others
    (outputs that go onto the next layer's grid) stay off. Which is which comes from tracing the integer graph.

    The layers whose output the export chains record their consumer (``OutputRequantizer.consumer_index``), so that
    in eval they compute what the integer graph computes (``integer_kernel_output``).

    Returns:
        list[str]: the layers whose requantizer is on.
    """
    source = getattr(net, 'module', net)
    layers = {n: m for n, m in quantized_layers(source) if m.output_quantizer is not None}
    if not layers:
        return []
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise RuntimeError('integer_zero_point: true traces the integer ONNX graph at calibration to find the outputs '
                           'it requantizes, which needs onnx: pip install "odm-basicsr[export]"') from None
    reduce_fn = reduce_fn or (lambda t: t)
    for layer in layers.values():
        layer.output_quantizer.set_grid(1.0, 0, False)
    ranges = observe_output_ranges(source, batches)
    model, _ = to_integer_module(source, batches, output_ranges=ranges)
    chained = chain_requantizations(_trace(model, batches[0][:1], getattr(source, 'onnx_dynamic_size', True)))
    positions = {name: i for i, (name, _) in enumerate(activation_points(source))}
    switched_on = []
    for name, layer in layers.items():
        low, high = (float(reduce_fn(torch.tensor(v, dtype=torch.float64))) for v in ranges[name])
        scale, zero_point = requantization_grid(low, high)
        consumer = positions.get(chained.get(name), -1)
        layer.output_quantizer.set_grid(scale, zero_point, name not in chained, consumer)
        if name not in chained:
            switched_on.append(name)
    return switched_on


def onnx_integer_ops(path, optimized_path):
    """Run onnxruntime's optimizer (all levels) on ``path`` and count what its graph runs.

    Returns:
        dict: ops ({op type: count} of the optimized graph), integer_kernels (QLinearConv + QLinearMatMul +
        ConvInteger + MatMulInteger ops), float_convs (Conv + FusedConv + MatMul + Gemm fed by a DequantizeLinear
        weight, i.e. quantized layers left in float).
    """
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = optimized_path
    options.log_severity_level = 3
    ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    graph = onnx.load(optimized_path).graph
    producers = {o: n for n in graph.node for o in n.output}
    ops = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    float_convs = sum(1 for n in graph.node if n.op_type in ('Conv', 'FusedConv', 'MatMul', 'Gemm', 'FusedMatMul')
                      and len(n.input) > 1 and getattr(producers.get(n.input[1]), 'op_type', '') == 'DequantizeLinear')
    integer = sum(ops.get(k, 0) for k in ('QLinearConv', 'QLinearMatMul', 'ConvInteger', 'MatMulInteger'))
    uint8_tensors, uint8_ops = set(), {}  # ops that move or clip codes (Clip, DepthToSpace, Transpose on uint8)
    for node in graph.node:
        if node.op_type == 'QuantizeLinear' or node.op_type.startswith(INTEGER_OPS):
            uint8_tensors.update(node.output)
        elif not _kernel_or_boundary(node.op_type) and node.input and node.input[0] in uint8_tensors:
            uint8_tensors.update(node.output)
            uint8_ops[node.op_type] = uint8_ops.get(node.op_type, 0) + 1
    return dict(ops=ops, integer_kernels=integer, float_convs=float_convs, uint8_ops=uint8_ops)


INTEGER_OPS = ('QLinear', 'ConvInteger', 'MatMulInteger')  # op-type prefixes of onnxruntime's integer kernels
BOUNDARY_OPS = ('QuantizeLinear', 'DequantizeLinear', 'DynamicQuantizeLinear')
ON_UINT8 = ' on uint8'  # the suffix of an op other than these two kinds that reads uint8 / int8 codes


def _kernel_or_boundary(op):
    """An integer kernel or a float <-> integer boundary (the op types that are neither float nor code moves)."""
    return op.startswith(INTEGER_OPS) or op in BOUNDARY_OPS


def node_summary(ops, uint8_ops=None):
    """One line of an optimized graph's node counts ({op type: count}): integer kernels and the ops on uint8 codes
    (``uint8_ops``, e.g. a Clip that cuts a 4-bit grid out of uint8), the float <-> integer boundaries, and the ops
    left in float, most frequent first."""
    def listed(kinds, suffix=''):
        return ', '.join(f'{n} {k}{suffix}' for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    uint8_ops = uint8_ops or {}
    integer = {k: n for k, n in ops.items() if k.startswith(INTEGER_OPS)}
    boundary = {k: n for k, n in ops.items() if k in BOUNDARY_OPS}
    floats = {k: n - uint8_ops.get(k, 0) for k, n in ops.items() if k not in integer and k not in boundary}
    floats = {k: n for k, n in floats.items() if n > 0}
    integer_part = ', '.join(p for p in (listed(integer), listed(uint8_ops, ON_UINT8)) if p) or 'none'
    return (f'integer: {integer_part}; quantize / dequantize: {listed(boundary) or "none"}; '
            f'float: {listed(floats) or "none"}')


def operator_time_shares(path, feed, runs=5, threads=0):
    """Where onnxruntime's time goes: its profiler over ``runs`` runs of ``feed`` ({input name: array}) after one
    warm-up run, CPU, all graph optimizations (the graph as deployed), ``threads`` intra-op threads (0: its default).

    Returns:
        list[tuple[str, float, float, int]]: (op type, share of the summed node time, milliseconds per run, nodes
        per run), largest share first; an op other than an integer kernel or a Q/DQ boundary whose first input is
        uint8 or int8 is named '<op> on uint8'. Node times exclude the session's own overhead: shares sum to 1.
    """
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = osp.join(tmp, 'profile')
        session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        for _ in range(runs + 1):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    run_starts = sorted(e['ts'] for e in events if e.get('cat') == 'Session' and e.get('name') == 'model_run')
    after_warmup = run_starts[1] if len(run_starts) > 1 else 0
    total, count = {}, {}
    for event in events:
        if event.get('cat') != 'Node' or not event.get('name', '').endswith('_kernel_time') or \
                event['ts'] < after_warmup:
            continue
        args = event.get('args', {})
        op = args.get('op_name', '?')
        inputs = args.get('input_type_shape') or [{}]
        if not _kernel_or_boundary(op) and set(inputs[0]) & {'uint8', 'int8'}:
            op += ON_UINT8  # moves or clips codes (Clip of a 4-bit grid, DepthToSpace, Transpose)
        total[op] = total.get(op, 0) + event['dur']
        count[op] = count.get(op, 0) + 1
    overall = sum(total.values()) or 1
    return sorted(((op, us / overall, us / 1e3 / runs, count[op] // runs) for op, us in total.items()),
                  key=lambda row: -row[1])


def time_share_lines(shares):
    """``basicsr export --profile``'s report of ``operator_time_shares``: one line per op type, then the ops that
    run in float with their summed share (an op with no integer path, named with its cost)."""
    lines = [f'  {op:<22} {share:6.1%} {ms:9.2f} ms  {nodes} nodes' for op, share, ms, nodes in shares]
    floats = [(op, share) for op, share, _, _ in shares if not _kernel_or_boundary(op) and not op.endswith(ON_UINT8)]
    if floats:
        lines.append(f'in float (no integer kernel in this graph): {sum(s for _, s in floats):.1%} of the time: '
                     + ', '.join(f'{op} {share:.1%}' for op, share in floats))
    return lines

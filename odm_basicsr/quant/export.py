"""Integer export of a calibrated quantized network: folded layer description, ONNX QDQ graph, bit-packed checkpoint.

Integer mappings (b bits, L = 2^b - 1; every value below is float32, computed as ``fake_quantize`` computes it).

Weights. ``WeightQuantizer`` puts W·a (a: the offset scale, 1 without offset) on a symmetric grid without a zero
level over [-u, u]. u is computed once from the final weights and stored: max|W·a|, P99(|W·a|), or for wcc
P99(|W·a|)·|gamma| (gamma folds into u). With step = 2u / L:

    w = k·step - u                  k in {0, ..., L}                        unsigned b-bit code (packed checkpoint)
      = m·(step / 2)                m = 2k - L in {-L, ..., -3, -1, 1, 3, ..., L}  (odd: there is no zero level)

    ONNX, b <= 7:  int8 initializer m -> DequantizeLinear(scale = step/2, zero_point = 0) -> Conv.
    ONNX, b = 8:   m reaches +-255, beyond int8: int8 initializer j = k - 128 = (m - 1)/2 ->
                   DequantizeLinear(scale = step, zero_point = 0) -> Add(step/2) -> Conv.

The dequantized ONNX weights equal the torch levels up to float32 rounding (at most a few ulps of u: torch adds -u
last, DequantizeLinear multiplies once). The packed checkpoint stores k and u and rebuilds k·step - u with torch's
own operations, so its weights, and the network output, are bit-identical.

Activations. ``ActQuantizer`` grid on [l, u] (``valid_range()``), s = (u - l) / L, levels l + i·s, i in {0..L}:

    Clip(x, l, u) -> Sub(l) -> QuantizeLinear(s, zero_point 0, uint8) -> DequantizeLinear(s, 0) -> Add(l)

This is the uint8 zero-point form with zero point 0 and the whole lower bound l carried as a float shift. The
QuantizeLinear input is then bit-identical to torch's clip(x) - l, and onnxruntime divides by s and rounds half to
even like ``torch.round``, so the codes i equal torch's. An integer zero point round(-l/s) would still leave a float
residual l + zp·s (zero padding stops it from folding into a bias) and would round differently near ties. The Clip
keeps i <= L for b < 8 (uint8 saturation alone stops at 255).

Offsets (ODM v1), x' = (x - o) / a. The scale a folds into the weight codes (they encode q(W·a)). x' stays a float
per-channel Sub / Div in front of the Clip. o / a is added back per channel after Add(l) and before the conv's zero
padding, as in ``QuantConv2d.forward``. The per-channel constant c = l + o/a folds into the bias only for interior
pixels: ``int_bias`` = b + sum W_q·c, so y = s·conv_valid(i, W_q) + int_bias wherever the kernel does not touch the
padding. At the border the padded zeros are the code -c/s, which is not an integer; this is why the ONNX graph keeps
the float Adds before the Conv. A layer built with integer_zero_point instead pads first, as it was trained
(``QuantConv2d.pads_first``): Pad -> Sub / Div -> QDQ -> unpadded Conv, the bias b + W_q·(o/a) on its int32 grid.
"""
import copy
import io
import math
import os
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .convert import _set_submodule, activation_points, quantized_layers
from .functional import explicit_padding, offset_bias, offset_constant, offset_input
from .integer_kernel import UINT8_MAX
from .layers import QuantConv2d, QuantLinear, QuantOperand
from .quantizer import WeightQuantizer

PACKED_FORMAT = 'odm-packed-v1'
def _levels(bits):
    return 2**bits - 1


def check_calibrated(net):
    """Raise ValueError naming the quantized layers whose activation range was never calibrated."""
    missing = [n for n, m in activation_points(net) if not bool(m.act_quantizer.calibrated)]
    if missing:
        raise ValueError(f'the network was never calibrated: act_quantizer.calibrated is false in {len(missing)} '
                         f'quantized layer(s) or matmul operand(s) ({", ".join(missing[:4])}{" ..." if len(missing) > 4 else ""}). '
                         'Export a checkpoint written by ODM training (or calibrate the network first): the activation '
                         'ranges would be the placeholder [-1, 1].')


def _offset_pair(layer):
    """(o, a) as (C,) tensors, or None when the layer has no enabled offset."""
    if getattr(layer, 'offset', None) is None or layer.offset.kind == 'none':
        return None
    return layer.offset.effective()


def grid_weight(codes, upper, bits, levels=None):
    """k·step - u (float32, codes' shape) with the operations of ``fake_quantize``: bit-identical to q_w. ``levels``:
    the grid's steps, 2^bits - 1 unless given (254 on the int8 grid)."""
    lower = -upper
    step = (upper - lower) / (levels or _levels(bits))
    return codes.float() * step + lower


def weight_grid(layer):
    """Unsigned codes k (uint8, weight shape) and clip value u (0-dim, or (C_out, 1, 1, 1) per channel; float32)
    with q_w(W·a) = k·step - u."""
    quantizer = layer.weight_quantizer
    if isinstance(quantizer, FrozenWeightQuantizer):
        return quantizer.codes.clone(), quantizer.upper.clone()
    with torch.no_grad():
        pair = _offset_pair(layer)
        weight = layer.weight if pair is None else layer.effective_weight(pair)
        upper = quantizer.clip_value(weight).detach()
        lower = -upper
        step = (upper - lower) / quantizer.levels
        codes = torch.round((torch.minimum(torch.maximum(weight, lower), upper) - lower) / step)
    return codes.to(torch.uint8), upper


def fold_layer(layer):
    """The integer description of a calibrated QuantConv2d or QuantLinear (see the module docstring for the
    mappings; a linear layer is a 1x1 conv without offsets or padding).

    Returns:
        dict with
        w_bits, a_bits (int);
        weight_codes (int8, (C_out, C_in/groups, kh, kw), or (out, in) for linear): odd m (b <= 7) or j = k - 128
        (b = 8);
        weight_scale, weight_offset (float32: 0, or step/2 for b = 8): W_q = codes·scale + offset; 0-dim, or
        (C_out, 1, 1, 1) with weight_granularity 'channel';
        weight_k (uint8, same shape), weight_upper (0-dim or (C_out, 1, 1, 1)): the exact form k·step - u;
        act_lower, act_upper, act_scale (0-dim float32), act_zero_point (0), act_qmax (L): the uint8 grid of X';
        in_shift, in_scale ((C_in,) float32 or None): X' = (X - o) / a; post_add ((C_in,) or None): o / a;
        bias ((C_out,) or None); int_bias ((C_out,)): b + sum W_q·(l + o/a), exact for interior pixels.
    """
    if not isinstance(layer, (QuantConv2d, QuantLinear)):
        raise TypeError(f'fold_layer handles QuantConv2d and QuantLinear, got {type(layer).__name__}')
    if not bool(layer.act_quantizer.calibrated):
        raise ValueError('fold_layer needs a calibrated layer (act_quantizer.calibrated is false)')
    w_bits, a_bits = layer.weight_quantizer.bits, layer.act_quantizer.bits
    w_levels = layer.weight_quantizer.levels
    k, upper = weight_grid(layer)
    step = (upper - (-upper)) / w_levels
    if w_levels == 254:  # the int8 grid (8 bits with integer_zero_point): codes k - 127 at the step
        codes, scale, offset = (k.to(torch.int16) - 127).to(torch.int8), step, torch.zeros(())
    elif w_bits <= 7:
        codes, scale, offset = (2 * k.to(torch.int16) - _levels(w_bits)).to(torch.int8), step / 2, torch.zeros(())
    else:
        codes, scale, offset = (k.to(torch.int16) - 128).to(torch.int8), step, step / 2
    with torch.no_grad():
        lower, a_upper = (t.detach().clone() for t in layer.act_quantizer.valid_range())
        a_scale = (a_upper - lower) / _levels(a_bits)
        shift, in_scale = offset_input(layer)
        post_add = offset_constant(shift, in_scale)
        w_q = codes.float() * scale + offset
        if isinstance(layer, QuantLinear):
            int_bias = F.linear(lower.expand(1, layer.in_features), w_q, layer.bias)
        else:
            const = lower + (torch.zeros(layer.in_channels) if post_add is None else post_add)
            kh, kw = layer.kernel_size
            int_bias = F.conv2d(const.view(1, -1, 1, 1).expand(1, -1, kh, kw), w_q, layer.bias, groups=layer.groups)
    return dict(w_bits=w_bits, w_levels=w_levels, a_bits=a_bits, weight_codes=codes, weight_scale=scale,
                weight_offset=offset, weight_k=k, weight_upper=upper, act_lower=lower, act_upper=a_upper,
                act_scale=a_scale, act_zero_point=0, act_qmax=_levels(a_bits), in_shift=shift, in_scale=in_scale,
                post_add=post_add,
                bias=None if layer.bias is None else layer.bias.detach().clone(), int_bias=int_bias.flatten())


# ---------------------------------------------------------------------------------------------------------------
# ONNX: QuantizeLinear -> DequantizeLinear on activations, int8 initializer -> DequantizeLinear on weights
# ---------------------------------------------------------------------------------------------------------------
class _ActQDQ(torch.autograd.Function):
    """x (already clipped and shifted to [0, u - l]) -> round(x / s)·s; ONNX: uint8 QuantizeLinear -> Dequantize."""

    @staticmethod
    def forward(ctx, x, scale):
        return torch.clamp(torch.round(x / scale), 0, 255) * scale

    @staticmethod
    def symbolic(g, x, scale):
        zero = g.op('Constant', value_t=torch.tensor(0, dtype=torch.uint8))
        return g.op('DequantizeLinear', g.op('QuantizeLinear', x, scale, zero), scale, zero)


class _WeightDQ(torch.autograd.Function):
    """int8 codes -> codes·scale; ONNX: int8 initializer -> DequantizeLinear, per tensor (``channels`` = 0, scale
    0-dim) or per output channel (scale (channels,), axis 0)."""

    @staticmethod
    def forward(ctx, codes, scale, channels):
        if channels:
            scale = scale.view(-1, *([1] * (codes.dim() - 1)))
        return codes.float() * scale

    @staticmethod
    def symbolic(g, codes, scale, channels):
        if channels:
            zero = g.op('Constant', value_t=torch.zeros(channels, dtype=torch.int8))
            return g.op('DequantizeLinear', codes, scale, zero, axis_i=0)
        return g.op('DequantizeLinear', codes, scale, g.op('Constant', value_t=torch.tensor(0, dtype=torch.int8)))


class _QuantizeCodes(torch.autograd.Function):
    """x -> clip(round(x / s) + zp, lo, hi) -> (c - zp)·s; ONNX: QuantizeLinear(uint8) [-> Clip] -> Dequantize."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, lo, hi):
        # (no arithmetic with a python 0: TorchScript's peephole pass would drop it and break the export trace)
        if zero_point:
            return (torch.clamp(torch.round(x / scale) + zero_point, lo, hi) - zero_point) * scale
        return torch.clamp(torch.round(x / scale), lo, hi) * scale

    @staticmethod
    def symbolic(g, x, scale, zero_point, lo, hi):
        zero = g.op('Constant', value_t=torch.tensor(zero_point, dtype=torch.uint8))
        codes = g.op('QuantizeLinear', x, scale, zero)
        if lo > 0 or hi < UINT8_MAX:
            codes = g.op('Clip', codes, g.op('Constant', value_t=torch.tensor(lo, dtype=torch.uint8)),
                         g.op('Constant', value_t=torch.tensor(hi, dtype=torch.uint8)))
        return g.op('DequantizeLinear', codes, scale, zero)


def _act_qdq(x, lower, upper, scale):
    """The activation grid of ``ActQuantizer`` as Clip -> Sub(l) -> QuantizeLinear -> DequantizeLinear -> Add(l)."""
    return _ActQDQ.apply(torch.clamp(x, lower, upper) - lower, scale) + lower


class ExportQuantOperand(nn.Module):
    """Export-time stand-in for a QuantOperand (a quantized matmul input): the activation QDQ, any shape."""

    def __init__(self, operand):
        super().__init__()
        if not bool(operand.act_quantizer.calibrated):
            raise ValueError('a matmul operand was never calibrated')
        with torch.no_grad():
            lower, upper = (t.detach().clone() for t in operand.act_quantizer.valid_range())
        self.register_buffer('act_lower', lower)
        self.register_buffer('act_upper', upper)
        self.register_buffer('act_scale', (upper - lower) / _levels(operand.act_quantizer.bits))

    def forward(self, x):
        return _act_qdq(x, self.act_lower, self.act_upper, self.act_scale)


class ExportQuantLayer(nn.Module):
    """Export-time stand-in for a QuantConv2d or QuantLinear, built from ``fold_layer``; the same shapes in and
    out as the layer it replaces."""

    def __init__(self, layer):
        super().__init__()
        fold = fold_layer(layer)
        self.conv_args = None if isinstance(layer, QuantLinear) else (layer.stride, layer.padding, layer.dilation,
                                                                      layer.groups)
        # per-channel weight scales: their count, a python int (the ONNX symbolic needs it at trace time); 0 per tensor
        self.weight_channels = fold['weight_scale'].numel() if fold['weight_scale'].dim() else 0
        view = lambda t: None if t is None else t.view(1, -1, 1, 1)  # noqa: E731
        for name, value in (('in_shift', view(fold['in_shift'])), ('in_scale', view(fold['in_scale'])),
                            ('post_add', view(fold['post_add'])), ('act_lower', fold['act_lower']),
                            ('act_upper', fold['act_upper']), ('act_scale', fold['act_scale']),
                            ('weight_codes', fold['weight_codes']), ('weight_scale', fold['weight_scale'].flatten()
                                                                     if fold['weight_scale'].dim() else
                                                                     fold['weight_scale']),
                            ('weight_offset', fold['weight_offset'] if fold['w_levels'] == 255 else None),
                            ('bias', fold['bias'])):
            self.register_buffer(name, value)
        # integer_zero_point (OutputRequantizer): the int32-grid bias and the output requantization, as trained
        requantizer = getattr(layer, 'output_quantizer', None)
        self.requantize = requantizer is not None and requantizer.is_active
        self.bias_after = self.conv_args is None and self.requantize  # linear: requantize, then add the bias
        # integer_zero_point with an offset: pad first, the offset's W_q·(o/a) in the int32-grid bias, as trained
        self.pad_first = self.conv_args is not None and layer.pads_first
        if self.pad_first:
            self.padding = explicit_padding(layer)
            self.conv_args = (layer.stride, 0, layer.dilation, layer.groups)
        if requantizer is not None and self.conv_args is not None:
            folded = None
            if self.pad_first and self.post_add is not None:
                weight = grid_weight(fold['weight_k'], fold['weight_upper'], fold['w_bits'], fold['w_levels'])
                folded = offset_bias(weight, fold['post_add'])
                self.post_add = None
            if self.bias is not None or folded is not None:
                with torch.no_grad():
                    self.bias = layer.integer_bias(fold['weight_upper'], folded).detach().clone()
        if self.requantize:
            self.register_buffer('out_scale', requantizer.scale.detach().clone())
            self.out_zero_point = int(requantizer.zero_point)

    def forward(self, x):
        if self.pad_first:
            ph, pw = self.padding
            x = F.pad(x, (pw, pw, ph, ph))
        if self.in_shift is not None:
            x = x - self.in_shift
        if self.in_scale is not None:
            x = x / self.in_scale
        x = _act_qdq(x, self.act_lower, self.act_upper, self.act_scale)
        if self.post_add is not None:
            x = x + self.post_add
        weight = _WeightDQ.apply(self.weight_codes, self.weight_scale, self.weight_channels)
        if self.weight_offset is not None:
            weight = weight + self.weight_offset
        if self.conv_args is None:
            y = F.linear(x, weight, None if self.bias_after else self.bias)
        else:
            y = F.conv2d(x, weight, self.bias, *self.conv_args)
        if self.requantize:
            y = _QuantizeCodes.apply(y, self.out_scale, self.out_zero_point, 0, UINT8_MAX)
        return y + self.bias if self.bias_after and self.bias is not None else y


def to_export_module(net):
    """A deep copy of ``net`` (eval mode, CPU) with every quantized layer swapped for an ExportQuantLayer and every
    quantized matmul operand for an ExportQuantOperand."""
    check_calibrated(net)
    model = copy.deepcopy(getattr(net, 'module', net)).cpu().eval()
    for name, point in activation_points(model):
        _set_submodule(model, name, ExportQuantOperand(point) if isinstance(point, QuantOperand) else
                       ExportQuantLayer(point))
    return model


def export_onnx(net, example_input, path, opset=13):
    """Write ``net`` as an ONNX QDQ model (input 'lr', output 'sr'; the batch is dynamic, and height and width too
    unless the network sets ``onnx_dynamic_size = False``: then they stay at the example's, as SwinIR's window
    masks are traced for one size).

    Args:
        net (nn.Module): a calibrated network; quantized layers become QDQ, everything else stays float.
        example_input (Tensor): (N, C, H, W) used for tracing.
        path (str): output .onnx file. opset (int): 13 (per-tensor QDQ is standard since 10).
    Returns:
        dict: see ``describe_onnx``.
    """
    model = to_export_module(net)
    dynamic_size = getattr(getattr(net, 'module', net), 'onnx_dynamic_size', True)
    axes = {0: 'batch', 2: 'height', 3: 'width'} if dynamic_size else {0: 'batch'}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (example_input.cpu(), ), path, dynamo=False, opset_version=opset,
                          input_names=['lr'], output_names=['sr'], dynamic_axes={'lr': axes, 'sr': axes})
    return describe_onnx(path)


def describe_onnx(path):
    """Checked summary of an ONNX file: op counts, int8 weight initializers feeding DequantizeLinear, bytes."""
    import onnx
    model = onnx.load(path)
    onnx.checker.check_model(model)
    ops = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    int8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    int8_weights = [n.input[0] for n in model.graph.node if n.op_type == 'DequantizeLinear' and n.input[0] in int8]
    return dict(path=path, bytes=os.path.getsize(path), ops=ops, int8_weight_initializers=len(int8_weights),
                quantize_linear=ops.get('QuantizeLinear', 0), dequantize_linear=ops.get('DequantizeLinear', 0))


# ---------------------------------------------------------------------------------------------------------------
# Bit-packed checkpoint
# ---------------------------------------------------------------------------------------------------------------
def pack_bits(codes, bits):
    """Unsigned ``bits``-bit codes (any shape, values < 2^bits) -> uint8 array of ceil(n·bits/8) bytes, MSB first."""
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if flat.size and int(flat.max()) >= 2**bits:
        raise ValueError(f'code {int(flat.max())} does not fit {bits} bits')
    return np.packbits(np.unpackbits(flat[:, None], axis=1)[:, 8 - bits:].reshape(-1))


def unpack_bits(packed, bits, count):
    """Inverse of ``pack_bits``: the first ``count`` codes as a uint8 array (count,)."""
    planes = np.unpackbits(np.asarray(packed, dtype=np.uint8))[:count * bits].reshape(count, bits)
    return np.packbits(np.pad(planes, ((0, 0), (8 - bits, 0))), axis=1).reshape(-1)


class FrozenWeightQuantizer(nn.Module):
    """Weight quantizer of an unpacked checkpoint: while enabled it returns the stored grid k·step - u (bit-identical
    to the trained quantizer's output) whatever its input; the layer's ``weight`` serves only the FP path."""

    weight_clip = 'frozen'
    int8_grid = False

    def __init__(self, codes, upper, bits, levels=None):
        super().__init__()
        self.bits = bits
        self.levels = levels or _levels(bits)
        self.register_buffer('codes', codes.to(torch.uint8), persistent=False)
        self.register_buffer('upper', upper.detach().float(), persistent=False)  # 0-dim, or (C_out, 1, ...)
        self.enabled = True

    def clip_value(self, weight=None):
        return self.upper

    def forward(self, weight):
        if not self.enabled:
            return weight
        self.last_upper = self.upper
        return grid_weight(self.codes, self.upper, self.bits, self.levels)

    integer_scale = WeightQuantizer.integer_scale  # reads bits and levels only

    def extra_repr(self):
        return f'bits={self.bits}, frozen'


def pack_checkpoint(net):
    """A dict holding the quantized weights as bit-packed codes and every other state tensor as it is.

    Returns:
        {'format', 'layers': {name: {'bits', 'shape', 'codes' (uint8, packed), 'upper' (float32, 0-dim or
         (C_out, 1, 1, 1))}},
         'float': {state_dict key: tensor}} (the quantized layers' weight and weight_quantizer keys are left out).
    """
    check_calibrated(net)
    net = getattr(net, 'module', net)
    layers, skip = {}, set()
    for name, layer in quantized_layers(net):
        codes, upper = weight_grid(layer)
        bits = layer.weight_quantizer.bits
        layers[name] = dict(bits=bits, levels=layer.weight_quantizer.levels, shape=list(codes.shape),
                            upper=upper.cpu().clone(),
                            codes=torch.from_numpy(pack_bits(codes.cpu().numpy(), bits)))
        skip.add(f'{name}.weight')
        skip.update(f'{name}.weight_quantizer.{key}' for key in layer.weight_quantizer.state_dict())
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items() if k not in skip}
    return {'format': PACKED_FORMAT, 'layers': layers, 'float': state}


def unpack_checkpoint(packed, net):
    """Load a ``pack_checkpoint`` dict into ``net`` (built with the same options) in place and return it.

    Each quantized layer gets a FrozenWeightQuantizer holding its codes, so the fake-quant output is bit-identical
    to the packed network's; its ``weight`` becomes the dequantized W_q / a (the FP path only).
    """
    if not isinstance(packed, dict) or packed.get('format') != PACKED_FORMAT:
        raise ValueError(f'not an {PACKED_FORMAT} checkpoint')
    net = getattr(net, 'module', net)
    own = dict(quantized_layers(net))
    if set(own) != set(packed['layers']):
        raise ValueError(f'packed layers do not match the network: missing {sorted(set(own) - set(packed["layers"]))},'
                         f' unexpected {sorted(set(packed["layers"]) - set(own))}')
    state = dict(packed['float'])
    for name, entry in packed['layers'].items():
        layer, shape = own[name], tuple(entry['shape'])
        if shape != tuple(layer.weight.shape) or entry['bits'] != layer.weight_quantizer.bits:
            raise ValueError(f'{name}: packed {shape} at {entry["bits"]} bits, network {tuple(layer.weight.shape)} at '
                             f'{layer.weight_quantizer.bits} bits')
        codes = torch.from_numpy(unpack_bits(entry['codes'].numpy(), entry['bits'], math.prod(shape))).reshape(shape)
        levels = entry.get('levels', _levels(entry['bits']))
        layer.weight_quantizer = FrozenWeightQuantizer(codes, entry['upper'], entry['bits'], levels).to(
            layer.weight.device)
        state[f'{name}.weight'] = grid_weight(codes, entry['upper'].float(), entry['bits'], levels)
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        for layer in own.values():
            pair = _offset_pair(layer)
            if pair is not None:
                layer.weight.div_(pair[1].view(1, -1, 1, 1))
    return net


def save_packed(net, path):
    """Write ``pack_checkpoint(net)`` to ``path`` (torch.save; loads with weights_only=True). Returns its bytes."""
    torch.save(pack_checkpoint(net), path)
    return os.path.getsize(path)


def load_packed(path, net):
    """Read a packed checkpoint (safe unpickling only) into ``net``; returns ``net``."""
    return unpack_checkpoint(torch.load(path, map_location='cpu', weights_only=True), net)


def _saved_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def size_report(net):
    """Bytes of the packed checkpoint vs the float32 checkpoint ({'params': state_dict}, as BasicSR saves it), and
    of the quantized weights alone: packed codes vs their float32 tensors."""
    packed = pack_checkpoint(net)
    net = getattr(net, 'module', net)
    quant_float = sum(m.weight.numel() * 4 for _, m in quantized_layers(net))
    quant_packed = sum(e['codes'].numel() for e in packed['layers'].values())
    report = dict(packed_bytes=_saved_bytes(packed), float_checkpoint_bytes=_saved_bytes({'params': net.state_dict()}),
                  quant_weight_float_bytes=quant_float, quant_weight_packed_bytes=quant_packed)
    report['ratio'] = report['packed_bytes'] / report['float_checkpoint_bytes']
    report['quant_weight_ratio'] = quant_packed / max(quant_float, 1)
    return report

"""Integer-kernel emulation: the uint8 / int8 / int32 arithmetic of onnxruntime's QLinearConv and QLinearMatMul, as
PyTorch ops on a quantized layer.

It sits below the quantized layers (``layers.py``: a layer built with ``integer_zero_point`` computes its eval
output here) and below both exports (``export.py``, ``export_integer.py``: the graph they write rounds the same
way). docs/EXPORT_APPENDIX.md derives each step.
"""
import torch
import torch.nn.functional as F

from .functional import explicit_padding, offset_bias, offset_constant, offset_input, pad_then_offset
from .quantizer import integer_grid

UINT8_MAX = 255
INT8_MAX = 127


def _is_linear(layer):
    """A QuantLinear (2-D weight) rather than a QuantConv2d."""
    return layer.weight.dim() == 2


INT8_MAX = 127


def uint8_grid(lower, upper, bits):
    """The uint8 form of an activation grid [lower, upper] at ``bits`` bits (see ``integer_grid``).

    Returns:
        dict: scale (0-dim float32), zero_point, code_lo, code_hi (python ints; the b-bit codes in uint8).
    """
    with torch.no_grad():
        n, step = integer_grid(lower.detach().float(), upper.detach().float(), bits)
        n = int(n)
        zero_point = max(-n, 0)
    return dict(scale=step.detach().clone().reshape(()), zero_point=zero_point, code_lo=n + zero_point,
                code_hi=n + 2**bits - 1 + zero_point)


def grid_shift(lower, upper, bits):
    """δ = l - n·s (0-dim float32): how far the free activation grid [l, u] at ``bits`` bits sits off its integer
    grid n·s (``integer_grid``). 0 for a grid built with ``integer_zero_point``, up to s/2 otherwise (more where n is
    clamped to fit uint8)."""
    with torch.no_grad():
        n, step = integer_grid(lower.detach().float(), upper.detach().float(), bits)
        return (lower.detach().float() - n * step).reshape(())


def requantization_grid(low, high):
    """uint8 grid (scale, zero_point) covering [min(low, 0), max(high, 0)]: 8-bit min/max of an observed output."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = max((high - low) / UINT8_MAX, 1e-8)
    zero_point = int(min(max(round(-low / scale), 0), UINT8_MAX))
    return torch.tensor(scale, dtype=torch.float32), zero_point


def code_spread(w_bits):
    """The factor m by which the integer export spreads b-bit weight codes (odd integers up to 2^b - 1) over int8:
    the largest with codes within ±63 (b <= 6), 1 at 7 bits. The weights stay exact, and the int32 bias grid s_x·s_w
    gets m times finer, so its rounding moves conv outputs m times less. ±63, not ±127: 7-bit weight codes are
    what keeps u8·s8 products from saturating the 16-bit pair sums of AVX2 kernels without VNNI."""
    return max(1, 63 // (2**w_bits - 1))


def weight_code_scale(weight_quantizer, upper):
    """(scale, spread) of a layer's int8 weight codes in the integer graph (step 2): the codes are q_w(W) / scale,
    odd integers times ``spread`` for b <= 7 (exact), the int8 grid for a network with integer_zero_point at 8 bits.
    ``upper``: the clip value u_w (0-dim or per output channel)."""
    spread = code_spread(weight_quantizer.bits) if weight_quantizer.levels != 254 and weight_quantizer.bits <= 7 else 1
    return weight_quantizer.integer_scale(upper) / spread, spread


def integer_bias_codes(bias, bias_scale, grid=1):
    """The int32 bias codes (as float64) of ``bias`` at scale ``bias_scale`` (s_x·s_w per output channel), rounded on
    a grid ``grid`` times coarser (the spread, for a network trained on the grid before the spread)."""
    return torch.round(bias.double() / (bias_scale.double() * grid)) * grid


def folded_bias(layer, weight, in_shift=None, in_scale=None, grid_shift=None):
    """The float32 bias (C_out,) that the integer graph rounds onto int32: b, plus the conv of the offset's constant
    o/a on interior pixels (step 5), plus the layer of the grid shift's constant δ (step 1). ``weight``: the graph's
    weights (codes·scale), (C_out, C_in/groups, kh, kw) or (out, in)."""
    bias = weight.new_zeros(weight.shape[0]) if layer.bias is None else layer.bias.detach().float().clone()
    if in_shift is not None:
        bias = bias + offset_bias(weight, offset_constant(in_shift, in_scale))
    if grid_shift is not None:
        bias = bias + grid_shift * weight.sum(dim=tuple(range(1, weight.dim())))
    return bias


def integer_kernel_output(layer, x):
    """The output of ``layer`` (a QuantConv2d or a QuantLinear, built with integer_zero_point and calibrated) as
    onnxruntime's integer graph computes it, to the last bit:

        input   x = (pad0(x) - o) / a                                    with an offset (step 5): Pad, Sub, Div
        codes   c_x = clip(round(x / s_x) + zp_x, lo, hi)               QuantizeLinear (true division) [-> Clip]
        acc     = conv(c_x - zp_x, W codes) + bias codes                 exact integers
        output  c_y = clip(round(float32(acc) · M) + zp_y, lo_y, hi_y),  M = float32(float32(s_x·s_w) / s_y)
        value   (c_y - zp_y)·s_y                                         DequantizeLinear

    round() is to nearest even, as the kernels' conversions are (checked against onnxruntime 1.32 in
    tests/test_export_integer.py). The output grid (s_y, zp_y, lo_y, hi_y) is the layer's own 8-bit requantizer,
    or, for a chained output, the input grid of its consumer (a ReLU in between then maps the codes below zp_y to
    zp_y, as the graph's Clip does). A linear layer adds its float bias after. The fake-quant forward differs from
    this only where a value sits within float rounding of a decision boundary (docs/EXPORT_APPENDIX.md).

    Args:
        layer (QuantConv2d | QuantLinear): see ``layers._runs_integer_kernel`` for when it applies.
        x (Tensor): the layer's input, (N, C_in, H, W) or (..., in_features).
    """
    act, requantizer = layer.act_quantizer, layer.output_quantizer
    in_shift, in_scale = (None, None) if _is_linear(layer) else offset_input(layer)
    pads_first = in_shift is not None or in_scale is not None
    padding = 0 if pads_first else getattr(layer, 'padding', None)
    if pads_first:  # pad, then shift and scale, then an unpadded conv, as the graph does
        x = pad_then_offset(x, explicit_padding(layer), in_shift, in_scale)
    grid = uint8_grid(*act.valid_range(), act.bits)
    scale_x, zero_x = grid['scale'].to(x.device), grid['zero_point']
    x_int = torch.clamp(torch.round(x / scale_x) + zero_x, grid['code_lo'], grid['code_hi']) - zero_x
    weight = layer.effective_weight(layer.offset.effective()) if pads_first else layer.weight  # W·a
    w_q = layer.weight_quantizer(weight)
    w_scale, spread = weight_code_scale(layer.weight_quantizer, layer.weight_quantizer.last_upper)
    channels = w_q.shape[0]
    w_scale = w_scale.reshape(-1).expand(channels) if w_scale.dim() == 0 else w_scale.reshape(-1)
    shape = (-1, ) + (1, ) * (w_q.dim() - 1)
    w_int = torch.round(w_q / w_scale.view(shape))
    scale_xw = (scale_x * w_scale).float()  # the bias scale, and ORT's s_x·s_w, in float32
    bias = None
    if not _is_linear(layer):  # the graph's bias: codes from the float bias it folds (step 3)
        weight = (w_int * w_scale.view(shape)).float()
        bias = integer_bias_codes(folded_bias(layer, weight, in_shift, in_scale), scale_xw, spread)
    # every partial sum is an integer of at most |x|max·Σ|w| + |b|: float32 sums them exactly below 2^24 (on the CPU,
    # whose float32 convs are direct or GEMM; GPU kernels may use Winograd or TF32), else float64 does
    dtype = torch.float64
    if x.device.type == 'cpu':
        bound = float(x_int.abs().max()) * float(w_int.abs().reshape(channels, -1).sum(dim=1).max())
        bound += 0.0 if bias is None else float(bias.abs().max())
        dtype = torch.float32 if bound < 2**24 else torch.float64
    if _is_linear(layer):
        acc = F.linear(x_int.to(dtype), w_int.to(dtype))
        channel_shape = (-1, )
    else:
        acc = F.conv2d(x_int.to(dtype), w_int.to(dtype), bias.to(dtype), layer.stride, padding, layer.dilation,
                       layer.groups)
        channel_shape = (1, -1, 1, 1)
    if requantizer.is_active:
        scale_y, zero_y, low, high = requantizer.scale.float(), float(requantizer.zero_point), 0, UINT8_MAX
    else:
        consumer = requantizer.consumer.act_quantizer
        out = uint8_grid(*consumer.valid_range(), consumer.bits)
        scale_y, zero_y, low, high = out['scale'].to(x.device), out['zero_point'], out['code_lo'], out['code_hi']
    multiplier = (scale_xw / scale_y).float().view(channel_shape)
    codes = torch.clamp(torch.round(acc.float() * multiplier) + zero_y, low, high)
    y = (codes - zero_y) * scale_y
    if _is_linear(layer) and layer.bias is not None:
        y = y + layer.bias
    return y


def folded_grid_shift(act_quantizer):
    """The ``grid_shift`` δ of a calibrated activation quantizer when the integer graph folds it (more than 1e-3 of a
    step), else None (a grid built with ``integer_zero_point``: nothing to fold)."""
    lower, upper = act_quantizer.valid_range()
    shift = grid_shift(lower, upper, act_quantizer.bits)
    step = float(upper.detach() - lower.detach()) / (2**act_quantizer.bits - 1)
    return shift if abs(float(shift)) > 1e-3 * step else None

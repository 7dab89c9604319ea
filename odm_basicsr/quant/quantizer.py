"""Uniform fake quantizers with straight-through rounding (docs/METHOD.md).

    q(x; l, u, b) = round((clip(x, l, u) - l) / s) * s + l,    s = (u - l) / (2^b - 1)

round() passes gradients straight through; l and u receive gradients through clip() and s (LSQ+/PACT style).
"""
import contextlib

import torch
import torch.nn as nn

from .config import WEIGHT_CLIP_MODES, WEIGHT_GRANULARITIES, check_bits

MIN_RANGE_WIDTH = 1e-4  # activation ranges narrower than this are widened (guards u <= l)


class UncalibratedQuantizerError(RuntimeError):
    """A quantized forward ran with activation ranges that were never calibrated (the placeholder [-1, 1])."""


def round_ste(x):
    """round(x) in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _fake_quantize_forward(x, lower, upper, levels: int, keep_residual: bool):
    """The forward arithmetic of ``_FakeQuantize``: (output, below-range mask, above-range mask, t - r or None)."""
    step = (upper - lower) / levels
    clipped = torch.minimum(torch.maximum(x, lower), upper)
    scaled = (clipped - lower) / step
    rounded = torch.round(scaled)
    residual = scaled - rounded if keep_residual else None
    return rounded * step + lower, x < lower, x > upper, residual


def _fake_quantize_backward(grad, below, above, residual, levels: int, need_x: bool, lower_shape, upper_shape):
    """The straight-through gradients of ``_FakeQuantize`` (see there): (grad_x or None, grad_lower or None,
    grad_upper or None); the range gradients only when ``residual`` is given."""
    grad_x = grad.masked_fill(below | above, 0) if need_x else None
    if residual is None:
        return grad_x, None, None
    if len(lower_shape) == 0 and len(upper_shape) == 0:  # per-tensor range: reduce to scalars at once
        shared = (grad * residual).sum() / levels
        return grad_x, grad.masked_fill(~below, 0).sum() + shared, grad.masked_fill(~above, 0).sum() - shared
    shared = grad * residual / levels  # a range per slice (e.g. per output channel): sum over what each covers
    return (grad_x, (grad.masked_fill(~below, 0) + shared).sum_to_size(lower_shape),
            (grad.masked_fill(~above, 0) - shared).sum_to_size(upper_shape))


_RANGE_GRADIENTS = {'enabled': True}  # see skip_range_gradients


@contextlib.contextmanager
def skip_range_gradients():
    """Within this context, backward passes through fake quantizers compute no gradient for the range bounds (lower,
    upper), only for the input: for a backward that asks for other gradients only, e.g. the regularizer's
    ``torch.autograd.grad(l_reg, network_weights)``, which otherwise computes three reductions over every quantized
    activation for nothing. Eager autograd only; a ``torch.compile``d backward computes what it traced. Not for a
    backward whose range gradients are used (they would be missing, as if zero)."""
    previous = _RANGE_GRADIENTS['enabled']
    _RANGE_GRADIENTS['enabled'] = False
    try:
        yield
    finally:
        _RANGE_GRADIENTS['enabled'] = previous


class _FakeQuantize(torch.autograd.Function):
    """Fused fake quantization with the straight-through gradients of ``round_ste`` written out.

    With c = clip(x, l, u), s = (u - l) / L, t = (c - l) / s and r = round(t) (dr/dt := 1):
        dq/dx = 1 inside (l, u), 0 outside;
        dq/dl = [x < l] + (t - r) / L;     dq/du = [x > u] - (t - r) / L      (t - r = 0 outside [l, u]).
    Same forward operations as the composite ``round_ste`` expression (bit-identical output), with fewer kernels
    and only two masks and t - r kept for the backward pass. The arithmetic is ``_fake_quantize_forward`` /
    ``_fake_quantize_backward``; under ``torch.compile`` (ODMModel's train.compile) both are traced and fused.
    """

    @staticmethod
    def forward(ctx, x, lower, upper, levels):
        keep_residual = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        out, below, above, residual = _fake_quantize_forward(x, lower, upper, levels, keep_residual)
        ctx.levels = levels
        ctx.range_shapes = (lower.shape, upper.shape)
        ctx.save_for_backward(below, above, *([residual] if keep_residual else []))
        return out

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        residual = saved[2] if len(saved) > 2 and _RANGE_GRADIENTS['enabled'] else None
        grad_x, grad_lower, grad_upper = _fake_quantize_backward(
            grad, saved[0], saved[1], residual, ctx.levels, ctx.needs_input_grad[0], *ctx.range_shapes)
        return grad_x, grad_lower, grad_upper, None


def fake_quantize(x, lower, upper, bits):
    """Quantize ``x`` to the 2^bits uniform levels of [lower, upper] and dequantize.

    Args:
        x (Tensor): any shape.
        lower, upper (Tensor): range bounds, same units as x: 0-dim (per tensor) or broadcastable to x, e.g.
            (C_out, 1, 1, 1) per output channel of a conv weight. Gradients flow to both, summed over the elements
            each bound covers (straight-through rounding, see ``_FakeQuantize``).
        bits (int): bit-width.
    Returns:
        Tensor of x's shape whose values lie on the grid lower + k * s, k = 0 .. 2^bits - 1.
    """
    return _FakeQuantize.apply(x, lower, upper, 2**bits - 1)


def integer_grid(lower, upper, bits):
    """The activation grid [lower, upper] moved onto integer multiples of its step, as integer kernels need it.

    With s = (upper - lower) / L and n = round(lower / s) (straight-through), the grid n·s + i·s (i = 0..L) has an
    integer zero point: a uint8 code c = n + i + max(-n, 0) dequantizes exactly as (c - zp)·s. n is clamped to
    [-255, 255 - L] so that the codes fit uint8 (at 8 bits the range then always contains 0). A quantizer built with
    integer_zero_point widens its range first (``uint8_range``), so that the clamp never moves it off its data.

    Returns:
        (n, s): Tensors shaped like ``lower``; n holds integral values, differentiable straight-through.
    """
    levels = 2**bits - 1
    step = (upper - lower) / levels
    return torch.clamp(round_ste(lower / step), -255, 255 - levels), step


def uint8_range(lower, upper, bits):
    """[lower, upper] widened towards 0 just enough that its integer grid (``integer_grid``) fits uint8 codes,
    instead of being moved by the clamp of n: at 8 bits a range must contain 0, at b bits its far end may be at most
    255 / (255 - L) times its width from 0 (L = 2^b - 1). A range that fits is returned unchanged."""
    room = 255 - (2**bits - 1)
    lower = torch.minimum(lower, upper * room / 255)  # an all-positive range: n = lower / s <= room
    return lower, torch.maximum(upper, lower * room / 255)  # an all-negative range: n >= -255


def percentile(x, q):
    """Nearest-rank ``q``-th percentile (0-100) of all elements of ``x``, any size (no torch.quantile limit)."""
    flat = x.detach().reshape(-1)
    k = min(max(int(round(q / 100.0 * flat.numel())), 1), flat.numel())
    return flat.kthvalue(k).values


def channel_percentile(x, q):
    """Nearest-rank ``q``-th percentile of each slice ``x[c]`` along dim 0: shape (C, 1, ..., 1), x.dim() dims."""
    rows = x.detach().reshape(x.shape[0], -1)
    k = min(max(int(round(q / 100.0 * rows.shape[1])), 1), rows.shape[1])
    return rows.kthvalue(k, dim=1).values.view(-1, *([1] * (x.dim() - 1)))


class ActQuantizer(nn.Module):
    """Asymmetric activation quantizer with one learnable range [lower, upper] per layer.

    The range is initialised by calibration (``calibrated`` becomes True) and trained with the quantizer
    learning rate. At inference it is static: no input-dependent statistics. A forward with the quantizer
    enabled before any calibration (or before a checkpoint with quantizer state was loaded) raises
    ``UncalibratedQuantizerError``: the placeholder range [-1, 1] would clip almost every feature silently.

    Args:
        bits (int): bit-width, 2-8.
        integer_zero_point (bool): keep the grid on integer multiples of its step (``integer_grid``), so that the
            integer ONNX export (uint8 codes, integer zero point) runs exactly this network; the bounds still learn,
            the lower one moves in whole steps (TensorFlow's fake-quant nudging). False: the paper's free [l, u].
    """

    def __init__(self, bits, integer_zero_point=False):
        super().__init__()
        self.bits = check_bits('a_bit', bits)
        self.integer_zero_point = bool(integer_zero_point)
        self.lower = nn.Parameter(torch.tensor(-1.0))
        self.upper = nn.Parameter(torch.tensor(1.0))
        self.register_buffer('calibrated', torch.tensor(False))
        self.enabled = True
        self.layer_name = ''  # set by quantize_modules; names the layer in errors
        self.is_calibrated = False  # python mirror of the buffer (no device sync per forward); see refresh()

    def refresh(self):
        """Re-read ``is_calibrated`` from the buffer; call after writing it other than by set_range() or
        load_state_dict() (e.g. a broadcast or an in-place copy)."""
        self.is_calibrated = bool(self.calibrated)
        return self

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh()

    def valid_range(self):
        """(lower, upper) with upper >= lower + MIN_RANGE_WIDTH, differentiable in both; with
        ``integer_zero_point`` the grid moved onto multiples of its step (``integer_grid``)."""
        upper = torch.maximum(self.upper, self.lower + MIN_RANGE_WIDTH)
        if not self.integer_zero_point:
            return self.lower, upper
        lower, upper = uint8_range(self.lower, upper, self.bits)
        n, step = integer_grid(lower, upper, self.bits)
        lower = n * step
        return lower, lower + step * (2**self.bits - 1)

    def forward(self, x):
        if not self.enabled:
            return x
        if not self.is_calibrated:
            where = f' of layer {self.layer_name!r}' if self.layer_name else ''
            raise UncalibratedQuantizerError(
                f'the activation quantizer{where} was never calibrated: its range is the placeholder [-1, 1], which '
                'clips almost every feature. Calibrate first ("basicsr calibrate -opt FILE" writes '
                'net_g_calibrated.pth; ODMModel training calibrates by itself), or load a checkpoint that carries '
                'quantizer state (net_g_calibrated.pth or a trained net_g_*.pth).')
        lower, upper = self.valid_range()
        return fake_quantize(x, lower, upper, self.bits)

    def grid_target(self, x):
        """sg(q(x)): the nearest representable values, detached (the target of the mismatch regularizer)."""
        with torch.no_grad():
            lower, upper = self.valid_range()
            return fake_quantize(x, lower, upper, self.bits)

    def set_range(self, lower, upper):
        with torch.no_grad():
            self.lower.fill_(float(lower))
            self.upper.fill_(float(max(upper, lower + MIN_RANGE_WIDTH)))
            self.calibrated.fill_(True)
        self.is_calibrated = True

    def extra_repr(self):
        return f'bits={self.bits}' + (', integer_zero_point=True' if self.integer_zero_point else '')


class WeightQuantizer(nn.Module):
    """Symmetric weight quantizer on [-u_w, u_w] with 2^bits levels (no zero level), per layer or per output
    channel.

    Args:
        bits (int): bit-width, 2-8.
        weight_clip (str): how u_w is set, recomputed from the current weights at every call and never
            differentiated:
            ``max``: u_w = max|W|;  ``percentile``: u_w = P99(|W|);
            ``wcc``: u_w = P99(|W|) * gamma, gamma a learnable scalar per layer initialised to 1 (ODM v2 weight
            clipping correction; gamma folds into u_w at inference).
        granularity (str): ``layer`` (one u_w per layer, the paper's) or ``channel`` (one u_w per output channel,
            the statistic taken over that channel's weights; WCC's gamma stays one scalar per layer).
    """

    def __init__(self, bits, weight_clip='max', granularity='layer'):
        super().__init__()
        self.bits = check_bits('w_bit', bits)
        if weight_clip not in WEIGHT_CLIP_MODES:
            raise ValueError(f'weight_clip must be one of {WEIGHT_CLIP_MODES}, got {weight_clip!r}.')
        if granularity not in WEIGHT_GRANULARITIES:
            raise ValueError(f'weight_granularity must be one of {WEIGHT_GRANULARITIES}, got {granularity!r}.')
        self.weight_clip = weight_clip
        self.granularity = granularity
        if weight_clip == 'wcc':
            self.gamma = nn.Parameter(torch.tensor(1.0))
        self.enabled = True
        # the clip statistic (max or P99 of |W|) of the last training forward, and whether the next training forward
        # reuses it instead of recomputing (ODMModel's train.weight_clip_interval sets this; gamma always applies)
        self.cached_clip_statistic = None
        self.reuse_clip_statistic = False
        # 8 bits with integer_zero_point: the int8 grid with a zero level, j·u/127 (j = -127..127), which the integer
        # ONNX export stores exactly; otherwise the zero-free grid (set_integer_zero_point sets it)
        self.int8_grid = False

    @property
    def levels(self):
        """Number of steps of the grid over [-u, u]: 2^bits - 1 (zero-free), or 254 on the int8 grid."""
        return 254 if self.int8_grid else 2**self.bits - 1

    def clip_statistic(self, weight):
        """max|W| (``max``) or P99(|W|) (``percentile``, ``wcc``) of ``weight`` (C_out, ...), per layer (0-dim) or per
        output channel ((C_out, 1, ..., 1)); detached, at least 1e-8."""
        magnitude = weight.detach().abs()
        per_channel = self.granularity == 'channel'
        if self.weight_clip == 'max':
            base = magnitude.reshape(magnitude.shape[0], -1).amax(dim=1).view(
                -1, *([1] * (weight.dim() - 1))) if per_channel else magnitude.max()
            return base.clamp_min(1e-8)
        return (channel_percentile(magnitude, 99.0) if per_channel else percentile(magnitude, 99.0)).clamp_min(1e-8)

    def clip_value(self, weight):
        """u_w for ``weight`` (C_out, ...): 0-dim (layer) or (C_out, 1, ..., 1) (channel); only gamma carries
        gradient. In training mode the statistic is cached, and reused while ``reuse_clip_statistic`` is set."""
        if self.training and self.reuse_clip_statistic and self.cached_clip_statistic is not None:
            base = self.cached_clip_statistic
        else:
            base = self.clip_statistic(weight)
            if self.training:
                self.cached_clip_statistic = base
        if self.weight_clip == 'wcc':
            return base * self.gamma.abs().clamp_min(1e-3)
        return base

    def forward(self, weight):
        if not self.enabled:
            return weight
        upper = self.clip_value(weight)
        self.last_upper = upper.detach()  # for the integer bias (QuantConv2d with an output requantizer)
        return _FakeQuantize.apply(weight, -upper, upper, self.levels)

    def integer_scale(self, upper):
        """Scale of the int8 weight codes in the integer ONNX export: step/2 = u/L (odd codes) for b <= 7, u/127 at 8
        bits (exact on the int8 grid; the zero-free grid is rounded onto it)."""
        return upper / 127 if self.levels == 254 or self.bits == 8 else upper / (2**self.bits - 1)

    def extra_repr(self):
        return (f'bits={self.bits}, weight_clip={self.weight_clip}, granularity={self.granularity}'
                + (', int8_grid=True' if self.int8_grid else ''))

"""Uniform fake quantizers with straight-through rounding (ODM.md section 1).

    q(x; l, u, b) = round((clip(x, l, u) - l) / s) * s + l,    s = (u - l) / (2^b - 1)

round() passes gradients straight through; l and u receive gradients through clip() and s (LSQ+/PACT style).
"""
import torch
import torch.nn as nn

MIN_BITS, MAX_BITS = 2, 8
WEIGHT_CLIP_MODES = ('max', 'percentile', 'wcc')
MIN_RANGE_WIDTH = 1e-4  # activation ranges narrower than this are widened (guards u <= l)


def check_bits(key, value):
    """Validate a bit-width option; ``key`` names it in the error (e.g. ``network_g.w_bit``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= MAX_BITS:
        raise ValueError(f'{key} must be an integer bit-width from {MIN_BITS} to {MAX_BITS}, got {value!r}.')
    return value


def round_ste(x):
    """round(x) in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class _FakeQuantize(torch.autograd.Function):
    """Fused fake quantization with the straight-through gradients of ``round_ste`` written out.

    With c = clip(x, l, u), s = (u - l) / L, t = (c - l) / s and r = round(t) (dr/dt := 1):
        dq/dx = 1 inside (l, u), 0 outside;
        dq/dl = [x < l] + (t - r) / L;     dq/du = [x > u] - (t - r) / L      (t - r = 0 outside [l, u]).
    Same forward operations as the composite ``round_ste`` expression (bit-identical output), with fewer kernels
    and only two masks and t - r kept for the backward pass.
    """

    @staticmethod
    def forward(ctx, x, lower, upper, levels):
        step = (upper - lower) / levels
        clipped = torch.minimum(torch.maximum(x, lower), upper)
        scaled = (clipped - lower) / step
        rounded = torch.round(scaled)
        below, above = x < lower, x > upper
        ctx.levels = levels
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            ctx.save_for_backward(below, above, scaled - rounded)
        else:
            ctx.save_for_backward(below, above)
        return rounded * step + lower

    @staticmethod
    def backward(ctx, grad):
        below, above = ctx.saved_tensors[:2]
        grad_x = grad.masked_fill(below | above, 0) if ctx.needs_input_grad[0] else None
        grad_lower = grad_upper = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            residual = (grad * ctx.saved_tensors[2]).sum() / ctx.levels
            grad_lower = grad.masked_fill(~below, 0).sum() + residual
            grad_upper = grad.masked_fill(~above, 0).sum() - residual
        return grad_x, grad_lower, grad_upper, None


def fake_quantize(x, lower, upper, bits):
    """Quantize ``x`` to the 2^bits uniform levels of [lower, upper] and dequantize.

    Args:
        x (Tensor): any shape.
        lower, upper (Tensor): 0-dim range bounds, same units as x; gradients flow to both (straight-through
            rounding, see ``_FakeQuantize``).
        bits (int): bit-width.
    Returns:
        Tensor of x's shape whose values lie on the grid lower + k * s, k = 0 .. 2^bits - 1.
    """
    return _FakeQuantize.apply(x, lower, upper, 2**bits - 1)


def percentile(x, q):
    """Nearest-rank ``q``-th percentile (0-100) of all elements of ``x``, any size (no torch.quantile limit)."""
    flat = x.detach().reshape(-1)
    k = min(max(int(round(q / 100.0 * flat.numel())), 1), flat.numel())
    return flat.kthvalue(k).values


class ActQuantizer(nn.Module):
    """Asymmetric activation quantizer with one learnable range [lower, upper] per layer.

    The range is initialised by calibration (``calibrated`` becomes True) and trained with the quantizer
    learning rate. At inference it is static: no input-dependent statistics.

    Args:
        bits (int): bit-width, 2-8.
    """

    def __init__(self, bits):
        super().__init__()
        self.bits = check_bits('a_bit', bits)
        self.lower = nn.Parameter(torch.tensor(-1.0))
        self.upper = nn.Parameter(torch.tensor(1.0))
        self.register_buffer('calibrated', torch.tensor(False))
        self.enabled = True

    def valid_range(self):
        """(lower, upper) with upper >= lower + MIN_RANGE_WIDTH, differentiable in both."""
        upper = torch.maximum(self.upper, self.lower + MIN_RANGE_WIDTH)
        return self.lower, upper

    def forward(self, x):
        if not self.enabled:
            return x
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

    def extra_repr(self):
        return f'bits={self.bits}'


class WeightQuantizer(nn.Module):
    """Symmetric per-layer weight quantizer on [-u_w, u_w] with 2^bits levels (no zero level).

    Args:
        bits (int): bit-width, 2-8.
        weight_clip (str): how u_w is set, recomputed from the current weights at every call and never
            differentiated:
            ``max``: u_w = max|W|;  ``percentile``: u_w = P99(|W|);
            ``wcc``: u_w = P99(|W|) * gamma, gamma a learnable scalar initialised to 1 (ODM v2 weight clipping
            correction; gamma folds into u_w at inference).
    """

    def __init__(self, bits, weight_clip='max'):
        super().__init__()
        self.bits = check_bits('w_bit', bits)
        if weight_clip not in WEIGHT_CLIP_MODES:
            raise ValueError(f'weight_clip must be one of {WEIGHT_CLIP_MODES}, got {weight_clip!r}.')
        self.weight_clip = weight_clip
        if weight_clip == 'wcc':
            self.gamma = nn.Parameter(torch.tensor(1.0))
        self.enabled = True

    def clip_value(self, weight):
        """u_w (0-dim tensor) for ``weight``; only gamma carries gradient."""
        magnitude = weight.detach().abs()
        if self.weight_clip == 'max':
            return magnitude.max().clamp_min(1e-8)
        base = percentile(magnitude, 99.0).clamp_min(1e-8)
        if self.weight_clip == 'wcc':
            return base * self.gamma.abs().clamp_min(1e-3)
        return base

    def forward(self, weight):
        if not self.enabled:
            return weight
        upper = self.clip_value(weight)
        return fake_quantize(weight, -upper, upper, self.bits)

    def extra_repr(self):
        return f'bits={self.bits}, weight_clip={self.weight_clip}'

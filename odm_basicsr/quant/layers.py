"""Quantized conv and linear layers that keep the FP layer's ``weight`` / ``bias`` names.

A quantized layer i computes  y = op(q_a(X_i), q_w(W_eff)) + b,  where X_i is its input after the optional
channel-wise distribution offset (ODM v1) and q_a / q_w are the activation and weight fake quantizers.
Quantizer state lives under the layer's own sub-modules (``act_quantizer.*``, ``weight_quantizer.*``,
``offset.*``), so an FP checkpoint loads into every other key unchanged.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import QuantConfig
from .functional import explicit_padding, offset_bias, pad_then_offset
from .integer_kernel import integer_kernel_output
from .quantizer import ActQuantizer, WeightQuantizer



class ChannelOffset(nn.Module):
    """Channel-wise distribution offset (ODM v1) on a conv input of C channels.

    x' = (x - o) / a, with o (shift, init 0) and a (scale, init 1) learnable per channel. Only layers selected by
    calibration use it: the 0/1 buffers ``shift_on`` / ``scale_on`` gate each kind, so unselected layers are
    exact identities. The following conv compensates exactly (see ``QuantConv2d.forward``).

    Args:
        num_channels (int): C.
    """

    def __init__(self, num_channels):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(num_channels))
        self.scale = nn.Parameter(torch.ones(num_channels))
        self.register_buffer('shift_on', torch.tensor(0.0))
        self.register_buffer('scale_on', torch.tensor(0.0))
        self.active = False  # python mirror of the buffers (no device sync per forward); see refresh()

    def refresh(self):
        """Re-read ``active`` from the gate buffers; call after writing them other than by enable() or
        load_state_dict() (e.g. a broadcast or an in-place copy)."""
        self.active = bool(float(self.shift_on) > 0 or float(self.scale_on) > 0)
        return self

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh()

    @property
    def kind(self):
        """'shift', 'scale', 'shift+scale' or 'none' (reads the buffers)."""
        kinds = [k for k, on in (('shift', self.shift_on), ('scale', self.scale_on)) if float(on) > 0]
        return '+'.join(kinds) or 'none'

    def effective(self):
        """(o, a) as (C,) tensors after gating: o = 0 and a = 1 where the kind is off."""
        shift = self.shift * self.shift_on
        scale = 1 + (self.scale.abs().clamp_min(1e-4) - 1) * self.scale_on
        return shift, scale

    def enable(self, kind, shift=None, scale=None):
        """Switch on ``kind`` ('shift' or 'scale') with initial per-channel values."""
        with torch.no_grad():
            if kind == 'shift':
                self.shift.copy_(shift)
                self.shift_on.fill_(1.0)
            elif kind == 'scale':
                self.scale.copy_(scale)
                self.scale_on.fill_(1.0)
            else:
                raise ValueError(f'offset kind must be shift or scale, got {kind!r}')
        self.active = True


class OutputRequantizer(nn.Module):
    """8-bit requantization of a quantized layer's output, y -> (clip(round(y / s) + zp, 0, 255) - zp)·s, as the
    integer ONNX export rounds every output that does not feed one quantized layer (docs/EXPORT_APPENDIX.md).
    Attached by ``set_integer_zero_point``; identity until ``calibrate`` measures the output's min/max and switches
    it on where the export will requantize, so that the exported graph computes what was trained. Straight-through
    gradient; the range is not learned.

    Where the export instead quantizes the output straight onto the next quantized layer's input grid (a chained
    output), calibration records that layer as the ``consumer``: in eval, without autograd, the layer then computes
    its output as onnxruntime's integer kernel does (``integer_kernel.integer_kernel_output``).

    Buffers: scale (0-dim, float32), zero_point (0-dim, integral float), active (0/1), consumer_index (position of
    the consumer in ``activation_points`` order, -1 for none; absent from checkpoints written before it existed).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer('scale', torch.tensor(1.0))
        self.register_buffer('zero_point', torch.tensor(0.0))
        self.register_buffer('active', torch.tensor(0.0))
        self.register_buffer('consumer_index', torch.tensor(-1.0))
        self.enabled = True
        self.is_active = False  # python mirror of the buffer (no device sync per forward); see refresh()
        self.consumer_position = -1  # python mirror of consumer_index
        self.integer_kernel_eval = True  # False: eval runs the fake-quant forward (set_integer_kernel_eval)
        self.network_points = []  # the network's activation points, in order (set by set_integer_zero_point)

    def refresh(self):
        self.is_active = bool(float(self.active) > 0)
        self.consumer_position = int(self.consumer_index)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if prefix + 'consumer_index' not in state_dict:  # a checkpoint from before chained outputs were recorded
            state_dict = dict(state_dict, **{prefix + 'consumer_index': torch.tensor(-1.0)})
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.refresh()

    def set_grid(self, scale, zero_point, active, consumer=-1):
        """Set the 8-bit grid and whether it is on; ``consumer``: position of the quantized layer whose input grid
        the export quantizes this output onto (chained), -1 for none."""
        with torch.no_grad():
            self.scale.fill_(float(scale))
            self.zero_point.fill_(float(zero_point))
            self.active.fill_(1.0 if active else 0.0)
            self.consumer_index.fill_(float(consumer))
        self.is_active = bool(active)
        self.consumer_position = int(consumer)

    @property
    def consumer(self):
        """The activation point (a quantized layer) whose input grid this output goes onto, or None."""
        if self.consumer_position < 0 or self.consumer_position >= len(self.network_points):
            return None
        return self.network_points[self.consumer_position]

    def has_target(self):
        """True when the integer export puts this output on a known grid: its own (active) or its consumer's."""
        return self.is_active or self.consumer is not None

    def forward(self, y):
        if not (self.enabled and self.is_active):
            return y
        codes = torch.clamp(torch.round(y / self.scale) + self.zero_point, 0, 255)
        return y + ((codes - self.zero_point) * self.scale - y).detach()


def _init_quant_state(layer, w_bit, a_bit, weight_clip, weight_granularity, offset):
    """The quantizer state shared by QuantConv2d and QuantLinear: quantizers, the optional ChannelOffset ``offset``,
    and the hooks that calibration and the regularizers set."""
    layer.act_quantizer = ActQuantizer(a_bit)
    layer.weight_quantizer = WeightQuantizer(w_bit, weight_clip, weight_granularity)
    layer.offset = offset
    layer.observer = None  # callable(X') used by calibration
    layer.output_quantizer = None  # OutputRequantizer, with integer_zero_point (set_integer_zero_point)
    layer.collect_input = False  # keep X' of the current forward for the regularizer
    layer.collect_target = False  # and sg(q(X')), the mismatch regularizer's target
    layer.quant_input = None
    layer.quant_target = None


def _quantize_input(layer, x, interior=None):
    """q(X') of a quantized layer's input X' (QuantConv2d, QuantLinear), with the hooks around it: the calibration
    observer sees X'; with ``collect_input`` the layer keeps X' for the regularizer, and with ``collect_target`` also
    sg(q(X')), the mismatch regularizer's target as computed here (no second quantize pass). ``interior``: an index
    of ``x`` that the hooks see instead of all of it (a padded input: the image without its border ring)."""
    seen = x if interior is None else x[interior]
    if layer.observer is not None:
        layer.observer(seen)
    if layer.collect_input:
        layer.quant_input = seen
    x_q = layer.act_quantizer(x)
    if layer.collect_target:
        target = x_q if interior is None else x_q[interior]
        layer.quant_target = target.detach() if layer.act_quantizer.enabled else None
    return x_q


def _runs_integer_kernel(layer):
    """True when ``layer`` (built with integer_zero_point) computes its eval output as the integer ONNX graph's kernel
    does: eval mode without autograd, every quantizer on, integer-kernel eval not turned off
    (``set_integer_kernel_eval``), no calibration observer or regularizer hook, and its output on a known grid (an
    active requantizer or a recorded consumer)."""
    requantizer = layer.output_quantizer
    return (requantizer is not None and not layer.training and not torch.is_grad_enabled()
            and requantizer.enabled and requantizer.integer_kernel_eval and requantizer.has_target()
            and layer.act_quantizer.enabled and layer.act_quantizer.is_calibrated
            and layer.weight_quantizer.enabled and layer.observer is None and not layer.collect_input)


class QuantConv2d(nn.Conv2d):
    """nn.Conv2d with fake-quantized input activations and weights.

    Input (N, C_in, H, W), output (N, C_out, H', W'), same as the FP conv. With a distribution offset (o, a):

        X' = (X - o) / a                  (the quantizer input; what the regularizers see)
        y  = conv(pad0(q_a(X') + o / a), q_w(W * a)) + b

    At initialisation (o = 0, a = 1, or quantizers off) this equals conv(X, W) + b exactly, image border
    included: adding o / a back before the zero padding is the same as a bias W * o plus padding with -o in the
    shifted domain. At inference the shift folds into the bias and the scale into the weights.

    Built with integer_zero_point (an ``output_quantizer``), a layer with an offset computes what the integer ONNX
    graph computes, which pads X before the offset (docs/EXPORT_APPENDIX.md, step 5): X' = (pad0(X) - o) / a, and
    y = conv_valid(q_a(X'), q_w(W * a)) + b + W_q·(o / a), the bias on the int32 grid. A border tap then sees
    q_a(-o / a) + o / a instead of 0. The regularizers and calibration see X' without its border ring.

    Args:
        w_bit, a_bit (int): bit-widths, 2-8.
        weight_clip (str): 'max' | 'percentile' | 'wcc', see WeightQuantizer.
        offsets (bool): allocate a ChannelOffset (off until calibration selects this layer).
        weight_granularity (str): 'layer' | 'channel' (one u_w per output channel), see WeightQuantizer.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode='zeros', w_bit=4, a_bit=4, weight_clip='max', offsets=False, weight_granularity='layer'):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode)
        if padding_mode != 'zeros':
            raise ValueError('QuantConv2d supports zero padding only')
        if offsets and groups != 1:
            raise ValueError('distribution offsets are implemented for ungrouped convs only (groups=1)')
        _init_quant_state(self, w_bit, a_bit, weight_clip, weight_granularity,
                          ChannelOffset(in_channels) if offsets else None)

    @classmethod
    def from_float(cls, conv, config=QuantConfig()):
        """A QuantConv2d quantized as ``config`` says (an offset where ``config.offsets`` allows one and the conv is
        ungrouped) that shares ``conv``'s weight and bias Parameters."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode, w_bit=config.w_bit, a_bit=config.a_bit,
                    weight_clip=config.weight_clip, weight_granularity=config.weight_granularity,
                    offsets=config.offsets != 'none' and conv.groups == 1)
        layer.weight = conv.weight
        layer.bias = conv.bias
        return layer.to(conv.weight.device)

    def quantizer_input(self, x):
        """X' = (X - o) / a, and the offset pair (o, a) or None (no offset, or one that calibration left off: then
        X' = X exactly, and the per-element offset arithmetic is skipped)."""
        if self.offset is None or not self.offset.active:
            return x, None
        shift, scale = self.offset.effective()
        return (x - shift.view(1, -1, 1, 1)) / scale.view(1, -1, 1, 1), (shift, scale)

    def effective_weight(self, offset_pair):
        if offset_pair is None:
            return self.weight
        return self.weight * offset_pair[1].view(1, -1, 1, 1)

    @property
    def pads_first(self):
        """True when the layer zero-pads its input before the offset (integer_zero_point with an active offset)."""
        return self.output_quantizer is not None and self.offset is not None and self.offset.active

    def forward(self, x):
        if _runs_integer_kernel(self):
            return integer_kernel_output(self, x)
        if self.pads_first:
            return self._pad_first_forward(x)
        x_in, offset_pair = self.quantizer_input(x)
        x_q = _quantize_input(self, x_in)
        if offset_pair is not None:
            shift, scale = offset_pair
            x_q = x_q + (shift / scale).view(1, -1, 1, 1)
        w_q = self.weight_quantizer(self.effective_weight(offset_pair))
        if self.output_quantizer is None:
            return F.conv2d(x_q, w_q, self.bias, self.stride, self.padding, self.dilation, self.groups)
        y = F.conv2d(x_q, w_q, self.integer_bias(), self.stride, self.padding, self.dilation, self.groups)
        return self.output_quantizer(y)

    def _pad_first_forward(self, x):
        """The forward of a layer that ``pads_first`` (class docstring)."""
        ph, pw = explicit_padding(self)
        height, width = x.shape[-2:]
        shift, scale = self.offset.effective()
        x_in = pad_then_offset(x, (ph, pw), shift, scale)
        x_q = _quantize_input(self, x_in, (Ellipsis, slice(ph, ph + height), slice(pw, pw + width)))
        w_q = self.weight_quantizer(self.effective_weight((shift, scale)))
        bias = self.integer_bias(folded=offset_bias(w_q, shift / scale))
        y = F.conv2d(x_q, w_q, bias, self.stride, 0, self.dilation)
        return self.output_quantizer(y)

    def integer_bias(self, weight_upper=None, folded=None):
        """The bias on the integer ONNX export's int32 grid, step s_x·s_w (input step x weight code scale), with a
        straight-through gradient; the plain bias while the quantizers are off. Used with an output requantizer.
        ``weight_upper``: the weight clip value u_w (default: the one of the last forward). ``folded`` (C_out,): a
        term that the export adds to the bias before rounding it (an offset's W_q·(o/a), ``offset_bias``)."""
        bias = self.bias
        if folded is not None:
            bias = folded if bias is None else bias + folded
        if bias is None or not (self.act_quantizer.enabled and self.weight_quantizer.enabled):
            return bias
        if weight_upper is None:
            weight_upper = self.weight_quantizer.last_upper
        lower, upper = self.act_quantizer.valid_range()
        act_step = ((upper - lower) / (2**self.act_quantizer.bits - 1)).detach()
        scale = self.weight_quantizer.integer_scale(weight_upper).reshape(-1) * act_step
        return bias + (torch.round(bias / scale) * scale - bias).detach()


class QuantLinear(nn.Linear):
    """nn.Linear with fake-quantized input activations and weights. Input (..., in_features)."""

    def __init__(self, in_features, out_features, bias=True, w_bit=4, a_bit=4, weight_clip='max', offsets=False,
                 weight_granularity='layer'):
        super().__init__(in_features, out_features, bias)
        if offsets:
            raise ValueError('distribution offsets are implemented for conv layers only')
        _init_quant_state(self, w_bit, a_bit, weight_clip, weight_granularity, None)

    @classmethod
    def from_float(cls, linear, config=QuantConfig()):
        """A QuantLinear quantized as ``config`` says (never with an offset) that shares ``linear``'s Parameters."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, w_bit=config.w_bit,
                    a_bit=config.a_bit, weight_clip=config.weight_clip, weight_granularity=config.weight_granularity)
        layer.weight = linear.weight
        layer.bias = linear.bias
        return layer.to(linear.weight.device)

    def forward(self, x):
        if _runs_integer_kernel(self):
            return integer_kernel_output(self, x)
        x_q = _quantize_input(self, x)
        if self.output_quantizer is None:
            return F.linear(x_q, self.weight_quantizer(self.weight), self.bias)
        # the integer export requantizes the product before the bias add (QLinearMatMul has no bias)
        y = self.output_quantizer(F.linear(x_q, self.weight_quantizer(self.weight)))
        return y if self.bias is None else y + self.bias


QUANT_LAYER_TYPES = (QuantConv2d, QuantLinear)


class QuantOperand(nn.Module):
    """One operand of a quantized matrix product: a static-range activation quantizer (any shape), with the same
    calibration interface as a quantized layer's input (``act_quantizer``, ``observer``; no offset)."""

    def __init__(self, a_bit):
        super().__init__()
        self.act_quantizer = ActQuantizer(a_bit)
        self.offset = None
        self.observer = None

    def forward(self, x):
        if self.observer is not None:
            self.observer(x)
        return self.act_quantizer(x)


class MatMul(nn.Module):
    """``left @ right``: (..., n, d) x (..., d, m) -> (..., n, m), a module so that cost reports and export see it.

    Args:
        a_bit (int | None): quantize both operands to a_bit with static ranges (``left`` / ``right``
            QuantOperands, calibrated like layer inputs); None keeps the FP product.
    """

    def __init__(self, a_bit=None):
        super().__init__()
        self.left = QuantOperand(a_bit) if a_bit else None
        self.right = QuantOperand(a_bit) if a_bit else None

    @property
    def quantized(self):
        return self.left is not None

    def forward(self, left, right):
        if self.left is not None:
            left, right = self.left(left), self.right(right)
        return torch.matmul(left, right)

"""Tensor functions that the quantized layers, the integer-kernel emulation and the exports share: explicit conv
padding, and the folding of a distribution offset (ODM v1, X' = (X - o) / a) into a conv's input and bias.

Imports nothing from the rest of the package."""
import torch.nn.functional as F


def offset_bias(weight, post_add):
    """sum W·(o/a) per output channel: what the per-channel constant ``post_add`` (o/a, (C_in,)) added to a conv's
    input adds to its output wherever the kernel does not touch the padding. ``weight`` (C_out, C_in, kh, kw) of an
    ungrouped conv (offsets exist on those only). Returns (C_out,)."""
    return (weight * post_add.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))


def pad_then_offset(x, padding, shift=None, scale=None):
    """(pad0(x) - o) / a: the input of a layer that pads before its offset (``QuantConv2d.pads_first``) and of the
    integer graph's copy of it. ``padding`` (ph, pw); ``shift`` o and ``scale`` a (C_in,), each None where off."""
    ph, pw = padding
    x = F.pad(x, (pw, pw, ph, ph))
    if shift is not None:
        x = x - shift.to(x.device).view(1, -1, 1, 1)
    if scale is not None:
        x = x / scale.to(x.device).view(1, -1, 1, 1)
    return x


def explicit_padding(conv):
    """(ph, pw) of a conv's zero padding, for a string padding too ('valid', or 'same' where it is symmetric)."""
    if not isinstance(conv.padding, str):
        return tuple(conv.padding)
    if conv.padding == 'valid':
        return 0, 0
    total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    if any(t % 2 for t in total):
        raise ValueError(f"padding='same' with kernel {conv.kernel_size} and dilation {conv.dilation} pads "
                         'asymmetrically: an offset layer with integer_zero_point needs a symmetric padding')
    return total[0] // 2, total[1] // 2


def offset_input(layer):
    """(o, a): the offset an exported graph applies to a conv's input, X' = (X - o) / a, as (C_in,) float32 tensors,
    each None where that kind is off; (None, None) without an offset."""
    if getattr(layer, 'offset', None) is None or not layer.offset.active:  # no buffer read (device sync) here
        return None, None
    pair = layer.offset.effective()
    return (pair[0].detach().clone() if float(layer.offset.shift_on) else None,
            pair[1].detach().clone() if float(layer.offset.scale_on) else None)


def offset_constant(in_shift, in_scale):
    """o/a, the per-channel constant added back after the input quantizer (None without a shift)."""
    return None if in_shift is None else in_shift / (in_scale if in_scale is not None else 1)

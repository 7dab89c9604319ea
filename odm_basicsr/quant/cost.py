"""BitOPs and storage of a network, per layer and in total, against its FP twin (docs/METHOD.md).

    BitOPs  = sum over conv/linear layers of MACs x b_w x b_a     (FP layers count 32 x 32)
    storage = sum over parameters of their bits                   (weights at b_w, biases and FP tensors at 32)
              + inference-time quantizer scalars at 32 bits each: activation l and u, the weight clip u_w
              (one per layer, or one per output channel with weight_granularity 'channel'; WCC's gamma folds
              into u_w: no extra storage or BitOPs)
              + distribution offsets: 32 bits per channel of each enabled kind.
    An enabled offset costs one FP32-by-activation operation per input element: H x W x C x 32 x b_a BitOPs.
    Matrix products between activations (``MatMul``: SwinIR's q·kᵀ and attn·v) count MACs x b_a x b_a when their
    operands are quantized and 32 x 32 when not, plus 2 x 2 range scalars of storage when quantized.
MACs are counted for one input of the stated size (N = 1).
"""
import torch
import torch.nn as nn

from .convert import quantizers_off
from .layers import QUANT_LAYER_TYPES, MatMul, QuantOperand

FP_BITS = 32


def _macs(module, output):
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    return output.numel() * module.in_features


def cost_report(net, input_shape):
    """Per-layer and total cost.

    Args:
        net (nn.Module): FP or quantized network.
        input_shape (tuple): (C, H, W) of one LR input.
    Returns:
        dict: 'layers' list of rows {name, w_bit, a_bit, macs, bitops, fp_bitops, storage_bits, fp_storage_bits,
        offset}, and 'total' {macs, bitops, fp_bitops, storage_bits, fp_storage_bits, params}.
    """
    rows, hooks = [], []
    counted = set()

    def hook(name):

        def fn(module, inputs, output):
            quantized = isinstance(module, QUANT_LAYER_TYPES)
            w_bit = module.weight_quantizer.bits if quantized else FP_BITS
            a_bit = module.act_quantizer.bits if quantized else FP_BITS
            macs = _macs(module, output)
            weight_bits = module.weight.numel() * w_bit
            bias_bits = module.bias.numel() * FP_BITS if module.bias is not None else 0
            # activation l and u, plus u_w: one per layer, or one per output channel
            weight_clips = (module.weight.shape[0] if quantized and module.weight_quantizer.granularity == 'channel'
                            else 1)
            quant_bits = (2 + weight_clips) * FP_BITS if quantized else 0
            offset_bits, offset_ops, offset_kind = 0, 0, 'none'
            if quantized and module.offset is not None and module.offset.kind != 'none':
                offset_kind = module.offset.kind
                kinds = offset_kind.count('+') + 1
                offset_bits = kinds * module.in_channels * FP_BITS
                offset_ops = kinds * inputs[0][0].numel() * FP_BITS * a_bit
            fp_storage = (module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)) * FP_BITS
            rows.append(
                dict(name=name, w_bit=w_bit, a_bit=a_bit, macs=macs, bitops=macs * w_bit * a_bit + offset_ops,
                     fp_bitops=macs * FP_BITS * FP_BITS, storage_bits=weight_bits + bias_bits + quant_bits + offset_bits,
                     fp_storage_bits=fp_storage, offset=offset_kind))
            counted.add(id(module.weight))
            if module.bias is not None:
                counted.add(id(module.bias))

        return fn

    def matmul_hook(name):

        def fn(module, inputs, output):
            bits = module.left.act_quantizer.bits if module.quantized else FP_BITS
            macs = output.numel() * inputs[0].shape[-1]
            rows.append(dict(name=name, w_bit=bits, a_bit=bits, macs=macs, bitops=macs * bits * bits,
                             fp_bitops=macs * FP_BITS * FP_BITS, storage_bits=4 * FP_BITS if module.quantized else 0,
                             fp_storage_bits=0, offset='none'))

        return fn

    for name, module in net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
        elif isinstance(module, MatMul):
            hooks.append(module.register_forward_hook(matmul_hook(name)))
    device = next(net.parameters()).device
    # the cost depends on shapes and bit-widths only: run the shape pass with quantizers off (no calibration needed)
    try:
        with quantizers_off(net), torch.no_grad():
            net(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
    # FP parameters outside conv/linear layers (none in EDSR/RDN/MSRResNet, but counted if present)
    quantizer_ids = {id(p) for m in net.modules() if isinstance(m, QUANT_LAYER_TYPES)
                     for p in list(m.act_quantizer.parameters()) + list(m.weight_quantizer.parameters()) +
                     (list(m.offset.parameters()) if m.offset is not None else [])}
    quantizer_ids |= {id(p) for m in net.modules() if isinstance(m, QuantOperand) for p in m.parameters()}
    other = sum(p.numel() for p in net.parameters() if id(p) not in counted and id(p) not in quantizer_ids)
    total = {key: sum(r[key] for r in rows) for key in ('macs', 'bitops', 'fp_bitops', 'storage_bits',
                                                        'fp_storage_bits')}
    total['storage_bits'] += other * FP_BITS
    total['fp_storage_bits'] += other * FP_BITS
    total['params'] = sum(p.numel() for p in net.parameters() if id(p) not in quantizer_ids)
    return {'layers': rows, 'total': total, 'input_shape': tuple(input_shape)}


def _fmt(value, unit):
    """A count with a decimal prefix (G, M, K: BitOPs, MACs); bytes (unit 'B') in binary ones (GiB, MiB, KiB)."""
    binary = unit == 'B'
    prefixes = ((2**30, 'Gi'), (2**20, 'Mi'), (2**10, 'Ki')) if binary else (
        (1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K'))
    space = ' ' if binary else ''
    for scale, prefix in prefixes:
        if abs(value) >= scale:
            return f'{value / scale:.3f}{space}{prefix}{unit}'
    return f'{value:.0f}{space}{unit}'


def format_cost_report(report, per_layer=True):
    """Markdown table: per layer (optional) and totals, quantized next to FP."""
    c, h, w = report['input_shape']
    lines = [f'Cost for one {c}x{h}x{w} input (BitOPs = MACs x b_w x b_a; storage in bytes, KiB = 1024 B):', '',
             '| layer | W/A bits | offset | MACs | BitOPs | FP BitOPs | storage | FP storage |',
             '|---|---|---|---|---|---|---|---|']
    rows = report['layers'] if per_layer else []
    for r in rows:
        lines.append(f"| {r['name']} | {r['w_bit']}/{r['a_bit']} | {r['offset']} | {_fmt(r['macs'], '')} | "
                     f"{_fmt(r['bitops'], '')} | {_fmt(r['fp_bitops'], '')} | {_fmt(r['storage_bits'] / 8, 'B')} | "
                     f"{_fmt(r['fp_storage_bits'] / 8, 'B')} |")
    t = report['total']
    lines.append(f"| **total** | | | {_fmt(t['macs'], '')} | {_fmt(t['bitops'], '')} | {_fmt(t['fp_bitops'], '')} | "
                 f"{_fmt(t['storage_bits'] / 8, 'B')} | {_fmt(t['fp_storage_bits'] / 8, 'B')} |")
    lines += ['', f"BitOPs ratio quantized/FP: {t['bitops'] / t['fp_bitops']:.4f}; "
              f"storage ratio: {t['storage_bits'] / t['fp_storage_bits']:.4f}; parameters: {t['params']:,}"]
    return '\n'.join(lines)

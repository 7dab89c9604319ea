"""One conversion routine that quantizes the selected conv / linear layers of any network in place."""
from contextlib import contextmanager
from fnmatch import fnmatchcase

import torch
import torch.nn as nn

from .layers import (QUANT_LAYER_TYPES, OutputRequantizer, QuantConv2d, QuantLinear, QuantOperand,
                     explicit_padding)


def _set_submodule(root, name, module):
    parent_name, _, child = name.rpartition('.')
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def quantize_modules(net, patterns, config, exclude=()):
    """Replace every nn.Conv2d / nn.Linear whose qualified name matches one of ``patterns`` (fnmatch, e.g.
    ``body.*.conv1``) by its quantized twin (``config``, a QuantConfig: bits, weight clip and granularity, offsets),
    sharing the same weight/bias Parameters. Layers already quantized and names matching ``exclude`` are left alone.

    Returns:
        list[str]: the names of the layers converted, in network order.
    Raises:
        ScopeError: a pattern matched no layer.
    """
    converted, matched_patterns = [], set()
    for name, module in list(net.named_modules()):
        if isinstance(module, QUANT_LAYER_TYPES) or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        hits = [p for p in patterns if fnmatchcase(name, p)]
        if not hits or any(fnmatchcase(name, p) for p in exclude):
            continue
        matched_patterns.update(hits)
        new = (QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear).from_float(module, config)
        new.act_quantizer.layer_name = name
        _set_submodule(net, name, new)
        converted.append(name)
    unmatched = [p for p in patterns if p not in matched_patterns and p != '*']
    if unmatched:
        raise ScopeError(unmatched, type(net).__name__, layer_names(net))
    return converted


class ScopeError(ValueError):
    """Scope patterns that match no conv/linear layer; the message lists the layer names there are."""

    def __init__(self, patterns, arch, names):
        self.patterns, self.arch, self.names = list(patterns), arch, list(names)
        shown = ', '.join(self.names[:24]) + (f' ... ({len(self.names)} in all)' if len(self.names) > 24 else '')
        super().__init__(f'quantization pattern(s) {self.patterns} matched no conv/linear layer of {arch}. '
                         f'Its conv/linear layers are: {shown or "none"}.')


def layer_names(net):
    """Qualified names of the conv/linear layers of ``net`` (quantized or not), in network order."""
    return [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def quantize_network(net, body_patterns, config):
    """Quantize ``net`` for ``config.scope``: 'body' quantizes ``body_patterns`` (the arch's paper-compatible scope,
    the convs inside the body blocks); 'all' every conv / linear; a tuple of fnmatch patterns those layers. With a
    wider scope and ``config.outer_bit``, the layers outside ``body_patterns`` get that bit-width and no offsets.

    Returns:
        list[str]: names of all quantized layers.
    """
    if config.scope == 'body':
        return quantize_modules(net, body_patterns, config)
    patterns = ['*'] if config.scope == 'all' else list(config.scope)
    if config.outer_bit is None:
        return quantize_modules(net, patterns, config)
    names = quantize_modules(net, body_patterns, config)
    return names + quantize_modules(net, patterns, config.for_outer_layers())


def quantized_layers(net):
    """[(name, layer)] of the quantized layers of ``net`` (DDP/DataParallel wrappers are unwrapped)."""
    net = getattr(net, 'module', net)
    return [(n, m) for n, m in net.named_modules() if isinstance(m, QUANT_LAYER_TYPES)]


def activation_points(net):
    """[(name, module)] of every module with a static activation quantizer (``act_quantizer``, ``observer``): the
    quantized layers and the quantized matmul operands (attention), in network order."""
    net = getattr(net, 'module', net)
    return [(n, m) for n, m in net.named_modules() if isinstance(m, QUANT_LAYER_TYPES + (QuantOperand, ))]


class UnusedQuantizedLayerError(ValueError):
    """Quantized layers that the network's eval forward never runs (``names``)."""

    def __init__(self, names, arch=None):
        self.names = list(names)
        shown = ', '.join(self.names[:8]) + (f' ... ({len(self.names)} in all)' if len(self.names) > 8 else '')
        super().__init__(
            f"the eval forward of {arch or 'the network'} never runs the quantized layer(s) {shown}: it computes "
            'its output without them (BasicSR\'s ECBSR, for example, convolves with re-parameterized weights in '
            'eval mode), so their quantizers would never act and validation, test and export would see those layers '
            'in floating point. Leave them out of network_g.scope, or quantize an arch whose eval forward runs them.')


@contextmanager
def quantizers_off(net):
    """Inside the block every fake quantizer of ``net`` (activation, weight, output) is off and ``net`` is in eval
    mode: the FP function, which needs no calibration. Both are restored afterwards."""
    quantizers = [q for _, point in activation_points(net)
                  for q in (point.act_quantizer, getattr(point, 'weight_quantizer', None),
                            getattr(point, 'output_quantizer', None)) if q is not None]
    enabled, was_training = [q.enabled for q in quantizers], net.training
    for q in quantizers:
        q.enabled = False
    net.eval()
    try:
        yield net
    finally:
        for q, on in zip(quantizers, enabled):
            q.enabled = on
        net.train(was_training)


def unused_in_eval(net, example):
    """[names] of the activation points (quantized layers, quantized matmul operands) that one eval forward of
    ``net`` on ``example`` (N, C, H, W) does not run, with the quantizers off and without autograd. ``example`` may
    be on the meta device where the arch allows it. ``net``'s mode and quantizer switches are restored."""
    points = activation_points(net)
    called = set()
    hooks = [point.register_forward_pre_hook(lambda module, args, n=name: called.add(n)) for name, point in points]
    try:
        with quantizers_off(net), torch.no_grad():
            net(example)
    finally:
        for hook in hooks:
            hook.remove()
    return [name for name, _ in points if name not in called]


def set_quantization(net, enabled):
    """Turn all fake quantizers of ``net`` on or off (off: the exact FP function)."""
    for _, point in activation_points(net):
        point.act_quantizer.enabled = enabled
        if hasattr(point, 'weight_quantizer'):
            point.weight_quantizer.enabled = enabled
        if getattr(point, 'output_quantizer', None) is not None:
            point.output_quantizer.enabled = enabled


def set_integer_kernel_eval(net, enabled):
    """With integer_zero_point, whether ``net``'s eval forward (without autograd) computes its quantized layers as
    the integer ONNX graph's kernels do (``integer_kernel.integer_kernel_output``; the default) or runs the
    fake-quant forward of training, which differs by float rounding ties (docs/EXPORT_APPENDIX.md)."""
    for _, point in activation_points(net):
        if getattr(point, 'output_quantizer', None) is not None:
            point.output_quantizer.integer_kernel_eval = bool(enabled)
    return net


def set_integer_zero_point(net, enabled):
    """Make ``net`` compute what its integer ONNX export computes: every activation grid on integer multiples of its
    step (``ActQuantizer.integer_zero_point``), 8-bit weights on the int8 grid (``WeightQuantizer.int8_grid``), and
    an ``OutputRequantizer`` on every quantized layer's output (identity until ``calibrate`` switches on those the
    export requantizes; the conv bias then sits on the int32 grid, ``QuantConv2d.integer_bias``). False restores
    the paper's grids and removes the requantizers."""
    points = [point for _, point in activation_points(net)]
    for point in points:
        point.act_quantizer.integer_zero_point = bool(enabled)
        if isinstance(point, QUANT_LAYER_TYPES):
            point.weight_quantizer.int8_grid = bool(enabled) and point.weight_quantizer.bits == 8
            if enabled and getattr(point, 'offset', None) is not None:
                explicit_padding(point)  # an offset layer pads first: refuse an asymmetric 'same' when built
            if enabled and point.output_quantizer is None:
                point.output_quantizer = OutputRequantizer().to(point.weight.device)
            elif not enabled:
                point.output_quantizer = None
            if point.output_quantizer is not None:  # where its consumer_index points (a plain list, not submodules)
                point.output_quantizer.network_points = points
    return net


def is_quantizer_param(name):
    """True for parameter/buffer names that belong to quantizer state (ranges, gamma, offsets)."""
    return any(part in ('act_quantizer', 'weight_quantizer', 'offset', 'output_quantizer') for part in name.split('.'))


def refresh_quantizer_state(net):
    """Re-read the python mirrors of quantizer buffers (offset gates, calibration flags) after a broadcast or an
    in-place copy of the buffers."""
    for _, layer in activation_points(net):
        layer.act_quantizer.refresh()
        if getattr(layer, 'offset', None) is not None:
            layer.offset.refresh()
        if getattr(layer, 'output_quantizer', None) is not None:
            layer.output_quantizer.refresh()
    return net

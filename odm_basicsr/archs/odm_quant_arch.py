from basicsr.utils.registry import ARCH_REGISTRY

from .quant_util import BODY_SCOPES, QuantizedArchMixin

_QUANTIZED_CLASSES = {}
# FP archs whose forward depends on buffers made for one input size (SwinIR's shifted-window masks, computed for
# img_size): their ONNX graph is traced at one size, and basicsr infer --onnx tiles images to it
FIXED_SIZE_ARCHS = ('SwinIR', )


def quantized_arch_class(arch_cls):
    """``ODMQuant_<Arch>``: the FP arch class with ``QuantizedArchMixin`` in front (one class per arch, cached)."""
    if arch_cls not in _QUANTIZED_CLASSES:
        _QUANTIZED_CLASSES[arch_cls] = type(f'ODMQuant_{arch_cls.__name__}', (QuantizedArchMixin, arch_cls), {
            'fp_arch': arch_cls.__name__,  # BODY_SCOPES key (SRVGGNetCompact_basicsr's class is SRVGGNetCompact)
            'onnx_dynamic_size': arch_cls.__name__ not in FIXED_SIZE_ARCHS,
            '__doc__': f'{arch_cls.__name__} quantized in place by ODMQuant; keys as {arch_cls.__name__}.'
        })
    return _QUANTIZED_CLASSES[arch_cls]


@ARCH_REGISTRY.register()
class ODMQuant:
    """Any arch of BasicSR's ARCH_REGISTRY, quantized in place; its state-dict keys stay the arch's own, so its FP
    checkpoints load strict (only quantizer keys may be missing).

    ``ODMQuant(arch={type: RRDBNet, ...}, w_bit=8, a_bit=8)`` returns an instance of ``ODMQuant_RRDBNet``, a
    subclass of the FP arch, not of ODMQuant. Input and output are the FP arch's.

    Args:
        arch (dict): the FP arch as a network_g block: ``type`` plus its constructor arguments.
        w_bit, a_bit (int): weight / activation bit-width, 2-8.
        weight_clip (str): 'max' | 'percentile' | 'wcc'.
        scope (str | list[str] | None): 'body' (the arch's default scope, see ``BODY_SCOPES``), 'all' (every
            conv/linear), or layer-name patterns. None: 'body' for an arch with a default scope, else 'all'.
        outer_bit (int | None): bit-width of the layers outside the body when the scope is wider.
        offsets (str): 'none' | 'shift' | 'scale' | 'auto': distribution offsets calibration may enable (v1).
        weight_granularity (str): 'layer' | 'channel'.
        integer_zero_point (bool): activation grids on integer zero points (integer ONNX export runs it exactly).
    """

    def __new__(cls, arch, w_bit=4, a_bit=4, weight_clip='max', scope=None, outer_bit=None, offsets='none',
                weight_granularity='layer', integer_zero_point=False):
        if not isinstance(arch, dict) or 'type' not in arch:
            raise ValueError(f'ODMQuant: arch must be a mapping with a type (a BasicSR arch), got {arch!r}.')
        arch = dict(arch)
        arch_cls = ARCH_REGISTRY.get(arch.pop('type'))
        if issubclass(arch_cls, (QuantizedArchMixin, ODMQuant)):
            raise ValueError(f'ODMQuant: arch {arch_cls.__name__} is already quantized; give its FP arch.')
        net = quantized_arch_class(arch_cls)(**arch)
        if scope is None:
            scope = 'body' if arch_cls.__name__ in BODY_SCOPES else 'all'
        net.quantize(locals())  # the QuantConfig of the quantization arguments above
        return net

    # for introspection (option checks, docs): the keyword arguments __new__ takes
    def __init__(self, arch, w_bit=4, a_bit=4, weight_clip='max', scope=None, outer_bit=None, offsets='none',
                 weight_granularity='layer', integer_zero_point=False):
        raise AssertionError('unreachable: ODMQuant.__new__ returns a quantized instance of the FP arch')

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
        **quantization: the keys of ``odm_basicsr.quant.QuantConfig``; scope absent or None: 'body' for an arch with a
            default scope (``BODY_SCOPES``), else 'all'.
    """

    def __new__(cls, arch, **quantization):
        if not isinstance(arch, dict) or 'type' not in arch:
            raise ValueError(f'ODMQuant: arch must be a mapping with a type (a BasicSR arch), got {arch!r}.')
        arch = dict(arch)
        arch_cls = ARCH_REGISTRY.get(arch.pop('type'))
        if issubclass(arch_cls, (QuantizedArchMixin, ODMQuant)):
            raise ValueError(f'ODMQuant: arch {arch_cls.__name__} is already quantized; give its FP arch.')
        net = quantized_arch_class(arch_cls)(**arch)
        if quantization.get('scope') is None:
            quantization['scope'] = 'body' if arch_cls.__name__ in BODY_SCOPES else 'all'
        net.quantize(quantization)
        return net

    # for introspection (option checks, docs): the keyword arguments __new__ takes
    def __init__(self, arch, **quantization):
        raise AssertionError('unreachable: ODMQuant.__new__ returns a quantized instance of the FP arch')

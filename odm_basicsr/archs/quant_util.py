"""What every ODM quantized arch shares: the default (paper-compatible) layer scopes of the known BasicSR archs,
quantizing a network's body in place, and checked checkpoint loading."""
from odm_basicsr.quant import CheckedLoadMixin, QuantConfig, quantize_network, set_integer_zero_point


def _srvgg_body(net):
    """SRVGGNetCompact: body = [conv_first, act, (conv, act) x num_conv, conv_last]; the num_conv middle convs."""
    return [f'body.{i}' for i in range(2, len(net.body) - 1, 2)]


# Per arch (the registry name of the FP arch): the convs (or linears) inside the residual / dense / attention
# blocks of the body, as fnmatch patterns, or a function of the built network that lists them. Head, tail,
# upsampler and everything outside the blocks stay FP: the scope of the published PAMS / DAQ / DDTB / ODM numbers.
BODY_SCOPES = {
    'EDSR': ('body.*.conv1', 'body.*.conv2'),
    'MSRResNet': ('body.*.conv1', 'body.*.conv2'),
    'RDN': ('rdbs.*.convs.*', ),
    'RRDBNet': ('body.*.rdb*.conv*', ),
    'RCAN': ('body.*.residual_group.*.rcab.0', 'body.*.residual_group.*.rcab.2'),
    'SRVGGNetCompact': _srvgg_body,
    'SwinIR': tuple(f'layers.*.residual_group.blocks.*.{name}' for name in ('attn.qkv', 'attn.proj', 'mlp.fc1',
                                                                           'mlp.fc2')),
}


def body_scope(arch_name, net):
    """The default body patterns of ``arch_name`` for the built ``net``, or None for an arch without one."""
    scope = BODY_SCOPES.get(arch_name)
    if scope is None:
        return None
    return list(scope(net)) if callable(scope) else list(scope)


class QuantizedArchMixin(CheckedLoadMixin):
    """Mixed into an FP BasicSR arch (before it in the bases). Subclasses set ``fp_arch``, the registry name of the
    FP arch whose entry of ``BODY_SCOPES`` is the paper-compatible scope."""

    fp_arch = None

    def quantize(self, config):
        """Swap the layers of ``config.scope`` for quantized ones (``odm_basicsr.quant.quantize_network``); with
        ``config.integer_zero_point`` their activation grids stay on integer zero points (``set_integer_zero_point``).
        ``config``: a QuantConfig, or a dict of its keys (a constructor's ``**quantization``)."""
        config = config if isinstance(config, QuantConfig) else QuantConfig.from_arguments(type(self).__name__, config)
        self.quant_config = config
        body = body_scope(self.fp_arch, self)
        if body is None and (config.scope == 'body' or config.outer_bit is not None):
            raise ValueError(f'{self.fp_arch} has no default body scope: set scope to all or to a list of layer-name '
                             'patterns (outer_bit needs a body scope).')
        self.quantized_names = quantize_network(self, body or [], config)
        set_integer_zero_point(self, config.integer_zero_point)
        self.quantizer_state_loaded = False

"""What every ODM quantized arch shares: quantizing its body in place, and checked checkpoint loading."""
from odm_basicsr.quant import CheckedLoadMixin, quantize_network


class QuantizedArchMixin(CheckedLoadMixin):
    """Mixed into an FP BasicSR arch (before it in the bases). Subclasses set ``body_patterns``: the
    paper-compatible scope, the convs inside the residual/dense blocks of the body."""

    body_patterns = ()

    def quantize(self, w_bit=4, a_bit=4, weight_clip='max', scope='body', outer_bit=None, offsets='none'):
        """Swap the layers of ``scope`` for quantized ones (see ``odm_basicsr.quant.quantize_network``)."""
        self.quant_config = dict(w_bit=w_bit, a_bit=a_bit, weight_clip=weight_clip, scope=scope, outer_bit=outer_bit,
                                 offsets=offsets)
        self.quantized_names = quantize_network(self, list(self.body_patterns), w_bit, a_bit, weight_clip, scope,
                                                outer_bit, offsets)
        self.quantizer_state_loaded = False

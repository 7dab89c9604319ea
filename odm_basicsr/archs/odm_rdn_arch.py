from basicsr.utils.registry import ARCH_REGISTRY

from .quant_util import QuantizedArchMixin
from .rdn_arch import RDN


@ARCH_REGISTRY.register()
class ODMRDN(QuantizedArchMixin, RDN):
    """RDN with the 3x3 convs inside each residual dense block quantized (num_block x num_layer layers); the
    1x1 local fusions, shallow features, global fusion and upsampler stay FP. Keys as RDN.

    Args:
        num_in_ch, num_out_ch, num_feat, num_block, num_layer, growth, upscale, img_range, rgb_mean: as RDN.
        **quantization: the keys of ``odm_basicsr.quant.QuantConfig``.
    """

    fp_arch = 'RDN'

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, num_layer=8, growth=64, upscale=4,
                 img_range=255., rgb_mean=(0., 0., 0.), **quantization):
        RDN.__init__(self, num_in_ch, num_out_ch, num_feat, num_block, num_layer, growth, upscale, img_range, rgb_mean)
        self.quantize(quantization)

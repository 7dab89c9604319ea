from basicsr.utils.registry import ARCH_REGISTRY

from .quant_util import QuantizedArchMixin
from .rdn_arch import RDN


@ARCH_REGISTRY.register()
class ODMRDN(QuantizedArchMixin, RDN):
    """RDN with the 3x3 convs inside each residual dense block quantized (num_block x num_layer layers); the
    1x1 local fusions, shallow features, global fusion and upsampler stay FP. Keys as RDN.

    Args:
        num_in_ch, num_out_ch, num_feat, num_block, num_layer, growth, upscale, img_range, rgb_mean: as RDN.
        w_bit, a_bit, weight_clip, scope, outer_bit, offsets, weight_granularity,
            integer_zero_point: see ODMEDSR.
    """

    fp_arch = 'RDN'

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, num_layer=8, growth=64, upscale=4,
                 img_range=255., rgb_mean=(0., 0., 0.), w_bit=4, a_bit=4, weight_clip='max', scope='body',
                 outer_bit=None, offsets='none', weight_granularity='layer',
                 integer_zero_point=False):
        RDN.__init__(self, num_in_ch, num_out_ch, num_feat, num_block, num_layer, growth, upscale, img_range, rgb_mean)
        self.quantize(locals())  # the QuantConfig of the quantization arguments above

from basicsr.archs.edsr_arch import EDSR
from basicsr.utils.registry import ARCH_REGISTRY

from .quant_util import QuantizedArchMixin


@ARCH_REGISTRY.register()
class ODMEDSR(QuantizedArchMixin, EDSR):
    """BasicSR's EDSR with the convs of its residual blocks quantized (keys unchanged: ``body.<i>.conv1.weight``).

    Input (N, num_in_ch, H, W) in [0, 1]; output (N, num_out_ch, H * upscale, W * upscale).

    Args:
        num_in_ch, num_out_ch, num_feat, num_block, upscale, res_scale, img_range, rgb_mean: as BasicSR's EDSR.
        **quantization: the keys of ``odm_basicsr.quant.QuantConfig`` (w_bit, a_bit, weight_clip, scope, outer_bit,
            offsets, weight_granularity, integer_zero_point), with its defaults; scope 'body' is the paper's 2 convs
            x num_block.
    """

    fp_arch = 'EDSR'

    def __init__(self, num_in_ch, num_out_ch, num_feat=64, num_block=16, upscale=4, res_scale=1, img_range=255.,
                 rgb_mean=(0.4488, 0.4371, 0.4040), **quantization):
        EDSR.__init__(self, num_in_ch, num_out_ch, num_feat, num_block, upscale, res_scale, img_range, rgb_mean)
        self.quantize(quantization)

from basicsr.archs.edsr_arch import EDSR
from basicsr.utils.registry import ARCH_REGISTRY

from .quant_util import QuantizedArchMixin


@ARCH_REGISTRY.register()
class ODMEDSR(QuantizedArchMixin, EDSR):
    """BasicSR's EDSR with the convs of its residual blocks quantized (keys unchanged: ``body.<i>.conv1.weight``).

    Input (N, num_in_ch, H, W) in [0, 1]; output (N, num_out_ch, H * upscale, W * upscale).

    Args:
        num_in_ch, num_out_ch, num_feat, num_block, upscale, res_scale, img_range, rgb_mean: as BasicSR's EDSR.
        w_bit, a_bit (int): weight / activation bit-width, 2-8.
        weight_clip (str): 'max' | 'percentile' | 'wcc'.
        scope (str | list[str]): 'body' (2 convs x num_block, the paper's scope), 'all', or name patterns.
        outer_bit (int | None): bit-width of the layers outside the body when scope is wider.
        offsets (str): 'none' | 'shift' | 'scale' | 'auto': distribution offsets calibration may enable (v1).
        weight_granularity (str): 'layer' (the paper's) | 'channel': one weight clip value per layer or per output
            channel.
        integer_zero_point (bool): keep activation grids on integer zero points, so that the integer ONNX export runs
            exactly this network (docs/EXPORT.md); false (the paper's): free ranges.
    """

    fp_arch = 'EDSR'

    def __init__(self, num_in_ch, num_out_ch, num_feat=64, num_block=16, upscale=4, res_scale=1, img_range=255.,
                 rgb_mean=(0.4488, 0.4371, 0.4040), w_bit=4, a_bit=4, weight_clip='max', scope='body', outer_bit=None,
                 offsets='none', weight_granularity='layer',
                 integer_zero_point=False):
        EDSR.__init__(self, num_in_ch, num_out_ch, num_feat, num_block, upscale, res_scale, img_range, rgb_mean)
        self.quantize(locals())  # the QuantConfig of the quantization arguments above

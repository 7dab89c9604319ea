from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.utils.registry import ARCH_REGISTRY

from .quant_util import QuantizedArchMixin


@ARCH_REGISTRY.register()
class ODMMSRResNet(QuantizedArchMixin, MSRResNet):
    """BasicSR's MSRResNet (SRResNet) with the convs of its residual blocks quantized; keys unchanged.

    Input (N, num_in_ch, H, W) in [0, 1]; output (N, num_out_ch, H * upscale, W * upscale).

    Args:
        num_in_ch, num_out_ch, num_feat, num_block, upscale: as BasicSR's MSRResNet.
        **quantization: the keys of ``odm_basicsr.quant.QuantConfig``.
    """

    fp_arch = 'MSRResNet'

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4, **quantization):
        MSRResNet.__init__(self, num_in_ch, num_out_ch, num_feat, num_block, upscale)
        self.quantize(quantization)

import torch.nn.functional as F
from basicsr.archs.swinir_arch import SwinIR, WindowAttention
from basicsr.utils.registry import ARCH_REGISTRY

from odm_basicsr.quant import MatMul, set_integer_zero_point

from .quant_util import QuantizedArchMixin


class QuantWindowAttention(WindowAttention):
    """BasicSR's window attention with its two matrix products as ``MatMul`` modules (q·kᵀ, attn·v), so that they
    can be quantized (static ranges, a_bit on both operands) and are counted by the cost report either way.
    Parameters, buffers and keys are WindowAttention's; the MatMuls add quantizer keys only when quantized.

    Input (num_windows*N, n, C), n = window_size²; mask (num_windows, n, n) of 0 / -100 or None."""

    @classmethod
    def convert(cls, attention, a_bit=None):
        """Turn a built WindowAttention into this class in place (same tensors); a_bit None keeps FP products."""
        attention.__class__ = cls
        attention.qk_matmul = MatMul(a_bit).to(attention.qkv.weight.device)
        attention.av_matmul = MatMul(a_bit).to(attention.qkv.weight.device)
        return attention

    def name_operands(self, prefix):
        """Give the operand quantizers their qualified names (for the uncalibrated-forward error)."""
        for product in ('qk_matmul', 'av_matmul'):
            matmul = getattr(self, product)
            if matmul.quantized:
                matmul.left.act_quantizer.layer_name = f'{prefix}.{product}.left'
                matmul.right.act_quantizer.layer_name = f'{prefix}.{product}.right'

    def forward(self, x, mask=None):
        windows, tokens, channels = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(windows, tokens, 3, heads, channels // heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.qk_matmul(q * self.scale, k.transpose(-2, -1))  # (windows, heads, tokens, tokens)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(tokens, tokens, heads)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            groups = mask.shape[0]
            attn = (attn.view(windows // groups, groups, heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)).view(
                windows, heads, tokens, tokens)
        attn = self.attn_drop(self.softmax(attn))
        x = self.av_matmul(attn, v).transpose(1, 2).reshape(windows, tokens, channels)
        return self.proj_drop(self.proj(x))


@ARCH_REGISTRY.register()
class ODMSwinIR(QuantizedArchMixin, SwinIR):
    """BasicSR's SwinIR with the Linear layers inside its residual Swin Transformer blocks quantized (qkv, proj,
    fc1, fc2: the paper's scope); keys unchanged, so SwinIR checkpoints (``params`` or ``params_ema``) load strict.

    Input (N, in_chans, H, W) in [0, 1], any H and W: the input is reflect-padded to a multiple of window_size and
    the output cropped back (as BasicSR's SwinIRModel does at test time); output (N, 3, H * upscale, W * upscale).

    Args:
        img_size, patch_size, in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale,
            drop_rate, attn_drop_rate, drop_path_rate, ape, patch_norm, use_checkpoint, upscale, img_range,
            upsampler, resi_connection: as BasicSR's SwinIR (LayerNorm is fixed).
        quantize_attention (bool): also quantize both operands of q·kᵀ and attn·v to a_bit with static ranges.
            Default false: the paper's scope names the Linear layers only (docs/SWINIR.md).
        **quantization: the keys of ``odm_basicsr.quant.QuantConfig``; scope 'body' is the paper's 4 Linear layers
            per Swin block, and offsets must stay 'none' (they are implemented for conv layers; the body is Linear).
    """

    fp_arch = 'SwinIR'
    onnx_dynamic_size = False  # the shifted-window masks depend on the input size: ONNX is traced at one size

    def __init__(self, img_size=64, patch_size=1, in_chans=3, embed_dim=96, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6),
                 window_size=7, mlp_ratio=4., qkv_bias=True, qk_scale=None, drop_rate=0., attn_drop_rate=0.,
                 drop_path_rate=0.1, ape=False, patch_norm=True, use_checkpoint=False, upscale=2, img_range=1.,
                 upsampler='', resi_connection='1conv', quantize_attention=False, **quantization):
        SwinIR.__init__(self, img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                        depths=depths, num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio,
                        qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                        drop_path_rate=drop_path_rate, ape=ape, patch_norm=patch_norm, use_checkpoint=use_checkpoint,
                        upscale=upscale, img_range=img_range, upsampler=upsampler, resi_connection=resi_connection)
        self.window_size = window_size  # inputs are padded to a multiple of it
        if quantization.get('offsets', 'none') != 'none':
            raise ValueError('ODMSwinIR: offsets must be none (distribution offsets are implemented for conv layers, '
                             'and the quantized body of SwinIR is Linear).')
        self.quantize(quantization)
        for name, module in list(self.named_modules()):
            if isinstance(module, WindowAttention):
                QuantWindowAttention.convert(module, self.quant_config.a_bit if quantize_attention else None).name_operands(name)
        self.quantize_attention = bool(quantize_attention)
        set_integer_zero_point(self, self.quant_config.integer_zero_point)  # the attention operands too

    def forward(self, x):
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.window_size, (-width) % self.window_size
        if pad_h or pad_w:
            mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'
            x = F.pad(x, (0, pad_w, 0, pad_h), mode)
        out = SwinIR.forward(self, x)
        # BasicSR's SwinIR upsamples only with these; any other upsampler ('': denoising, JPEG) keeps the size
        scale = self.upscale if self.upsampler in ('pixelshuffle', 'pixelshuffledirect', 'nearest+conv') else 1
        return out[..., :height * scale, :width * scale]

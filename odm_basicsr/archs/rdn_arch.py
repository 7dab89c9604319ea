import torch
import torch.nn as nn
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY


class ResidualDenseBlock(nn.Module):
    """RDB: num_layer densely connected 3x3 conv + ReLU layers, 1x1 local feature fusion, local residual.

    Input and output (N, num_feat, H, W).
    """

    def __init__(self, num_feat, growth, num_layer):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(num_feat + i * growth, growth, 3, 1, 1) for i in range(num_layer))
        self.lff = nn.Conv2d(num_feat + num_layer * growth, num_feat, 1)

    def forward(self, x):
        features = x
        for conv in self.convs:
            features = torch.cat((features, F.relu(conv(features))), 1)
        return self.lff(features) + x


@ARCH_REGISTRY.register()
class RDN(nn.Module):
    """Residual Dense Network (full precision), with the original paper's configuration by default.

    Paper: Residual Dense Network for Image Super-Resolution (Zhang et al., CVPR 2018), configuration B of the
    EDSR-PyTorch code base: G0 = num_feat = 64, D = num_block = 16, C = num_layer = 8, G = growth = 64.
    The network works on 0-255 pixels internally (x * img_range - rgb_mean), like BasicSR's EDSR, so
    EDSR-PyTorch RDN checkpoints (rgb_range 255, no mean shift) convert with rgb_mean = (0, 0, 0).

    Input (N, num_in_ch, H, W) in [0, 1]; output (N, num_out_ch, H * upscale, W * upscale).

    Args:
        num_in_ch, num_out_ch (int): image channels.
        num_feat (int): G0. num_block (int): D. num_layer (int): C. growth (int): G.
        upscale (int): 2, 3 or 4.
        img_range (float): internal pixel range. rgb_mean (tuple): subtracted after scaling (0-1 units).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, num_layer=8, growth=64, upscale=4,
                 img_range=255., rgb_mean=(0., 0., 0.)):
        super().__init__()
        if upscale not in (2, 3, 4):
            raise ValueError(f'RDN upscale must be 2, 3 or 4, got {upscale!r}')
        self.img_range = img_range
        self.mean = torch.Tensor(rgb_mean).view(1, 3, 1, 1)
        self.sfe1 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.sfe2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.rdbs = nn.ModuleList(ResidualDenseBlock(num_feat, growth, num_layer) for _ in range(num_block))
        self.gff = nn.Sequential(nn.Conv2d(num_block * num_feat, num_feat, 1), nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        if upscale == 4:
            self.upsample = nn.Sequential(
                nn.Conv2d(num_feat, growth * 4, 3, 1, 1), nn.PixelShuffle(2), nn.Conv2d(growth, growth * 4, 3, 1, 1),
                nn.PixelShuffle(2))
        else:
            self.upsample = nn.Sequential(nn.Conv2d(num_feat, growth * upscale**2, 3, 1, 1), nn.PixelShuffle(upscale))
        self.conv_last = nn.Conv2d(growth, num_out_ch, 3, 1, 1)

    def forward(self, x):
        self.mean = self.mean.type_as(x)
        x = (x - self.mean) * self.img_range
        shallow = self.sfe1(x)
        x = self.sfe2(shallow)
        block_outputs = []
        for rdb in self.rdbs:
            x = rdb(x)
            block_outputs.append(x)
        x = self.gff(torch.cat(block_outputs, 1)) + shallow
        x = self.conv_last(self.upsample(x))
        return x / self.img_range + self.mean

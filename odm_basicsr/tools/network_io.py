"""Small helpers shared by the commands that run a network_g on whole images (infer, compare, export)."""


def input_channels(network_opt):
    """Input channels of a network_g block: num_in_ch, SwinIR's in_chans, or ODMQuant's inner arch's; default 3."""
    merged = dict(network_opt.get('arch') or {}, **network_opt)
    return int(merged.get('num_in_ch', merged.get('in_chans', 3)))


def network_scale(network_opt, default=None):
    """Upscaling factor of a network_g block: upscale or scale (ODMQuant's inner arch's too), else ``default``, else 4."""
    merged = dict(network_opt.get('arch') or {}, **network_opt)
    return int(merged.get('upscale', merged.get('scale', default or 4)))


def pad_to_multiple(x, multiple):
    """x (N, C, H, W) padded at the bottom and right to multiples of ``multiple`` (reflect where the image is large
    enough, else replicate), and the (pad_h, pad_w) added."""
    import torch.nn.functional as F
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), 'reflect' if pad_h < height and pad_w < width else 'replicate')
    return x, (pad_h, pad_w)


def forward_padded(net, lq, window, scale):
    """net(lq); with ``window`` (SwinIR's window_size), lq is first padded to a multiple of it and the output cropped
    back, as BasicSR's SwinIRModel does at test time."""
    if not window:
        return net(lq)
    height, width = lq.shape[-2:]
    padded, _ = pad_to_multiple(lq, window)
    return net(padded)[..., :height * scale, :width * scale]

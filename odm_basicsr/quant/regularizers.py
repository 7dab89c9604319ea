"""The two ODM regularizers over the features X_i seen by the quantized layers (docs/METHOD.md).

Each takes ``features``: a list of X_i tensors (N, C, H, W) (or (..., C) for linear layers), and returns a
0-dim tensor. Both are summed over layers.
"""
import torch

REGULARIZERS = ('variance', 'mismatch')
VARIANCE_STATS = ('var', 'std')


def _channels_first(x):
    """(C, elements) view: channel axis 1 for conv features (N, C, H, W), last axis for linear (..., C)."""
    if x.dim() == 4:
        return x.transpose(0, 1).reshape(x.shape[1], -1)
    return x.reshape(-1, x.shape[-1]).t()


def variance_loss(features, stat='var'):
    """ODM v1:  L_V = sum_i mean_c Var_{n,h,w}(X_i[:, c])   (or the std with stat='std').

    Biased (population) variance over all N*H*W positions of each channel.
    """
    if stat not in VARIANCE_STATS:
        raise ValueError(f'stat must be one of {VARIANCE_STATS}, got {stat!r}')
    total = 0
    for x in features:
        per_channel = _channels_first(x).var(dim=1, unbiased=False)
        if stat == 'std':
            per_channel = (per_channel + 1e-12).sqrt()
        total = total + per_channel.mean()
    return torch.as_tensor(total, dtype=torch.float32)


def mismatch_loss(features, targets):
    """ODM v2:  L_M = sum_i || X_i - sg(q(X_i)) ||_2  (Frobenius norm over the whole batch tensor).

    Args:
        targets (list[Tensor]): sg(q(X_i)) for each feature, already detached.
    """
    total = 0
    for x, target in zip(features, targets):
        total = total + (x - target.detach()).pow(2).sum().add(1e-12).sqrt()
    return torch.as_tensor(total, dtype=torch.float32)

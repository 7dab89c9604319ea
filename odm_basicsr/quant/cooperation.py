"""Combining the reconstruction gradient g_R with the regularizer gradient g_reg (docs/METHOD.md).

All functions take lists of tensors (one per network weight tensor θ, in the same order), where g_reg already
includes the regularizer weight λ, and return (combined list, statistic).

    sign   (v1):  g = g_R + [sign(g_reg) == sign(g_R)] ⊙ g_reg          statistic: gradient conflict ratio
    cosine (v2):  g = g_R + s · g_reg,  s = (cos(g_R, g_reg) + 1) / 2   statistic: cos(g_R, g_reg)
    cosine_tensor: the same, with one s_t per weight tensor t            statistic: mean over tensors of cos_t
    none        :  g = g_R + g_reg                                       statistic: cos(g_R, g_reg)

The conflict ratio is the share of elements with a non-zero g_reg whose sign differs from g_R's. For ``cosine``
(the paper's, as this project reads it) the cosine is taken once over the concatenation of all tensors; over the
1.5M weights of EDSR-baseline it sits near 0, so s is near 1/2 at every step. ``cosine_tensor`` (an option for the
ablation) takes it per weight tensor (one conv's weight, one bias), so each layer keeps or halves its own share.
"""
import torch

COOPERATION_MODES = ('sign', 'cosine', 'cosine_tensor', 'none')


def _flatten(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def _unflatten(flat, like):
    return [part.view_as(g) for part, g in zip(torch.split(flat, [g.numel() for g in like]), like)]


def cosine_similarity(grads_a, grads_b, eps=1e-20):
    """cos between the concatenations of two gradient lists (0-dim tensor)."""
    a, b = _flatten(grads_a), _flatten(grads_b)
    return torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(eps)


def _sign_flat(rec, reg):
    agree = torch.sign(reg) == torch.sign(rec)
    nonzero = reg != 0
    ratio = (nonzero & ~agree).sum().float() / nonzero.sum().clamp_min(1).float()
    return rec + reg * agree, ratio


def _cosine_flat(rec, reg):
    return torch.dot(rec, reg) / (rec.norm() * reg.norm()).clamp_min(1e-20)


def combine_flat(rec, reg, mode, sizes=None):
    """``combine_gradients`` on flat vectors (the concatenations of the per-tensor lists), without splitting them.

    Args:
        rec, reg (Tensor): (N,) g_R and g_reg (λ included), all weight tensors concatenated in the same order.
        mode (str): 'sign' | 'cosine' | 'cosine_tensor' | 'none'.
        sizes (list[int] | None): element count of each tensor, needed by 'cosine_tensor' only.
    Returns:
        (Tensor (N,), 0-dim Tensor): the combined gradient and the statistic of the module docstring.
    """
    if mode == 'sign':
        return _sign_flat(rec, reg)
    if mode in ('cosine', 'none'):
        cos = _cosine_flat(rec, reg)
        return (rec + (cos + 1) / 2 * reg if mode == 'cosine' else rec + reg), cos
    if mode == 'cosine_tensor':
        if sizes is None:
            raise ValueError("combine_flat: cooperation 'cosine_tensor' needs the tensor sizes")
        combined, stat = combine_cosine_per_tensor(torch.split(rec, sizes), torch.split(reg, sizes))
        return torch.cat(combined), stat
    raise ValueError(f'cooperation must be one of {COOPERATION_MODES}, got {mode!r}')


def combine_sign(grads_rec, grads_reg):
    combined, ratio = _sign_flat(_flatten(grads_rec), _flatten(grads_reg))
    return _unflatten(combined, grads_rec), ratio


def combine_cosine(grads_rec, grads_reg):
    combined, cos = combine_flat(_flatten(grads_rec), _flatten(grads_reg), 'cosine')
    return _unflatten(combined, grads_rec), cos


def combine_cosine_per_tensor(grads_rec, grads_reg):
    combined, cosines = [], []
    for rec, reg in zip(grads_rec, grads_reg):
        cos = (rec * reg).sum() / (rec.norm() * reg.norm()).clamp_min(1e-20)
        combined.append(rec + (cos + 1) / 2 * reg)
        cosines.append(cos)
    return combined, torch.stack(cosines).mean()


def combine_none(grads_rec, grads_reg):
    combined, cos = combine_flat(_flatten(grads_rec), _flatten(grads_reg), 'none')
    return _unflatten(combined, grads_rec), cos


def combine_gradients(grads_rec, grads_reg, mode):
    """Dispatch on ``mode`` ('sign' | 'cosine' | 'cosine_tensor' | 'none'); see the module docstring."""
    if mode == 'sign':
        return combine_sign(grads_rec, grads_reg)
    if mode == 'cosine':
        return combine_cosine(grads_rec, grads_reg)
    if mode == 'cosine_tensor':
        return combine_cosine_per_tensor(grads_rec, grads_reg)
    if mode == 'none':
        return combine_none(grads_rec, grads_reg)
    raise ValueError(f'cooperation must be one of {COOPERATION_MODES}, got {mode!r}')

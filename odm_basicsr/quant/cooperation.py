"""Combining the reconstruction gradient g_R with the regularizer gradient g_reg (ODM.md sections 2, 3).

All functions take lists of tensors (one per network weight tensor θ, in the same order), where g_reg already
includes the regularizer weight λ, and return (combined list, statistic).

    sign   (v1):  g = g_R + [sign(g_reg) == sign(g_R)] ⊙ g_reg          statistic: gradient conflict ratio
    cosine (v2):  g = g_R + s · g_reg,  s = (cos(g_R, g_reg) + 1) / 2   statistic: cos(g_R, g_reg)
    none        :  g = g_R + g_reg                                       statistic: cos(g_R, g_reg)

The conflict ratio is the share of elements with a non-zero g_reg whose sign differs from g_R's. The cosine is
taken once over the concatenation of all tensors.
"""
import torch

COOPERATION_MODES = ('sign', 'cosine', 'none')


def cosine_similarity(grads_a, grads_b, eps=1e-20):
    """cos between the concatenations of two gradient lists (0-dim tensor)."""
    dot = sum((a * b).sum() for a, b in zip(grads_a, grads_b))
    norm_a = sum(a.pow(2).sum() for a in grads_a).sqrt()
    norm_b = sum(b.pow(2).sum() for b in grads_b).sqrt()
    return dot / (norm_a * norm_b).clamp_min(eps)


def combine_sign(grads_rec, grads_reg):
    combined, conflicts, active = [], 0, 0
    for g_r, g_v in zip(grads_rec, grads_reg):
        agree = torch.sign(g_v) == torch.sign(g_r)
        combined.append(g_r + g_v * agree)
        nonzero = g_v != 0
        conflicts = conflicts + (nonzero & ~agree).sum()
        active = active + nonzero.sum()
    ratio = torch.as_tensor(conflicts, dtype=torch.float32) / max(float(active), 1.0)
    return combined, ratio


def combine_cosine(grads_rec, grads_reg):
    cos = cosine_similarity(grads_rec, grads_reg)
    weight = (cos + 1) / 2
    return [g_r + weight * g_v for g_r, g_v in zip(grads_rec, grads_reg)], cos


def combine_none(grads_rec, grads_reg):
    cos = cosine_similarity(grads_rec, grads_reg)
    return [g_r + g_v for g_r, g_v in zip(grads_rec, grads_reg)], cos


def combine_gradients(grads_rec, grads_reg, mode):
    """Dispatch on ``mode`` ('sign' | 'cosine' | 'none'); see the module docstring."""
    if mode == 'sign':
        return combine_sign(grads_rec, grads_reg)
    if mode == 'cosine':
        return combine_cosine(grads_rec, grads_reg)
    if mode == 'none':
        return combine_none(grads_rec, grads_reg)
    raise ValueError(f'cooperation must be one of {COOPERATION_MODES}, got {mode!r}')

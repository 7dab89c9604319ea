"""The distance of a quantized network to an FP network: on the output, plus an optional feature term at named
module outputs. One definition, shared by ``refine`` (post-training: the FP function of the same network) and by the
FP teacher of QAT (``train.distill_opt``: a frozen FP copy).

    distance = d(y_q, y_fp) + feature_weight * mean_k |f_q,k - f_fp,k|^2 / |f_fp,k|^2

d is the mean absolute (``l1``) or squared (``mse``) difference over all elements; each feature term is normalised
by the FP feature's energy, so that blocks of any scale weigh alike (2DQuant's normalised feature loss).
"""
import torch

DISTANCES = ('l1', 'mse')


def output_distance(output, target, kind='l1'):
    """0-dim: mean |output - target| (``l1``) or mean (output - target)^2 (``mse``)."""
    diff = output - target
    return diff.abs().mean() if kind == 'l1' else (diff * diff).mean()


def feature_distance(features, targets):
    """0-dim: the mean over feature points of |f - f_fp|^2 / |f_fp|^2 (each a tensor, same shapes)."""
    terms = [((f - t)**2).sum() / (t * t).sum().clamp_min(1e-12) for f, t in zip(features, targets)]
    return torch.stack(terms).mean() if terms else torch.zeros(())


class FeatureTap:
    """Keeps the outputs of the modules ``names`` of ``net`` for the forwards run inside ``with tap:``; after it,
    ``tap.features`` lists them in the order the forward produced them (the first tensor of each output)."""

    def __init__(self, net, names):
        self.net, self.names, self.features, self._hooks = getattr(net, 'module', net), list(names), [], []

    def __enter__(self):
        self.features = []

        def keep(module, inputs, output):
            self.features.append(output if torch.is_tensor(output) else output[0])

        self._hooks = [self.net.get_submodule(name).register_forward_hook(keep) for name in self.names]
        return self

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        return False


def missing_modules(net, names):
    """The names in ``names`` that are not modules of ``net``."""
    known = {n for n, _ in getattr(net, 'module', net).named_modules()}
    return [n for n in names if n not in known]

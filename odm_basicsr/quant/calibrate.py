"""Calibration: activation ranges from a handful of batches, and selection of distribution offsets.

Both passes run the FP function (quantizers off), so every layer sees the same statistics whatever its
position. Ranges: the mean over batches of the per-batch 1st / 99th percentiles of each quantized layer's input
X' (taken after its offset). Offsets (ODM v1): per layer, the spread across channels of the channel means
(shift) and of the channel standard deviations (scale), each divided by the layer's P99 - P1 range.
"""
import torch
from tqdm import tqdm

from .convert import quantized_layers, set_quantization
from .quantizer import percentile

LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.0


class _RangeObserver:

    def __init__(self):
        self.lows, self.highs = [], []

    def __call__(self, x):
        self.lows.append(percentile(x, LOW_PERCENTILE))
        self.highs.append(percentile(x, HIGH_PERCENTILE))

    def result(self):
        return torch.stack(self.lows).mean().item(), torch.stack(self.highs).mean().item()


class _ChannelObserver(_RangeObserver):
    """Per-channel mean / variance (channel axis 1 for conv inputs) plus the layer's percentile range."""

    def __init__(self):
        super().__init__()
        self.count, self.total, self.total_sq = 0, 0.0, 0.0

    def __call__(self, x):
        super().__call__(x)
        x = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)
        self.count += x.shape[1]
        self.total = self.total + x.sum(dim=1)
        self.total_sq = self.total_sq + (x * x).sum(dim=1)

    def stats(self):
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp_min(0)
        low, high = self.result()
        layer_mean = mean.mean()
        layer_std = (var + (mean - layer_mean)**2).mean().sqrt()  # std of the whole layer input
        return dict(mean=mean.float(), std=var.sqrt().float(), layer_mean=layer_mean.float(),
                    layer_std=layer_std.float(), width=max(high - low, 1e-8))


def _run(net, batches, observers, desc, progress):
    layers = dict(quantized_layers(net))
    for name, obs in observers.items():
        layers[name].observer = obs
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
                net(batch)
    finally:
        for layer in layers.values():
            layer.observer = None


def offset_scores(stats):
    """{layer: {'shift': spread of channel means / width, 'scale': spread of channel stds / width}}."""
    return {name: {'shift': (s['mean'].std() / s['width']).item(), 'scale': (s['std'].std() / s['width']).item()}
            for name, s in stats.items()}


def select_offsets(scores, mode, top_k=None, threshold=None):
    """Choose the layers that get an offset, and its kind.

    Args:
        scores (dict): from ``offset_scores``.
        mode (str): 'shift' | 'scale' | 'auto' (per layer, the kind with the larger spread).
        top_k (float | None): fraction (0, 1] of layers with the largest score.
        threshold (float | None): layers whose score is above it. Exactly one of top_k / threshold.
    Returns:
        list[(name, kind, score)] sorted by decreasing score.
    """
    if (top_k is None) == (threshold is None):
        raise ValueError('offset selection needs exactly one of offset_top_k / offset_threshold')
    ranked = []
    for name, s in scores.items():
        kind = max(s, key=s.get) if mode == 'auto' else mode
        ranked.append((name, kind, s[kind]))
    ranked.sort(key=lambda r: -r[2])
    if threshold is not None:
        return [r for r in ranked if r[2] > threshold]
    if not 0 < top_k <= 1:
        raise ValueError(f'offset_top_k must be a fraction in (0, 1], got {top_k!r}')
    return ranked[:max(1, int(round(top_k * len(ranked))))]


def calibrate(net, batches, offset_mode='none', offset_top_k=None, offset_threshold=None, progress=True,
              reduce_fn=None):
    """Initialise activation ranges (and offsets) of ``net`` in place.

    Args:
        net (nn.Module): a network with quantized layers.
        batches (list[Tensor]): input batches (N, C, H, W) on the network's device.
        offset_mode (str): 'none' | 'shift' | 'scale' | 'auto'.
        offset_top_k, offset_threshold: the selection rule, see ``select_offsets``.
        reduce_fn (callable | None): averages a tensor over data-parallel ranks (identity when None).
    Returns:
        dict: 'ranges' {layer: (l, u)}, 'offsets' [(name, kind, score)], 'scores' {layer: {...}}.
    """
    reduce_fn = reduce_fn or (lambda t: t)
    batches = list(batches)
    if not batches:
        raise ValueError('calibration needs at least one batch')
    layers = dict(quantized_layers(net))
    was_training = net.training
    net.eval()
    set_quantization(net, False)
    report = {'offsets': [], 'scores': {}}
    try:
        if offset_mode != 'none':
            offset_layers = {n: m for n, m in layers.items() if m.offset is not None}
            observers = {n: _ChannelObserver() for n in offset_layers}
            _run(net, batches, observers, 'calibration (offset statistics)', progress)
            stats = {}
            for name, obs in observers.items():
                s = obs.stats()
                for key in ('mean', 'std', 'layer_mean', 'layer_std'):
                    s[key] = reduce_fn(s[key])
                s['width'] = reduce_fn(torch.tensor(float(s['width']))).item()
                stats[name] = s
            report['scores'] = offset_scores(stats)
            report['offsets'] = select_offsets(report['scores'], offset_mode, offset_top_k, offset_threshold)
            for name, kind, _ in report['offsets']:
                s = stats[name]
                layers[name].offset.enable(
                    kind, shift=s['mean'] - s['layer_mean'], scale=(s['std'] / s['layer_std'].clamp_min(1e-8)).clamp(
                        1e-2, 1e2))
        observers = {n: _RangeObserver() for n in layers}
        _run(net, batches, observers, 'calibration (activation ranges)', progress)
        report['ranges'] = {}
        for name, obs in observers.items():
            low, high = obs.result()
            low = reduce_fn(torch.tensor(low, dtype=torch.float64)).item()
            high = reduce_fn(torch.tensor(high, dtype=torch.float64)).item()
            layers[name].act_quantizer.set_range(low, high)
            report['ranges'][name] = (low, high)
    finally:
        set_quantization(net, True)
        net.train(was_training)
    return report

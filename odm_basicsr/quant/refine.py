"""Refinement: learning a calibrated network's quantizers from its own FP function (post-training, no HR images).

After ``calibrate`` has set the ranges, ``refine`` trains the quantizer parameters alone (activation bounds, and
WCC's gamma or the offsets where the network has them; the weights stay frozen) end to end with Adam, to minimise
the distance (``distance.py``) between the quantized output and the FP output of the same network on the
calibration crops. Each activation bound learns at ``lr`` x its calibrated quantization step (width / (2^b - 1)): the
bounds of every layer move by about the same fraction of a grid step per iteration, whatever the features' scale
and the bit-width (a rate relative to the width that suits 2 bits overshoots at 8, where the step is 85 times
finer); the other quantizer parameters (WCC's gamma, offsets) learn at ``lr`` x 1e-2.

End to end rather than block by block: the per-layer range choice judged on block outputs misses how an error in
one block grows through the ones after it (benchmarks/calibration_depth.py measured up to 0.75 dB lost on the demo
EDSR at w2a2 against judging on the network output), and the end-to-end loss sees exactly that. It costs one
forward and backward of the quantized network per iteration at ``batch`` crops.
"""
import time
from dataclasses import dataclass, fields

import torch
from tqdm import tqdm

from .calibrate import judging_units, stack_batches
from .convert import activation_points, is_quantizer_param, quantized_layers, set_quantization
from .distance import DISTANCES, FeatureTap, feature_distance, output_distance
from .export_integer import calibrate_output_requantizers


def _positive_int(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f'{key}: must be an integer >= 1, got {value!r}.'
    return None


def _number(key, value, minimum, inclusive):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        value >= minimum if inclusive else value > minimum)
    return None if ok else f'{key}: must be a number {">=" if inclusive else ">"} {minimum:g}, got {value!r}.'


@dataclass(frozen=True)
class RefineConfig:
    """``train.calibration.refine``: iters (Adam steps), lr (in quantization steps per iteration), batch (crops per step,
    drawn from the calibration crops), loss ('l1' | 'mse' on the output), feature_weight (of the normalised feature
    term at the blocks' outputs; 0: output only)."""
    iters: int = 200
    lr: float = 0.03
    batch: int = 4
    loss: str = 'l1'
    feature_weight: float = 0.0

    def __post_init__(self):
        problems = self.problems({f.name: getattr(self, f.name) for f in fields(self)})
        if problems:
            raise ValueError(' '.join(problems))

    @classmethod
    def keys(cls):
        return tuple(f.name for f in fields(cls))

    @classmethod
    def problems(cls, values, prefix=''):
        """Error texts for the keys given in ``values``, each named ``prefix + key``."""
        checks = {'iters': _positive_int, 'batch': _positive_int,
                  'lr': lambda k, v: _number(k, v, 0, False),
                  'feature_weight': lambda k, v: _number(k, v, 0, True),
                  'loss': lambda k, v: None if v in DISTANCES else f'{k}: {v!r} is not one of {", ".join(DISTANCES)}.'}
        return [p for k, check in checks.items() if k in values for p in [check(prefix + k, values[k])] if p]

    @classmethod
    def from_option(cls, value):
        """None for ``false`` / absent, the defaults for ``true``, else the mapping's keys over the defaults."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        return cls(**value)


def block_outputs(net):
    """The modules whose outputs the feature term compares: the blocks that hold quantized layers (each quantized
    layer's parent module; see ``calibrate.judging_units``)."""
    return list(judging_units(net, [n for n, _ in quantized_layers(net)]))


def refine(net, batches, config, seed=0, progress=True):
    """Learn the quantizers of the calibrated ``net`` from its FP function, in place (see the module docstring).

    Args:
        net (nn.Module): a calibrated quantized network (``calibrate`` ran on it).
        batches (list[Tensor]): the calibration LR crops (N, C, h, w) on the network's device.
        config (RefineConfig): iters, lr, batch, loss, feature_weight.
        seed (int): seeds the crops drawn each step (with the same seed, the same result).
    Returns:
        dict: iters (steps run), loss_first / loss_last (the distance at the first and the last step), seconds,
        mse_before / mse_after (mean squared error of the output against the FP output over all calibration crops).
    """
    model = getattr(net, 'module', net)
    crops, _ = stack_batches(list(batches))
    features = block_outputs(model) if config.feature_weight > 0 else []
    was_training = model.training
    model.eval()
    trained = [(n, p) for n, p in model.named_parameters() if is_quantizer_param(n) and p.requires_grad]
    frozen = [p for n, p in model.named_parameters() if not is_quantizer_param(n) and p.requires_grad]
    bounds = {}
    for _, point in activation_points(model):
        quantizer = point.act_quantizer
        step = float((quantizer.upper - quantizer.lower).detach().abs().clamp_min(1e-6)) / (2**quantizer.bits - 1)
        bounds[id(quantizer.lower)] = bounds[id(quantizer.upper)] = step
    groups = [{'params': [p], 'lr': config.lr * bounds[id(p)]} for _, p in trained if id(p) in bounds]
    others = [p for _, p in trained if id(p) not in bounds]
    if others:
        groups.append({'params': others, 'lr': config.lr * 1e-2})
    generator = torch.Generator().manual_seed(seed)
    started, first, last, done = time.perf_counter(), None, None, 0
    for p in frozen:
        p.requires_grad_(False)
    try:
        set_quantization(model, False)
        with torch.no_grad():
            fp_out = torch.cat([model(c) for c in crops.split(max(config.batch, 1))])
        mse_before = _output_mse(model, crops, fp_out, config.batch)
        if not groups:
            return dict(iters=0, loss_first=None, loss_last=None, seconds=0.0, mse_before=mse_before,
                        mse_after=mse_before)
        optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999))
        for _ in tqdm(range(config.iters), desc='refine (quantizers from the FP output)', disable=not progress,
                      leave=False):
            index = torch.randperm(crops.shape[0], generator=generator)[:config.batch].to(crops.device)
            x = crops[index]
            targets = []
            if features:
                set_quantization(model, False)
                with torch.no_grad(), FeatureTap(model, features) as tap:
                    model(x)
                targets = [t.detach() for t in tap.features]
            set_quantization(model, True)
            with FeatureTap(model, features) as tap:
                output = model(x)
            loss = output_distance(output, fp_out[index], config.loss)
            if features:
                loss = loss + config.feature_weight * feature_distance(tap.features, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for _, point in activation_points(model):  # keep every range a valid interval
                with torch.no_grad():
                    quantizer = point.act_quantizer
                    quantizer.upper.data = torch.maximum(quantizer.upper.data, quantizer.lower.data + 1e-4)
            value = float(loss.detach())
            first = value if first is None else first
            last, done = value, done + 1
    finally:
        for p in frozen:
            p.requires_grad_(True)
        set_quantization(model, True)
        model.train(was_training)
    if any(getattr(m, 'output_quantizer', None) is not None for _, m in quantized_layers(model)):
        calibrate_output_requantizers(model, list(batches))  # the export's requantization, on the new ranges
    return dict(iters=done, loss_first=first, loss_last=last, seconds=time.perf_counter() - started,
                mse_before=mse_before, mse_after=_output_mse(model, crops, fp_out, config.batch))


def _output_mse(model, crops, fp_out, batch):
    """Mean squared error of the quantized output against ``fp_out`` over ``crops``."""
    was = model.training
    model.eval()
    set_quantization(model, True)
    with torch.no_grad():
        total = sum(float(((model(c) - t)**2).sum()) for c, t in zip(crops.split(batch), fp_out.split(batch)))
    model.train(was)
    return total / fp_out.numel()

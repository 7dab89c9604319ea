"""The FP teacher of QAT (``train.distill_opt``): a frozen FP copy of ``path.pretrain_network_g``, built from the same
network_g with its quantizers off, whose output (and, optionally, the outputs of named modules) the quantized
network learns to match. The distance is refinement's (``odm_basicsr.quant.distance``); its gradient joins the task
loss, so the ODM regularizer cooperates with it as with the pixel loss.

For a GAN-trained network (ESRGAN, Real-ESRGAN, RealSR) the teacher alone keeps the network what it was: an L1 loss to
HR would turn it into a PSNR network. Options under ``train.distill_opt``:

    loss: l1 | mse        distance of the outputs (default l1)
    loss_weight: 1.0      weight of the whole teacher term
    features: []          module names of network_g whose outputs are matched too (e.g. [body.11, body.22])
    feature_weight: 1.0   weight of the normalised feature term (with features)
"""
import copy

import torch
from basicsr.archs import build_network

from odm_basicsr.quant import set_quantization
from odm_basicsr.quant.distance import DISTANCES, FeatureTap, feature_distance, output_distance

DISTILL_KEYS = ('loss', 'loss_weight', 'features', 'feature_weight')


def distill_problems(value, prefix='train.distill_opt'):
    """Error texts for a ``train.distill_opt`` value (the module names are checked against the network later)."""
    if not isinstance(value, dict):
        return [f'{prefix}: must be a mapping ({", ".join(DISTILL_KEYS)}), got {value!r}.']
    problems = []
    if value.get('loss', 'l1') not in DISTANCES:
        problems.append(f'{prefix}.loss: {value["loss"]!r} is not one of {", ".join(DISTANCES)}.')
    for key in ('loss_weight', 'feature_weight'):
        number = value.get(key, 1.0)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
            problems.append(f'{prefix}.{key}: must be a number >= 0, got {number!r}.')
    features = value.get('features', [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        problems.append(f'{prefix}.features: must be a list of module names of network_g, got {features!r}.')
    return problems


class FPTeacher:
    """Args:
        net (nn.Module): network_g built again and loaded with the FP checkpoint; frozen here, quantizers off.
        options (dict): ``train.distill_opt``.
    """

    def __init__(self, net, options):
        self.net = net.eval()
        set_quantization(self.net, False)
        for param in self.net.parameters():
            param.requires_grad_(False)
        self.kind = options.get('loss', 'l1')
        self.loss_weight = float(options.get('loss_weight', 1.0))
        self.features = list(options.get('features', []))
        self.feature_weight = float(options.get('feature_weight', 1.0))

    def student_tap(self, student):
        """The FeatureTap that keeps the student's features during its forward (empty without features)."""
        return FeatureTap(student, self.features)

    def loss(self, output, lq, student_features=()):
        """0-dim: loss_weight x (distance of ``output`` to the teacher's output on ``lq`` [+ feature_weight x the
        normalised feature distance])."""
        with torch.no_grad(), FeatureTap(self.net, self.features) as tap:
            target = self.net(lq)
        distance = output_distance(output, target, self.kind)
        if self.features:
            distance = distance + self.feature_weight * feature_distance(student_features, tap.features)
        return self.loss_weight * distance


def teacher_network(network_opt):
    """A fresh network_g (a deep copy of its options) for the teacher."""
    return build_network(copy.deepcopy(network_opt))

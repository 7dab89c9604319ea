import torch.nn as nn
from basicsr.utils.registry import LOSS_REGISTRY

from odm_basicsr.quant import REGULARIZERS, VARIANCE_STATS, mismatch_loss, variance_loss


@LOSS_REGISTRY.register()
class ODMLoss(nn.Module):
    """ODM regularizer over the inputs X_i of the quantized layers, as seen in the current forward pass.

    ``variance`` (v1): sum_i mean_c Var(X_i[:, c]) (or the std with stat='std').
    ``mismatch`` (v2): sum_i || X_i - sg(q(X_i)) ||_2, the distance of each feature to its fixed grid.

    Args:
        regularizer (str): 'variance' | 'mismatch'. Required.
        stat (str): 'var' | 'std', for the variance regularizer.
        loss_weight (float): lambda. For BasicSR's L1 on 0-1 pixels, a weight reported for an L1 on 0-255
            pixels is divided by 255 (e.g. ODM v2's 1e-5 for EDSR becomes 3.92e-8). Required.
    """

    def __init__(self, regularizer=None, stat='var', loss_weight=None):
        super().__init__()
        # no defaults: a bare ODMLoss used to be a v1/v2 hybrid at 1e7 times the recommended weight
        if regularizer is None or loss_weight is None:
            raise ValueError('ODMLoss needs regularizer (variance for v1, mismatch for v2) and loss_weight; neither '
                             'has a default (docs/METHOD.md, loss weights).')
        if regularizer not in REGULARIZERS:
            raise ValueError(f'ODMLoss regularizer must be one of {REGULARIZERS}, got {regularizer!r}.')
        if stat not in VARIANCE_STATS:
            raise ValueError(f'ODMLoss stat must be one of {VARIANCE_STATS}, got {stat!r}.')
        if not isinstance(loss_weight, (int, float)) or loss_weight < 0:
            raise ValueError(f'ODMLoss loss_weight must be a number >= 0, got {loss_weight!r}.')
        self.regularizer = regularizer
        self.stat = stat
        self.loss_weight = loss_weight

    def forward(self, layers):
        """
        Args:
            layers (list[nn.Module]): quantized layers whose ``quant_input`` holds X_i of this forward pass.
        Returns:
            Tensor: 0-dim weighted regularizer.
        """
        features = [layer.quant_input for layer in layers]
        if any(f is None for f in features):
            raise RuntimeError('ODMLoss needs the features of the current forward pass: enable collect_input '
                               'on the quantized layers before the forward.')
        if self.regularizer == 'variance':
            return self.loss_weight * variance_loss(features, self.stat)
        # sg(q(X)): the quantizer output the forward kept, or one more quantize pass where it kept none
        targets = [layer.quant_target if layer.quant_target is not None else layer.act_quantizer.grid_target(x)
                   for layer, x in zip(layers, features)]
        return self.loss_weight * mismatch_loss(features, targets)

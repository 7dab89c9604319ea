"""The gradients of one ODM training step: the task loss and the regularizer, combined under cooperation.

The task loss is everything that reconstructs: the pixel loss to HR and, with a teacher (``train.distill_opt``),
the distance to the FP network. Its gradient g_R trains every parameter. The regularizer's gradient g_reg trains
the network weights only (never the quantizers' parameters) and joins g_R through the cooperation rule
(``odm_basicsr.quant.combine_flat``: sign mask for v1, cosine weighting for v2). Under DDP both are averaged over the
ranks before they are combined, so every rank takes the same step.
"""
from collections import OrderedDict

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from odm_basicsr.quant import combine_flat, combine_gradients, skip_range_gradients

COOPERATION_STAT_KEYS = {'sign': 'sign_conflict_ratio', 'cosine': 'grad_cos', 'cosine_tensor': 'grad_cos_tensor_mean',
                         'none': 'grad_cos'}


def all_reduce_mean(grads):
    """Average a list of gradient tensors over ranks with one flat all_reduce."""
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    return list(_unflatten_dense_tensors(flat, grads))


class CooperativeStep:
    """Backward of one step: g_R from the task loss on ``weight_params + quant_params``, then, with a regularizer,
    g_reg on ``weight_params`` combined with g_R by ``cooperation``; the result is left in the parameters' ``.grad``.

    Args:
        weight_params (list[Parameter]): the network weights (the regularizer's gradient reaches these).
        quant_params (list[Parameter]): the quantizers' parameters (ranges, gamma, offsets): task loss only.
        quant_layers (list[nn.Module]): the quantized layers, whose inputs the regularizer reads.
        regularizer (nn.Module | None): ``ODMLoss``, or None for plain QAT (then g_R alone).
        cooperation (str): 'sign' | 'cosine' | 'cosine_tensor' | 'none'.
        distributed (bool): average g_R and g_reg over DDP ranks (the caller runs the forward under ``no_sync``).
    """

    def __init__(self, weight_params, quant_params, quant_layers, regularizer, cooperation, distributed):
        self.weight_params, self.quant_params = weight_params, quant_params
        self.quant_layers, self.regularizer = quant_layers, regularizer
        self.cooperation, self.distributed = cooperation, distributed
        self._grad_buffer = self._grad_ptrs = self._weight_sizes = None

    @property
    def uses_regularizer(self):
        return self.regularizer is not None and bool(self.quant_layers)

    def collect(self, enabled):
        """The quantized layers keep X' of the next forwards (and, for the mismatch regularizer, its target
        sg(q(X')), which the forward computes anyway); off: drop what they kept."""
        enabled = enabled and self.uses_regularizer
        keep_target = enabled and self.regularizer.regularizer == 'mismatch'
        for layer in self.quant_layers:
            layer.collect_input = enabled
            layer.collect_target = keep_target
            if not enabled:
                layer.quant_input = layer.quant_target = None

    def flat_weight_grads(self):
        """(N,) one buffer whose slices are the network weights' ``.grad`` (so cooperation reads and writes g_R
        without concatenating or splitting it); built on first use, rebuilt if a ``.grad`` was replaced."""
        ptrs = self._grad_ptrs
        if ptrs is None or any(p.grad is None or p.grad.data_ptr() != ptr for p, ptr in zip(self.weight_params, ptrs)):
            self._weight_sizes = [p.numel() for p in self.weight_params]
            self._grad_buffer = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)
                                           for p in self.weight_params])
            for param, view in zip(self.weight_params, torch.split(self._grad_buffer, self._weight_sizes)):
                param.grad = view.view_as(param)
            self._grad_ptrs = [p.grad.data_ptr() for p in self.weight_params]
        return self._grad_buffer

    def backward(self, task_loss):
        """Backpropagate ``task_loss`` (and the regularizer on the inputs the layers collected); returns the
        regularizer's log entries (l_reg, the cooperation statistic, reg_grad_ratio), empty for plain QAT."""
        if not self.uses_regularizer:
            task_loss.backward()
            return OrderedDict()
        l_reg = self.regularizer(self.quant_layers)
        task_loss.backward(retain_graph=True)
        for param in self.weight_params + self.quant_params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        with skip_range_gradients():  # the regularizer never trains ranges: do not compute their grads
            reg_grads = torch.autograd.grad(l_reg, self.weight_params, allow_unused=True)
        reg_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.weight_params, reg_grads)]
        if self.distributed:
            stat, rec_norm, reg_norm = self._cooperate_across_ranks(reg_grads)
        else:
            # g_R lives in the flat buffer behind the weights' .grad; the combined gradient replaces it
            rec = self.flat_weight_grads()
            reg = torch.cat([g.reshape(-1) for g in reg_grads])
            # regularizer strength: lambda * |g_reg| / |g_R| over the network weights, before cooperation
            rec_norm, reg_norm = rec.norm(), reg.norm()
            combined, stat = combine_flat(rec, reg, self.cooperation, self._weight_sizes)
            rec.copy_(combined)
        return OrderedDict([('l_reg', l_reg.detach()), (COOPERATION_STAT_KEYS[self.cooperation], stat.detach()),
                            ('reg_grad_ratio', reg_norm / rec_norm.clamp_min(1e-30))])

    def _cooperate_across_ranks(self, reg_grads):
        """DDP: average g_R (the .grad of all trained parameters) and g_reg over ranks, combine them, write the
        result into .grad. Returns (statistic, |g_R|, |g_reg|) over the network weights."""
        params = self.weight_params + self.quant_params
        rec_grads = all_reduce_mean([p.grad for p in params])
        reg_grads = all_reduce_mean(reg_grads)
        n_weights = len(self.weight_params)
        rec_norm = torch.stack([g.detach().norm() for g in rec_grads[:n_weights]]).norm()
        reg_norm = torch.stack([g.detach().norm() for g in reg_grads]).norm()
        combined, stat = combine_gradients(rec_grads[:n_weights], reg_grads, self.cooperation)
        for param, grad in zip(params, combined + rec_grads[n_weights:]):
            param.grad.copy_(grad)
        return stat, rec_norm, reg_norm

"""The numerical guard of a training step: a non-finite loss or gradient skips the optimizer step, and a run of
``max_skipped_steps`` such steps stops training with an error (the last checkpoint stays intact).

Two modes: on the host (one device read per step), or on the device (``train.guard_on_device``: fused Adam / AdamW
skips its update on a device flag, as under GradScaler; skips are counted on the device and read at log or save
time).
"""
import torch
import torch.distributed as dist
from basicsr.utils import get_root_logger


class NonFiniteGuard:
    """Args:
        params (list[Parameter]): the trained parameters whose gradients are checked.
        max_skipped_steps (int): consecutive skipped steps that stop training.
        on_device (bool): decide on the device (needs a fused Adam / AdamW optimizer).
        device (torch.device): where the device counters live.
        distributed (bool): a step is skipped on every rank when it is non-finite on any.
    """

    def __init__(self, params, max_skipped_steps, on_device, device, distributed):
        self.params, self.max_skipped_steps = params, max_skipped_steps
        self.on_device, self.distributed = on_device, distributed
        # consecutive skipped steps now, the longest run and the total since the start (device tensors when the
        # guard decides on the device); skipped_steps reads the first
        self._skips = torch.zeros(3, device=device) if on_device else None
        self._skips_reported = 0
        self.current_iter = 0
        self.skipped_steps = 0

    @property
    def skipped_steps(self):
        """Consecutive skipped (non-finite) steps up to now (a device read when the guard is on the device)."""
        if self._skips is not None:
            return int(self._skips[0])
        return self._skipped_steps

    @skipped_steps.setter
    def skipped_steps(self, value):
        self._skipped_steps = int(value)
        if self._skips is not None:
            self._skips[0] = float(value)
            self._skips[1] = float(value)

    def nonfinite_flag(self, loss_dict):
        """0-dim float32 on the device: 1 if a loss or a trained parameter's gradient is non-finite (on any rank),
        else 0. No host read."""
        values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
        flag = (~torch.isfinite(values).all()).float()
        grads = [p.grad.detach() for p in self.params if p.grad is not None]
        if grads:
            norms = torch.stack([g.float().norm() for g in grads])
            flag = torch.maximum(flag, (~torch.isfinite(norms).all()).float())
        if self.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    def step(self, optimizer, loss_dict, current_iter):
        """``optimizer.step()`` unless the step is non-finite."""
        self.current_iter = current_iter
        if self.on_device:
            self._step_unless_nonfinite(optimizer, loss_dict)
        elif self._step_is_finite(optimizer, loss_dict, current_iter):
            optimizer.step()

    def _step_unless_nonfinite(self, optimizer, loss_dict):
        """Device-side guard: fused Adam/AdamW skips its update (weights, moments, step count) where the flag is
        1, as under GradScaler; the skip counters advance on the device."""
        found_inf = self.nonfinite_flag(loss_dict)
        optimizer.found_inf = found_inf
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
        run = (self._skips[0] + 1) * found_inf
        self._skips.copy_(torch.stack([run, torch.maximum(self._skips[1], run), self._skips[2] + found_inf]))

    def report(self):
        """The device guard: read the skip counters (at log or save time), warn about new skips, stop training on
        a run of ``max_skipped_steps``. Nothing for the host guard, which reports each skip as it happens."""
        if not self.on_device:
            return
        run, longest, total = (int(v) for v in self._skips.tolist())
        if total > self._skips_reported:
            get_root_logger().warning(
                f'iter {self.current_iter}: {total - self._skips_reported} step(s) skipped since the last report '
                f'(non-finite loss or gradient); {run} in a row now.')
            self._skips_reported = total
        if longest >= self.max_skipped_steps:
            raise FloatingPointError(
                f'Training stopped at iter {self.current_iter}: {longest} consecutive non-finite steps (counted on the '
                'device, read at this log). The weights did not change during them, and the last saved checkpoint is '
                'intact; lower the learning rate or the regularizer weight and resume.')

    def _step_is_finite(self, optimizer, loss_dict, current_iter):
        """Numerical guard on the host: a non-finite loss or gradient skips the step (weights and optimizer state
        untouched); ``max_skipped_steps`` consecutive skips stop training with an error."""
        finite = not bool(self.nonfinite_flag(loss_dict))  # the host read this guard makes each step
        if finite:
            self.skipped_steps = 0
            return True
        self.skipped_steps += 1
        get_root_logger().warning(f'iter {current_iter}: non-finite loss or gradient; the step is skipped '
                                  f'({self.skipped_steps} in a row).')
        optimizer.zero_grad(set_to_none=False)
        if self.skipped_steps >= self.max_skipped_steps:
            raise FloatingPointError(
                f'Training stopped at iter {current_iter}: {self.skipped_steps} consecutive non-finite steps. The last '
                'saved checkpoint is intact; lower the learning rate or the regularizer weight and resume.')
        return False

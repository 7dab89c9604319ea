"""torchrun entry used by the DDP tests: BasicSR's real train pipeline through the plugin's command, plus a dump of
each rank's final network state (BasicSR itself saves on rank 0 only)."""
import sys

import torch
import torch.distributed as dist

import odm_basicsr  # noqa: F401
from basicsr.models.sr_model import SRModel
from odm_basicsr.cli import main

_original_save = SRModel.save


def save_and_dump(self, epoch, current_iter):
    _original_save(self, epoch, current_iter)
    if current_iter == -1:
        state = self.get_bare_model(self.net_g).state_dict()
        torch.save(state, f'rank{dist.get_rank()}_final.pth')


SRModel.save = save_and_dump
if __name__ == '__main__':  # BasicSR's init_dist makes data-loader workers spawn, and they import this file again
    sys.exit(main(sys.argv[1:]))

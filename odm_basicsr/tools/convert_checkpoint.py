"""``basicsr convert-checkpoint``: EDSR-PyTorch checkpoints (PAMS / DAQ / DDTB / AdaBM layout) to BasicSR layout.

The output is ``{'params': state_dict}``, loadable with ``path.pretrain_network_g`` into EDSR / ODMEDSR or
RDN / ODMRDN.
"""
import os.path as osp

import torch

from odm_basicsr.quant import EDSR_PYTORCH_CONVERTERS, CheckpointMismatchError
from odm_basicsr.utils.safe_load import safe_torch_load

from .cli_text import command_parser


def main(argv):
    parser = command_parser('convert-checkpoint', __doc__, raw=False)
    parser.add_argument('--arch', required=True, choices=('EDSR', 'RDN'), help='architecture of the checkpoint')
    parser.add_argument('input', help='EDSR-PyTorch .pt/.pth file (head.*, body.<i>.body.*, tail.* / SFENet*, RDBs.*)')
    parser.add_argument('output', help='BasicSR checkpoint to write')
    args = parser.parse_args(argv)
    if not osp.isfile(args.input):
        raise SystemExit(f'error: {args.input!r} does not exist.')
    if osp.exists(args.output):
        raise SystemExit(f'error: {args.output!r} exists; not overwriting it.')

    try:
        state = safe_torch_load(args.input)
        converted = EDSR_PYTORCH_CONVERTERS[args.arch](state)
    except (ValueError, CheckpointMismatchError) as err:
        raise SystemExit(f'error: {err}')
    torch.save({'params': converted}, args.output)
    print(f'wrote {args.output}: {len(converted)} tensors in BasicSR {args.arch} layout')

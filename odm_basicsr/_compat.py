"""Runtime fixes that let the official BasicSR 1.4.2 release run on today's PyTorch, on CPU and GPU.

BasicSR is a dependency, never vendored: each fix below replaces or aliases exactly one thing at runtime and
names the BasicSR function it corrects. ``apply_import_fixes`` must run before the first ``import basicsr``
(any ``import basicsr.<x>`` imports the whole toolbox); ``apply_runtime_fixes`` runs right after it.
Every fix is idempotent and a no-op where BasicSR already behaves (master / later releases).
This module is imported before BasicSR, so it imports BasicSR only inside the functions that patch it.
"""
import ast
import os
import os.path as osp
import pickle
import re
import sys

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DataParallel, DistributedDataParallel

import odm_basicsr_boot
from odm_basicsr.utils.resume import ResumedEpochLoader, batches_to_skip
from odm_basicsr.utils.safe_load import checkpoint_file_problem, safe_torch_load, unreadable_message
from odm_basicsr.utils.shipped import resolve_shipped_paths

_RUNTIME_FIXED = False
_RESUMED = {}  # id(opt) -> the resumed state's epoch, iter, epoch length, generators: load_resume_state -> loaders
RESUMED_FROM_PRETRAIN = 'pretrain_network_g_before_resume'  # opt key: the file's path.pretrain_network_g


def apply_import_fixes():
    """Fixes needed for ``import basicsr`` itself to succeed."""
    # basicsr/data/degradations.py imports torchvision.transforms.functional_tensor, removed in torchvision 0.17.
    # odm_basicsr_boot (beside this package; installed with a .pth so it also runs at startup, which lets
    # `import basicsr` come first) supplies it as a last-resort finder.
    odm_basicsr_boot.install()
    # basicsr/archs/arch_util.py imports distutils.version.LooseVersion; Python >= 3.12 has no distutils.
    if sys.version_info >= (3, 12):
        try:
            import distutils.version  # noqa: F401  (setuptools provides it through _distutils_hack)
        except ImportError:
            import setuptools  # noqa: F401  # isort: skip  (provides distutils; must come first)
            import distutils.version  # noqa: F401


def _device_for_resume(opt):
    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def load_resume_state(opt):
    """Replacement for ``basicsr.train.load_resume_state``: the original maps the state with
    ``torch.cuda.current_device()`` and so crashes on CPU. Same lookup rules, safe ``torch.load``."""
    from basicsr.utils import scandir
    from basicsr.utils.misc import check_resume

    _RESUMED.clear()  # a state read by an earlier train_pipeline of this process is not this run's
    resume_state_path = None
    if opt['auto_resume']:
        state_path = osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_path):
            states = list(scandir(state_path, suffix='state', recursive=False, full_path=False))
            if states:
                states = [float(v.split('.state')[0]) for v in states]
                resume_state_path = osp.join(state_path, f'{max(states):.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    if not osp.isfile(resume_state_path):
        raise FileNotFoundError(f'path.resume_state: training state {resume_state_path!r} does not exist.')
    resume_state = safe_torch_load(resume_state_path, map_location=_device_for_resume(opt))
    opt[RESUMED_FROM_PRETRAIN] = opt['path'].get('pretrain_network_g')  # kept in opt: build_model deep-copies it
    check_resume(opt, resume_state['iter'])
    _RESUMED[id(opt)] = {k: resume_state[k] for k in ('epoch', 'iter', 'generators', 'epoch_length')
                         if k in resume_state}
    return resume_state


def pretrain_before_resume(opt):
    """path.pretrain_network_g as the option file gave it: on resume BasicSR's ``check_resume`` points it at the
    resumed net_g_<iter>.pth, and the FP teacher (ODMModel's distill_opt) must still be built from the FP file."""
    return opt[RESUMED_FROM_PRETRAIN] if RESUMED_FROM_PRETRAIN in opt else opt['path'].get('pretrain_network_g')


def create_train_val_dataloader(opt, logger):
    """Replacement for ``basicsr.train.create_train_val_dataloader``: BasicSR's loaders, with the train loader of a
    run resumed from a mid-epoch ODMModel state wrapped (``utils/resume.py``), so that the epoch goes on after the
    batches the interrupted run had trained on. BasicSR replays them from the epoch's start."""
    train_loader, train_sampler, val_loaders, total_epochs, total_iters = _ORIGINAL_CREATE_LOADERS(opt, logger)
    state = _RESUMED.pop(id(opt), None)  # what load_resume_state read for this opt, earlier in train_pipeline
    skip = batches_to_skip(state, len(train_loader)) if state and train_loader is not None else 0
    if skip:
        def log(n):
            logger.info(f'Resuming mid-epoch: skipping the {n} batch{"es" if n > 1 else ""} of epoch {state["epoch"]} '
                        'that the interrupted run trained on; python / numpy generators restored after them.')
        train_loader = ResumedEpochLoader(train_loader, skip, state['generators'], log)
    return train_loader, train_sampler, val_loaders, total_epochs, total_iters


def _init_dist_pytorch(backend, **kwargs):
    """Replacement for ``basicsr.utils.dist_util._init_dist_pytorch``: the original always calls
    ``torch.cuda.set_device`` and uses nccl, so ``--launcher pytorch`` fails without CUDA. Gloo on CPU."""
    rank = int(os.environ['RANK'])
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', rank % torch.cuda.device_count())))
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


def _model_to_device(self, net):
    """Replacement for ``basicsr.models.base_model.BaseModel.model_to_device``: the original passes
    ``device_ids=[torch.cuda.current_device()]`` to DDP, which fails on CPU. No device_ids on CPU."""
    net = net.to(self.device)
    if self.opt['dist']:
        find_unused_parameters = self.opt.get('find_unused_parameters', False)
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def _load_network(self, net, load_path, strict=True, param_key='params'):
    """Wrapper of ``basicsr.models.base_model.BaseModel.load_network``: a missing, corrupt or unsafe file gets a
    clear message naming it instead of torch's traceback (the load itself stays BasicSR's, safe mode)."""
    problem = checkpoint_file_problem(load_path)
    if problem:
        raise ValueError(f'Checkpoint {problem}.')
    try:
        return _ORIGINAL_LOAD_NETWORK(self, net, load_path, strict, param_key)
    except (pickle.UnpicklingError, OSError, EOFError) as err:
        raise ValueError(unreadable_message(load_path, err)) from err


def _with_shipped_paths(parse_options):
    """``parse_options`` of ``basicsr.train`` / ``basicsr.test``, then the shipped checkpoints' paths
    (``odm_basicsr/pretrained/...``) resolved to the installed package when the working directory has no such file
    (``utils/shipped.py``): an option file works from any folder."""

    def parse(root_path, is_train=True):
        opt, args = parse_options(root_path, is_train=is_train)
        return resolve_shipped_paths(opt), args

    return parse


_ORIGINAL_LOAD_NETWORK = None
_ORIGINAL_CREATE_LOADERS = None


def force_yml_value(text):
    """Replacement for ``basicsr.utils.options._postprocess_yml_value`` (a ``--force_yml key=value`` value): the
    original keeps ``1e-6``, ``-1`` and ``2e-4`` as strings (only digits with at most one dot are numbers), so a
    loss weight or learning rate in exponent notation failed deep inside training. Same results for every value
    it did read as a number, None, a bool, ``!!float x`` or a list; a number in any Python spelling is now a number.
    The option check (``options_check.apply_force_yml``) reads values with this same function."""
    text = text.strip()
    if text == '~' or text.lower() in ('none', 'null'):
        return None
    if text.lower() in ('true', 'false'):
        return text.lower() == 'true'
    if text.startswith('!!float'):
        return float(text[len('!!float'):])
    if re.fullmatch(r'[-+]?\d+', text):
        return int(text)
    if re.fullmatch(r'[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?', text):  # not '2024_05', 'inf' or 'nan': names
        return float(text)
    if text.startswith('['):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):  # [a, b]: a list of names, as YAML reads it
            return yaml.safe_load(text)
    return text


def apply_runtime_fixes():
    """Patch BasicSR functions that assume CUDA. Call after ``import basicsr``."""
    global _RUNTIME_FIXED, _ORIGINAL_LOAD_NETWORK, _ORIGINAL_CREATE_LOADERS
    if _RUNTIME_FIXED:
        return
    import basicsr.test
    import basicsr.train
    import basicsr.utils.dist_util
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel

    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.parse_options = _with_shipped_paths(basicsr.train.parse_options)
    basicsr.test.parse_options = _with_shipped_paths(basicsr.test.parse_options)
    _ORIGINAL_CREATE_LOADERS = basicsr.train.create_train_val_dataloader
    basicsr.train.create_train_val_dataloader = create_train_val_dataloader
    basicsr.utils.dist_util._init_dist_pytorch = _init_dist_pytorch
    basicsr.utils.options._postprocess_yml_value = force_yml_value
    BaseModel.model_to_device = _model_to_device
    _ORIGINAL_LOAD_NETWORK = BaseModel.load_network
    BaseModel.load_network = _load_network
    _RUNTIME_FIXED = True

"""``torch.load`` in its safe mode, with clear errors for corrupt files and for files that need unsafe unpickling."""
import os.path as osp
import pickle
import zipfile

import torch


def checkpoint_file_problem(path):
    """None if ``path`` looks like a PyTorch checkpoint (zip archive or legacy pickle), else what is wrong."""
    if not osp.isfile(path):
        return f'{path!r} does not exist'
    if zipfile.is_zipfile(path):
        return None
    with open(path, 'rb') as f:
        head = f.read(2)
    if head[:1] == b'\x80':  # legacy (pre-1.6) torch.save: a pickle stream
        return None
    return (f'{path!r} is not a PyTorch checkpoint: the file is corrupt or truncated '
            f'({osp.getsize(path)} bytes, neither a zip archive nor a pickle)')


def unreadable_message(path, err):
    """The message for an exception raised by ``torch.load(path, weights_only=True)``."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and ('Unsupported global' in text or 'weights_only' in text.lower()):
        return (f'Refusing to load {path!r}: it needs unsafe unpickling (arbitrary Python objects). Only tensors, '
                'dicts, lists and numbers are accepted; re-save it as a plain {"params": state_dict}.')
    return f'{path!r} could not be read as a PyTorch checkpoint; the file is corrupt or truncated ({text}).'


def safe_torch_load(path, map_location='cpu'):
    """Load ``path`` with ``weights_only=True``. Corrupt files and files holding arbitrary Python objects are
    refused with a ValueError that names the file."""
    problem = checkpoint_file_problem(path)
    if problem:
        raise ValueError(problem)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as err:
        raise ValueError(unreadable_message(path, err)) from err


def load_network_state(path, param_key='params'):
    """The network state dict in checkpoint ``path``, picked as BasicSR's ``load_network`` picks it: the entry
    ``param_key`` (falling back to 'params'; None takes the file as it is), with 'module.' prefixes stripped.
    Raises ValueError (naming the file) for unreadable files and missing entries."""
    return network_state_of(safe_torch_load(path), path, param_key)


def network_state_of(ckpt, path, param_key='params'):
    """``load_network_state`` for a checkpoint already loaded from ``path`` (named in the errors)."""
    if isinstance(ckpt, dict) and param_key is not None:
        if param_key not in ckpt and 'params' in ckpt:
            param_key = 'params'
        if param_key not in ckpt and {'iter', 'optimizers'} <= set(ckpt):
            raise ValueError(f'{path!r} is a training state (.state: iteration, optimizers, schedulers), not a network '
                             'checkpoint: resume with path.resume_state or --auto_resume, or load the network from '
                             'experiments/<name>/models/net_g_<iter>.pth.')
        if param_key not in ckpt:
            raise ValueError(f'{path!r} has no {param_key!r} entry (it holds: {", ".join(map(str, list(ckpt)[:6]))}); '
                             'set path.param_key_g.')
        ckpt = ckpt[param_key]
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in ckpt.items()}

"""``torch.load`` in its safe mode, with a clear error for files that need unsafe unpickling."""
import pickle

import torch


def safe_torch_load(path, map_location='cpu'):
    """Load ``path`` with ``weights_only=True``. Files holding arbitrary Python objects are refused."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f'Refusing to load {path!r}: it needs unsafe unpickling (arbitrary Python objects). '
                         'Only tensors, dicts, lists and numbers are accepted.') from err

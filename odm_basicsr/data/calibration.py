"""Calibration from an option file: the settings of ``train.calibration`` with their defaults, and the batches, LR
inputs from ``train.calibration.dataset`` if given, else from ``datasets.train``, drawn in a seeded order that leaves
the training data stream untouched."""
import random

import numpy as np
import torch
from basicsr.data import build_dataset

from odm_basicsr.quant import DEFAULT_RANGE_METHOD
from odm_basicsr.quant.refine import RefineConfig

DEFAULT_NUM_BATCHES = 8
DEFAULT_OFFSET_TOP_K = 0.25


def calibration_settings(opt, offset_mode):
    """``train.calibration`` with defaults: (num_batches, keyword arguments of ``odm_basicsr.quant.calibrate``:
    offset_top_k, offset_threshold, method, sequential, offset_migration, offset_keep_zero, per_layer_judge). A
    network with offsets and no selection rule gets offset_top_k 0.25."""
    cal = (opt.get('train') or {}).get('calibration') or {}
    top_k, threshold = cal.get('offset_top_k'), cal.get('offset_threshold')
    if offset_mode != 'none' and top_k is None and threshold is None:
        top_k = DEFAULT_OFFSET_TOP_K
    return int(cal.get('num_batches', DEFAULT_NUM_BATCHES)), dict(
        offset_top_k=top_k, offset_threshold=threshold, method=cal.get('method', DEFAULT_RANGE_METHOD),
        sequential=bool(cal.get('sequential', False)), offset_migration=float(cal.get('offset_migration', 1.0)),
        offset_keep_zero=bool(cal.get('offset_keep_zero', False)), per_layer_judge=cal.get('per_layer', 'auto'))


def refine_settings(opt, default):
    """The ``RefineConfig`` of ``train.calibration.refine`` (true: the defaults; a mapping: its keys over them), or
    None when it is false; absent, the defaults if ``default`` (``basicsr calibrate``) else None (training)."""
    cal = (opt.get('train') or {}).get('calibration') or {}
    value = cal.get('refine', default)
    return RefineConfig.from_option(value)


def calibration_dataset_opt(opt):
    """(key, dataset block) of the data calibration reads; key names it in messages."""
    cal = (opt.get('train') or {}).get('calibration') or {}
    if isinstance(cal, dict) and isinstance(cal.get('dataset'), dict):
        return 'train.calibration.dataset', dict(cal['dataset'])
    train = (opt.get('datasets') or {}).get('train')
    if isinstance(train, dict):
        return 'datasets.train', dict(train)
    return None, None


def calibration_batches(opt, num_batches, device, rank=0):
    """Up to ``num_batches`` LR batches (N, C, h, w) on ``device``.

    The loader shuffles with its own generator seeded by ``manual_seed + rank``, and the dataset's random crops and
    flips draw from the python / numpy generators seeded the same way; their states are restored afterwards, so the
    batches are reproducible and the training data stream is untouched.
    """
    key, dataset_opt = calibration_dataset_opt(opt)
    if dataset_opt is None:
        raise ValueError('calibration needs data: a datasets.train block or a train.calibration.dataset block.')
    dataset_opt.setdefault('scale', opt.get('scale'))
    dataset = build_dataset(dict(dataset_opt, phase='train'))
    generator = torch.Generator().manual_seed(int(opt.get('manual_seed') or 0) + rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=dataset_opt.get('batch_size_per_gpu', 1), shuffle=True,
                                         num_workers=0, generator=generator, drop_last=False)
    seed = int(opt.get('manual_seed') or 0) + rank
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    batches = []
    try:
        for data in loader:
            batches.append(data['lq'].to(device))
            if len(batches) == num_batches:
                break
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return batches

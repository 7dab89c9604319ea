"""Checks of BasicSR's own option sections: model_type, num_gpu, scale, path, logger, val, the dataset blocks and
train.optim_g / scheduler / pixel_opt / total_iter. A typo or a value of the wrong type there made BasicSR fail
with a traceback after it had created the experiment folders (or silently train from random weights, for a
misspelled path.pretrain_network_g); here each is one error naming its key, before anything is written.

Only what BasicSR 1.4.2 reads is checked (keys from its sources; signatures from its registries), so a dataset type
of another toolbox keeps its own keys.
"""
import inspect
import math

import torch
from basicsr.models import lr_scheduler
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from .quant.config import closest_match, did_you_mean

# path keys BasicSR reads or sets (options.py, train.py, the models); any other key would become a folder
PATH_KEYS = ('pretrain_network_g', 'param_key_g', 'strict_load_g', 'pretrain_network_d', 'param_key_d',
             'strict_load_d', 'resume_state', 'ignore_resume_networks', 'root', 'experiments_root', 'models',
             'training_states', 'log', 'visualization', 'results_root')
LOGGER_KEYS = ('print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb')
VAL_KEYS = ('val_freq', 'save_img', 'metrics', 'pbar', 'suffix', 'num_val_samples', 'flip_seq', 'center_frame_only')
IO_BACKENDS = ('disk', 'lmdb', 'memcached')  # basicsr.utils.file_client.FileClient
OPTIMIZERS = ('Adam', 'AdamW', 'Adamax', 'SGD', 'ASGD', 'RMSprop', 'Rprop')  # candidates; those BasicSR builds count
SCHEDULERS = {'MultiStepLR': 'MultiStepRestartLR', 'MultiStepRestartLR': 'MultiStepRestartLR',
              'CosineAnnealingRestartLR': 'CosineAnnealingRestartLR'}
# keys a training dataset block of PairedImageDataset must have (read with [] by the dataset and the dataloader)
PAIRED_TRAIN_KEYS = ('dataroot_gt', 'dataroot_lq', 'io_backend', 'gt_size', 'use_hflip', 'use_rot',
                     'batch_size_per_gpu', 'num_worker_per_gpu')
INTEGER_DATASET_KEYS = ('gt_size', 'batch_size_per_gpu', 'num_worker_per_gpu')


def unknown_keys(section, given, allowed, errors):
    """An error for each key of ``given`` not in ``allowed``, with the nearest one and the known keys."""
    for key in given:
        if key not in allowed:
            errors.append(f'{section}.{key}: unknown key{did_you_mean(key, allowed)}. '
                          f'Known keys: {", ".join(sorted(map(str, allowed)))}.')


def _mapping(key, value, contents, errors):
    """``value`` if it is a mapping, None if it is absent; otherwise the error '<key>: must be a mapping
    <contents>.' and None."""
    if value is None or isinstance(value, dict):
        return value
    errors.append(f'{key}: must be a mapping {contents}.')
    return None


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_hint(value):
    """Why a string that looks like a number is a string (YAML 1.1 reads 1e-4, without a dot, as text)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ''
        if 'e' in value.lower() and '.' not in value:
            return f' (YAML read {value!r} as text: write it with a dot, e.g. 1.0e-4, or as !!float {value})'
        return f' (it is text: write {value} without quotes)'
    return ''


def _need_int(key, value, errors, minimum=1, whole_float=False):
    """An integer >= minimum; ``whole_float``: a whole float too (BasicSR's files write !!float 5e3 for counts)."""
    whole = whole_float and isinstance(value, float) and value.is_integer()
    if not (_is_int(value) or whole) or value < minimum:
        errors.append(f'{key}: must be an integer >= {minimum}, got {value!r}{_type_hint(value)}.')


def _need_number(key, value, errors, minimum=None):
    if not _is_number(value) or (minimum is not None and value < minimum):
        bound = f' >= {minimum}' if minimum is not None else ''
        errors.append(f'{key}: must be a number{bound}, got {value!r}{_type_hint(value)}.')


def _optimizer_builds(kind):
    """True if BasicSR's ``BaseModel.get_optimizer`` builds an optimizer of type ``kind`` (Adam only in 1.4.2)."""
    if not isinstance(kind, str):
        return False
    try:
        BaseModel.get_optimizer(None, kind, [torch.nn.Parameter(torch.zeros(1))], 1e-3)
    except NotImplementedError:
        return False
    except Exception:  # noqa: BLE001  (it builds this type; its keywords are checked separately)
        return True
    return True


def _keys_of(cls, skip=('self', 'optimizer', 'params')):
    return [name for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def registry_has(registry, name):
    """True if BasicSR's ``registry.get(name)`` finds a class: ``name`` itself, or ``<name>_basicsr``, to which
    Registry.get falls back."""
    return isinstance(name, str) and (name in registry or f'{name}_basicsr' in registry)


def _registered(key, value, registry, errors):
    """True if ``value`` names a class of ``registry`` (BasicSR's); else an error with the nearest name."""
    if registry_has(registry, value):
        return True
    errors.append(f'{key}: {value!r} is not registered in BasicSR\'s {registry._name} registry'
                  f'{did_you_mean(value, list(registry._obj_map))}.')
    return False


def check_model_and_devices(opt, errors):
    """model_type registered; num_gpu an integer >= 0 or auto, and no GPU asked for on a machine without CUDA;
    scale an integer."""
    if 'model_type' in opt:
        _registered('model_type', opt['model_type'], MODEL_REGISTRY, errors)
    num_gpu = opt.get('num_gpu', 0)
    if num_gpu != 'auto' and (not _is_int(num_gpu) or num_gpu < 0):
        errors.append(f'num_gpu: must be an integer >= 0 or auto, got {num_gpu!r}.')
    elif _is_int(num_gpu) and num_gpu > 0 and opt.get('launcher', 'none') in (None, 'none'):
        if not torch.cuda.is_available():
            errors.append(f'num_gpu: {num_gpu} but this machine has no CUDA device: set num_gpu: 0 to run on the '
                          'CPU (or auto).')
    if 'scale' in opt:
        _need_int('scale', opt['scale'], errors)


def check_path(opt, errors):
    """path: keys BasicSR knows. A misspelled pretrain_network_g trained from random weights, and BasicSR made a
    folder of every unknown key."""
    path = _mapping('path', opt.get('path'), '(pretrain_network_g, strict_load_g, resume_state, ...)', errors)
    if path is not None:
        unknown_keys('path', path, PATH_KEYS, errors)


def check_logger(opt, is_train, errors):
    if opt.get('logger') is None and is_train:
        errors.append('logger: missing. A training file needs it (print_freq, save_checkpoint_freq, use_tb_logger), '
                      'as in options/demo/train_ODM_EDSR_demo_x4_w4a4.yml; is this a test file?')
    logger = _mapping('logger', opt.get('logger'), '(print_freq, save_checkpoint_freq, use_tb_logger, wandb)',
                      errors)
    if logger is None:
        return
    unknown_keys('logger', logger, LOGGER_KEYS, errors)
    if is_train:
        for key in ('print_freq', 'save_checkpoint_freq'):
            if key not in logger:
                errors.append(f'logger.{key}: missing (an integer >= 1: BasicSR reads it every iteration).')
            else:
                _need_int(f'logger.{key}', logger[key], errors, whole_float=True)
    if 'use_tb_logger' in logger and not isinstance(logger['use_tb_logger'], bool):
        errors.append(f'logger.use_tb_logger: must be true or false, got {logger["use_tb_logger"]!r}.')


def check_val(opt, is_train, errors):
    val = _mapping('val', opt.get('val'), '(val_freq, save_img, metrics)', errors)
    if val is None:
        return
    unknown_keys('val', val, VAL_KEYS, errors)
    if is_train and 'val_freq' in val:
        _need_int('val.val_freq', val['val_freq'], errors, whole_float=True)
    if 'save_img' in val and not isinstance(val['save_img'], bool):
        errors.append(f'val.save_img: must be true or false, got {val["save_img"]!r}.')
    metrics = _mapping('val.metrics', val.get('metrics') or None,
                       'of metric name -> {type: calculate_psnr, crop_border, ...}', errors) or {}
    for name, metric in metrics.items():
        if not isinstance(metric, dict) or 'type' not in metric:
            errors.append(f'val.metrics.{name}: must be a mapping with a type (calculate_psnr, calculate_ssim).')
        elif _registered(f'val.metrics.{name}.type', metric['type'], METRIC_REGISTRY, errors):
            func = METRIC_REGISTRY.get(metric['type'])
            allowed = [p for p in inspect.signature(func).parameters if p not in ('img', 'img2')] + ['type', 'better']
            unknown_keys(f'val.metrics.{name}', metric, allowed, errors)


def check_datasets(opt, is_train, errors):
    """Each dataset block: a registered type, a known io_backend, integer sizes; a training PairedImageDataset has
    every key it reads."""
    datasets = _mapping('datasets', opt.get('datasets'), 'of phase (train, val, test_1, ...) -> dataset block',
                        errors) or {}
    for phase, block in datasets.items():
        if not isinstance(block, dict):
            continue  # reported by the path checks
        key = f'datasets.{phase}'
        if 'type' not in block:
            errors.append(f'{key}.type: missing (a BasicSR dataset, e.g. PairedImageDataset).')
        else:
            _registered(f'{key}.type', block['type'], DATASET_REGISTRY, errors)
        backend = block.get('io_backend')
        if backend is not None:
            if not isinstance(backend, dict) or backend.get('type') not in IO_BACKENDS:
                given = backend.get('type') if isinstance(backend, dict) else backend
                errors.append(f'{key}.io_backend.type: must be one of {IO_BACKENDS}, got {given!r}'
                              f'{did_you_mean(given, IO_BACKENDS)}.')
        for name in INTEGER_DATASET_KEYS:
            if name in block:
                _need_int(f'{key}.{name}', block[name], errors, minimum=0 if name == 'num_worker_per_gpu' else 1)
        if 'dataset_enlarge_ratio' in block:  # math.ceil'd by BasicSR: any number >= 1
            _need_number(f'{key}.dataset_enlarge_ratio', block['dataset_enlarge_ratio'], errors, minimum=1)
        if is_train and phase.split('_')[0] == 'train' and block.get('type') == 'PairedImageDataset':
            for name in PAIRED_TRAIN_KEYS:
                if name not in block:
                    typo = next((k for k in block if k not in PAIRED_TRAIN_KEYS and closest_match(k, [name])), None)
                    errors.append(f'{key}.{typo}: unknown key (did you mean {name!r}? PairedImageDataset reads '
                                  f'{name} when training).' if typo else
                                  f'{key}.{name}: missing (PairedImageDataset reads it when training).')


def check_train_basics(opt, errors):
    """train.total_iter / warmup_iter, optim_g (type and Adam's keywords, lr a number), scheduler (type and its
    keywords), pixel_opt (a registered loss and its keywords)."""
    train = opt.get('train')
    if not isinstance(train, dict):
        errors.append('train: missing. A training file needs it (optim_g, scheduler, total_iter, pixel_opt); is '
                      'this a test file?')
        return
    if 'total_iter' not in train:
        errors.append('train.total_iter: missing.')
    else:
        _need_int('train.total_iter', train['total_iter'], errors, whole_float=True)
    if 'warmup_iter' in train:
        _need_int('train.warmup_iter', train['warmup_iter'], errors, minimum=-1, whole_float=True)
    optim = _mapping('train.optim_g', train.get('optim_g'), '(type: Adam, lr, ...)', errors)
    if optim is not None:
        kind = optim.get('type')
        if not _optimizer_builds(kind):
            built = [name for name in OPTIMIZERS if _optimizer_builds(name)]
            errors.append(f'train.optim_g.type: BasicSR builds no {kind!r} optimizer (its BaseModel.get_optimizer '
                          f'builds {", ".join(built)}){did_you_mean(kind, built)}.')
        elif isinstance(getattr(torch.optim, kind, None), type):
            unknown_keys('train.optim_g', optim, ['type', 'lr'] + _keys_of(getattr(torch.optim, kind)), errors)
        if 'lr' not in optim:
            errors.append('train.optim_g.lr: missing.')
        else:
            _need_number('train.optim_g.lr', optim['lr'], errors, minimum=0)
    scheduler = _mapping('train.scheduler', train.get('scheduler'), '(type: MultiStepLR, milestones, gamma)',
                         errors)
    if scheduler is not None:
        kind = scheduler.get('type')
        if kind not in SCHEDULERS:
            errors.append(f'train.scheduler.type: must be one of {tuple(SCHEDULERS)} (BasicSR 1.4.2), got {kind!r}'
                          f'{did_you_mean(kind, SCHEDULERS)}.')
        else:
            cls = getattr(lr_scheduler, SCHEDULERS[kind])
            unknown_keys('train.scheduler', scheduler, ['type'] + _keys_of(cls, ('self', 'optimizer', 'last_epoch')),
                         errors)
            for name in ('milestones', 'periods'):
                values = scheduler.get(name)
                whole = lambda v: _is_int(v) or (isinstance(v, float) and v.is_integer())  # noqa: E731
                if values is not None and not (isinstance(values, list) and all(whole(v) for v in values)):
                    errors.append(f'train.scheduler.{name}: must be a list of integers, got {values!r}.')
            if 'gamma' in scheduler:
                _need_number('train.scheduler.gamma', scheduler['gamma'], errors, minimum=0)
    pixel = train.get('pixel_opt')
    if isinstance(pixel, dict) and _registered('train.pixel_opt.type', pixel.get('type'), LOSS_REGISTRY, errors):
        unknown_keys('train.pixel_opt', pixel, ['type'] + _keys_of(LOSS_REGISTRY.get(pixel['type'])), errors)
        if 'loss_weight' in pixel:
            _need_number('train.pixel_opt.loss_weight', pixel['loss_weight'], errors, minimum=0)


def check_sections(opt, is_train, errors):
    """All of the above that apply to a training (``is_train``) or test option dict."""
    check_model_and_devices(opt, errors)
    check_path(opt, errors)
    check_logger(opt, is_train, errors)
    check_val(opt, is_train, errors)
    check_datasets(opt, is_train, errors)
    if is_train:
        check_train_basics(opt, errors)

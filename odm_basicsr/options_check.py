"""Validation of the ODM parts of an option file, before BasicSR creates any folder, log or tb_logger.

Every problem found is reported at once, each naming its key, as an ``OptionError``; a warning is printed for
settings that work but are probably not what was meant.
"""
import inspect
import os
import os.path as osp
import re
import sys

import cv2
import lmdb
import torch
import yaml
from basicsr.utils.registry import ARCH_REGISTRY

from ._compat import force_yml_value
from .archs.odm_quant_arch import ODMQuant
from .archs.quant_util import BODY_SCOPES, QuantizedArchMixin
from .models.fp_teacher import DISTILL_KEYS, distill_problems
from .options_sections import check_sections, did_you_mean, registry_has, unknown_keys
from .quant import (COOPERATION_MODES, RANGE_METHODS, REGULARIZERS, VARIANCE_STATS, QuantConfig, ScopeError,
                    UnusedQuantizedLayerError, activation_points, unused_in_eval)
from .quant.calibrate import PER_LAYER_JUDGES
from .quant.checkpoint import QUANTIZATION_KEY, CheckpointMismatchError, check_state_dict, record_mismatches
from .quant.config import closest_match
from .quant.distance import missing_modules
from .quant.refine import RefineConfig
from .utils.safe_load import network_state_of, safe_torch_load
from .utils.shipped import resolve_shipped, resolve_shipped_paths

ODM_TRAIN_KEYS = ('odm_opt', 'distill_opt', 'cooperation', 'quant_lr_mul', 'range_lr', 'calibration', 'max_skipped_steps', 'compile',
                  'guard_on_device', 'weight_clip_interval')
RANGE_LR_MODES = ('absolute', 'relative')  # train.range_lr (ODMModel)
DEVICE_GUARD_OPTIMIZERS = ('Adam', 'AdamW')  # their fused kernels skip a step on a device-side flag (found_inf)
CALIBRATION_KEYS = ('num_batches', 'method', 'sequential', 'dataset', 'offset_top_k', 'offset_threshold',
                    'offset_migration', 'offset_keep_zero', 'per_layer', 'refine')
ODM_LOSS_KEYS = ('type', 'regularizer', 'stat', 'loss_weight')
# The keys BasicSR 1.4.2 reads: at the top level (train.py, test.py, options.py, the models), and under ``train`` for
# SRModel and the models built on it (ODMModel adds ODM_TRAIN_KEYS).
BASICSR_TOP_KEYS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'path', 'train',
                    'val', 'logger', 'dist_params', 'is_train', 'dist', 'rank', 'world_size', 'auto_resume', 'launcher',
                    'find_unused_parameters', 'network_d', 'network_ema')
SRMODEL_TRAIN_KEYS = ('ema_decay', 'optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt', 'perceptual_opt')


def device_guard_supported(optim_opt):
    """Whether ``train.optim_g`` can skip a step on a device flag (train.guard_on_device): fused Adam or AdamW, so
    neither ``fused: false`` nor ``foreach: true``."""
    optim_opt = optim_opt or {}
    return (optim_opt.get('type') in DEVICE_GUARD_OPTIMIZERS and optim_opt.get('fused', True) is not False
            and not optim_opt.get('foreach'))


class OptionError(ValueError):
    """One or more invalid option values; the message lists each with its key."""


def _choice(key, value, choices, errors):
    if value not in choices:
        errors.append(f'{key}: {value!r} is not one of {", ".join(map(str, choices))}{did_you_mean(str(value), choices)}.')


def odm_archs():
    """The quantized archs in BasicSR's ARCH_REGISTRY (the plugin's and any other QuantizedArchMixin's), sorted."""
    return tuple(sorted(name for name, cls in ARCH_REGISTRY
                        if isinstance(cls, type) and issubclass(cls, (QuantizedArchMixin, ODMQuant))))


def _check_network(opt, errors):
    net = opt.get('network_g') or {}
    arch = net.get('type')
    if arch not in odm_archs():
        if isinstance(net, dict) and 'type' in net:  # an FP arch (train_FP_*, the zoo baselines): its keys
            _check_inner_arch(net, errors, 'network_g')
        return False
    cls = ARCH_REGISTRY.get(arch)
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p, v in params.items() if p != 'self' and v.kind != v.VAR_KEYWORD] + list(QuantConfig.keys())
    unknown_keys('network_g', [k for k in net if k != 'type'], allowed, errors)
    if arch == 'ODMQuant' and not _check_inner_arch(net.get('arch'), errors):
        return True
    errors.extend(QuantConfig.problems(net, 'network_g.'))
    if 'quantize_attention' in net and not isinstance(net['quantize_attention'], bool):
        errors.append(f'network_g.quantize_attention: must be true or false, got {net["quantize_attention"]!r}.')
    if net.get('integer_zero_point') is True:
        try:
            import onnx  # noqa: F401  (calibration traces the integer graph)
        except ImportError:
            errors.append('network_g.integer_zero_point: true needs onnx (calibration traces the integer ONNX graph to '
                          'find the outputs it requantizes): pip install "odm-basicsr[export]".')
    if arch == 'ODMSwinIR' and net.get('offsets', 'none') != 'none':
        errors.append('network_g.offsets: must be none for ODMSwinIR (distribution offsets are implemented for conv '
                      'layers; the quantized body of SwinIR is Linear).')
    if not errors:
        _check_builds(net, errors)
    return True


def _check_distill(opt, errors):
    """``train.distill_opt`` (the FP teacher): its keys and values, the FP checkpoint it needs, module names that
    exist in network_g; and a training step that has a loss at all (pixel_opt, perceptual_opt or the teacher)."""
    train = opt.get('train') or {}
    value = train.get('distill_opt')
    if value is None:
        if not train.get('pixel_opt') and not train.get('perceptual_opt'):
            errors.append('train: needs pixel_opt (a loss to HR) or distill_opt (an FP teacher); it has neither.')
        return
    if isinstance(value, dict):
        unknown_keys('train.distill_opt', value, DISTILL_KEYS, errors)
    problems = distill_problems(value)
    errors.extend(problems)
    if not (opt.get('path') or {}).get('pretrain_network_g'):
        errors.append('train.distill_opt needs path.pretrain_network_g: the FP teacher is that checkpoint, with the '
                      'quantizers off.')
    features = value.get('features') if isinstance(value, dict) and not problems else None
    if features and isinstance(opt.get('network_g'), dict):
        try:
            built = build_shapes_only(opt['network_g'])
        except Exception:  # network_g's own errors are reported by its check
            return
        names = [n for n, _ in built.named_modules() if n]
        for name in missing_modules(built, features):
            errors.append(f'train.distill_opt.features: {name!r} is not a module of network_g'
                          f'{did_you_mean(name, names)}.')


def _check_refine(value, opt, errors):
    """``train.calibration.refine``: true, false or a mapping of RefineConfig's keys; it needs the FP checkpoint."""
    key = 'train.calibration.refine'
    if value is None or value is False:
        return
    if value is not True and not isinstance(value, dict):
        errors.append(f'{key}: must be true, false or a mapping ({", ".join(RefineConfig.keys())}), got {value!r}.')
        return
    if isinstance(value, dict):
        unknown_keys(key, value, RefineConfig.keys(), errors)
        errors.extend(RefineConfig.problems(value, key + '.'))
    if not (opt.get('path') or {}).get('pretrain_network_g'):
        errors.append(f'{key} needs path.pretrain_network_g: refinement learns the quantizers from that FP network.')


def _check_inner_arch(inner, errors, key='network_g.arch'):
    """ODMQuant's ``arch`` block (or an FP network_g, ``key``): a registered FP arch and its constructor keys. True
    if it can be built."""
    if not isinstance(inner, dict) or 'type' not in inner:
        errors.append(f'{key}: must be a mapping with the FP arch\'s type and arguments, got {inner!r}.')
        return False
    kind = inner['type']
    if not registry_has(ARCH_REGISTRY, kind):
        names = list(ARCH_REGISTRY._obj_map)
        errors.append(f'{key}.type: {kind!r} is not a registered arch{did_you_mean(str(kind), names)}.')
        return False
    cls = ARCH_REGISTRY.get(kind)
    if kind in odm_archs():
        errors.append(f'{key}.type: {kind} is already quantized; give its FP arch.')
        return False
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        before = len(errors)
        unknown_keys(key, [k for k in inner if k != 'type'], [p for p in params if p != 'self'], errors)
        return len(errors) == before
    return True


def build_shapes_only(net_opt):
    """network_g built for its keys and shapes: on the meta device (no memory, no initialisation), or on the CPU for
    an arch whose constructor cannot run there (it reads or assigns tensor values)."""
    net_opt = dict(net_opt)
    cls = ARCH_REGISTRY.get(net_opt.pop('type'))
    try:
        with torch.device('meta'):
            return cls(**net_opt)
    except Exception:  # noqa: BLE001  (a real error raises again on the CPU)
        pass  # SwinIR's schedule reads values, RIDNet's MeanShift sets .data, ECBSR's masks mix devices
    return cls(**net_opt)


def _check_builds(net, errors):
    """Build network_g (shapes only): scope patterns that match no layer, and constructor errors, are reported with
    their key."""
    try:
        built = build_shapes_only(net)
    except ScopeError as err:
        shown = ', '.join(err.names[:40]) + (f' ... ({len(err.names)} in all)' if len(err.names) > 40 else '')
        errors.append(f'network_g.scope: pattern(s) {err.patterns} match no conv/linear layer of {err.arch}. Its '
                      f'layers are: {shown}.')
    except (TypeError, ValueError, AssertionError, KeyError, RuntimeError, IndexError) as err:
        errors.append(f'network_g: the network cannot be built from these options: {err}')
    else:
        _check_layers_run(built, net, errors)


def _check_layers_run(built, net, errors):
    """A network without quantized layers, and quantized layers that the arch's eval forward never runs (one forward
    of a 32x32 input, on the meta device where the network was built there): option errors, before anything is
    written. An arch that this forward cannot run (a video arch's 5-D input, a value read on the meta device) is
    left to calibration, which raises the same error."""
    if not activation_points(built):
        errors.append(f'network_g: quantizes no layer (scope {net.get("scope", _default_scope(net))!r} matches no '
                      'conv/linear layer of this configuration): there is nothing to calibrate, train or export.')
        return
    first = next((m for m in built.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))), None)
    if not isinstance(first, torch.nn.Conv2d):
        return
    device = first.weight.device
    try:
        unused = unused_in_eval(built, torch.zeros(1, first.in_channels, 32, 32, device=device))
    except Exception:  # noqa: BLE001  (any arch: a forward that cannot run here is not an option error)
        return
    if unused:
        arch = (net.get('arch') or {}).get('type') if net.get('type') == 'ODMQuant' else net.get('type')
        errors.append(f'network_g: {UnusedQuantizedLayerError(unused, arch)}')


def _data_parallel_gpus(opt):
    """GPUs BasicSR would wrap in DataParallel: num_gpu (auto: the visible ones) when no launcher is used."""
    if opt.get('launcher', 'none') not in (None, 'none'):
        return 0
    num_gpu = opt.get('num_gpu', 0)
    if num_gpu == 'auto':
        num_gpu = torch.cuda.device_count()
    return num_gpu if isinstance(num_gpu, int) else 0


def _check_train(opt, odm_arch, errors, warn):
    train = opt.get('train') or {}
    model_type = opt.get('model_type')
    odm_opt = train.get('odm_opt')
    if model_type == 'ODMModel':
        if _data_parallel_gpus(opt) > 1:
            errors.append(f'num_gpu: {opt.get("num_gpu")} without a launcher would train ODMModel with DataParallel, '
                          'which it does not support (the regularizer reads each replica\'s features). Use DDP: '
                          'torchrun --nproc_per_node N -m odm_basicsr train -opt FILE --launcher pytorch; or set '
                          'num_gpu: 1.')
        if not odm_arch:
            errors.append(f'model_type ODMModel needs an ODM arch in network_g.type ({", ".join(odm_archs())}), got '
                          f'{(opt.get("network_g") or {}).get("type")!r}.')
        unknown_keys('train', train, SRMODEL_TRAIN_KEYS + ODM_TRAIN_KEYS, errors)
        if 'cooperation' in train:
            _choice('train.cooperation', train['cooperation'], COOPERATION_MODES, errors)
        if 'range_lr' in train:
            _choice('train.range_lr', train['range_lr'], RANGE_LR_MODES, errors)
        if 'quant_lr_mul' in train and (not isinstance(train['quant_lr_mul'], (int, float))
                                        or train['quant_lr_mul'] <= 0):
            errors.append(f'train.quant_lr_mul: must be a number > 0, got {train["quant_lr_mul"]!r}.')
        for key in ('max_skipped_steps', 'weight_clip_interval'):
            if key in train and (isinstance(train[key], bool) or not isinstance(train[key], int) or train[key] < 1):
                errors.append(f'train.{key}: must be an integer >= 1, got {train[key]!r}.')
        for key in ('compile', 'guard_on_device'):
            if train.get(key) is not None and not isinstance(train[key], bool):
                errors.append(f'train.{key}: must be true or false (or absent for the default), got {train[key]!r}.')
        if train.get('guard_on_device') is True and not device_guard_supported(train.get('optim_g')):
            errors.append('train.guard_on_device: true needs optim_g type Adam or AdamW (fused, so not foreach: '
                          f'true or fused: false), got {train.get("optim_g")!r}.')
        cal = train.get('calibration') or {}
        if not isinstance(cal, dict):
            errors.append('train.calibration: must be a mapping (num_batches, offset_top_k, offset_threshold).')
            cal = {}
        unknown_keys('train.calibration', cal, CALIBRATION_KEYS, errors)
        if 'method' in cal:
            _choice('train.calibration.method', cal['method'], RANGE_METHODS, errors)
        for key in ('sequential', 'offset_keep_zero'):
            if key in cal and not isinstance(cal[key], bool):
                errors.append(f'train.calibration.{key}: must be true or false, got {cal[key]!r}.')
        migration = cal.get('offset_migration', 1.0)
        if isinstance(migration, bool) or not isinstance(migration, (int, float)) or not 0 < migration <= 1:
            errors.append(f'train.calibration.offset_migration: must be a number in (0, 1], got {migration!r}.')
        num = cal.get('num_batches', 8)
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            errors.append(f'train.calibration.num_batches: must be an integer >= 1, got {num!r}.')
        top_k, threshold = cal.get('offset_top_k'), cal.get('offset_threshold')
        if top_k is not None and threshold is not None:
            errors.append('train.calibration: set only one of offset_top_k and offset_threshold.')
        if top_k is not None and (not isinstance(top_k, (int, float)) or not 0 < top_k <= 1):
            errors.append(f'train.calibration.offset_top_k: must be a fraction in (0, 1], got {top_k!r}.')
        if threshold is not None and (not isinstance(threshold, (int, float)) or threshold < 0):
            errors.append(f'train.calibration.offset_threshold: must be a number >= 0, got {threshold!r}.')
        if 'per_layer' in cal:
            _choice('train.calibration.per_layer', cal['per_layer'], PER_LAYER_JUDGES, errors)
        _check_refine(cal.get('refine'), opt, errors)
        _check_distill(opt, errors)
    else:
        stray = [k for k in ODM_TRAIN_KEYS if k in train]
        if stray and model_type not in (None, 'ODMModel'):
            warn(f'train.{", train.".join(stray)} only act with model_type ODMModel; {model_type} ignores them.')
        if odm_arch and model_type == 'SRModel':
            if not (opt.get('path') or {}).get('pretrain_network_g'):
                errors.append('model_type SRModel with a quantized network_g: SRModel never calibrates, so the '
                              'activation ranges would stay at the placeholder [-1, 1]. Use model_type ODMModel, or '
                              'start from a calibrated checkpoint (basicsr calibrate).')
            else:
                warn('network_g is an ODM quantized arch but model_type is SRModel: no calibration and no ODM '
                     'regularizer run (the checkpoint must carry quantizer state). Use model_type ODMModel.')
    if odm_opt is not None:
        if not isinstance(odm_opt, dict) or odm_opt.get('type') != 'ODMLoss':
            errors.append('train.odm_opt: must be a mapping with type: ODMLoss.')
            return
        if not odm_arch:
            errors.append('train.odm_opt: the ODM loss needs an ODM quantized arch in network_g.type '
                          f'({", ".join(odm_archs())}); there are no quantized features to regularize.')
        unknown_keys('train.odm_opt', odm_opt, ODM_LOSS_KEYS, errors)
        for key, hint in (('regularizer', 'variance (v1) or mismatch (v2)'),
                          ('loss_weight', 'the option grid\'s values: 1e-6 for v1, 3.92e-8 for v2 on EDSR')):
            if key not in odm_opt:
                errors.append(f'train.odm_opt.{key}: missing. ODMLoss has no safe default for it: set it explicitly '
                              f'({hint}; docs/OPTIONS.md).')
        if 'regularizer' in odm_opt:
            _choice('train.odm_opt.regularizer', odm_opt['regularizer'], REGULARIZERS, errors)
        if 'stat' in odm_opt:
            _choice('train.odm_opt.stat', odm_opt['stat'], VARIANCE_STATS, errors)
        weight = odm_opt.get('loss_weight', 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            errors.append(f'train.odm_opt.loss_weight: must be a number >= 0, got {weight!r}.')
    if (opt.get('network_g') or {}).get('offsets', 'none') != 'none' and model_type != 'ODMModel':
        warn('network_g.offsets needs model_type ODMModel: offsets are selected by its calibration.')


def _lmdb_pages_bytes(path):
    """Bytes of pages the LMDB at ``path`` says it holds (None if it cannot be opened)."""
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error:
        return None
    try:
        return (env.info()['last_pgno'] + 1) * env.stat()['psize']
    finally:
        env.close()


def _check_lmdb(key, path, errors):
    if not path.endswith('.lmdb'):
        errors.append(f'{key}: {path!r}: an lmdb io_backend needs a folder ending in .lmdb.')
        return
    if not osp.isdir(path):
        errors.append(f'{key}: {path!r} does not exist. {dataset_hint(path)}')
        return
    for name in ('data.mdb', 'meta_info.txt'):
        if not osp.isfile(osp.join(path, name)):
            errors.append(f'{key}: {path!r} has no {name}: not a complete BasicSR LMDB (re-create it with '
                          '"basicsr prepare").')
            return
    with open(osp.join(path, 'meta_info.txt')) as f:
        lines = [line for line in f if line.strip()]
    if not lines:
        errors.append(f'{key}: {path}/meta_info.txt lists no images.')
    elif osp.getsize(osp.join(path, 'data.mdb')) < 8192:
        errors.append(f'{key}: {path}/data.mdb is truncated ({osp.getsize(osp.join(path, "data.mdb"))} bytes).')
    else:
        needed, size = _lmdb_pages_bytes(path), osp.getsize(osp.join(path, 'data.mdb'))
        if needed is None:
            errors.append(f'{key}: {path} cannot be opened as an LMDB (re-create it with "basicsr prepare").')
        elif needed > size:
            errors.append(f'{key}: {path}/data.mdb is truncated: LMDB holds {needed} bytes of pages, the file has '
                          f'{size} (re-create it with "basicsr prepare").')


BENCHMARK_SETS = ('Set5', 'Set14', 'B100', 'Urban100')


def dataset_hint(path):
    """The prepare step that makes a missing dataset path."""
    parts = osp.normpath(path).split(os.sep)
    if any('DIV2K' in p for p in parts):
        root = osp.join(*parts[:next(i for i, p in enumerate(parts) if 'DIV2K' in p) + 1])
        root = root if osp.basename(root) == 'DIV2K' else osp.dirname(root) or '.'
        return (f'Make it with "basicsr prepare div2k --root {root}" from the official DIV2K folders '
                '(https://data.vision.ee.ethz.ch/cvl/DIV2K/).')
    if 'demo' in parts:
        root = osp.join(*parts[:parts.index('demo') + 1])
        return f'Make it with "basicsr prepare demo --root {root}" (photos shipped by scikit-image, no download).'
    for name in BENCHMARK_SETS:
        if name in parts:
            root = osp.join(*parts[:parts.index(name)]) if parts.index(name) else '.'
            return (f'Make it with "basicsr prepare benchmark --root {root}" from the {name} HR images in '
                    f'{osp.join(root, name, "HR")}.')
    return 'Make it with "basicsr prepare div2k", "basicsr prepare benchmark" or "basicsr prepare demo".'


def checkpoint_hint(path):
    """How to obtain a missing pretrained checkpoint, from its path."""
    name = osp.basename(str(path))
    parts = osp.normpath(str(path)).split(os.sep)
    if 'pretrained' in parts and 'odm_basicsr' in parts:
        return (f'It ships inside the odm-basicsr package ({resolve_shipped(str(path))}); reinstall odm-basicsr if it '
                'is missing there.')
    if len(parts) >= 3 and parts[-2] == 'models' and 'experiments' in parts:
        return (f'It is written by training experiment {parts[-3]!r}: run "basicsr train" with its training option '
                'file first.')
    if 'RDN' in name:
        return ('Convert an FP RDN in EDSR-PyTorch layout with "basicsr convert-checkpoint --arch RDN IN OUT", '
                'writing to this path.')
    if 'SwinIR' in name:
        return (f'Download {name} from the SwinIR release (https://github.com/JingyunLiang/SwinIR/releases) into '
                f'{osp.dirname(str(path))}/.')
    if name.startswith(('EDSR_', '00')) or 'MSRResNet' in name:
        return (f'Download {name} from the BasicSR model zoo (docs/ModelZoo.md) into {osp.dirname(str(path))}/, '
                'or convert an EDSR-PyTorch checkpoint with "basicsr convert-checkpoint".')
    return 'Download or convert it (basicsr convert-checkpoint), or correct the path.'


def _check_quantization_record(record, net, path, key, recalibrated, errors, warn):
    """A checkpoint written by ODM records each layer's bits, clip and granularity (the keys and shapes of w2a2 and
    w4a4, or of max and percentile clipping, are the same). Where its ranges would be used as they are (test,
    export, SRModel, resuming) another record is an error; where they are replaced (``basicsr calibrate``, an
    ODMModel fine-tune, which then recalibrates) a warning."""
    lines = record_mismatches(record, net)
    if not lines:
        return
    listed = '\n'.join('    ' + line for line in lines[:6])
    if recalibrated:
        warn(f'{key}: {path!r} was trained or calibrated with another quantization than network_g:\n{listed}\n    Its '
             'weights are used and its quantizer ranges are calibrated again for network_g.')
    else:
        errors.append(f'{key}: {path!r} was trained or calibrated with another quantization than network_g:\n'
                      f'{listed}\n    Set network_g (w_bit, a_bit, weight_clip, weight_granularity, scope, outer_bit, '
                      'integer_zero_point) as in the checkpoint\'s training file, or give the matching checkpoint.')


def _check_checkpoint_fits(opt, path, errors, is_train=True, calibrating=False, key='path.pretrain_network_g',
                           warn=None):
    """Load ``path`` safely and compare it with network_g (keys and shapes), as BasicSR's load_network would pick
    it (param_key_g, falling back to 'params'; 'module.' stripped). strict_load_g false allows missing keys only (a
    warm start), as the ODM archs' checked loading does: unexpected keys and shape mismatches are refused now, before
    anything is written, rather than after BasicSR created the run's folders. Its quantization record is compared
    too (``_check_quantization_record``; ``key`` 'resuming' for the network a resumed run loads)."""
    path_opt = opt.get('path') or {}
    if not isinstance(opt.get('network_g'), dict):
        return
    try:
        ckpt = safe_torch_load(path)
        state = network_state_of(ckpt, path, path_opt.get('param_key_g', 'params'))
    except ValueError as err:
        errors.append(f'{key}: {err}')
        return
    calibrating_model = calibrating or (is_train and opt.get('model_type') == 'ODMModel')
    try:
        # not basicsr's build_network: it would initialise BasicSR's root logger before train_pipeline gives it
        # its log file. Shapes only (the meta device where the arch allows it).
        net = build_shapes_only(opt['network_g'])
        record = ckpt.get(QUANTIZATION_KEY) if isinstance(ckpt, dict) else None
        _check_quantization_record(record, net, path, key, calibrating_model and key != 'resuming', errors,
                                   warn or (lambda message: None))
        missing_quant = check_state_dict(net, state, allow_missing=not path_opt.get('strict_load_g', True))
        if not calibrating_model and any(k.endswith('act_quantizer.calibrated') for k in missing_quant):
            errors.append(f'{key}: {path!r} has no quantizer state (it is an FP checkpoint), so the '
                          f'quantized network_g ({opt["network_g"].get("type")}) would run with uncalibrated [-1, 1] '
                          'activation ranges. Calibrate it first: "basicsr calibrate -opt <training option file>" '
                          'writes experiments/<name>/models/net_g_calibrated.pth; or test a trained net_g_*.pth.')
        elif not calibrating_model and any(k.endswith('act_quantizer.calibrated') and not bool(v)
                                           for k, v in state.items()):
            errors.append(f'{key}: {path!r} holds quantizer state that was never calibrated '
                          '([-1, 1] activation ranges). Calibrate first: "basicsr calibrate -opt <training option '
                          'file>".')
    except CheckpointMismatchError as err:
        errors.append(f'{key}: {path!r} does not fit network_g ({opt["network_g"].get("type")}).\n'
                      + '\n'.join('    ' + line for line in str(err).splitlines()[1:]))


def _check_paths(opt, is_train, errors, calibrating=False, warn=None):
    blocks = [(f'datasets.{phase}', ds) for phase, ds in (opt.get('datasets') or {}).items()]
    cal = (opt.get('train') or {}).get('calibration') if is_train else None
    if isinstance(cal, dict) and cal.get('dataset') is not None:
        blocks.append(('train.calibration.dataset', cal['dataset']))
    for phase, ds in blocks:
        if not isinstance(ds, dict):
            errors.append(f'{phase}: must be a BasicSR dataset mapping.')
            continue
        backend = (ds.get('io_backend') or {}).get('type', 'disk')
        found = len(errors)
        if (ds.get('type') == 'PairedImageDataset' and not ds.get('meta_info_file')
                and ds.get('dataroot_gt') is not None and ds.get('dataroot_gt') == ds.get('dataroot_lq')):
            errors.append(f'{phase}.dataroot_lq: the same folder as dataroot_gt ({ds["dataroot_lq"]!r}); give the '
                          'low-resolution images.')
        for key in ('dataroot_gt', 'dataroot_lq'):
            path = ds.get(key)
            if path is None:
                continue
            path = osp.expanduser(str(path))
            if backend == 'lmdb':
                _check_lmdb(f'{phase}.{key}', path, errors)
            elif not osp.isdir(path):
                errors.append(f'{phase}.{key}: folder {path!r} does not exist. {dataset_hint(path)}')
            elif backend == 'disk' and not any(files for _, _, files in os.walk(path)):
                errors.append(f'{phase}.{key}: folder {path!r} is empty (BasicSR reads every file in it as an '
                              'image).')
        if len(errors) == found and isinstance(opt.get('scale'), int):
            _check_data_scale(phase, ds, backend, opt['scale'], is_train, errors)
    path_opt = opt.get('path') or {}
    pretrain = path_opt.get('pretrain_network_g')
    resuming = bool(path_opt.get('resume_state'))
    if pretrain and not resuming and is_train and not calibrating and _inside_experiment(opt, pretrain):
        errors.append(f'path.pretrain_network_g: {pretrain!r} lies inside experiments/{opt.get("name")}/, which '
                      'BasicSR archives (renames) when this run starts. Copy the checkpoint elsewhere (e.g. '
                      'experiments/pretrained_models/) or give the run another name.')
    elif pretrain and not resuming:
        if osp.isdir(osp.expanduser(str(pretrain))):
            errors.append(f'path.pretrain_network_g: {pretrain!r} is a folder; give the checkpoint file in it (e.g. '
                          'models/net_g_latest.pth).')
        elif not osp.isfile(osp.expanduser(str(pretrain))):
            errors.append(f'path.pretrain_network_g: checkpoint {pretrain!r} does not exist. {checkpoint_hint(pretrain)}')
        elif not errors:
            _check_checkpoint_fits(opt, osp.expanduser(str(pretrain)), errors, is_train, calibrating, warn=warn)
    if path_opt.get('resume_state') and not osp.isfile(osp.expanduser(str(path_opt['resume_state']))):
        errors.append(f'path.resume_state: {path_opt["resume_state"]!r} does not exist.')
    elif path_opt.get('resume_state') and not str(path_opt['resume_state']).endswith('.state'):
        errors.append(f'path.resume_state: {path_opt["resume_state"]!r} is not a training state: BasicSR resumes from '
                      'experiments/<name>/training_states/<iter>.state (or use --auto-resume); a network checkpoint '
                      'goes in path.pretrain_network_g.')
    elif is_train and not calibrating and not errors:
        resumed = _resumed_network_file(opt)
        if resumed and not osp.isfile(resumed):
            errors.append(f'path.resume_state: resuming loads the network from {resumed!r} (BasicSR: the models folder '
                          f'of this run, name {opt.get("name")!r}), which does not exist. Is the state of another '
                          'run? Resume with the option file (name) that wrote it.')
        elif resumed:  # the network a resumed run loads must still fit network_g (bits, clip, keys, shapes)
            _check_checkpoint_fits(opt, resumed, errors, is_train, calibrating, key='resuming', warn=warn)


def _resumed_network_file(opt):
    """experiments/<name>/models/net_g_<iter>.pth that a resumed run loads, by BasicSR's rules (check_resume, and
    this package's load_resume_state: --auto_resume takes the latest state of the run's folder, else
    path.resume_state); None if not resuming or if path.ignore_resume_networks names network_g."""
    path_opt = opt.get('path') or {}
    if 'network_g' in (path_opt.get('ignore_resume_networks') or ()):
        return None
    folder = osp.join('experiments', str(opt.get('name')))
    states = osp.join(folder, 'training_states')
    if opt.get('auto_resume'):  # path.resume_state is not read then; no state yet: a fresh start
        found = [f for f in os.listdir(states) if f.endswith('.state') and f[:-len('.state')].isdigit()] \
            if osp.isdir(states) else []
        state = max(found, key=lambda f: int(f[:-len('.state')]), default=None)
    else:
        state = path_opt.get('resume_state')
    stem = osp.basename(str(state or ''))[:-len('.state')]
    if not state or not str(state).endswith('.state') or not stem.isdigit():
        return None  # a renamed state: its iteration is inside it, not in the name
    return osp.join(folder, 'models', f'net_g_{stem}.pth')


def _lmdb_sizes(path):
    """{key: (height, width)} from a BasicSR LMDB's meta_info.txt ('<key> (h,w,c) <compression>' lines)."""
    sizes = {}
    with open(osp.join(path, 'meta_info.txt')) as f:
        for line in f:
            parts = line.split()
            try:
                dims = tuple(int(v) for v in parts[1].strip('()').split(','))
            except (IndexError, ValueError):
                continue
            if len(dims) >= 2:
                sizes[parts[0]] = dims[:2]
    return sizes


def _image_size(path):
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED) if osp.isfile(path) else None
    return None if img is None else img.shape[:2]


def _first_pair_sizes(ds, backend):
    """((h, w) of GT, (h, w) of LQ) of one pair as BasicSR's PairedImageDataset pairs them (the same LMDB key; in a
    folder, the GT file name through filename_tmpl), or None where no pair can be resolved here."""
    gt_root, lq_root = (osp.expanduser(str(ds[key])) for key in ('dataroot_gt', 'dataroot_lq'))
    if backend == 'lmdb':
        gt, lq = _lmdb_sizes(gt_root), _lmdb_sizes(lq_root)
        key = next((k for k in sorted(gt) if k in lq), None)
        return None if key is None else (gt[key], lq[key])
    if backend != 'disk' or ds.get('meta_info_file'):
        return None
    template = ds.get('filename_tmpl', '{}')
    with os.scandir(gt_root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            stem, ext = osp.splitext(entry.name)
            if not entry.is_file():
                continue
            gt = _image_size(entry.path)
            if gt is not None:
                lq = _image_size(osp.join(lq_root, f'{template.format(stem)}{ext}'))
                return None if lq is None else (gt, lq)
    return None


def _check_data_scale(phase, ds, backend, scale, is_train, errors):
    """One GT / LQ pair of a PairedImageDataset block must differ in size by ``scale``: exactly when training
    (BasicSR's paired_random_crop raised 'Scale mismatches' after the folders were made), GT at least LQ x scale
    otherwise (validation crops GT to it)."""
    if ds.get('type') != 'PairedImageDataset' or ds.get('dataroot_gt') is None or ds.get('dataroot_lq') is None:
        return
    sizes = _first_pair_sizes(ds, backend)
    if sizes is None or not all(sizes[1]):
        return
    gt, lq = sizes
    training = is_train and str(phase).split('.')[-1].startswith('train')
    fits = all((g == l * scale) if training else (l * scale <= g) for g, l in zip(gt, lq))
    if not fits:
        errors.append(f'{phase}: a GT image is {gt[0]}x{gt[1]} and its LQ image {lq[0]}x{lq[1]} '
                      f'(x{gt[0] / lq[0]:g}), but scale is {scale}: the LQ data is for another scale (or the folders '
                      'are swapped).')


def _inside_experiment(opt, path):
    """True if ``path`` lies in experiments/<name>/ of the working directory (the folder a new run archives)."""
    if not opt.get('name'):
        return False
    folder = osp.abspath(osp.join('experiments', str(opt['name'])))
    states = osp.join(folder, 'training_states')
    if osp.isdir(states) and any(f.endswith('.state') for f in os.listdir(states)):
        return False  # an --auto_resume run continues in the folder instead of archiving it
    return osp.abspath(osp.expanduser(str(path))).startswith(folder + os.sep)


def _check_top_level(opt, errors):
    """Top-level keys BasicSR does not know (a typo, or a --force_yml written with dots)."""
    for key in opt:
        if key in BASICSR_TOP_KEYS:
            continue
        if '.' in str(key) and str(key).split('.')[0] in BASICSR_TOP_KEYS:
            fixed = str(key).replace('.', ':')
            errors.append(f'{key}: not a key. --force-yml separates keys with ":" as BasicSR reads them '
                          f'(--force-yml {fixed}=...), not ".".')
        else:
            errors.append(f'{key}: unknown top-level key{did_you_mean(str(key), BASICSR_TOP_KEYS)}.')


def _misspelt_sections(opt):
    """{missing top-level key: the misspelt key that stands for it} (``netwrok_g`` for a missing ``network_g``)."""
    found = {}
    for key in opt:
        close = None if key in BASICSR_TOP_KEYS else closest_match(key, [k for k in BASICSR_TOP_KEYS if k not in opt])
        if close:
            found[close] = str(key)
    return found


def _one_error_per_cause(opt, errors):
    """``errors`` without those that only follow from a misspelt top-level key: with ``netwrok_g``, the typo is
    reported, not also every check that needs a network_g."""
    for section, typo in _misspelt_sections(opt).items():
        follows = re.compile(rf'(?<![\w.]){re.escape(section)}\b')
        errors = [e for e in errors if e.startswith(f'{typo}:') or not follows.search(e)]
    return errors


def _default_scope(net):
    """The scope of a network_g block without one: ODMQuant's is 'all' for an arch without a default body scope;
    None where ODMQuant's arch is not a registered arch (reported by the network checks)."""
    if net.get('type') != 'ODMQuant':
        return 'body'

    kind = net['arch'].get('type') if isinstance(net.get('arch'), dict) else None
    if not registry_has(ARCH_REGISTRY, kind):
        return None
    name = ARCH_REGISTRY.get(kind).__name__
    return 'body' if name in BODY_SCOPES else 'all'


def _check_consistency(opt, errors):
    """Settings that are valid alone but contradict each other: scale vs the network's upscale, outer_bit with the
    body scope. Checked after the paths, so that a checkpoint of another scale is reported as such too."""
    net = opt.get('network_g')
    if not isinstance(net, dict):
        return
    inner = net.get('arch') if isinstance(net.get('arch'), dict) else net
    upscale = inner.get('upscale', inner.get('scale'))
    if isinstance(opt.get('scale'), int) and isinstance(upscale, int) and upscale != opt['scale']:
        key = 'network_g.arch' if inner is not net else 'network_g'
        name = 'upscale' if 'upscale' in inner else 'scale'
        errors.append(f'scale: {opt["scale"]} but {key}.{name} is {upscale}: the data would be prepared for x'
                      f'{opt["scale"]} and the network upsamples x{upscale}.')
    if net.get('outer_bit') is not None and net.get('scope', _default_scope(net)) == 'body':
        errors.append('network_g.outer_bit: has no effect with scope body (only the body is quantized); use scope: all '
                      'or layer-name patterns, or drop outer_bit.')


def check_options(opt, is_train=True, warn=None, calibrating=False):
    """Validate an option dict. Raises OptionError listing every problem; returns the list of warnings.
    ``calibrating``: the command calibrates network_g itself (an FP checkpoint is then what it needs)."""
    warnings_found = []
    warn_fn = warn or warnings_found.append
    errors = []
    _check_top_level(opt, errors)
    check_sections(opt, is_train and not calibrating, errors)
    odm_arch = _check_network(opt, errors)
    if is_train:
        _check_train(opt, odm_arch, errors, warn_fn)
    _check_paths(opt, is_train, errors, calibrating, warn_fn)
    _check_consistency(opt, errors)
    errors = _one_error_per_cause(opt, errors)
    if errors:
        raise OptionError('Invalid options:\n  - ' + '\n  - '.join(errors))
    return warnings_found


class ForceYmlError(ValueError):
    """A --force_yml entry BasicSR cannot apply."""


def apply_force_yml(opt, argv):
    """Apply ``--force_yml key1:key2=value ...`` from ``argv`` to ``opt`` (BasicSR applies it after parsing)."""
    argv = list(argv)
    if '--force_yml' not in argv:
        return opt
    for entry in argv[argv.index('--force_yml') + 1:]:
        if entry.startswith('-'):
            break
        if '=' not in entry:
            continue
        keys, value = entry.split('=', 1)
        node = opt
        keys = keys.strip().split(':')
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(node.get(key), dict):  # BasicSR sets a key of an existing mapping only
                where = ':'.join(keys[:depth + 1])
                raise ForceYmlError(f'--force-yml {entry}: the option file has no section {where} (--force-yml '
                                    'sets a key inside an existing section; add the section to the file).')
            node = node[key]
        node[keys[-1]] = force_yml_value(value)
    return opt


def load_option_file(path):
    """The option dict of ``path``; exits with a clear message if it is missing, not YAML or not a mapping."""
    if not osp.isfile(path):
        raise SystemExit(f'error: option file {path!r} does not exist.')
    try:
        with open(path) as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise SystemExit(f'error: {path} is not valid YAML: {err}')
    if not isinstance(opt, dict):
        raise SystemExit(f'error: {path} does not hold a mapping of options.')
    return resolve_shipped_paths(opt)


def check_option_file(path, is_train=True, argv=(), sections=None, calibrating=False):
    """Load and validate ``path``; on error print the message and exit with status 2 (nothing is created).

    Args:
        argv: the command's flags (``--force_yml`` and ``--auto_resume`` are applied before checking).
        sections (tuple | None): validate only these top-level keys (e.g. no ``datasets`` for a command that reads
            no data); None validates everything.
    Returns:
        dict: the whole option dict.
    """
    opt = load_option_file(path)
    try:
        apply_force_yml(opt, argv)
    except ForceYmlError as err:
        raise SystemExit(f'error: {err}')
    if '--launcher' in argv and argv.index('--launcher') + 1 < len(argv):
        opt['launcher'] = argv[argv.index('--launcher') + 1]
    if '--auto_resume' in argv:
        opt.setdefault('path', {})['resume_state'] = opt.get('path', {}).get('resume_state') or None
        opt['auto_resume'] = True
    if '--debug' in argv and isinstance(opt.get('name'), str) and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']  # as BasicSR's parse_options names a debug run
    checked = opt if sections is None else {k: v for k, v in opt.items() if k in sections}
    try:
        found = check_options(checked, is_train=is_train, calibrating=calibrating)
    except OptionError as err:
        raise SystemExit(f'error in {path}:\n{err}')
    for message in found:
        print(f'warning: {message}', file=sys.stderr)
    return opt

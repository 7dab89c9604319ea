"""Checked checkpoint loading for quantized networks, and the EDSR-PyTorch checkpoint importer.

A full-precision checkpoint of the FP twin may lack only quantizer keys (``act_quantizer.*``,
``weight_quantizer.*``, ``offset.*``). Any other missing, unexpected or mis-shaped key is an error that names the
keys and the likely cause. ``strict=False`` (BasicSR's ``strict_load_g: false``) allows missing keys only, as in a
x2-to-x4 warm start (the x4 upsampler's second stage starts from its initialisation); unexpected keys and shape
mismatches stay errors.
"""
import logging
import re

import torch

from .convert import activation_points, is_quantizer_param

logger = logging.getLogger('basicsr')  # BasicSR's root logger name; plain logging, no BasicSR import


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the network (wrong architecture, depth, width or scale)."""


def _likely_cause(missing, unexpected, mismatched):
    hints = []
    keys = list(missing) + list(unexpected)
    if keys and not mismatched and all(is_quantizer_param(k) for k in keys):
        gamma = any(k.endswith('weight_quantizer.gamma') for k in keys)
        offsets = any('.offset.' in k for k in keys)
        what = ' and '.join(w for w, found in (('weight_clip (wcc has a weight_quantizer.gamma)', gamma),
                                                 ('offsets (ODM v1 has offset.*)', offsets)) if found)
        return (f'only quantizer keys differ: the checkpoint was trained with another {what or "quantizer setting"}'
                ' than network_g')
    block_ids = lambda keys: {int(m.group(1)) for k in keys for m in [re.search(r'\.(\d+)\.', k)] if m}  # noqa: E731
    if any(k.startswith(('head.', 'tail.', 'RDBs.', 'SFENet')) for k in unexpected):
        hints.append('this looks like an EDSR-PyTorch checkpoint: convert it first with '
                     '"basicsr convert-checkpoint --arch <EDSR|RDN> IN OUT"')
    layout = lambda keys: {'.'.join(p for p in k.split('.') if not p.isdigit()) for k in keys}  # noqa: E731
    if not hints and missing and unexpected and not layout(missing) & layout(unexpected):
        # no layer of one is a renumbered layer of the other: not a depth or scale difference
        names = lambda keys: ', '.join(sorted({k.split('.')[0] for k in keys})[:4])  # noqa: E731
        return (f'the checkpoint belongs to another architecture (its layers {names(unexpected)} are not '
                f'network_g\'s {names(missing)})')
    if missing and unexpected and block_ids(missing) != block_ids(unexpected):
        hints.append('the number of blocks (num_block) differs between the network and the checkpoint')
    elif unexpected and not missing:
        hints.append('the checkpoint has more blocks/layers than the network (num_block too small?)')
    elif missing and not unexpected:
        hints.append('the checkpoint has fewer blocks/layers than the network (num_block too large?)')
    upsampler = ('upsample', 'upconv', 'conv_last', 'conv_hr')
    if any(u in k for k in list(missing) + list(unexpected) for u in upsampler):
        hints.append('the upsampler differs: check upscale (the checkpoint may be for another scale)')
    if mismatched:
        if all(any(u in k for u in upsampler) for k, _, _ in mismatched):
            hints.append('upsampler shapes differ: check upscale (the checkpoint may be for another scale)')
        else:
            hints.append('tensor shapes differ: check num_feat / num_in_ch / num_out_ch')
    if not hints:
        hints.append('the checkpoint belongs to another architecture')
    return '; '.join(hints)


QUANTIZATION_KEY = 'quantization'  # beside BasicSR's 'params' in the checkpoints ODM writes


def quantization_record(net):
    """{point name: 'w4 a4 max layer'}: how each quantized layer (and quantized matmul operand) of ``net``
    quantizes: weight and activation bits, weight clip, weight granularity, integer zero point. ODMModel and
    ``basicsr calibrate`` store it beside 'params', so that a checkpoint is never run at another configuration
    (its keys and shapes alone do not tell w2a2 from w4a4, or max from percentile clipping)."""
    record = {}
    for name, point in activation_points(net):
        parts = []
        weight = getattr(point, 'weight_quantizer', None)
        if weight is not None:
            parts.append(f'w{weight.bits}')
        parts.append(f'a{point.act_quantizer.bits}')
        if weight is not None:
            parts += [weight.weight_clip, weight.granularity]
        if point.act_quantizer.integer_zero_point:
            parts.append('integer_zero_point')
        record[name] = ' '.join(parts)
    return record


def record_mismatches(stored, net):
    """How a checkpoint's ``quantization_record`` differs from ``net``'s: one line per distinct difference (with
    its count of layers), [] when they agree. A checkpoint without a record (FP, or written before records) is
    not compared."""
    if not isinstance(stored, dict):
        return []
    own = quantization_record(net)
    differences = {}
    for name in sorted(set(stored) | set(own)):
        got, want = stored.get(name, 'not quantized'), own.get(name, 'not quantized')
        if got != want:
            differences.setdefault((got, want), []).append(name)
    return [f'{len(names)} layer(s) (e.g. {names[0]}): checkpoint {got!r}, network_g {want!r}'
            for (got, want), names in differences.items()]


def check_state_dict(net, state_dict, allow_missing=False):
    """Compare ``state_dict`` with ``net``'s keys and shapes; ``allow_missing`` accepts missing non-quantizer keys
    (``strict=False``), which then keep the network's own values.

    Returns:
        list[str]: quantizer keys the checkpoint lacks (they keep their initial / calibrated values).
    Raises:
        CheckpointMismatchError: naming every missing, unexpected and mis-shaped non-quantizer key.
    """
    own = net.state_dict()
    # BasicSR's load_network (strict=False) renames mis-shaped keys to '<key>.ignore'
    loaded = {k[:-len('.ignore')] if k.endswith('.ignore') else k: v for k, v in state_dict.items()}
    # output_quantizer.consumer_index came later than the rest of the quantizer state: -1 (none) when absent
    missing = [k for k in own if k not in loaded and not k.endswith('output_quantizer.consumer_index')]
    missing_quant = [k for k in missing if is_quantizer_param(k)]
    missing_other = [k for k in missing if not is_quantizer_param(k)]
    if allow_missing and missing_other:
        logger.warning(f'{type(net).__name__}: strict loading is off and the checkpoint lacks {len(missing_other)} '
                       f'network keys, which keep their initialisation: {", ".join(missing_other[:8])}'
                       f'{" ..." if len(missing_other) > 8 else ""}')
        missing_other = []
    unexpected = [k for k in loaded if k not in own]
    mismatched = [(k, tuple(loaded[k].shape), tuple(own[k].shape)) for k in own
                  if k in loaded and hasattr(loaded[k], 'shape') and tuple(loaded[k].shape) != tuple(own[k].shape)]
    if missing_other or unexpected or mismatched:
        parts = [f'Checkpoint does not fit {type(net).__name__}:']
        if missing_other:
            parts.append(f'  missing keys ({len(missing_other)}): {", ".join(missing_other[:8])}'
                         f'{" ..." if len(missing_other) > 8 else ""}')
        if unexpected:
            parts.append(f'  unexpected keys ({len(unexpected)}): {", ".join(unexpected[:8])}'
                         f'{" ..." if len(unexpected) > 8 else ""}')
        for k, got, want in mismatched[:8]:
            parts.append(f'  shape mismatch: {k}: checkpoint {got} vs network {want}')
        parts.append(f'  likely cause: {_likely_cause(missing_other, unexpected, mismatched)}.')
        raise CheckpointMismatchError('\n'.join(parts))
    return missing_quant


class CheckedLoadMixin:
    """``load_state_dict`` that accepts an FP checkpoint (quantizer keys missing) and refuses everything else;
    strict=False also accepts missing network keys (a warm start). Mix in before the nn.Module base."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        loaded = {k[:-len('.ignore')] if k.endswith('.ignore') else k: v for k, v in state_dict.items()}
        missing_quant = check_state_dict(self, loaded, allow_missing=not strict)
        if missing_quant:
            logger.info(f'{type(self).__name__}: the checkpoint has no quantizer state for {len(missing_quant)} '
                        'keys (an FP checkpoint); activation ranges will come from calibration.')
        # quantizer state counts only if it was calibrated: an uncalibrated one (saved before any calibration) is
        # calibrated again by ODMModel instead of failing at the first quantized forward
        self.quantizer_state_loaded = not missing_quant and all(
            bool(v) for k, v in loaded.items() if k.endswith('act_quantizer.calibrated'))
        return super().load_state_dict(loaded, strict=False, assign=assign)


# --------------------------------------------------------------------------------------------------------------
# EDSR-PyTorch layout (used by PAMS / DAQ / DDTB / AdaBM checkpoints) -> BasicSR layout
# --------------------------------------------------------------------------------------------------------------
EDSR_PYTORCH_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _strip_module(state_dict):
    if 'state_dict' in state_dict and isinstance(state_dict['state_dict'], dict):
        state_dict = state_dict['state_dict']
    return {(k[7:] if k.startswith('module.') else k[6:] if k.startswith('model.') else k): v
            for k, v in state_dict.items()}


def convert_edsr_pytorch_edsr(state_dict):
    """EDSR-PyTorch EDSR(-baseline) -> BasicSR EDSR keys.

    head.0 -> conv_first; body.<i>.body.0/2 -> body.<i>.conv1/2; body.<num_block> -> conv_after_body;
    tail.0.<j> -> upsample.<j>; tail.1 -> conv_last. The MeanShift convs (sub_mean / add_mean) are fixed and
    equal BasicSR's rgb_mean; they are checked and dropped.
    """
    sd = _strip_module(state_dict)
    if 'head.0.weight' not in sd:
        raise CheckpointMismatchError('not an EDSR-PyTorch EDSR checkpoint: no head.0.weight key')
    block_ids = sorted({int(m.group(1)) for k in sd for m in [re.match(r'body\.(\d+)\.body\.', k)] if m})
    num_block = len(block_ids)
    out = {}
    for k, v in sd.items():
        if k.startswith(('sub_mean.', 'add_mean.')):
            _check_mean_shift(k, v)
            continue
        m = re.match(r'body\.(\d+)\.body\.(0|2)\.(weight|bias)$', k)
        if k.startswith('head.0.'):
            out['conv_first.' + k.split('.', 2)[2]] = v
        elif m:
            out[f'body.{m.group(1)}.conv{1 if m.group(2) == "0" else 2}.{m.group(3)}'] = v
        elif re.match(rf'body\.{num_block}\.(weight|bias)$', k):
            out['conv_after_body.' + k.rsplit('.', 1)[1]] = v
        elif k.startswith('tail.0.'):
            out['upsample.' + k[len('tail.0.'):]] = v
        elif k.startswith('tail.1.'):
            out['conv_last.' + k.rsplit('.', 1)[1]] = v
        else:
            raise CheckpointMismatchError(f'unexpected key {k!r} in an EDSR-PyTorch EDSR checkpoint')
    return out


def convert_edsr_pytorch_rdn(state_dict):
    """EDSR-PyTorch RDN -> this package's RDN keys.

    SFENet1/2 -> sfe1/sfe2; RDBs.<i>.convs.<j>.conv.0 -> rdbs.<i>.convs.<j>; RDBs.<i>.LFF -> rdbs.<i>.lff;
    GFF.0/1 -> gff.0/1; UPNet.0 -> upsample.0; UPNet.2 -> upsample.2 (x4) or conv_last (x2/x3);
    UPNet.4 -> conv_last (x4).
    """
    sd = _strip_module(state_dict)
    if 'SFENet1.weight' not in sd:
        raise CheckpointMismatchError('not an EDSR-PyTorch RDN checkpoint: no SFENet1.weight key')
    x4 = 'UPNet.4.weight' in sd
    out = {}
    for k, v in sd.items():
        name, _, leaf = k.rpartition('.')
        m = re.match(r'RDBs\.(\d+)\.convs\.(\d+)\.conv\.0$', name)
        m_lff = re.match(r'RDBs\.(\d+)\.LFF$', name)
        if name in ('SFENet1', 'SFENet2'):
            out[f'sfe{name[-1]}.{leaf}'] = v
        elif m:
            out[f'rdbs.{m.group(1)}.convs.{m.group(2)}.{leaf}'] = v
        elif m_lff:
            out[f'rdbs.{m_lff.group(1)}.lff.{leaf}'] = v
        elif name in ('GFF.0', 'GFF.1'):
            out[f'gff.{name[-1]}.{leaf}'] = v
        elif name == 'UPNet.0':
            out[f'upsample.0.{leaf}'] = v
        elif name == 'UPNet.2':
            out[f'{"upsample.2" if x4 else "conv_last"}.{leaf}'] = v
        elif name == 'UPNet.4':
            out[f'conv_last.{leaf}'] = v
        elif name in ('sub_mean', 'add_mean'):
            continue
        else:
            raise CheckpointMismatchError(f'unexpected key {k!r} in an EDSR-PyTorch RDN checkpoint')
    return out


def _check_mean_shift(key, value):
    if not key.endswith('bias'):
        return
    mean = torch.tensor(EDSR_PYTORCH_RGB_MEAN) * 255.0
    if not torch.allclose(value.abs().float(), mean, atol=0.5):
        raise CheckpointMismatchError(
            f'{key} = {value.tolist()} does not match the DIV2K mean {EDSR_PYTORCH_RGB_MEAN} x 255; set rgb_mean '
            'accordingly in network_g (the importer only drops the standard MeanShift).')


EDSR_PYTORCH_CONVERTERS = {'EDSR': convert_edsr_pytorch_edsr, 'RDN': convert_edsr_pytorch_rdn}

"""``basicsr compare -opt COMPARE_FILE``: FP, quantized and bicubic upscaling of the same test sets, side by side.

The option file holds BasicSR ``datasets`` test blocks, ``val.metrics`` (BasicSR's calculate_psnr / calculate_ssim),
and a ``compare`` block:

    compare:
      reference: FP                  # the entry that Δ and fidelity are taken against (default: the first)
      published: {arch: EDSR}        # optional: the published rows of this arch at this scale and these bits
      crops: [{image: baboon, box: [y, x, h, w]}]   # optional HR boxes (and dataset: <set name>); default: one
                                                     # automatic crop on the first image of the first set
      entries:
        - label: FP
          network_g: {type: EDSR, ...}
          checkpoint: experiments/pretrained_models/EDSR/EDSR_Mx4_f64b16_DIV2K_official-0c287733.pth
          param_key: params          # default params, then params_ema if the file has no params
        - ...

Bicubic (MATLAB-style, BasicSR's imresize) is always added. Every entry runs on every image; the metrics are
BasicSR's own functions on ``tensor2img`` outputs, exactly as ``basicsr test`` computes them. An entry whose
checkpoint does not exist yet is listed as not trained, with the command that makes it.

Writes to results/<name>/: compare.md, compare.json, compare.csv (per entry and test set: metrics, Δ vs the
reference, fidelity to the reference output in dB, BitOPs and storage of the cost report for a --size LR input),
crops_<set>_<image>.png (HR, bicubic, then every entry on one zoomed region, labelled with the image's PSNR), and
psnr_vs_bitops.png (needs matplotlib: pip install "odm-basicsr[plot]").
"""
import copy
import csv
import glob
import json
import math
import os
import os.path as osp
import re
import sys

import cv2
import numpy as np
import torch
from basicsr.archs.swinir_arch import WindowAttention
from basicsr.data import build_dataset
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import ARCH_REGISTRY
from tqdm import tqdm

from odm_basicsr.archs.odm_swinir_arch import QuantWindowAttention
from odm_basicsr.data.published import published_rows
from odm_basicsr.options_check import checkpoint_hint, dataset_hint, load_option_file
from odm_basicsr.quant import (QUANTIZATION_KEY, CheckpointMismatchError, cost_report, quantized_layers,
                               record_mismatches)
from odm_basicsr.quant.export import check_calibrated
from odm_basicsr.utils.safe_load import network_state_of, safe_torch_load
from odm_basicsr.utils.shipped import option_files_dir

from .cli_io import InferError, fidelity_psnr, forward_padded, input_channels, parse_size, resolve_device
from .cli_text import add_device, add_out, add_size, command_parser

BICUBIC = 'bicubic'
CROP_LR = 24  # side of the automatic crop, in LR pixels
PANEL = 160  # minimum side of a crop panel, in pixels


class CompareError(ValueError):
    """Bad compare file; the message names the entry, arch or path."""


def _training_file_for(experiment):
    """The shipped training option file whose name is ``experiment``, as ``options/...`` (where ``basicsr options``
    copies it), or None."""
    folder = option_files_dir()
    pattern = re.compile(rf'^name:\s*{re.escape(experiment)}\s*$', re.M)
    for path in sorted(glob.glob(osp.join(folder, '**', 'train_*.yml'), recursive=True)) if folder else ():
        with open(path) as f:
            if pattern.search(f.read()):
                return osp.join('options', osp.relpath(path, folder))
    return None


def missing_hint(path):
    """How to produce a missing checkpoint: the training run that writes it, or where to download it."""
    parts = osp.normpath(str(path)).split(os.sep)
    if len(parts) >= 3 and parts[-2] == 'models' and 'experiments' in parts:
        train = _training_file_for(parts[-3])
        if train:
            return f'not trained yet: basicsr train -opt {train}'
    return 'missing: ' + checkpoint_hint(path)


def check_compare(opt):
    """Validate a compare option dict; returns (entries, reference label). Nothing is computed or written."""
    errors = []
    if not isinstance(opt.get('name'), str) or not opt['name']:
        errors.append('name: a non-empty string is needed (results go to results/<name>/).')
    if not isinstance(opt.get('scale'), int) or opt['scale'] < 1:
        errors.append(f'scale: a positive integer is needed, got {opt.get("scale")!r}.')
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        errors.append('datasets: at least one BasicSR test dataset block is needed.')
        datasets = {}
    for key, ds in datasets.items():
        if not isinstance(ds, dict):
            errors.append(f'datasets.{key}: must be a BasicSR dataset mapping.')
            continue
        for root in ('dataroot_gt', 'dataroot_lq'):
            path = ds.get(root)
            if not path or not osp.isdir(str(path)):
                errors.append(f'datasets.{key}.{root}: folder {path!r} does not exist. {dataset_hint(str(path))}')
    metrics = (opt.get('val') or {}).get('metrics')
    if not isinstance(metrics, dict) or not metrics:
        errors.append('val.metrics: BasicSR metric blocks are needed (calculate_psnr / calculate_ssim).')
    compare = opt.get('compare')
    entries = compare.get('entries') if isinstance(compare, dict) else None
    if not isinstance(entries, list) or not entries:
        errors.append('compare.entries: a list of {label, network_g, checkpoint} is needed.')
        entries = []
    labels = []
    for i, entry in enumerate(entries):
        where = f'compare.entries[{i}]'
        if not isinstance(entry, dict):
            errors.append(f'{where}: must be a mapping with label, network_g and checkpoint.')
            continue
        label = entry.get('label')
        if not isinstance(label, str) or not label:
            errors.append(f'{where}.label: a non-empty string is needed.')
            continue
        where = f'entry {label!r}'
        if label in labels or label == BICUBIC:
            errors.append(f'{where}: the label is used twice (bicubic is built in).')
        labels.append(label)
        unknown = set(entry) - {'label', 'network_g', 'checkpoint', 'param_key'}
        if unknown:
            errors.append(f'{where}: unknown keys {sorted(unknown)} (label, network_g, checkpoint, param_key).')
        net = entry.get('network_g')
        if not isinstance(net, dict) or not net.get('type'):
            errors.append(f'{where}: network_g must be a mapping with a type.')
        elif net['type'] not in ARCH_REGISTRY:
            errors.append(f'{where}: network_g.type {net["type"]!r} is not a registered arch.')
        if not isinstance(entry.get('checkpoint'), str):
            errors.append(f'{where}: checkpoint must be a path.')
    reference = compare.get('reference', labels[0] if labels else None) if isinstance(compare, dict) else None
    if labels and reference not in labels:
        errors.append(f'compare.reference: {reference!r} is not an entry label ({", ".join(labels)}).')
    datasets_found = not any(line.startswith('datasets') for line in errors)
    crops = compare.get('crops', []) if isinstance(compare, dict) else []
    for i, crop in enumerate(crops or []):
        box = crop.get('box') if isinstance(crop, dict) else None
        if not isinstance(crop, dict) or not isinstance(crop.get('image'), str) or not (
                isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box) and box[0] >= 0
                and box[1] >= 0 and box[2] > 0 and box[3] > 0):
            errors.append(f'compare.crops[{i}]: {{image: <name>, box: [y, x, h, w]}} in HR pixels is needed '
                          '(optional dataset: <test set name>).')
        elif datasets_found:
            problem = _crop_problem(crop, datasets)
            if problem:
                errors.append(f'compare.crops[{i}]: {problem}')
    if errors:
        raise CompareError('Invalid compare file:\n  - ' + '\n  - '.join(errors))
    return entries, reference


def _crop_problem(crop, datasets):
    """Why a crop cannot be drawn (its image in no test set, or a box outside it), or None."""
    y, x, h, w = crop['box']
    for key, ds in datasets.items():
        if crop.get('dataset') not in (None, ds.get('name', key)):
            continue
        for path in glob.glob(osp.join(str(ds['dataroot_gt']), crop['image'] + '.*')):
            img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if img is None:
                continue
            if y + h > img.shape[0] or x + w > img.shape[1]:
                return f'box {crop["box"]} lies outside {crop["image"]} ({img.shape[0]}x{img.shape[1]} HR pixels).'
            return None
    return f'image {crop["image"]!r} is in no test set{" " + repr(crop["dataset"]) if crop.get("dataset") else ""}.'


def load_entries(entries, device, scale):
    """{label: network} for the entries whose checkpoint exists, and {label: hint} for the others. Every present
    checkpoint is loaded and checked against its network_g (and the upscale against ``scale``) before anything is
    computed. The checkpoint entry is ``param_key`` (default params, then params_ema if there is no params)."""
    nets, missing, errors = {}, {}, []
    for entry in entries:
        label, path = entry['label'], entry['checkpoint']
        net_opt = dict(entry['network_g'])
        arch = net_opt.pop('type')
        if not osp.isfile(path):
            missing[label] = missing_hint(path)
            continue
        upscale = net_opt.get('upscale', net_opt.get('scale', (net_opt.get('arch') or {}).get('upscale')))
        if upscale is not None and upscale != scale:
            errors.append(f'entry {label!r} ({arch}): upscale {upscale} but the compare file\'s scale is {scale}.')
            continue
        try:
            net = ARCH_REGISTRY.get(arch)(**net_opt)
        except (TypeError, ValueError, AssertionError, KeyError) as err:
            errors.append(f'entry {label!r} ({arch}): network_g cannot be built: {err}')
            continue
        try:
            ckpt = safe_torch_load(path)
            try:
                state = network_state_of(ckpt, path, entry.get('param_key', 'params'))
            except ValueError:
                if 'param_key' in entry:
                    raise
                state = network_state_of(ckpt, path, 'params_ema')  # BasicSR's default key, then the EMA copy
            net.load_state_dict(state, strict=True)
            if quantized_layers(net):
                check_calibrated(net)
                other = record_mismatches(ckpt.get(QUANTIZATION_KEY) if isinstance(ckpt, dict) else None, net)
                if other:
                    raise ValueError(f'it was trained or calibrated with another quantization than its network_g '
                                     f'({"; ".join(other[:3])}): its row would be labelled with the wrong bits.')
        except CheckpointMismatchError as err:
            errors.append(f'entry {label!r} ({arch}): {path} does not fit its network_g:\n    '
                          + '\n    '.join(str(err).splitlines()[1:]))
            continue
        except (RuntimeError, ValueError) as err:
            lines = str(err).splitlines()
            errors.append(f'entry {label!r} ({arch}): {path}: ' + '\n    '.join(lines[:6]) + (' ...' if len(lines) > 6
                                                                                          else ''))
            continue
        nets[label] = net.to(device).eval()
    if errors:
        raise CompareError('Entries that cannot be compared:\n  - ' + '\n  - '.join(errors))
    if not nets:
        raise CompareError('no entry has a checkpoint yet:\n  - ' + '\n  - '.join(
            f'{label}: {hint}' for label, hint in missing.items()))
    return nets, missing


def bicubic_upscale(lq, scale):
    """MATLAB-style bicubic of a (1, C, h, w) tensor on [0, 1], as BasicSR's imresize, quantized to 8 bits like
    every network output is by tensor2img."""
    img = lq[0].permute(1, 2, 0).double().numpy()
    up = np.clip(np.round(imresize(img, scale) * 255.), 0, 255) / 255.
    return torch.from_numpy(up).permute(2, 0, 1).unsqueeze(0).float()


def auto_box(outputs, scale, hr_shape):
    """HR box [y, x, h, w] of side CROP_LR * scale where the entries' outputs differ most (std across entries of
    the 0-1 output, box-averaged)."""
    height, width = hr_shape
    side = min(CROP_LR * scale, height, width)
    stack = np.stack([o[0].mean(0).numpy() for o in outputs])
    spread = cv2.blur(stack.std(0).astype(np.float32), (side, side))
    half = side // 2
    spread[:half, :], spread[height - side + half + 1:, :] = -1, -1
    spread[:, :half], spread[:, width - side + half + 1:] = -1, -1
    cy, cx = np.unravel_index(int(np.argmax(spread)), spread.shape)
    return [int(cy - half), int(cx - half), side, side]


def crop_grid(panels, box):
    """One PNG image (uint8 BGR) of labelled crops: panels [(label, caption, BGR uint8 HR-sized image)]."""
    y, x, h, w = box
    zoom = max(1, math.ceil(PANEL / max(h, w)))
    tiles = []
    for label, caption, img in panels:
        crop = cv2.resize(img[y:y + h, x:x + w], (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST)
        band = np.full((44, crop.shape[1], 3), 255, np.uint8)
        cv2.putText(band, label[:28], (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(band, caption, (4, 37), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([crop, band], 0))
    per_row = 5
    rows = []
    for start in range(0, len(tiles), per_row):
        row = tiles[start:start + per_row]
        row += [np.full_like(tiles[0], 255)] * (per_row - len(row)) if len(tiles) > per_row else []
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in row], 1))
    return np.concatenate(rows, 0)


def plot_psnr_vs_bitops(table, datasets, path):
    """psnr_bitops_figure saved to ``path``; returns False if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = psnr_bitops_figure(table, datasets, plt)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def psnr_bitops_figure(table, datasets, plt):
    """PSNR vs BitOPs (linear x, in G), one panel per test set; each entry has its own marker and colour and is named
    in the legend (with its PSNR), so labels never collide, even where points coincide."""
    markers = 'osD^v<>Ph*X'
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        rows = [r for r in table if r['dataset'] == name]
        for i, r in enumerate(rows):
            label = f'{r["label"]}: {r["psnr"]:.2f} dB'
            if r['bitops'] is None:  # bicubic: no network
                ax.axhline(r['psnr'], linestyle='--', color='gray', linewidth=1, label=label)
                continue
            ax.scatter(r['bitops'] / 1e9, r['psnr'], s=36, marker=markers[i % len(markers)], label=label,
                       color=f'C{i % 10}', alpha=0.8)
        ax.set_xlim(left=0)
        ax.set_xlabel('GBitOPs (one LR input, see compare.md)')
        ax.set_ylabel('PSNR (dB, Y)')
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    return fig


def run(opt, size, device, log=print):
    """Compute the comparison of a checked option dict; returns the result dict (nothing written)."""
    entries, reference = check_compare(opt)
    scale = opt['scale']
    nets, missing = load_entries(entries, device, scale)
    labels = [BICUBIC] + [e['label'] for e in entries if e['label'] in nets]
    if reference not in nets:
        log(f'reference {reference!r} has no checkpoint yet: Δ and fidelity are taken against bicubic')
        reference = BICUBIC
    # window-based FP nets (BasicSR's SwinIR) need sides that are multiples of the window, as SwinIRModel pads them
    windows = {e['label']: e['network_g'].get('window_size') for e in entries
               if e['label'] in nets and e['network_g'].get('window_size')}
    costs = {}
    for entry in entries:
        label = entry['label']
        if label not in nets:
            continue
        window = windows.get(label)
        cost_size = tuple(-(-side // window) * window for side in size) if window else tuple(size)
        report = cost_report(_with_countable_attention(nets[label]), (input_channels(entry['network_g']), *cost_size))
        bits = sorted({(r['w_bit'], r['a_bit']) for r in report['layers'] if r['w_bit'] < 32})
        costs[label] = dict(bitops=report['total']['bitops'], storage_bytes=report['total']['storage_bits'] / 8,
                            bits='/'.join(f'w{w}a{a}' for w, a in bits) or 'FP32',
                            quantized_layers=len(quantized_layers(nets[label])))
    crops_opt = (opt.get('compare') or {}).get('crops') or []
    table, crops = [], []
    for key, ds_opt in opt['datasets'].items():
        dataset = build_dataset(dict(ds_opt, phase='val', scale=scale))
        name = ds_opt.get('name', key)
        sums = {label: {} for label in labels}
        fidelity = {label: [] for label in labels}
        for index in tqdm(range(len(dataset)), desc=f'compare {name}', unit='image', file=sys.stdout):
            data = dataset[index]
            image = osp.splitext(osp.basename(data['lq_path']))[0]
            lq = data['lq'].unsqueeze(0)
            gt = tensor2img(data['gt'].unsqueeze(0))
            outs = {BICUBIC: bicubic_upscale(lq, scale)}
            with torch.no_grad():
                for label, net in nets.items():
                    outs[label] = forward_padded(net, lq.to(device), windows.get(label), scale).cpu().clamp_(0, 1)
            images, per_image = {}, {}
            for label in labels:
                img = tensor2img(outs[label])
                images[label] = img
                for metric, metric_opt in opt['val']['metrics'].items():
                    value = float(calculate_metric(dict(img=img, img2=gt), dict(metric_opt)))
                    sums[label][metric] = sums[label].get(metric, 0.0) + value
                    per_image.setdefault(label, {})[metric] = value
                fidelity[label].append(fidelity_psnr(outs[label], outs[reference], scale))
            wanted = [c for c in crops_opt if c['image'] == image and c.get('dataset', name) == name]
            if not crops_opt and not crops:  # automatic: the first image of the first set
                wanted = [{'image': image, 'box': auto_box([outs[lb] for lb in labels], scale, gt.shape[:2])}]
            for crop in wanted:
                panels = [('HR', name, gt)] + [
                    (label, f'{per_image[label].get("psnr", float("nan")):.2f} dB', images[label]) for label in labels]
                crops.append(dict(dataset=name, image=image, box=list(crop['box']), grid=crop_grid(panels, crop['box'])))
        count = len(dataset)
        for label in labels:
            means = {m: v / count for m, v in sums[label].items()}
            cost = costs.get(label, dict(bitops=None, storage_bytes=None, bits='-', quantized_layers=0))
            finite = [f for f in fidelity[label] if math.isfinite(f)]
            table.append(dict(dataset=name, label=label, images=count, **means, bits=cost['bits'],
                              fidelity_db=(sum(finite) / len(finite)) if finite else None,  # None: identical
                              bitops=cost['bitops'], storage_bytes=cost['storage_bytes']))
        for row in [r for r in table if r['dataset'] == name]:
            ref = next(r for r in table if r['dataset'] == name and r['label'] == reference)
            row['delta_psnr'] = row.get('psnr', float('nan')) - ref.get('psnr', float('nan'))
    published = []
    spec = (opt.get('compare') or {}).get('published') or {}
    if spec.get('arch'):
        sets = [ds.get('name', k) for k, ds in opt['datasets'].items()]
        # the bit-widths the entries are at (FP included): published rows at other bit-widths are left out
        entry_bits = {32} | {e['network_g']['w_bit'] for e in entries if 'w_bit' in e['network_g']}
        for method, bits, values in published_rows(spec['arch'], scale, bits=entry_bits):
            for name in sets:
                if name in values:
                    psnr, ssim = values[name]
                    published.append(dict(dataset=name, method=method, bits=bits, psnr=psnr, ssim=ssim))
    return dict(name=opt['name'], scale=scale, reference=reference, size=list(size), rows=table, missing=missing,
                published=published, crops=crops, published_arch=spec.get('arch'))


def _with_countable_attention(net):
    """``net``, or for BasicSR's FP SwinIR a copy whose attention products are MatMul modules (FP), so that the cost
    report counts them as it does for ODMSwinIR."""
    attention = [m for m in net.modules() if type(m) is WindowAttention]
    if not attention:
        return net
    net = copy.deepcopy(net)
    for module in net.modules():
        if type(module) is WindowAttention:
            QuantWindowAttention.convert(module, None)
    return net


def _fmt(value, digits):
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.{digits}f}'


def format_markdown(result):
    h, w = result['size']
    lines = [f'# {result["name"]}: x{result["scale"]}, PSNR / SSIM on Y (BasicSR metrics); Δ and fidelity against '
             f'{result["reference"]!r}; BitOPs and storage for one {h}x{w} LR input', '',
             f'fidelity: PSNR (dB) of each output against the output of {result["reference"]} (RGB on 0-1, border '
             f'{result["scale"]}), the mean over the images: how far quantization moved the output, not its quality. '
             'Equal fidelity does not mean equal PSNR to HR: a change of the same size can point along the '
             'reference\'s own error or against it (docs/RESULTS.md, Demo).', '']
    for name in dict.fromkeys(r['dataset'] for r in result['rows']):
        rows = [r for r in result['rows'] if r['dataset'] == name]
        lines += [f'## {name} ({rows[0]["images"]} images)', '',
                  '| entry | bits | PSNR | SSIM | Δ PSNR | fidelity (dB) | GBitOPs | storage (KiB) |',
                  '|---|---|---|---|---|---|---|---|']
        for r in rows:
            lines.append(f'| {r["label"]} | {r["bits"]} | {_fmt(r.get("psnr"), 2)} | {_fmt(r.get("ssim"), 4)} | '
                         f'{r["delta_psnr"]:+.2f} | {_fmt(r["fidelity_db"], 2)} | '
                         f'{_fmt(None if r["bitops"] is None else r["bitops"] / 1e9, 1)} | '
                         f'{_fmt(None if r["storage_bytes"] is None else r["storage_bytes"] / 1024, 1)} |')
        published = [p for p in result['published'] if p['dataset'] == name]
        if published:
            lines += ['', f'Published ({result["published_arch"]} x{result["scale"]}, from the papers, **not measured '
                      'here**):', '', '| method | bits | PSNR | SSIM |', '|---|---|---|---|']
            lines += [f'| {p["method"]} | {p["bits"]} | {p["psnr"]:.2f} | {_fmt(p["ssim"], 3)} |' for p in published]
        lines.append('')
    if result['missing']:
        lines += ['## Not compared', ''] + [f'- {label}: {hint}' for label, hint in result['missing'].items()] + ['']
    return '\n'.join(lines)


def write_results(result, out_dir, log=print):
    """compare.md / .json / .csv, crops_*.png and psnr_vs_bitops.png in ``out_dir``; returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    md = osp.join(out_dir, 'compare.md')
    with open(md, 'w') as f:
        f.write(format_markdown(result))
    with open(osp.join(out_dir, 'compare.json'), 'w') as f:
        json.dump({k: v for k, v in result.items() if k != 'crops'} | {
            'crops': [{k: v for k, v in c.items() if k != 'grid'} for c in result['crops']]}, f, indent=2)
    with open(osp.join(out_dir, 'compare.csv'), 'w', newline='') as f:
        fields = ['dataset', 'label', 'bits', 'psnr', 'ssim', 'delta_psnr', 'fidelity_db', 'bitops', 'storage_bytes',
                  'images']
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(result['rows'])
    written += [md, osp.join(out_dir, 'compare.json'), osp.join(out_dir, 'compare.csv')]
    seen = {}
    for crop in result['crops']:
        stem = f'crops_{crop["dataset"]}_{crop["image"]}'
        seen[stem] = seen.get(stem, 0) + 1
        path = osp.join(out_dir, stem + (f'_{seen[stem]}' if seen[stem] > 1 else '') + '.png')  # boxes on one image
        grid = crop['grid']
        if (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all():
            grid = grid[..., 0]  # a grey photo: one channel, a third of the file
        cv2.imwrite(path, grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        written.append(path)
    plot = osp.join(out_dir, 'psnr_vs_bitops.png')
    if plot_psnr_vs_bitops(result['rows'], list(dict.fromkeys(r['dataset'] for r in result['rows'])), plot):
        written.append(plot)
    else:
        log('plot skipped: it needs matplotlib (pip install "odm-basicsr[plot]")')
    return written


def main(argv):
    parser = command_parser('compare', __doc__)
    parser.add_argument('-opt', required=True, help='compare option file (options/compare_<ARCH>_x<S>.yml)')
    add_size(parser, (180, 320), 'LR input for the BitOPs / storage columns (default 180x320, a 720x1280 x4 output)',
             parse_size)
    add_device(parser)
    add_out(parser, 'output folder (default results/<name>)')
    args = parser.parse_args(argv)
    opt = load_option_file(args.opt)
    try:
        device = resolve_device(args.device, opt)
    except InferError as err:
        raise SystemExit(f'error: {err}')
    try:
        result = run(opt, args.size, device)
        out_dir = args.out or osp.join('results', opt['name'])
        written = write_results(result, out_dir)
    except CompareError as err:
        raise SystemExit(f'error in {args.opt}: {err}')
    print('\n' + format_markdown(result))
    print('wrote: ' + ', '.join(written))

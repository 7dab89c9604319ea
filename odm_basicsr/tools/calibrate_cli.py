"""``basicsr calibrate -opt <training option file>``: calibration alone, as post-training quantization (PTQ).

Builds network_g, loads path.pretrain_network_g (the FP checkpoint), calibrates the activation ranges on
``train.calibration.dataset`` or ``datasets.train`` (train.calibration: num_batches, method, sequential), and writes
``experiments/<name>/models/net_g_calibrated.pth`` ({'params': state_dict} with the quantizer state): a checkpoint
that ``basicsr test`` and ``basicsr export`` accept, and a start for fine-tuning (copy it out of experiments/<name>/
first: a training run of the same name archives that folder). With a ``datasets.val`` block it then reports
PSNR / SSIM (val.metrics, as BasicSR computes them) of the FP and the quantized network, and the fidelity of the
quantized output to the FP output: PSNR in dB of the [0, 1] outputs, border of ``scale`` pixels cropped.

With the ``export`` extra it also writes, in a temporary folder, the integer ONNX file that ``basicsr export`` writes
by default, runs it in onnxruntime on the same images and reports it as one more row, with its parity to the
quantized network (PSNR of the whole outputs, as ``basicsr export`` reports it): the number the user deploys
(exact for a network built with ``integer_zero_point: true``; ``--no-export-check`` skips it).
"""
import json
import math
import os
import os.path as osp
import tempfile
import time

import torch
from basicsr.data import build_dataset
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img

from odm_basicsr.data.calibration import (calibration_batches, calibration_dataset_opt, calibration_settings,
                                          refine_settings)
from odm_basicsr.options_check import check_option_file
from odm_basicsr.quant import QUANTIZATION_KEY, calibrate, quantization_record, quantized_layers, set_quantization
from odm_basicsr.quant.refine import refine

from .cli_io import InferError, fidelity_psnr, integer_onnx_session, load_network, psnr, resolve_device, runtime_missing
from .cli_text import add_device, add_force_yml, add_out, command_parser


def evaluate(net, dataset_opt, metrics_opt, scale, device, session=None):
    """Mean metrics over a paired dataset for the quantized net and its FP function, and the fidelity between them;
    with an ONNX ``session`` of the network, the same for its output and its parity to the quantized net.

    Returns:
        dict: {'fp': {metric: value}, 'quantized': {metric: value}, 'fidelity_db': float, 'images': int}; with a
        session also 'onnx' ({metric: value}), 'onnx_fidelity_db' and 'onnx_parity_db' (one PSNR per image, dB).
    """
    dataset = build_dataset(dict(dataset_opt, phase='val', scale=scale))
    sums = {'fp': {}, 'quantized': {}, 'onnx': {}}
    fidelity, onnx_fidelity, parity = [], [], []
    net.eval()
    for index in range(len(dataset)):
        data = dataset[index]
        lq = data['lq'].unsqueeze(0).to(device)
        with torch.no_grad():
            set_quantization(net, False)
            fp_out = net(lq).cpu()
            set_quantization(net, True)
            q_out = net(lq).cpu()
        fidelity.append(fidelity_psnr(q_out, fp_out, scale))
        outputs = [('fp', fp_out), ('quantized', q_out)]
        if session is not None:
            onnx_out = torch.from_numpy(session.run(None, {'lr': lq.cpu().numpy()})[0])
            parity.append(psnr(onnx_out.numpy(), q_out.numpy()))
            onnx_fidelity.append(fidelity_psnr(onnx_out, fp_out, scale))
            outputs.append(('onnx', onnx_out))
        gt = tensor2img(data['gt'].unsqueeze(0))
        for key, out in outputs:
            img = tensor2img(out)
            for name, opt in (metrics_opt or {}).items():
                value = calculate_metric(dict(img=img, img2=gt), dict(opt))
                sums[key][name] = sums[key].get(name, 0.0) + float(value)
    count = len(dataset)
    result = {
        'fp': {k: v / count for k, v in sums['fp'].items()},
        'quantized': {k: v / count for k, v in sums['quantized'].items()},
        'fidelity_db': sum(fidelity) / max(count, 1),
        'images': count,
    }
    if session is not None:
        result.update(onnx={k: v / count for k, v in sums['onnx'].items()},
                      onnx_fidelity_db=sum(onnx_fidelity) / max(count, 1), onnx_parity_db=parity)
    return result


def export_session(net, opt, folder):
    """(onnxruntime session of ``basicsr export``'s default integer file for ``net``, None), or (None, the line that
    says why there is none)."""
    try:
        import onnx  # noqa: F401
        onnx_missing = False
    except ImportError:
        onnx_missing = True
    if onnx_missing or runtime_missing('onnxruntime'):
        return None, 'export check skipped: it needs onnx and onnxruntime: pip install "odm-basicsr[export]"'
    if not getattr(net, 'onnx_dynamic_size', True):
        return None, (f'export check skipped: {type(net).__name__} traces one input size; basicsr export checks its '
                      'file on that size')
    started = time.perf_counter()
    try:
        session = integer_onnx_session(net, opt['network_g'], opt.get('scale', 1), folder)
    except Exception as err:  # the checkpoint is written: report, as basicsr export would fail, and go on
        return None, f'export check failed, as basicsr export would: {type(err).__name__}: {err}'
    print(f'export check: wrote basicsr export\'s default integer ONNX file ({time.perf_counter() - started:.0f} s); '
          'running it in onnxruntime on the validation images')
    return session, None


def main(argv):
    parser = command_parser('calibrate', __doc__)
    parser.add_argument('-opt', required=True, help='training option file: network_g, path.pretrain_network_g, data')
    add_out(parser, 'output checkpoint (default experiments/<name>/models/net_g_calibrated.pth)')
    add_force_yml(parser)
    add_device(parser)
    parser.add_argument('--no-export-check', action='store_true',
                        help='skip the integer ONNX file (basicsr export\'s default) on the validation images')
    args = parser.parse_args(argv)
    forced = ['--force_yml'] + args.force_yml if args.force_yml else []
    opt = check_option_file(args.opt, is_train=True, argv=forced, calibrating=True,
                            sections=('name', 'model_type', 'scale', 'network_g', 'path', 'datasets', 'train'))
    if not isinstance(opt.get('network_g'), dict):
        raise SystemExit(f'error: {args.opt} has no network_g mapping.')
    if not (opt.get('path') or {}).get('pretrain_network_g'):
        raise SystemExit(f'error in {args.opt}: path.pretrain_network_g must name the FP checkpoint to calibrate.')
    data_key, _ = calibration_dataset_opt(opt)
    if data_key is None:
        raise SystemExit(f'error in {args.opt}: calibration needs data: a datasets.train block or a '
                         'train.calibration.dataset block.')

    net = load_network(opt, args.opt)
    if not quantized_layers(net):
        raise SystemExit(f'error: network_g of {args.opt} ({opt["network_g"]["type"]}) has no quantized layers: '
                         'use an ODM arch (ODMEDSR, ODMRDN, ODMMSRResNet) or ODMQuant.')
    try:
        device = resolve_device(args.device, opt)
    except InferError as err:
        raise SystemExit(f'error: {err}')
    net = net.to(device)
    torch.manual_seed(int(opt.get('manual_seed') or 0))
    offset_mode = net.quant_config.offsets if hasattr(net, 'quant_config') else 'none'
    num_batches, settings = calibration_settings(opt, offset_mode)
    method = settings['method']
    batches = calibration_batches(opt, num_batches, device)
    print(f'calibrating {len(quantized_layers(net))} quantized layers of {type(net).__name__} on {len(batches)} '
          f'batches of {data_key} (method {method}{", sequential" if settings["sequential"] else ""})')
    refine_config = refine_settings(opt, default=True)
    val_opt = (opt.get('datasets') or {}).get('val')
    metrics_opt = (opt.get('val') or {}).get('metrics') or {}
    try:
        report = calibrate(net, batches, offset_mode, progress=True, **settings)
        print_choice(report)
        calibrated = None
        if refine_config is not None:
            if isinstance(val_opt, dict):  # the held-out numbers before refinement, for the report
                calibrated = evaluate(net, val_opt, metrics_opt, opt.get('scale', 1), device)
            refined = refine(net, batches, refine_config, seed=int(opt.get('manual_seed') or 0))
            print(f'refine: {refined["iters"]} iterations ({refined["seconds"]:.0f} s), fidelity to FP on the '
                  f'calibration crops {_db(refined["mse_before"]):.2f} -> {_db(refined["mse_after"]):.2f} dB '
                  '(train.calibration.refine: false turns it off)')
            report['refine'] = dict(refined, config=vars(refine_config))
    except KeyboardInterrupt:
        raise SystemExit('interrupted: nothing was written.') from None
    summary = write_calibrated(net, opt, args, report, method, batches)

    if isinstance(val_opt, dict):
        with tempfile.TemporaryDirectory() as tmp:
            session, skipped = (None, None) if args.no_export_check else export_session(net, opt, tmp)
            if skipped:
                print(skipped)
            result = evaluate(net, val_opt, metrics_opt, opt.get('scale', 1), device, session)
        summary['validation'] = dict(result, dataset=val_opt.get('name'))
        rows = [('FP', result['fp'], None)]
        if calibrated is not None:
            summary['validation_before_refine'] = calibrated
            rows.append(('quantized (calibrated)', calibrated['quantized'], calibrated['fidelity_db']))
        rows.append((f'quantized ({"refined" if calibrated is not None else "calibrated"})', result['quantized'],
                     result['fidelity_db']))
        if session is not None:
            rows.append(('integer ONNX (basicsr export)', result['onnx'], result['onnx_fidelity_db']))
        print(f'validation on {val_opt.get("name")} ({result["images"]} images):')
        print('| network | ' + ' | '.join(metrics_opt) + ' | fidelity to FP (dB) |')
        print('|---|' + '---|' * (len(metrics_opt) + 1))
        for label, values, fid in rows:
            cells = ' | '.join(f'{values[m]:.4f}' for m in metrics_opt)
            print(f'| {label} | {cells} | {"-" if fid is None else f"{fid:.2f}"} |')
        if session is not None:
            print(export_parity_line(result['onnx_parity_db'], net))
    summary_path = osp.join(osp.dirname(summary['checkpoint']), 'calibration.json')
    with open(summary_path, 'w') as f:
        json.dump(summary, f, indent=2)
    print(f'wrote {summary_path}')


def export_parity_line(parity_db, net):
    """The integer ONNX file against the quantized network, and what to do when they differ."""
    exact = all(layer.act_quantizer.integer_zero_point for _, layer in quantized_layers(net))
    values = [v for v in parity_db if math.isfinite(v)]
    if not values:
        return 'integer ONNX vs this network: bit-identical on every validation image'
    line = (f'integer ONNX vs this network: PSNR mean {sum(values) / len(values):.1f} dB, min {min(values):.1f} dB '
            f'({len(parity_db) - len(values)} of {len(parity_db)} images bit-identical)')
    if not exact:
        line += ('. The paper\'s free activation grids round differently in the integer kernels; for an exact export, '
                 'calibrate with network_g.integer_zero_point: true (docs/EXPORT.md)')
    return line


def _db(mse):
    return float('inf') if mse <= 0 else 10 * math.log10(1 / mse)


def print_choice(report):
    """What ``auto`` chose, in two lines (nothing for a single method)."""
    if 'chosen' in report:
        errors = ', '.join(f'{m} {e:.3g}' for m, e in report['candidates'].items())
        print(f'auto calibration chose {report["chosen"]} (output MSE vs FP on the calibration batches: {errors})')
        switched = [f'{n}: {m}' for n, m in report['per_layer'].items() if m != report['chosen']]
        listed = ', '.join(switched[:4]) + (f', ... ({len(switched) - 4} more in calibration.json)'
                                            if len(switched) > 4 else '')
        print(f'per-layer choice ({report["per_layer_judge"]} judge): {len(switched)} of {len(report["per_layer"])} '
              'layers took another method\'s range' + (f' ({listed})' if switched else '')
              + f'; output MSE {report["refined_error"]:.3g}')


def write_calibrated(net, opt, args, report, method, batches):
    """The calibrated checkpoint (atomically) and the summary dict of calibration.json."""
    out = args.out or osp.join('experiments', str(opt['name']), 'models', 'net_g_calibrated.pth')
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({'params': state, QUANTIZATION_KEY: quantization_record(net)}, out + '.tmp')
    os.replace(out + '.tmp', out)
    print(f'wrote {out} (params: network weights and quantizer state)')
    summary = {'option_file': args.opt, 'checkpoint': out, 'method': method, 'chosen': report.get('chosen', method),
               'candidates': report.get('candidates'), 'per_layer': report.get('per_layer'),
               'refined_error': report.get('refined_error'), 'batches': len(batches),
               'offsets': [list(o) for o in report['offsets']],
               'ranges': {name: list(r) for name, r in report['ranges'].items()}}

    if 'refine' in report:
        summary['refine'] = report['refine']
    return summary

"""Calibration time against depth, and the per-layer judge of ``auto``: its block's output or the network's.

Two parts, each printing a markdown table and writing JSON:

- ``--part depth``: RRDBNet with the weights of the RealSR DF2K x4 network (trained by others; fetched by the
  shared tools' ``third_party_weights.py``, beside the checkout), cut to its first 6, 12 and 23 blocks (23: all), as
  ``basicsr calibrate`` quantizes it by default for the issue's setting: ODMQuant, scope all, per-channel weights,
  ``method: auto``, 16 LR crops of 24x24 in 4 batches of 4 (``num_batches: 4``) from the demo LMDB. Times are
  calibration alone (the ``calibrate`` call), on this machine; fidelity is to the FP output of the same cut
  network on the 3 held-out demo photos (LR centre crops of at most 96x96), not used for calibration.
- ``--part demo``: the four demo FP networks this project trained (benchmarks/ptq_fidelity.py's ARCHS, body scope,
  per-layer weights, 8 calibration batches), w8a8 / w4a4 / w2a2, calibration seeds 0 and 1: held-out fidelity of
  ``auto`` with each judge. A SMALL PROXY (networks trained on the demo photos).

- ``--part realsr``: both RealSR networks whole (23 blocks), w8a8 / w4a4 / w2a2, the depth part's setting: held-out
  fidelity of each rule (min/max, P1/P99, mse), of ``auto`` and of ``auto`` + ``refine`` (the defaults of
  ``basicsr calibrate``), with the times.

- ``--part demo_refine``: the demo FP networks (a SMALL PROXY), w4a4 / w2a2, seeds 0 and 1: fidelity and PSNR-Y to HR
  on the held-out photos after auto, and after auto + refine.

Run:  .venv/bin/python benchmarks/calibration_depth.py --part depth --weights DIR [--json PATH]
      .venv/bin/python benchmarks/calibration_depth.py --part realsr --weights DIR [--bits 8 4 2] [--nets ...]
      .venv/bin/python benchmarks/calibration_depth.py --part demo [--json PATH]
"""
import argparse
import os.path as osp
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import REPO, demo_data, machine_description, markdown_table, write_json  # noqa: E402

from basicsr.archs.rrdbnet_arch import RRDBNet  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402

from odm_basicsr.data.calibration import calibration_batches  # noqa: E402
from odm_basicsr.quant import calibrate, set_quantization  # noqa: E402
from odm_basicsr.tools.cli_io import fidelity_psnr  # noqa: E402
from odm_basicsr.utils.safe_load import load_network_state  # noqa: E402

SCALE = 4
REALSR = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_grow_ch=32, scale=SCALE)


def cut_rrdbnet(state, blocks):
    """The RealSR state dict with only its first ``blocks`` RRDB blocks (the rest of the network unchanged)."""
    return {k: v for k, v in state.items() if not k.startswith('body.') or int(k.split('.')[1]) < blocks}


def data_options(paths, gt_size, batch_size, seed):
    return {'manual_seed': seed, 'scale': SCALE, 'datasets': {'train': dict(
        name='demo', type='PairedImageDataset', dataroot_gt=paths['train_gt'], dataroot_lq=paths['train_lq'],
        io_backend={'type': 'lmdb'}, gt_size=gt_size, use_hflip=True, use_rot=True, batch_size_per_gpu=batch_size,
        scale=SCALE)}}


def heldout_crops(paths, size=96):
    from ptq_fidelity import heldout
    crops = []
    for lq, _ in heldout(paths):
        h, w = lq.shape[-2:]
        y, x = max((h - size) // 2, 0), max((w - size) // 2, 0)
        crops.append(lq[..., y:y + size, x:x + size])
    return crops


def fidelity(net, fp_outs, images):
    with torch.no_grad():
        return sum(fidelity_psnr(net(lq), f, SCALE) for lq, f in zip(images, fp_outs)) / len(images)


def depth_part(args):
    state = load_network_state(osp.join(args.weights, 'realsr_df2k_x4.pth'))
    paths = demo_data()
    batches = calibration_batches(data_options(paths, 24 * SCALE, 4, 0), 4, torch.device('cpu'))
    crops = sum(b.shape[0] for b in batches)
    images = heldout_crops(paths)
    rows, results = [], []
    for blocks in args.depths:
        cut = cut_rrdbnet(state, blocks)
        fp = RRDBNet(num_block=blocks, **REALSR).eval()
        fp.load_state_dict(cut, strict=True)
        with torch.no_grad():
            fp_outs = [fp(lq) for lq in images]
        for bits in args.bits:
            for judge in args.judges:
                if judge == 'network' and blocks > args.network_judge_max_blocks:
                    continue
                net = ARCH_REGISTRY.get('ODMQuant')(arch=dict(type='RRDBNet', num_block=blocks, **REALSR), w_bit=bits,
                                                    a_bit=bits, scope='all', weight_granularity='channel')
                net.load_state_dict(cut, strict=True)
                started = time.perf_counter()
                report = calibrate(net.eval(), batches, progress=False, per_layer_judge=judge)
                seconds = time.perf_counter() - started
                db = fidelity(net, fp_outs, images)
                switched = sum(m != report['chosen'] for m in report['per_layer'].values())
                results.append(dict(blocks=blocks, bits=bits, judge=judge, seconds=seconds,
                                    seconds_per_crop=seconds / crops, layers=len(report['per_layer']),
                                    chosen=report['chosen'], switched_layers=switched, fidelity_db=db))
                rows.append([blocks, len(report['per_layer']), f'w{bits}a{bits}', judge, f'{seconds:.1f}',
                             f'{seconds / crops:.2f}', f'{report["chosen"]}, {switched} switched', f'{db:.2f}'])
                print(markdown_table(['blocks', 'layers', 'bits', 'judge', 'seconds', 's / crop', 'auto', 'fidelity dB'],
                                     rows[-1:]).splitlines()[-1], flush=True)
    print(markdown_table(['blocks', 'layers', 'bits', 'judge', 'seconds', 's / crop', 'auto', 'fidelity dB'], rows))
    return dict(part='depth', crops=crops, crop_lr=24, results=results)


def realsr_part(args):
    """PTQ of both RealSR networks (23 blocks) as basicsr calibrate does by default: every rule's fidelity from one
    auto calibration (its candidates' ranges), then auto's, then after refine (the default RefineConfig)."""
    from odm_basicsr.quant import quantized_layers
    from odm_basicsr.quant.refine import RefineConfig, refine
    paths = demo_data()
    batches = calibration_batches(data_options(paths, 24 * SCALE, 4, 0), 4, torch.device('cpu'))
    images = heldout_crops(paths)
    rows, results = [], []
    for weights in args.nets:
        state = load_network_state(osp.join(args.weights, f'{weights}.pth'))
        fp = RRDBNet(num_block=23, **REALSR).eval()
        fp.load_state_dict(state, strict=True)
        with torch.no_grad():
            fp_outs = [fp(lq) for lq in images]
        for bits in args.bits:
            net = ARCH_REGISTRY.get('ODMQuant')(arch=dict(type='RRDBNet', num_block=23, **REALSR), w_bit=bits,
                                                a_bit=bits, scope='all', weight_granularity='channel')
            net.load_state_dict(state, strict=True)
            started = time.perf_counter()
            report = calibrate(net.eval(), batches, progress=False)
            seconds = time.perf_counter() - started
            layers = dict(quantized_layers(net))
            cell = {}
            for method, ranges in list(report['candidate_ranges'].items()) + [('auto', report['ranges'])]:
                for name, (low, high) in ranges.items():
                    layers[name].act_quantizer.set_range(low, high)
                cell[method] = fidelity(net, fp_outs, images)
            config = RefineConfig(**(dict(iters=args.refine_iters) if args.refine_iters else {}))
            refined = refine(net, batches, config, seed=0, progress=False)
            cell['refine'] = fidelity(net, fp_outs, images)
            results.append(dict(net=weights, bits=bits, calibrate_seconds=seconds, refine_seconds=refined['seconds'],
                                refine=vars(config), judge=report['per_layer_judge'], chosen=report['chosen'],
                                fidelity_db=cell))
            rows.append([weights, f'w{bits}a{bits}'] + [f'{cell[m]:.2f}' for m in ('minmax', 'percentile', 'mse')]
                        + [f'{cell["auto"]:.2f} ({seconds:.0f} s)', f'{cell["refine"]:.2f} (+{refined["seconds"]:.0f} s)'])
            print(' | '.join(rows[-1]), flush=True)
    print(markdown_table(['network', 'bits', 'minmax', 'percentile', 'mse', 'auto (calibration time)',
                          'auto + refine (its time)'], rows))
    return dict(part='realsr', crops=sum(b.shape[0] for b in batches), crop_lr=24, results=results)


def demo_fp(arch):
    """(network_g of the demo FP ``arch``, its state dict, the FP network in eval mode)."""
    from ptq_fidelity import ARCHS, PRETRAINED
    net_opt, ckpt = ARCHS[arch]
    state = load_network_state(osp.join(PRETRAINED, ckpt))
    fp_opt = dict(net_opt)
    fp = ARCH_REGISTRY.get(fp_opt.pop('type'))(**fp_opt).eval()
    fp.load_state_dict(state, strict=True)
    return net_opt, state, fp


def demo_cases(args):
    """(arch, its network_g, FP state dict, held-out images, FP outputs on them, bits, seed, calibration batches) for
    every demo arch, bit-width and calibration seed of ``args`` (8 batches of 4 HR-128 crops)."""
    from ptq_fidelity import heldout, outputs
    paths = demo_data()
    images = heldout(paths)
    for arch in args.archs:
        net_opt, state, fp = demo_fp(arch)
        fp_outs = outputs(fp, images)
        for bits in args.bits:
            for seed in args.seeds:
                batches = calibration_batches(data_options(paths, 128, 4, seed), 8, torch.device('cpu'))
                yield arch, net_opt, state, images, fp_outs, bits, seed, batches


def demo_refine_part(args):
    """The demo EDSR (PSNR to HR is meaningful there): auto, then auto + refine (the defaults of basicsr calibrate),
    per calibration seed; fidelity to FP and PSNR (Y, border 4) to HR on the held-out photos."""
    from ptq_fidelity import outputs, scores

    from odm_basicsr.quant.refine import RefineConfig, refine
    rows, results = [], []
    for arch, net_opt, state, images, fp_outs, bits, seed, batches in demo_cases(args):
        fp_psnr = scores(fp_outs, fp_outs, images)[1]
        net = ARCH_REGISTRY.get('ODMQuant')(arch=net_opt, w_bit=bits, a_bit=bits)
        net.load_state_dict(state, strict=True)
        calibrate(net.eval(), batches, progress=False)
        calibrated = scores(outputs(net, images), fp_outs, images)
        refined_report = refine(net, batches, RefineConfig(), seed=seed, progress=False)
        refined = scores(outputs(net, images), fp_outs, images)
        results.append(dict(arch=arch, bits=bits, seed=seed, fp_psnr_y=fp_psnr, calibrated=calibrated,
                            refined=refined, refine_seconds=refined_report['seconds']))
        rows.append([arch, f'w{bits}a{bits}', seed, f'{calibrated[0]:.2f} / {calibrated[1]:.2f}',
                     f'{refined[0]:.2f} / {refined[1]:.2f}'])
        print(' | '.join(map(str, rows[-1])), flush=True)
    print(markdown_table(['arch', 'bits', 'seed', 'auto: fidelity / PSNR-Y', 'auto + refine: fidelity / PSNR-Y'], rows))
    return dict(part='demo_refine', results=results)


def demo_part(args):
    from ptq_fidelity import outputs
    rows, results = [], []
    for arch, net_opt, state, images, fp_outs, bits, seed, batches in demo_cases(args):
        cell = {}
        for judge in args.judges:
            net = ARCH_REGISTRY.get('ODMQuant')(arch=net_opt, w_bit=bits, a_bit=bits)
            net.load_state_dict(state, strict=True)
            started = time.perf_counter()
            report = calibrate(net.eval(), batches, progress=False, per_layer_judge=judge)
            seconds = time.perf_counter() - started
            set_quantization(net, True)
            db = sum(fidelity_psnr(o, f, SCALE) for o, f in zip(outputs(net, images), fp_outs)) / len(images)
            cell[judge] = (db, seconds)
            results.append(dict(arch=arch, bits=bits, seed=seed, judge=judge, seconds=seconds,
                                chosen=report['chosen'], fidelity_db=db,
                                switched_layers=sum(m != report['chosen'] for m in report['per_layer'].values())))
        rows.append([arch, f'w{bits}a{bits}', seed] + [f'{cell[j][0]:.2f} ({cell[j][1]:.1f} s)' for j in args.judges])
        print(' | '.join(map(str, rows[-1])), flush=True)
    print(markdown_table(['arch', 'bits', 'seed'] + [f'auto, {j} judge: fidelity dB (time)' for j in args.judges], rows))
    return dict(part='demo', results=results)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--part', choices=('depth', 'demo', 'realsr', 'demo_refine'), required=True)
    parser.add_argument('--weights', help='depth: the folder third_party_weights.py wrote')
    parser.add_argument('--depths', nargs='+', type=int, default=[6, 12, 23])
    parser.add_argument('--bits', nargs='+', type=int, default=None, help='default: 8 4 (depth), 8 4 2 (demo)')
    parser.add_argument('--judges', nargs='+', default=None, choices=('block', 'network'),
                        help='default: block (depth), network block (demo)')
    parser.add_argument('--network-judge-max-blocks', type=int, default=6,
                        help='depth: run the network judge only up to this depth (it is quadratic)')
    parser.add_argument('--archs', nargs='+', default=['EDSR', 'RRDBNet', 'SRVGGNetCompact', 'RCAN'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    parser.add_argument('--nets', nargs='+', default=['realsr_df2k_x4', 'realsr_df2k_jpeg_x4'])
    parser.add_argument('--refine-iters', type=int, default=None, help='realsr: default RefineConfig().iters')
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    if args.part == 'demo_refine':
        args.bits = args.bits or [4, 2]
        payload = demo_refine_part(args)
    elif args.part == 'realsr':
        if not args.weights:
            parser.error('--part realsr needs --weights DIR (the folder third_party_weights.py of the shared tools wrote)')
        args.bits = args.bits or [8, 4, 2]
        payload = realsr_part(args)
    elif args.part == 'depth':
        if not args.weights:
            parser.error('--part depth needs --weights DIR (the folder third_party_weights.py of the shared tools wrote)')
        args.bits = args.bits or [8, 4]
        args.judges = args.judges or ['block']
        payload = depth_part(args)
    else:
        args.bits = args.bits or [8, 4, 2]
        args.judges = args.judges or ['network', 'block']
        payload = demo_part(args)
    payload.update(machine=machine_description(torch.device('cpu')), command=' '.join(sys.argv))
    write_json(args.json or osp.join(REPO, 'benchmarks', 'results', f'calibration_{args.part}.json'), payload)


if __name__ == '__main__':
    main()

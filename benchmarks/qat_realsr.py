"""QAT of a network trained by others, from its refined PTQ: L1 to HR, the FP teacher alone, teacher + ODM v2.

The RealSR DF2K x4 RRDBNet (23 blocks, GAN-trained by others; the shared tools' ``third_party_weights.py`` fetches
it), or with ``--network df2k_jpeg`` its DF2K_JPEG sibling, at w4a4, as the preset options/distill/train_QAT_teacher_RealSR_RRDBNet_x4_w4a4.yml quantizes it: ODMQuant,
scope all, per-channel weights, weight_clip max.

1. PTQ once: ``calibrate`` (``auto``, 16 LR crops of 24x24 from the demo LMDB, seed 0) and ``refine`` (its defaults),
   cached as a checkpoint with its quantizer state (ODMModel then skips calibration).
2. From that checkpoint, per variant and seed, ``--iters`` steps of ODMModel (BasicSR's model class, built with
   ``build_model`` from the preset's options; batch ``--batch`` of HR ``--gt-size`` crops from the demo LMDB):
   - ``L1 to HR``: the preset with ``pixel_opt`` L1 instead of the teacher;
   - ``teacher``: the preset (``distill_opt`` L1 to the frozen FP copy; no pixel loss);
   - ``teacher + ODM v2``: the preset plus v2's mismatch regularizer (options/v2's ``odm_opt``) and cosine cooperation;
     the teacher's gradient is the task gradient. weight_clip stays max (the PTQ start is shared), so v2's WCC is out.
3. Fidelity to the FP network (dB) and PSNR-Y to HR (border 4) on the 3 held-out demo photos, whole, not used for
   calibration or training. The network is GAN-trained: fidelity is the measure; PSNR to HR is reported because
   L1 to HR moves the network toward a PSNR network, which is exactly what a GAN network's owner does not want.

A PROXY of the setting: the demo photos (not DIV2K), a few hundred steps on 2 CPU cores (not 20k on a GPU).

Run:  .venv/bin/python benchmarks/qat_realsr.py --weights DIR [--network df2k|df2k_jpeg] [--iters 200] [--seeds 0 1]
      [--json PATH]
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import REPO, demo_data, load_yaml, machine_description, markdown_table, write_json  # noqa: E402

from basicsr.archs.rrdbnet_arch import RRDBNet  # noqa: E402
from basicsr.data import build_dataset  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402

from odm_basicsr.data.calibration import calibration_batches  # noqa: E402
from odm_basicsr.quant import QUANTIZATION_KEY, calibrate, quantization_record  # noqa: E402
from odm_basicsr.quant.refine import RefineConfig, refine  # noqa: E402
from odm_basicsr.utils.safe_load import load_network_state  # noqa: E402
from ptq_fidelity import heldout, outputs, scores  # noqa: E402
from calibration_depth import REALSR, SCALE, data_options  # noqa: E402

PRESET = 'options/distill/train_QAT_teacher_RealSR_RRDBNet_x4_w4a4.yml'
V2_PRESET = 'options/v2/train_ODMv2_EDSR_x4_w4a4.yml'
VARIANTS = ('L1 to HR', 'teacher', 'teacher + ODM v2')
NETWORKS = {'df2k': 'realsr_df2k_x4', 'df2k_jpeg': 'realsr_df2k_jpeg_x4'}  # --network: the state dict's file name


def ptq_checkpoint(args, paths, bits):
    """The refined PTQ checkpoint (made once, then cached): its path and the PTQ's seconds."""
    path = osp.join(args.cache, f'{NETWORKS[args.network]}_w{bits}a{bits}_auto_refine.pth')
    if osp.exists(path):
        return path, None
    state = load_network_state(osp.join(args.weights, f'{NETWORKS[args.network]}.pth'))
    net = ARCH_REGISTRY.get('ODMQuant')(arch=dict(type='RRDBNet', num_block=23, **REALSR), w_bit=bits, a_bit=bits,
                                        scope='all', weight_granularity='channel')
    net.load_state_dict(state, strict=True)
    batches = calibration_batches(data_options(paths, 24 * SCALE, 4, 0), 4, torch.device('cpu'))
    started = time.perf_counter()
    calibrate(net.eval(), batches, progress=False)
    refine(net, batches, RefineConfig(), seed=0, progress=False)
    seconds = time.perf_counter() - started
    os.makedirs(args.cache, exist_ok=True)
    torch.save({'params': {k: v.detach() for k, v in net.state_dict().items()},
                QUANTIZATION_KEY: quantization_record(net)}, path + '.tmp')
    os.replace(path + '.tmp', path)
    return path, seconds


def variant_options(variant, args, paths, checkpoint, seed, bits):
    opt = load_yaml(PRESET)
    opt['name'] = f'bench_qat_realsr_{variant.replace(" ", "_").replace("+", "")}_s{seed}'
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=0, manual_seed=seed, auto_resume=False)
    opt['network_g'].update(w_bit=bits, a_bit=bits)
    opt['path'] = {'pretrain_network_g': checkpoint, 'strict_load_g': True, 'resume_state': None}
    train = opt['train']
    train['total_iter'] = args.iters
    if args.lr:
        train['optim_g']['lr'] = args.lr
    if variant == 'L1 to HR':
        del train['distill_opt']
        train['pixel_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
    elif variant == 'teacher + ODM v2':
        v2 = load_yaml(V2_PRESET)['train']
        train['odm_opt'] = copy.deepcopy(v2['odm_opt'])
        train['cooperation'] = v2['cooperation']
    data = opt['datasets']['train']
    data.update(dataroot_gt=paths['train_gt'], dataroot_lq=paths['train_lq'], gt_size=args.gt_size,
                batch_size_per_gpu=args.batch, num_worker_per_gpu=0, dataset_enlarge_ratio=1, phase='train',
                scale=SCALE)
    return opt


def train(opt, seed):
    """ODMModel for opt['train']['total_iter'] steps on batches drawn with ``seed``: the trained model, step seconds."""
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = build_model(opt)
    dataset = build_dataset(dict(opt['datasets']['train']))
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=opt['datasets']['train']['batch_size_per_gpu'],
                                         shuffle=True, drop_last=True, generator=generator)
    step, times = 0, []
    while step < opt['train']['total_iter']:
        for batch in loader:
            step += 1
            started = time.perf_counter()
            model.update_learning_rate(step, warmup_iter=-1)
            model.feed_data(batch)
            model.optimize_parameters(step)
            times.append(time.perf_counter() - started)
            if step % 50 == 0:
                print(f'  step {step}: ' + ', '.join(f'{k} {v:.4g}' for k, v in model.get_current_log().items()
                                                      if k.startswith('l_')), flush=True)
            if step >= opt['train']['total_iter']:
                break
    return model, statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--weights', required=True, help='the folder third_party_weights.py of the shared tools wrote')
    parser.add_argument('--network', choices=sorted(NETWORKS), default='df2k', help='which RealSR net (default df2k)')
    parser.add_argument('--bits', type=int, default=4)
    parser.add_argument('--iters', type=int, default=200)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--gt-size', type=int, default=96)
    parser.add_argument('--lr', type=float, default=None, help="default: the preset's optim_g.lr")
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--cache', default=osp.join(REPO, 'experiments', 'bench_cache'))
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'qat_realsr_w4a4.json'))
    args = parser.parse_args()
    paths = demo_data()
    images = heldout(paths)
    fp = RRDBNet(num_block=23, **REALSR).eval()
    fp.load_state_dict(load_network_state(osp.join(args.weights, f'{NETWORKS[args.network]}.pth')), strict=True)
    fp_outs = outputs(fp, images)
    fp_psnr = scores(fp_outs, fp_outs, images)[1]
    checkpoint, ptq_seconds = ptq_checkpoint(args, paths, args.bits)
    ptq = ARCH_REGISTRY.get('ODMQuant')(arch=dict(type='RRDBNet', num_block=23, **REALSR), w_bit=args.bits,
                                        a_bit=args.bits, scope='all', weight_granularity='channel')
    ptq.load_state_dict(load_network_state(checkpoint), strict=True)
    start = scores(outputs(ptq.eval(), images), fp_outs, images)
    print(f'FP PSNR-Y {fp_psnr:.2f} dB; PTQ (auto + refine) fidelity {start[0]:.2f} dB, PSNR-Y {start[1]:.2f} dB',
          flush=True)
    results, rows = [], [['FP', '-', '-', f'{fp_psnr:.2f}', '-'],
                         ['PTQ auto + refine (start)', '-', f'{start[0]:.2f}', f'{start[1]:.2f}', '-']]
    for variant in args.variants:
        for seed in args.seeds:
            opt = variant_options(variant, args, paths, checkpoint, seed, args.bits)
            print(f'{variant}, seed {seed}:', flush=True)
            model, step_seconds = train(opt, seed)
            end = scores(outputs(model.net_g.eval(), images), fp_outs, images)
            results.append(dict(variant=variant, seed=seed, fidelity_db=end[0], psnr_y=end[1],
                                step_seconds=step_seconds))
            rows.append([variant, seed, f'{end[0]:.2f}', f'{end[1]:.2f}', f'{step_seconds:.2f}'])
            print(' | '.join(map(str, rows[-1])), flush=True)
    print(markdown_table(['variant', 'seed', 'fidelity dB', 'PSNR-Y dB', 's / step'], rows))
    summary = []
    for variant in args.variants:
        runs = [r for r in results if r['variant'] == variant]
        fid = [r['fidelity_db'] for r in runs]
        psnr = [r['psnr_y'] for r in runs]
        summary.append(dict(variant=variant, fidelity_mean=statistics.mean(fid), fidelity_spread=max(fid) - min(fid),
                            psnr_mean=statistics.mean(psnr), psnr_spread=max(psnr) - min(psnr)))
    print(markdown_table(['variant', 'fidelity dB (mean, spread)', 'PSNR-Y dB (mean, spread)'],
                         [[s['variant'], f'{s["fidelity_mean"]:.2f} ({s["fidelity_spread"]:.2f})',
                           f'{s["psnr_mean"]:.2f} ({s["psnr_spread"]:.2f})'] for s in summary]))
    write_json(args.json, dict(network=NETWORKS[args.network], bits=args.bits, iters=args.iters, batch=args.batch, gt_size=args.gt_size,
                               lr=args.lr, fp_psnr_y=fp_psnr, ptq_fidelity_db=start[0], ptq_psnr_y=start[1],
                               ptq_seconds=ptq_seconds, results=results, summary=summary,
                               machine=machine_description(torch.device('cpu')), command=' '.join(sys.argv)))


if __name__ == '__main__':
    main()

"""Proxy accuracy: what ODM gains over plain QAT, what each part contributes, and how strong the regularizer is.

A SMALL PROXY, not the paper's setting. Model: EDSR with 32 features and 8 residual blocks, x4 (the demo's FP
checkpoint, odm_basicsr/pretrained/EDSR_demo_x4_f32b8_FP.pth, trained by options/demo/train_FP_EDSR_demo_x4.yml).
Data: the demo photos (basicsr prepare demo): 10 skimage photos for training, chelsea/camera/brick held out.
Every variant starts from that FP checkpoint and is fine-tuned with the same iterations, data order and seed, at
w4a4 and w2a2, from the demo option files (options/demo/train_QAT_EDSR_demo_x4_w{b}a{b}.yml) with only the
quantizer and regularizer keys changed. Training runs in this process through BasicSR's build_model /
optimize_parameters; evaluation is BasicSR's validation (calculate_psnr / calculate_ssim, Y channel, crop 4).

Metrics: PSNR/SSIM against HR (the paper's metric) and PSNR against the FP model's own output (fidelity).
Logged over training: reg_grad_ratio = lambda |g_reg| / |g_R| and the cooperation statistic.

    python benchmarks/proxy_accuracy.py --quick     # 1 seed, short fine-tunes (<= 20 min on 2 CPU cores)
    python benchmarks/proxy_accuracy.py             # full: 2 seeds, longer fine-tunes

``--arch SwinIR``: the small SwinIR of the PTQ table (embed 30, 2 RSTBs x 2 blocks, window 8, x4) through ODMSwinIR,
the paper's scope (the Linear layers of the Swin blocks), features on 0-1. Its FP checkpoint is not shipped (0.82 dB
over bicubic, under the 1 dB bar of a shipped proxy): basicsr train -opt options/ptq/train_FP_SwinIR_demo_x4.yml
makes it (about 8 min on 2 CPU cores). Offsets are conv-only, so the ODM v1 variants do not apply to it.

``--device cuda``: the same runs on a GPU (``--batch-size`` / ``--gt-size`` make the larger version that
``benchmarks/gpu_proxy.sh`` runs; ``--compile`` turns on train.compile, off by default because every run builds a
new model and would compile again). The JSON is rewritten after every run, so a run cut short keeps what it finished.

``--arch SRVGGNetCompact``: the second proxy, the demo SRVGGNetCompact (32 features, 8 convs, PReLU, features on
0-1 pixels where EDSR's are on 0-255; trained for the PTQ table, odm_basicsr/pretrained/
SRVGGNetCompact_demo_x4_f32c8_FP.pth) quantized in place by ODMQuant with its body scope, with the same recipe,
data, seeds and variant keys.
"""
import argparse
import copy
import math
import os.path as osp
import random
import statistics
import time

import numpy as np
import torch

from common import REPO, SWINIR_FP_RECIPE, demo_data, load_yaml, markdown_table, swinir_fp_network, write_json
from odm_basicsr.tools.option_grid import feature_scale_factor

FP_CHECKPOINT = osp.join(REPO, 'odm_basicsr', 'pretrained', 'EDSR_demo_x4_f32b8_FP.pth')
# the second proxy arch: the demo SRVGGNetCompact of the PTQ proxy (the best trained of its FP
# checkpoints), quantized by ODMQuant with that arch's body scope
PROXY_ARCHS = {
    'EDSR': {'checkpoint': FP_CHECKPOINT, 'label': 'EDSR 32x8', 'ptq_file': None, 'feature_range': 255},
    'SRVGGNetCompact': {
        'checkpoint': osp.join(REPO, 'odm_basicsr', 'pretrained', 'SRVGGNetCompact_demo_x4_f32c8_FP.pth'),
        'label': 'SRVGGNetCompact 32x8', 'ptq_file': 'options/ptq/ptq_SRVGGNetCompact_demo_x4_w4a4.yml',
        'feature_range': 1},
    # the small SwinIR of the PTQ table through ODMSwinIR (the paper's scope: qkv, proj, fc1, fc2).
    # NOT SHIPPED (0.82 dB over bicubic, under the 1 dB bar); its recipe trains it in about 8 min on 2 CPU cores
    'SwinIR': {'checkpoint': swinir_fp_network()[1], 'label': 'SwinIR e30 2x2 (not shipped)',
               'fp_recipe': SWINIR_FP_RECIPE, 'feature_range': 1},
}
V1_WEIGHT = 1e-6            # this project's v1 default (the paper gives none; chosen from this sweep)
V1_SWEEP_BASE = 1e-7        # the sweep's x1 for v1: the project's first placeholder
V2_WEIGHT = 1e-5 / 255      # the paper's EDSR lambda_M on 0-255 pixels, converted to BasicSR's 0-1 L1

# name -> (network keys, odm_opt or None, cooperation)
VARIANTS = {
    'plain QAT': ({'weight_clip': 'max', 'offsets': 'none'}, None, 'none'),
    'WCC only': ({'weight_clip': 'wcc', 'offsets': 'none'}, None, 'none'),
    # plain QAT with P99 weight clips instead of max (max nearly binarizes 2-bit weights)
    'plain QAT (P99 weights)': ({'weight_clip': 'percentile', 'offsets': 'none'}, None, 'none'),
    'ODM v1 (P99 weights)': ({'weight_clip': 'percentile', 'offsets': 'auto'},
                             {'regularizer': 'variance', 'stat': 'var', 'loss_weight': V1_WEIGHT}, 'sign'),
    'offsets only': ({'weight_clip': 'max', 'offsets': 'auto'}, None, 'none'),
    'naive variance': ({'weight_clip': 'max', 'offsets': 'none'},
                       {'regularizer': 'variance', 'stat': 'var', 'loss_weight': V1_WEIGHT}, 'none'),
    'cooperative variance': ({'weight_clip': 'max', 'offsets': 'none'},
                             {'regularizer': 'variance', 'stat': 'var', 'loss_weight': V1_WEIGHT}, 'sign'),
    'naive mismatch': ({'weight_clip': 'max', 'offsets': 'none'},
                       {'regularizer': 'mismatch', 'loss_weight': V2_WEIGHT}, 'none'),
    'ODM v1': ({'weight_clip': 'max', 'offsets': 'auto'},
               {'regularizer': 'variance', 'stat': 'var', 'loss_weight': V1_WEIGHT}, 'sign'),
    'ODM v2': ({'weight_clip': 'wcc', 'offsets': 'none'},
               {'regularizer': 'mismatch', 'loss_weight': V2_WEIGHT}, 'cosine'),
    # the cosine per weight tensor instead of once over all weights (an ablation, not a default)
    'ODM v2 (cosine per tensor)': ({'weight_clip': 'wcc', 'offsets': 'none'},
                                   {'regularizer': 'mismatch', 'loss_weight': V2_WEIGHT}, 'cosine_tensor'),
    # activation ranges measured a second time with the quantizers on
    'ODM v2 (sequential calibration)': ({'weight_clip': 'wcc', 'offsets': 'none'},
                                        {'regularizer': 'mismatch', 'loss_weight': V2_WEIGHT}, 'cosine'),
    # activation ranges learned in units of their own width (train.range_lr: relative)
    'ODM v2 (relative range lr)': ({'weight_clip': 'wcc', 'offsets': 'none'},
                                   {'regularizer': 'mismatch', 'loss_weight': V2_WEIGHT}, 'cosine'),
    'WCC only (relative range lr)': ({'weight_clip': 'wcc', 'offsets': 'none'}, None, 'none'),
    # ODM v2 with its regularizer counted in full (no cosine weighting): what cooperation adds on top of WCC
    'ODM v2 (no cooperation)': ({'weight_clip': 'wcc', 'offsets': 'none'},
                                {'regularizer': 'mismatch', 'loss_weight': V2_WEIGHT}, 'none'),
    # offsets that keep zero on the grid (no shift on post-ReLU inputs) with half migration
    'ODM v1 (zero-preserving offsets)': ({'weight_clip': 'max', 'offsets': 'auto'},
                                         {'regularizer': 'variance', 'stat': 'var', 'loss_weight': V1_WEIGHT}, 'sign'),
    # activation grids kept on integer zero points (network_g.integer_zero_point), as integer ONNX runs them
    'ODM v2 (integer zero point)': ({'weight_clip': 'wcc', 'offsets': 'none', 'integer_zero_point': True},
                                    {'regularizer': 'mismatch', 'loss_weight': V2_WEIGHT}, 'cosine'),
    # ODM v1 (the 2-bit files' P99 weight clips) with integer zero points: its offset layers pad first
    'ODM v1 (P99 weights, integer zero point)': ({'weight_clip': 'percentile', 'offsets': 'auto',
                                                  'integer_zero_point': True},
                                                 {'regularizer': 'variance', 'stat': 'var', 'loss_weight': V1_WEIGHT},
                                                 'sign'),
    # the weight clip statistic (P99 |W|) recomputed every 16 iterations instead of every one
    'ODM v2 (weight clip every 16)': ({'weight_clip': 'wcc', 'offsets': 'none'},
                                      {'regularizer': 'mismatch', 'loss_weight': V2_WEIGHT}, 'cosine'),
    # the mismatch regularizer at 10x and 30x the paper's weight, over the full 1000 iterations (the
    # weight sweep runs at the quick length)
    'ODM v2 (mismatch x10)': ({'weight_clip': 'wcc', 'offsets': 'none'},
                              {'regularizer': 'mismatch', 'loss_weight': 10 * V2_WEIGHT}, 'cosine'),
    'ODM v2 (mismatch x30)': ({'weight_clip': 'wcc', 'offsets': 'none'},
                              {'regularizer': 'mismatch', 'loss_weight': 30 * V2_WEIGHT}, 'cosine'),
}
CALIBRATION_EXTRA = {'ODM v2 (sequential calibration)': {'sequential': True},
                     'ODM v1 (zero-preserving offsets)': {'offset_keep_zero': True, 'offset_migration': 0.5}}
TRAIN_EXTRA = {'ODM v2 (relative range lr)': {'range_lr': 'relative'},
               'WCC only (relative range lr)': {'range_lr': 'relative'},
               'ODM v2 (weight clip every 16)': {'weight_clip_interval': 16}}
ABLATION_ONLY = ('ODM v2 (cosine per tensor)', 'ODM v2 (sequential calibration)', 'ODM v2 (relative range lr)',
                 'WCC only (relative range lr)', 'ODM v2 (integer zero point)',
                 'ODM v2 (no cooperation)', 'cooperative variance', 'ODM v1 (zero-preserving offsets)',
                 'plain QAT (P99 weights)', 'ODM v1 (P99 weights)', 'ODM v2 (weight clip every 16)',
                 'ODM v2 (mismatch x10)', 'ODM v2 (mismatch x30)',
                 'ODM v1 (P99 weights, integer zero point)')  # when named
SWEEP = {  # regularizer-weight sweep at w2a2: (base variant, cooperation when on, x1 weight)
    'v1 variance': ('ODM v1', 'sign', V1_SWEEP_BASE),
    'v2 mismatch': ('ODM v2', 'cosine', V2_WEIGHT),
}


def build_options(variant, bits, iters, seed, weight=None, cooperation=None, arch='EDSR', device='cpu',
                  batch_size=None, gt_size=None, compile_step=False, workers=0):
    """BasicSR options of one proxy run; ``batch_size`` / ``gt_size`` (None: the demo recipe's), ``device`` ('cpu'
    or 'cuda') and data-loading ``workers`` for the larger GPU version."""
    net_keys, odm_opt, coop = VARIANTS[variant]
    paths = demo_data()
    opt = load_yaml(f'options/demo/train_QAT_EDSR_demo_x4_w{bits}a{bits}.yml')
    spec = PROXY_ARCHS[arch]
    if spec.get('ptq_file'):  # the same training recipe; the network is the arch quantized in place by ODMQuant
        opt['network_g'] = {'type': 'ODMQuant', 'arch': load_yaml(spec['ptq_file'])['network_g']['arch'],
                            'w_bit': bits, 'a_bit': bits, 'scope': 'body'}
    if spec.get('fp_recipe'):  # the FP recipe's network, as its quantized twin (ODMSwinIR)
        fp_net = load_yaml(spec['fp_recipe'])['network_g']
        opt['network_g'] = dict(fp_net, type=f'ODM{fp_net["type"]}', w_bit=bits, a_bit=bits)
    opt['network_g'].update(net_keys)
    train = opt['train']
    if odm_opt:
        train['odm_opt'] = dict(odm_opt, type='ODMLoss')
        if weight is not None:
            train['odm_opt']['loss_weight'] = weight
        # weights set for EDSR's 0-255 features, carried to the arch's by the option grid's rule (METHOD.md, 6)
        train['odm_opt']['loss_weight'] *= feature_scale_factor(odm_opt['regularizer'], spec['feature_range'])
    train['cooperation'] = cooperation or coop
    if net_keys['offsets'] != 'none':
        train['calibration']['offset_top_k'] = 0.25
    train['calibration'].update(CALIBRATION_EXTRA.get(variant, {}))
    train.update(TRAIN_EXTRA.get(variant, {}))
    train['total_iter'] = iters
    train['scheduler']['milestones'] = [iters * 2 // 3]
    train['compile'] = bool(compile_step)
    opt.update(name=f'proxy_{variant}', num_gpu=1 if device == 'cuda' else 0, manual_seed=seed, is_train=True,
               dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'] = {'pretrain_network_g': spec['checkpoint'], 'strict_load_g': True, 'resume_state': None,
                   'param_key_g': 'params'}
    opt['datasets']['train'].update(dataroot_gt=paths['train_gt'], dataroot_lq=paths['train_lq'], phase='train',
                                    scale=4, num_worker_per_gpu=workers)
    if batch_size is not None:
        opt['datasets']['train']['batch_size_per_gpu'] = batch_size
    if gt_size is not None:
        opt['datasets']['train']['gt_size'] = gt_size
    opt['datasets']['val'].update(dataroot_gt=paths['val_gt'], dataroot_lq=paths['val_lq'], phase='val', scale=4)
    return opt


class Evaluator:
    """BasicSR validation (PSNR/SSIM on Y) plus fidelity: PSNR of the output against the FP model's output."""

    def __init__(self, opt):
        from basicsr.data import build_dataloader, build_dataset
        from basicsr.utils import tensor2img
        self.tensor2img = tensor2img
        self.device = torch.device('cuda' if opt['num_gpu'] else 'cpu')
        val_opt = opt['datasets']['val']
        self.loader = build_dataloader(build_dataset(val_opt), val_opt, num_gpu=0, dist=False, sampler=None, seed=0)
        self.fp_outputs = None

    def outputs(self, net):
        outs = []
        net.eval()
        with torch.no_grad():
            for data in self.loader:
                outs.append(self.tensor2img(net(data['lq'].to(self.device))))
        net.train()
        return outs

    def objectives(self, model):
        """The two regularizers' objectives, unweighted (ODMLoss at weight 1), on the held-out photos (mean over
        photos): v1's variance sum_i mean_c Var(X_i) and v2's mismatch sum_i ||X_i - q(X_i)||. Their change over
        fine-tuning is how far a variant moved the features toward what the quantizer represents."""
        from odm_basicsr.losses.odm_loss import ODMLoss
        losses = {name: ODMLoss(regularizer=name, loss_weight=1.0) for name in ('variance', 'mismatch')}
        net = model.get_bare_model(model.net_g)
        values = {name: [] for name in losses}
        net.eval()
        model._set_collect(True)  # the quantized layers keep X_i, as in a training step with a regularizer
        try:
            with torch.no_grad():
                for data in self.loader:
                    net(data['lq'].to(self.device))
                    for name, loss in losses.items():
                        values[name].append(float(loss(model.quant_layers)))
        finally:
            model._set_collect(False)
            net.train()
        return {name: statistics.fmean(v) for name, v in values.items()}

    def __call__(self, model, it):
        from basicsr.metrics import calculate_psnr
        model.validation(self.loader, it, None, save_img=False)
        result = {k: float(v) for k, v in model.metric_results.items()}
        if self.fp_outputs is not None:
            outs = self.outputs(model.get_bare_model(model.net_g))
            result['fidelity'] = float(np.mean([calculate_psnr(o, f, 4, test_y_channel=True)
                                                for o, f in zip(outs, self.fp_outputs)]))
        return result


def training_steps(opt):
    """BasicSR's model for ``opt`` (built, checkpoint loaded, calibrated) and a generator that trains it for
    train.total_iter iterations on a fixed data order (seed opt['manual_seed']), yielding each iteration number
    after its step."""
    from basicsr.data import build_dataset
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    seed = opt['manual_seed']
    set_random_seed(seed)
    model = build_model(opt)
    dataset_opt = opt['datasets']['train']
    workers = dataset_opt.get('num_worker_per_gpu', 0)  # 0 unless --workers: the CPU tables' data order
    loader = torch.utils.data.DataLoader(build_dataset(dataset_opt), batch_size=dataset_opt['batch_size_per_gpu'],
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
    total = opt['train']['total_iter']

    def steps():
        random.seed(seed)  # BasicSR's crops and flips use python's random
        np.random.seed(seed)
        it = 0
        while True:
            for data in loader:
                it += 1
                model.feed_data(data)
                model.optimize_parameters(it)
                model.update_learning_rate(it, warmup_iter=-1)
                yield it
                if it == total:
                    return

    return model, steps()


def fine_tune(opt, evaluator, curve_points):
    """Train ``opt`` in this process (BasicSR model and dataset, fixed data order); returns the metrics."""
    model, steps = training_steps(opt)
    at_calibration = evaluator(model, 0)  # quantized, calibrated (offsets selected), before any fine-tuning step
    at_calibration['objectives'] = evaluator.objectives(model)
    stats, curve = {}, [(0, at_calibration['psnr'])]
    t0 = time.time()
    for it in steps:
        for key in ('reg_grad_ratio', 'sign_conflict_ratio', 'grad_cos', 'l_pix'):
            if key in model.log_dict:
                stats.setdefault(key, []).append(float(model.log_dict[key]))
        if it in curve_points:
            curve.append((it, evaluator(model, it)['psnr']))
    result = evaluator(model, opt['train']['total_iter'])
    result['train_s'] = time.time() - t0
    result['objectives'] = evaluator.objectives(model)
    result['at_calibration'] = at_calibration
    result['curve'] = curve
    result['means'] = {k: statistics.fmean(v) for k, v in stats.items()}
    return result


def fp_reference(opt, evaluator):
    """The FP checkpoint's metrics on the held-out photos; stores its outputs for the fidelity metric."""
    from basicsr.archs import build_network
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from odm_basicsr.quant import set_quantization
    net = build_network(copy.deepcopy(opt['network_g']))
    net.load_state_dict(torch.load(opt['path']['pretrain_network_g'], map_location='cpu', weights_only=True)['params'],
                        strict=False)
    net.to(evaluator.device)
    set_quantization(net, False)  # quantizers off and offsets not selected: exactly the FP EDSR function
    evaluator.fp_outputs = evaluator.outputs(net)
    gts = [evaluator.tensor2img(data['gt']) for data in evaluator.loader]
    psnr = [calculate_psnr(o, g, 4, test_y_channel=True) for o, g in zip(evaluator.fp_outputs, gts)]
    ssim = [calculate_ssim(o, g, 4, test_y_channel=True) for o, g in zip(evaluator.fp_outputs, gts)]
    return {'psnr': float(np.mean(psnr)), 'ssim': float(np.mean(ssim)), 'fidelity': math.inf}


def mean_spread(values):
    return (statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0)


def fmt(values, digits=2):
    mean, spread = mean_spread(values)
    return f'{mean:.{digits}f}' + (f' ± {spread:.{digits}f}' if len(values) > 1 else '')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='1 seed and short fine-tunes (<= 20 min on 2 cores)')
    parser.add_argument('--iters', type=int, default=None, help='fine-tuning iterations (quick 150, full 600)')
    parser.add_argument('--seeds', type=int, nargs='+', default=None, help='seeds (quick: 10; full: 10 11)')
    parser.add_argument('--bits', type=int, nargs='+', default=[4, 2])
    parser.add_argument('--variants', nargs='+', default=[v for v in VARIANTS if v not in ABLATION_ONLY],
                        choices=list(VARIANTS))
    parser.add_argument('--no-sweep', action='store_true', help='skip the regularizer-weight sweep')
    parser.add_argument('--sweep-mults', type=float, nargs='+', default=[1, 10, 100])
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'proxy_accuracy.json'))
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--batch-size', type=int, default=None, help="training batch (default: the demo recipe's)")
    parser.add_argument('--gt-size', type=int, default=None, help="HR training patch (default: the demo recipe's)")
    parser.add_argument('--compile', action='store_true', help='train.compile: true (each run compiles anew)')
    parser.add_argument('--workers', type=int, default=0,
                        help='data-loading processes (default 0, the CPU tables: another number changes the crops)')
    parser.add_argument('--arch', default='EDSR', choices=list(PROXY_ARCHS),
                        help='the proxy network: the demo EDSR, the demo SRVGGNetCompact through ODMQuant, or the '
                             'small SwinIR of the PTQ table through ODMSwinIR')
    args = parser.parse_args()
    iters = args.iters or (150 if args.quick else 600)
    seeds = args.seeds or ([10] if args.quick else [10, 11])
    curve_points = sorted({max(1, iters * k // 6) for k in range(1, 7)})
    import logging

    import odm_basicsr  # noqa: F401
    from odm_basicsr.tools.demo import bicubic_metrics
    logging.getLogger('basicsr').setLevel(logging.ERROR)  # BasicSR lists every quantizer key it did not load

    spec = PROXY_ARCHS[args.arch]
    if not osp.isfile(spec['checkpoint']):
        raise SystemExit(f'error: {spec["checkpoint"]} does not exist; train it first: basicsr prepare demo && '
                         f'basicsr train -opt {spec.get("fp_recipe")}')
    if spec.get('fp_recipe'):
        offsets = [v for v in args.variants if VARIANTS[v][0].get('offsets', 'none') != 'none']
        if offsets:
            raise SystemExit(f'error: {args.arch} has no conv offsets (ODMSwinIR quantizes Linear layers); drop '
                             f'{", ".join(offsets)}')
    start = time.time()
    paths = demo_data()
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda, but torch sees no CUDA device')
    for flag, value, low in (('--batch-size', args.batch_size, 1), ('--gt-size', args.gt_size, 4),
                             ('--workers', args.workers, 0)):
        if value is not None and value < low:
            raise SystemExit(f'error: {flag} must be at least {low}, got {value}')
    if args.gt_size is not None and args.gt_size % 4:
        raise SystemExit(f'error: --gt-size must be a multiple of the scale 4 (an LR patch of whole pixels), got '
                         f'{args.gt_size}')
    recipe = dict(arch=args.arch, device=args.device, batch_size=args.batch_size, gt_size=args.gt_size,
                  compile_step=args.compile, workers=args.workers)
    base_opt = build_options('plain QAT', 4, iters, seeds[0], **recipe)
    evaluator = Evaluator(base_opt)
    bicubic = bicubic_metrics(paths['val_gt'], paths['val_lq'])
    fp = fp_reference(base_opt, evaluator)
    print(f'bicubic {bicubic["psnr"]:.2f} dB, FP {fp["psnr"]:.2f} dB on the held-out photos', flush=True)

    runs = []  # dicts: variant, bits, seed, weight_mult, cooperation, result
    settings = {'arch': args.arch, 'iters': iters, 'seeds': seeds, 'bicubic': bicubic, 'fp': fp,
                'device': args.device, 'batch_size': base_opt['datasets']['train']['batch_size_per_gpu'],
                'gt_size': base_opt['datasets']['train']['gt_size'], 'compile': args.compile, 'workers': args.workers}

    def run(variant, bits, seed, weight=None, cooperation=None, mult=None):
        """Fine-tune one variant; ``weight`` overrides its regularizer weight (``mult`` labels it in the sweep)."""
        opt = build_options(variant, bits, iters, seed, weight, cooperation, **recipe)
        res = fine_tune(opt, evaluator, curve_points)
        used = opt['train'].get('odm_opt', {}).get('loss_weight')
        entry = {'variant': variant, 'bits': bits, 'seed': seed, 'weight_mult': mult, 'sweep': mult is not None,
                 'cooperation': opt['train']['cooperation'], 'loss_weight': used, 'result': res}
        runs.append(entry)
        print(f'[{time.time() - start:6.0f} s] w{bits}a{bits} {variant:15s} λ={used if used is not None else "-"!s:9s} '
              f'coop={entry["cooperation"]:6s} seed {seed}: PSNR {res["psnr"]:.3f} SSIM {res["ssim"]:.4f} '
              f'fidelity {res["fidelity"]:.2f} (after calibration {res["at_calibration"]["psnr"]:.3f}) '
              + ' '.join(f'{k} {v:.3g}' for k, v in res['means'].items())
              + ' objectives ' + ' '.join(f'{k} {res["at_calibration"]["objectives"][k]:.4g} -> {v:.4g}'
                                          for k, v in res['objectives'].items()), flush=True)
        write_json(args.json, dict(settings, runs=runs, partial=True))  # a run cut short keeps the finished ones
        return entry

    for bits in args.bits:
        for variant in args.variants:
            for seed in seeds:
                run(variant, bits, seed)
    if not args.no_sweep:
        for label, (variant, coop, base) in SWEEP.items():
            for mult in args.sweep_mults:
                for cooperation in (coop, 'none'):
                    for seed in seeds[:1]:
                        done = [r for r in runs if r['variant'] == variant and r['bits'] == 2 and r['seed'] == seed
                                and r['cooperation'] == cooperation and r['loss_weight'] is not None
                                and math.isclose(r['loss_weight'], base * mult, rel_tol=1e-9)]
                        if done:
                            runs.append(dict(done[0], weight_mult=mult, sweep=True))
                        else:
                            run(variant, 2, seed, base * mult, cooperation, mult)

    # ---- tables
    def select(variant, bits, cooperation=None):
        return [r for r in runs if r['variant'] == variant and r['bits'] == bits and not r['sweep']
                and (cooperation is None or r['cooperation'] == cooperation)]

    rows = [['bicubic', '-', '-', f'{bicubic["psnr"]:.2f}', f'{bicubic["ssim"]:.4f}', '-', '-', '-'],
            [f'FP ({PROXY_ARCHS[args.arch]["label"]})', '32', '-', f'{fp["psnr"]:.2f}', f'{fp["ssim"]:.4f}',
             '(reference)', '-', '-']]
    for bits in args.bits:
        for variant in args.variants:
            sel = select(variant, bits, cooperation=VARIANTS[variant][2])
            if not sel:
                continue
            means = [r['result']['means'] for r in sel]
            ratio = [m['reg_grad_ratio'] for m in means if 'reg_grad_ratio' in m]
            coop = [m.get('sign_conflict_ratio', m.get('grad_cos')) for m in means
                    if 'sign_conflict_ratio' in m or 'grad_cos' in m]
            rows.append([variant, f'w{bits}a{bits}', fmt([r['result']['at_calibration']['psnr'] for r in sel]),
                         fmt([r['result']['psnr'] for r in sel]),
                         fmt([r['result']['ssim'] for r in sel], 4), fmt([r['result']['fidelity'] for r in sel]),
                         f'{statistics.fmean(ratio):.3g}' if ratio else '-',
                         f'{statistics.fmean(coop):.3f}' if coop else '-'])
    header = ['variant', 'bits', 'PSNR after calibration', 'PSNR vs HR (dB)', 'SSIM', 'PSNR vs FP output (dB)',
              'λ|g_reg|/|g_R|', 'cooperation stat']
    main_table = markdown_table(header, rows)
    sweep_rows = []
    for label, (variant, coop, base) in SWEEP.items():
        for mult in args.sweep_mults:
            for cooperation in (coop, 'none'):
                sel = [r for r in runs if r['sweep'] and r['variant'] == variant and r['weight_mult'] == mult
                       and r['cooperation'] == cooperation]
                if not sel:
                    continue
                r = sel[0]
                sweep_rows.append([label, f'{base * mult:.3g} (x{mult:g})', cooperation,
                                   f'{r["result"]["psnr"]:.3f}', f'{r["result"]["fidelity"]:.2f}',
                                   f'{r["result"]["means"].get("reg_grad_ratio", float("nan")):.3g}'])
    sweep_table = markdown_table(['regularizer', 'weight', 'cooperation', 'PSNR (dB)', 'PSNR vs FP', 'λ|g_reg|/|g_R|'],
                                 sweep_rows) if sweep_rows else ''
    qat_curves = [r for r in runs if r['variant'] == 'plain QAT' and not r['sweep']]
    curve_table = markdown_table(['bits', 'seed'] + [f'it {it}' for it in [0] + curve_points],
                                 [[f'w{r["bits"]}a{r["bits"]}', r['seed']] + [f'{p:.3f}' for _, p in r['result']['curve']]
                                  for r in qat_curves])
    # ---- validity conditions of the proxy
    checks = []
    checks.append(('bicubic row present', True, f'{bicubic["psnr"]:.2f} dB'))
    gain = fp['psnr'] - bicubic['psnr']
    checks.append(('FP beats bicubic by >= 1.0 dB', gain >= 1.0, f'{gain:+.2f} dB'))
    for r in qat_curves:
        tail = [p for _, p in r['result']['curve'][-3:]]
        plateau = max(tail) - min(tail) < 0.1
        checks.append((f'plain QAT w{r["bits"]}a{r["bits"]} plateau (last 3 curve points within 0.1 dB)', plateau,
                       ', '.join(f'{p:.3f}' for p in tail)))
    print(f'\n## Proxy accuracy ({iters} fine-tuning iterations, seeds {seeds}; A SMALL PROXY)\n')
    print(main_table)
    if sweep_table:
        print('\n### Regularizer weight sweep (w2a2)\n')
        print(sweep_table)
    print('\n### Plain QAT validation curve (PSNR vs HR)\n')
    print(curve_table)
    print('\n### Validity conditions\n')
    for name, ok, detail in checks:
        print(f'- [{"x" if ok else " "}] {name}: {detail}')
    print(f'\n(total {time.time() - start:.0f} s)')
    write_json(args.json, dict(settings, runs=runs,
                               checks=[{'name': n, 'ok': o, 'detail': d} for n, o, d in checks],
                               tables={'main': main_table, 'sweep': sweep_table, 'qat_curve': curve_table}))


if __name__ == '__main__':
    main()

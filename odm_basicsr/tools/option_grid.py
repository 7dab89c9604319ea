"""Writes the option-file grid: train/test files for EDSR-baseline, RDN and SRResNet at x2 and x4, in w2a2, w3a3
and w4a4, for ODM v1 (options/), ODM v2 (options/v2/) and plain QAT (options/qat/), and the demo files.

The files under options/ are the product; this generator keeps them consistent, and a test checks that every
file equals what it generates.    python -m odm_basicsr.tools.option_grid [--check]
"""
import argparse
import os
import os.path as osp
import sys

from odm_basicsr.data.demo import DEMO_FP_CHECKPOINT
from odm_basicsr.tools.cli_io import REPO

SCALES = (2, 4)
BITS = (2, 3, 4)
DIV2K_MEAN = '[0.4488, 0.4371, 0.4040]'

# Per architecture: the registered ODM arch, its network keys, the FP checkpoint and how to get it, the v2 weight
# lambda_M of the paper (on 0-255 pixels) where it gives one, the range its features work in (EDSR and RDN scale
# pixels to 0-255 inside the network, BasicSR's MSRResNet stays on 0-1) and its number of quantized layers.
V1_WEIGHT_EDSR = 1e-6  # the v1 default on EDSR (0-255 features, 32 quantized layers), from the proxy sweep


def regularizer_weights(arch):
    """(v1 weight, v2 weight) on BasicSR's 0-1 L1 for ``arch``.

    v2: lambda_M / 255 for the L1 on 0-1 pixels, times 255 / feature_range: the mismatch distance is linear in the
    feature scale, so networks on 0-1 features need it 255x larger. v1: the EDSR default times
    (255 / feature_range)^2 (the variance is quadratic in the feature scale) times 32 / quantized layers (it sums
    over layers)."""
    a = ARCHS[arch]
    return scaled_regularizer_weights(a['lambda_m'][0], a['feature_range'], a['quant_layers'])


def feature_scale_factor(regularizer, feature_range):
    """What a regularizer weight set for 0-255 features is multiplied by for features spanning ``feature_range``:
    255 / range for the mismatch distance (linear in the feature scale), its square for the variance."""
    ratio = 255 / feature_range
    return ratio if regularizer == 'mismatch' else ratio**2


def scaled_regularizer_weights(lambda_m, feature_range, quant_layers):
    """(v1 weight, v2 weight) for a network whose features span ``feature_range`` (255 or 1) with ``quant_layers``
    quantized layers; ``lambda_m`` is the paper's v2 weight on 0-255 pixels. See ``regularizer_weights``."""
    return (V1_WEIGHT_EDSR * feature_scale_factor('variance', feature_range) * 32 / quant_layers,
            lambda_m / 255 * feature_scale_factor('mismatch', feature_range))


ARCHS = {
    'EDSR': {
        'label': 'EDSR-baseline (64 features, 16 residual blocks)', 'exp': 'EDSR_M', 'type': 'ODMEDSR', 'fp_type': 'EDSR',
        'network': ['num_in_ch: 3', 'num_out_ch: 3', 'num_feat: 64', 'num_block: 16', 'upscale: {s}', 'res_scale: 1',
                    'img_range: 255.', f'rgb_mean: {DIV2K_MEAN}'],
        'pretrain': {2: 'experiments/pretrained_models/EDSR/EDSR_Mx2_f64b16_DIV2K_official-3ba7b086.pth',
                     4: 'experiments/pretrained_models/EDSR/EDSR_Mx4_f64b16_DIV2K_official-0c287733.pth'},
        'pretrain_how': 'BasicSR model zoo (docs/ModelZoo.md), EDSR-M x{s}: download into experiments/pretrained_models/EDSR/',
        'lambda_m': (1e-5, 'the paper\'s EDSR value'),
        'feature_range': 255, 'quant_layers': 32,
    },
    'RDN': {
        'label': 'RDN (16 RDBs x 8 layers, growth 64)', 'exp': 'RDN', 'type': 'ODMRDN', 'fp_type': 'RDN',
        'network': ['num_in_ch: 3', 'num_out_ch: 3', 'num_feat: 64', 'num_block: 16', 'num_layer: 8', 'growth: 64',
                    'upscale: {s}', 'img_range: 255.', 'rgb_mean: [0., 0., 0.]'],
        'pretrain': {s: f'experiments/pretrained_models/RDN/RDN_x{s}_converted.pth' for s in SCALES},
        'pretrain_how': ('BasicSR has no RDN: convert an FP RDN x{s} in EDSR-PyTorch layout (as the DAQ/DDTB/PAMS code '
                         'bases use) with\n#   basicsr convert-checkpoint --arch RDN <their model_x{s}.pt> '
                         'experiments/pretrained_models/RDN/RDN_x{s}_converted.pth'),
        'lambda_m': (1e-6, 'the paper\'s RDN value'),
        'feature_range': 255, 'quant_layers': 128,
    },
    'SRResNet': {
        'label': 'SRResNet (BasicSR MSRResNet, 64 features, 16 blocks)', 'exp': 'MSRResNet', 'type': 'ODMMSRResNet',
        'fp_type': 'MSRResNet',
        'network': ['num_in_ch: 3', 'num_out_ch: 3', 'num_feat: 64', 'num_block: 16', 'upscale: {s}'],
        'pretrain': {
            2: 'experiments/pretrained_models/MSRResNet/002_MSRResNet_x2_f64b16_DIV2K_1000k_B16G1_001pretrain_wandb.pth',
            4: 'experiments/pretrained_models/MSRResNet/001_MSRResNet_x4_f64b16_DIV2K_1000k_B16G1_wandb.pth'},
        'pretrain_how': ('BasicSR model zoo (docs/ModelZoo.md), MSRResNet x{s}: download into '
                         'experiments/pretrained_models/MSRResNet/ under this name'),
        'lambda_m': (1e-5, 'the paper gives none for SRResNet; its EDSR value is used'),
        'feature_range': 1, 'quant_layers': 32,
    },
    'SwinIR': {
        'label': 'SwinIR-light (embed_dim 60, 4 RSTBs x 6 blocks, window 8, pixelshuffledirect)', 'exp': 'SwinIR_light',
        'type': 'ODMSwinIR', 'fp_type': 'SwinIR',
        'network': ['upscale: {s}', 'in_chans: 3', 'img_size: 64', 'window_size: 8', 'img_range: 1.',
                    'depths: [6, 6, 6, 6]', 'embed_dim: 60', 'num_heads: [6, 6, 6, 6]', 'mlp_ratio: 2',
                    "upsampler: 'pixelshuffledirect'", "resi_connection: '1conv'"],
        'pretrain': {s: f'experiments/pretrained_models/SwinIR/002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth'
                     for s in SCALES},
        'pretrain_how': ('SwinIR release (github.com/JingyunLiang/SwinIR, model zoo: '
                         '002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth, BasicSR key layout under params):\n'
                         '#   download into experiments/pretrained_models/SwinIR/'),
        'lambda_m': (1e-5, 'the paper gives none for SwinIR; its EDSR value is used'),
        'feature_range': 1, 'quant_layers': 96,
        # the paper reports ODM v2 for SwinIR; v1's offsets are conv-only and SwinIR's quantized body is Linear
        'variants': ('v2', 'qat'),
        'gt_size': {2: 128, 4: 256},  # SwinIR's own: LR patches of 64 (img_size)
        'scope_note': 'the paper\'s scope: qkv, proj, fc1, fc2 of every Swin block; `all` quantizes every layer',
        'extra_network': ['quantize_attention: false  # true: q·kᵀ and attn·v operands at a_bit too (docs/SWINIR.md)'],
    },
}
DEFAULT_VARIANTS = ('v1', 'v2', 'qat')
CONV_SCOPE_NOTE = 'the paper\'s scope: the convs of the residual/dense blocks; `all` quantizes every conv'


def arch_variants(arch):
    return ARCHS[arch].get('variants', DEFAULT_VARIANTS)


def gt_size(arch, s):
    """HR training patch: the paper's 192 at x4 (96 at x2), or the arch's own (SwinIR: 64 LR pixels)."""
    return ARCHS[arch].get('gt_size', {2: 96, 4: 192})[s]

VARIANT_HELP = """\
# Twins (same data, schedule and checkpoint; only network_g weight_clip / offsets and train.odm_opt differ):
#   ODM v2 (ECCV 2024): {v2_file}
#   Plain QAT baseline: {qat_file}"""


def _fmt(x):
    return f'{x:.3g}'.replace('e-0', 'e-')


def _network_block(arch, s, b, weight_clip, offsets):
    a = ARCHS[arch]
    lines = [f'  type: {a["type"]}'] + [f'  {line.format(s=s)}' for line in a['network']]
    lines += [f'  w_bit: {b}', f'  a_bit: {b}',
              f'  weight_clip: {weight_clip:<7s} # max | percentile (P99) | wcc (v2)'
              + ('; P99 at 2 bits: max nearly binarizes the weights' if weight_clip == 'percentile' else ''),
              f'  scope: body          # {a.get("scope_note", CONV_SCOPE_NOTE)}',
              f'  offsets: {offsets:<12s}# v1 distribution offsets: none | shift | scale | auto']
    return '\n'.join(lines + [f'  {line}' for line in a.get('extra_network', [])])


def _val_metrics(s, indent='  '):
    return '\n'.join([f'{indent}metrics:', f'{indent}  psnr:', f'{indent}    type: calculate_psnr',
                      f'{indent}    crop_border: {s}', f'{indent}    test_y_channel: true', f'{indent}  ssim:',
                      f'{indent}    type: calculate_ssim', f'{indent}    crop_border: {s}',
                      f'{indent}    test_y_channel: true'])


def _train_head(milestones, total_iter):
    """The optimizer / schedule part of ``train:`` (Adam at 1e-4, halved at the milestones)."""
    return f"""\
train:
  ema_decay: 0
  optim_g:
    type: Adam
    lr: !!float 1e-4
    weight_decay: 0
    betas: [0.9, 0.999]
  scheduler:
    type: MultiStepLR
    milestones: [{milestones}]
    gamma: 0.5
  total_iter: {total_iter}
"""


def _logging_tail(print_freq, save_checkpoint_freq):
    """The logger and dist_params sections that end every training file."""
    return f"""\
# logging settings
logger:
  print_freq: {print_freq}
  save_checkpoint_freq: {save_checkpoint_freq}
  use_tb_logger: true
  wandb:
    project: ~
    resume_id: ~

# dist training settings
dist_params:
  backend: nccl
  port: 29500
"""


def _odm_block(variant, arch):
    lm, lm_src = ARCHS[arch]['lambda_m']
    v1_weight, v2_weight = regularizer_weights(arch)
    if variant == 'v1':
        v1_note = '' if arch == 'EDSR' else (
            f'\n  # For {arch}: 1e-6 x (255 / {ARCHS[arch]["feature_range"]})^2 (feature range) x 32 / '
            f'{ARCHS[arch]["quant_layers"]} (quantized layers),\n  # see regularizer_weights in '
            'odm_basicsr/tools/option_grid.py.')
        return f"""\
  # ODM v1 regularizer: sum over quantized layers of the mean channel variance of their inputs.
  # The paper gives no weight for v1. 1e-6 on BasicSR's 0-1 L1 is this project's EDSR default, from the proxy sweep
  # (docs/RESULTS.md): there lambda|g_reg|/|g_R| is about 0.1, and up to 1e-5 it did not hurt with sign
  # cooperation.{v1_note}
  odm_opt:
    type: ODMLoss
    regularizer: variance
    stat: var
    loss_weight: !!float {_fmt(v1_weight)}
  cooperation: sign    # v1: keep the regularizer gradient only where its sign agrees with the L1 gradient
  quant_lr_mul: 10     # ranges and offsets at 10x the base learning rate
  calibration:
    num_batches: 16    # activation ranges from 16 training batches
    method: percentile # the paper's: mean of per-batch P1/P99. auto (the plugin default) keeps the best of
                       # mse / percentile / minmax at the network output (docs/METHOD.md)
    offset_top_k: 0.25 # the quarter of layers with the largest channel mismatch get an offset
"""
    if variant == 'v2':
        return f"""\
  # ODM v2 regularizer: distance of the quantized layers' inputs to the quantization grid (Frobenius).
  # lambda_M = {lm:g} ({lm_src}) for an L1 on 0-255 pixels; BasicSR's L1 is on 0-1 pixels, so {lm:g} / 255{
      ' x 255 (this network works on 0-1 features, and the distance is linear in them)'
      if ARCHS[arch]['feature_range'] == 1 else ''}.
  odm_opt:
    type: ODMLoss
    regularizer: mismatch
    loss_weight: !!float {_fmt(v2_weight)}
  cooperation: cosine  # v2: regularizer gradient weighted by (cos(g_R, g_M) + 1) / 2
  quant_lr_mul: 10     # ranges and WCC gammas at 10x the base learning rate
  calibration:
    num_batches: 16    # activation ranges from 16 training batches
    method: percentile # the paper's: mean of per-batch P1/P99. auto (the plugin default) keeps the best of
                       # mse / percentile / minmax at the network output (docs/METHOD.md)
"""
    return """\
  # Plain QAT: no regularizer (no odm_opt), same quantizer, same calibration, same schedule.
  quant_lr_mul: 10     # ranges at 10x the base learning rate
  calibration:
    num_batches: 16    # activation ranges from 16 training batches
    method: percentile # the paper's: mean of per-batch P1/P99. auto (the plugin default) keeps the best of
                       # mse / percentile / minmax at the network output (docs/METHOD.md)
"""


VARIANTS = {  # name prefix, weight_clip, offsets, title
    'v1': ('ODM', 'max', 'auto', 'ODM v1 (the seed paper, arXiv 2307.13337v1):\n#   variance regularizer + sign '
                                 'cooperation + channel-wise distribution offsets; static ranges.'),
    'v2': ('ODMv2', 'wcc', 'none', 'ODM v2 (ECCV 2024):\n#   mismatch regularizer + cosine cooperation + weight '
                                  'clipping correction; static ranges.'),
    'qat': ('QAT', 'max', 'none', 'Plain quantization-aware training (the baseline): no regularizer, no offsets.'),
}


VARIANT_DIRS = {'v1': 'options', 'v2': 'options/v2', 'qat': 'options/qat'}


def weight_clip_for(variant, b):
    """The variant's weight clip at ``b`` bits: v1 and plain QAT clip at max|W| except at 2 bits, where max nearly
    binarizes the weights and P99 measured +0.24-0.30 dB on the proxy (docs/RESULTS.md)."""
    clip = VARIANTS[variant][1]
    return 'percentile' if clip == 'max' and b == 2 else clip


def option_path(kind, arch, s, b, variant='v1'):
    """Repository path of the ``kind`` ('train' or 'test') file of ``variant`` for ``arch`` x``s`` w``b``a``b``."""
    return f'{VARIANT_DIRS[variant]}/{kind}_{VARIANTS[variant][0]}_{arch}_x{s}_w{b}a{b}.yml'


def train_name(arch, s, b, variant='v1'):
    return f'{VARIANTS[variant][0]}_{ARCHS[arch]["exp"]}x{s}_w{b}a{b}_DIV2K_60k_B8'


def train_file(arch, s, b, variant='v1'):
    a = ARCHS[arch]
    prefix, _, offsets, title = VARIANTS[variant]
    weight_clip = weight_clip_for(variant, b)
    patch = gt_size(arch, s)
    if variant == 'v1':
        help_text = VARIANT_HELP.format(v2_file=option_path('train', arch, s, b, 'v2'),
                                        qat_file=option_path('train', arch, s, b, 'qat'))
    elif 'v1' in arch_variants(arch):
        help_text = (f'# Twin of {option_path("train", arch, s, b)} (ODM v1); only network_g weight_clip / offsets '
                     'and train.odm_opt differ.')
    else:
        other = 'qat' if variant == 'v2' else 'v2'
        help_text = (f'# No v1 file for {arch}: v1\'s offsets are conv-only, and its quantized body is Linear. Twin: '
                     f'{option_path("train", arch, s, b, other)}.')
    return f"""\
# {title}
# {a['label']} x{s}, W{b}A{b}.
{help_text}
# Recipe (docs/METHOD.md): 60K iterations, batch 8, HR patch {patch}, lr 1e-4 halved every 15K, quantizers at 10x.
# Data: basicsr prepare div2k --root datasets/DIV2K ; basicsr prepare benchmark --root datasets
# Run:  basicsr train -opt {option_path('train', arch, s, b, variant)}   (multi-GPU: torchrun ... --launcher pytorch)
# Test: basicsr test -opt {option_path('test', arch, s, b, variant)}

# general settings
name: {train_name(arch, s, b, variant)}
model_type: ODMModel
scale: {s}
num_gpu: auto  # the visible GPUs; 0 on a CPU-only machine
manual_seed: 10

# dataset and data loader settings
datasets:
  train:
    name: DIV2K
    type: PairedImageDataset
    # made by: basicsr prepare div2k --root datasets/DIV2K
    dataroot_gt: datasets/DIV2K/DIV2K_train_HR_sub.lmdb
    dataroot_lq: datasets/DIV2K/DIV2K_train_LR_bicubic_X{s}_sub.lmdb
    io_backend:
      type: lmdb
    gt_size: {patch}
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 6
    batch_size_per_gpu: 8
    dataset_enlarge_ratio: 100
    prefetch_mode: ~

  val:
    name: Set5
    type: PairedImageDataset
    # made by: basicsr prepare benchmark --root datasets
    dataroot_gt: datasets/Set5/GTmod12
    dataroot_lq: datasets/Set5/LRbicx{s}
    io_backend:
      type: disk

# network structures
network_g:
{_network_block(arch, s, b, weight_clip, offsets)}

# path
path:
  # {a['pretrain_how'].format(s=s)}
  pretrain_network_g: {a['pretrain'][s]}
  strict_load_g: true  # an FP checkpoint may lack only quantizer keys; anything else is an error
  resume_state: ~

# training settings
{_train_head('15000, 30000, 45000', 60000)}  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean
{_odm_block(variant, arch)}
# validation settings
val:
  val_freq: !!float 5e3
  save_img: false
{_val_metrics(s)}

{_logging_tail(100, '!!float 5e3')}"""


def _benchmark_sets(s):
    """The test_1..test_4 dataset blocks of Set5 / Set14 / B100 / Urban100 at x``s`` (basicsr prepare benchmark)."""
    return ''.join(f"""\
  test_{i}:
    name: {name}
    type: PairedImageDataset
    dataroot_gt: datasets/{name}/GTmod12
    dataroot_lq: datasets/{name}/LRbicx{s}
    io_backend:
      type: disk
""" for i, name in enumerate(('Set5', 'Set14', 'B100', 'Urban100'), 1))


def test_file(arch, s, b, variant='v1'):
    a = ARCHS[arch]
    prefix, _, offsets, title = VARIANTS[variant]
    weight_clip = weight_clip_for(variant, b)
    what = {'v1': 'ODM-trained', 'v2': 'ODM v2-trained', 'qat': 'plain-QAT-trained'}[variant]
    sets = _benchmark_sets(s)
    return f"""\
# Test a {what} {a['label']} x{s} W{b}A{b} (from {option_path('train', arch, s, b, variant)})
# on the four benchmark sets, PSNR/SSIM on the Y channel with a border crop of {s} (the protocol of the published
# numbers).
# Data: basicsr prepare benchmark --root datasets
# Run:  basicsr test -opt {option_path('test', arch, s, b, variant)}
name: test_{prefix}_{a['exp']}x{s}_w{b}a{b}
model_type: ODMModel
scale: {s}
num_gpu: auto  # the visible GPUs; 0 on a CPU-only machine
manual_seed: 10

datasets:
{sets}
# must match the training file's network_g (offsets: the test net loads the selected offsets from the checkpoint)
network_g:
{_network_block(arch, s, b, weight_clip, offsets)}

path:
  pretrain_network_g: experiments/{train_name(arch, s, b, variant)}/models/net_g_latest.pth
  strict_load_g: true
  param_key_g: params

val:
  save_img: false
  suffix: ~
  pbar: true
{_val_metrics(s)}
"""


# ---------------------------------------------------------------------------------------------------------------
# Demo: the proxy EDSR (32 features, 8 blocks, x4) on the skimage photos, fine-tuned from the shipped FP checkpoint.
DEMO_ITERS = 300
DEMO_NETWORK = ['num_in_ch: 3', 'num_out_ch: 3', 'num_feat: 32', 'num_block: 8', 'upscale: 4', 'res_scale: 1',
                'img_range: 255.', f'rgb_mean: {DIV2K_MEAN}']
DEMO_DATA = """\
datasets:
  train:
    name: demo
    type: PairedImageDataset
    # made by: basicsr prepare demo
    dataroot_gt: datasets/demo/train_HR_sub.lmdb
    dataroot_lq: datasets/demo/train_LR_bicubic_X4_sub.lmdb
    io_backend:
      type: lmdb
    gt_size: 128
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 4
    dataset_enlarge_ratio: 100
    prefetch_mode: ~

  val:
    name: demo_heldout
    type: PairedImageDataset
    dataroot_gt: datasets/demo/val/HR
    dataroot_lq: datasets/demo/val/LRbicx4
    io_backend:
      type: disk
"""


def demo_name(variant, b):
    return f'demo_{VARIANTS[variant][0]}_EDSR_x4_w{b}a{b}'


def demo_train_file(variant, b):
    prefix, _, offsets, title = VARIANTS[variant]
    weight_clip = weight_clip_for(variant, b)
    net = '\n'.join(['  type: ODMEDSR'] + [f'  {line}' for line in DEMO_NETWORK] + [
        f'  w_bit: {b}', f'  a_bit: {b}', f'  weight_clip: {weight_clip}', '  scope: body', f'  offsets: {offsets}'])
    return f"""\
# Demo fine-tune, A SMALL PROXY (not the paper's setting): {title}
# EDSR 32 features x 8 blocks, x4, W{b}A{b}, {DEMO_ITERS} iterations at batch 4 from the shipped FP checkpoint, on the
# skimage demo photos (basicsr prepare demo). Run by `make demo`; alone: basicsr train -opt <this file>
name: {demo_name(variant, b)}
model_type: ODMModel
scale: 4
num_gpu: auto  # 0 on a CPU-only machine
manual_seed: 10

{DEMO_DATA}
network_g:
{net}

path:
  # this project's FP recipe (options/demo/train_FP_EDSR_demo_x4.yml) trained it; its log is beside it
  pretrain_network_g: {DEMO_FP_CHECKPOINT}
  strict_load_g: true
  resume_state: ~

{_train_head(DEMO_ITERS * 2 // 3, DEMO_ITERS)}  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean
{_odm_block(variant, 'EDSR').replace('num_batches: 16    # activation ranges from 16',
                                     'num_batches: 8     # activation ranges from 8')}
val:
  val_freq: {DEMO_ITERS // 2}
  save_img: false
{_val_metrics(4)}

{_logging_tail(25, DEMO_ITERS)}"""


def demo_test_fp_file():
    net = '\n'.join(['  type: EDSR'] + [f'  {line}' for line in DEMO_NETWORK])
    val = DEMO_DATA.split('  val:\n', 1)[1]
    return f"""\
# Demo: the shipped FP checkpoint on the held-out demo photos (PSNR/SSIM on Y, border crop 4). A SMALL PROXY.
# Run:  basicsr test -opt options/demo/test_FP_EDSR_demo_x4.yml
name: demo_FP_EDSR_x4
model_type: SRModel
scale: 4
num_gpu: auto
manual_seed: 10

datasets:
  test_1:
{val.rstrip()}
network_g:
{net}

path:
  pretrain_network_g: {DEMO_FP_CHECKPOINT}
  strict_load_g: true
  param_key_g: params

val:
  save_img: false
  suffix: ~
{_val_metrics(4)}
"""


VARIANT_LABELS = {'v1': 'ODM v1', 'v2': 'ODM v2', 'qat': 'plain QAT'}


def _compare_file(title, name, scale, datasets_text, fp_entry, entries, published, crop_border):
    """A ``basicsr compare`` option file; ``entries`` [(label, network lines, checkpoint)]."""
    blocks = []
    for label, net_lines, checkpoint in [fp_entry] + entries:
        net = '\n'.join(f'        {line}' for line in net_lines)
        blocks.append(f"""\
    - label: {label}
      network_g:
{net}
      checkpoint: {checkpoint}""")
    published_line = f'\n  published: {{arch: {published}}}   # the papers\' rows at this scale, marked as such' \
        if published else ''
    entries_text = '\n'.join(blocks)
    return f"""\
# {title}
# Entries whose checkpoint does not exist yet are listed with the command that trains them.
name: {name}
scale: {scale}
num_gpu: auto  # the visible GPUs; 0 on a CPU-only machine

{datasets_text}
compare:
  reference: FP{published_line}
  entries:
{entries_text}

val:
{_val_metrics(crop_border)}
"""


def compare_file(arch, s):
    a = ARCHS[arch]
    sets = _benchmark_sets(s)
    quant_keys = ('w_bit', 'a_bit', 'weight_clip', 'scope', 'offsets', 'quantize_attention')
    fp_lines = [f'type: {a["fp_type"]}'] + [line.format(s=s) for line in a['network']]
    entries = []
    for b in sorted(BITS, reverse=True):
        for variant in arch_variants(arch):
            offsets, weight_clip = VARIANTS[variant][2], weight_clip_for(variant, b)
            lines = [f'type: {a["type"]}'] + [line.format(s=s) for line in a['network']] + [
                f'w_bit: {b}', f'a_bit: {b}', f'weight_clip: {weight_clip}', 'scope: body', f'offsets: {offsets}'] + [
                line.split('  #')[0] for line in a.get('extra_network', []) if line.startswith(quant_keys)]
            entries.append((f'{VARIANT_LABELS[variant]} w{b}a{b}', lines,
                            f'experiments/{train_name(arch, s, b, variant)}/models/net_g_latest.pth'))
    return _compare_file(
        f'{a["label"]} x{s}: the FP checkpoint next to every trained quantized run of the grid, on the four benchmark '
        f'sets.\n# Run: basicsr compare -opt options/compare_{arch}_x{s}.yml   (results/compare_{arch}_x{s}/)',
        f'compare_{arch}_x{s}', s, 'datasets:\n' + sets.rstrip(), ('FP', fp_lines, a['pretrain'][s]), entries, arch, s)


def demo_compare_file():
    val = DEMO_DATA.split('  val:\n', 1)[1]
    entries = []
    for b in (4, 2):
        for variant in ('qat', 'v1', 'v2'):
            offsets, weight_clip = VARIANTS[variant][2], weight_clip_for(variant, b)
            lines = ['type: ODMEDSR'] + DEMO_NETWORK + [f'w_bit: {b}', f'a_bit: {b}', f'weight_clip: {weight_clip}',
                                                        'scope: body', f'offsets: {offsets}']
            entries.append((f'{VARIANT_LABELS[variant]} w{b}a{b}', lines,
                            f'experiments/{demo_name(variant, b)}/models/net_g_latest.pth'))
    return _compare_file(
        'Demo comparison, A SMALL PROXY (EDSR 32x8, x4, demo photos): the shipped FP checkpoint, plain QAT, ODM v1 '
        'and ODM v2\n# fine-tunes of make demo. Run: basicsr compare -opt options/demo/compare_EDSR_demo_x4.yml',
        'compare_EDSR_demo_x4', 4, 'datasets:\n  test_1:\n' + val.rstrip(),
        ('FP', ['type: EDSR'] + DEMO_NETWORK, DEMO_FP_CHECKPOINT), entries, None, 4)


def all_files():
    """{relative path: text} of every generated option file."""
    files = {}
    for arch in ARCHS:
        for s in SCALES:
            for b in BITS:
                for variant in arch_variants(arch):
                    files[option_path('train', arch, s, b, variant)] = train_file(arch, s, b, variant)
                    files[option_path('test', arch, s, b, variant)] = test_file(arch, s, b, variant)
        for s in SCALES:
            files[f'options/compare_{arch}_x{s}.yml'] = compare_file(arch, s)
    for variant in ('v1', 'v2', 'qat'):
        for b in (4, 2):
            files[f'options/demo/train_{VARIANTS[variant][0]}_EDSR_demo_x4_w{b}a{b}.yml'] = demo_train_file(variant, b)
    files['options/demo/test_FP_EDSR_demo_x4.yml'] = demo_test_fp_file()
    files['options/demo/compare_EDSR_demo_x4.yml'] = demo_compare_file()
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--check', action='store_true', help='exit 1 if a file differs from what is generated')
    args = parser.parse_args(argv)
    stale = []
    for rel, text in all_files().items():
        path = osp.join(REPO, rel)
        current = open(path).read() if osp.isfile(path) else None
        if current != text:
            stale.append(rel)
            if not args.check:
                os.makedirs(osp.dirname(path), exist_ok=True)
                with open(path, 'w') as f:
                    f.write(text)
    print(('stale: ' if args.check else 'written: ') + (', '.join(stale) or 'none'))
    return 1 if (args.check and stale) else 0


if __name__ == '__main__':
    sys.exit(main())

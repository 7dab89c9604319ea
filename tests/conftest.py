"""Shared fixtures: tiny paired data made from skimage photos, option files, and the command runner."""
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import yaml

import odm_basicsr  # noqa: F401  (compat fixes + registration, before any basicsr import)
from odm_basicsr.data.photos import load_photo, make_paired_folders, make_paired_lmdbs

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCALE = 2


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """A small x2 train LMDB pair (astronaut, coffee) and a held-out validation folder (chelsea)."""
    root = tmp_path_factory.mktemp('data')
    photos = {n: load_photo(n) for n in ('astronaut', 'coffee')}
    make_paired_lmdbs(photos, str(root / 'train_HR.lmdb'), str(root / 'train_LR.lmdb'), SCALE, crop=48, step=48,
                      max_side=144)
    make_paired_folders({'chelsea': load_photo('chelsea')}, str(root / 'val' / 'HR'), str(root / 'val' / 'LR'),
                        SCALE, max_side=64)
    return root


def base_options(data_root, name, network, model_type='ODMModel', total_iter=4, **train_extra):
    """A BasicSR training option dict on the tiny data (CPU, num_worker 0, deterministic seed)."""
    opt = {
        'name': name,
        'model_type': model_type,
        'scale': SCALE,
        'num_gpu': 0,
        'manual_seed': 10,
        'datasets': {
            'train': {
                'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': f'{data_root}/train_HR.lmdb',
                'dataroot_lq': f'{data_root}/train_LR.lmdb', 'io_backend': {'type': 'lmdb'}, 'gt_size': 32,
                'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                'dataset_enlarge_ratio': 1, 'prefetch_mode': None
            },
            'val': {
                'name': 'heldout', 'type': 'PairedImageDataset', 'dataroot_gt': f'{data_root}/val/HR',
                'dataroot_lq': f'{data_root}/val/LR', 'io_backend': {'type': 'disk'}
            }
        },
        'network_g': dict(network),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}, 'total_iter': total_iter,
            'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
        },
        'val': {'val_freq': total_iter, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': SCALE, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': total_iter, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    if model_type != 'ODMModel':
        opt['train'].pop('calibration', None)
    opt['train'].update(train_extra)
    return opt


def make_test_options(train_opt, name, pretrain):
    """The test-mode twin of a training option dict."""
    opt = copy.deepcopy(train_opt)
    opt['name'] = name
    opt['datasets'] = {'test_1': dict(train_opt['datasets']['val'])}
    opt['path'] = {'pretrain_network_g': str(pretrain), 'strict_load_g': True}
    opt.pop('train')
    opt['val'] = dict(opt['val'], suffix=None)
    return opt


def write_options(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def run_cli(args, cwd, env_extra=None, timeout=600, check=True, launcher=None):
    """Run ``python -m odm_basicsr <args>`` (or under ``launcher``) in ``cwd``; returns CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    env.update(env_extra or {})
    cmd = (launcher or [sys.executable]) + ['-m', 'odm_basicsr'] + list(args)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'command failed ({proc.returncode}): {" ".join(cmd)}\n--- stdout\n{proc.stdout[-4000:]}'
                             f'\n--- stderr\n{proc.stderr[-6000:]}')
    return proc


def read_log(exp_dir, prefix='train_'):
    logs = sorted(f for f in os.listdir(exp_dir) if f.startswith(prefix) and f.endswith('.log'))
    with open(osp.join(exp_dir, logs[-1])) as f:
        return f.read()


def save_basicsr_checkpoint(net, path, key='params'):
    torch.save({key: net.state_dict()}, path)
    return str(path)


def cost_and_export_in_process(test_file, cwd):
    """basicsr cost (16x16, cost.json), export onnx (net.onnx, traced at 16x16) and packed (net.packed.pth) of
    ``test_file``, in this process, from ``cwd``."""
    from odm_basicsr.cli import main as cli_main
    before = os.getcwd()
    os.chdir(cwd)
    try:
        cli_main(['cost', '-opt', test_file, '--size', '16x16', '--json', 'cost.json'])
        cli_main(['export', '-opt', test_file, '--format', 'onnx', '--out', 'net.onnx', '--size', '16x16'])
        cli_main(['export', '-opt', test_file, '--format', 'packed', '--out', 'net.packed.pth'])
    finally:
        os.chdir(before)

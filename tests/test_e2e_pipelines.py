"""End to end through BasicSR's real train_pipeline / test_pipeline, run as the `basicsr` command in subprocesses."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import, also in spawned workers)
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import yaml
from basicsr.archs.edsr_arch import EDSR

from conftest import REPO, base_options, read_log, run_cli, save_basicsr_checkpoint, make_test_options, write_options

pytestmark = pytest.mark.slow
TINY_EDSR = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)


def last_psnr(text):
    return float(re.findall(r'# psnr: ([0-9.]+)', text)[-1])


def test_import_order_basicsr_after_plugin():
    code = 'import odm_basicsr, basicsr; from basicsr.utils.registry import ARCH_REGISTRY; ' \
           'print(sorted(k for k in ARCH_REGISTRY._obj_map if k.startswith(("ODM", "RDN"))))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "['ODMEDSR', 'ODMMSRResNet', 'ODMQuant', 'ODMRDN', 'ODMSwinIR', 'RDN']" in out


def test_help_and_version(tmp_path, capsys):
    out = run_cli(['--help'], tmp_path).stdout  # the entry point, in a fresh process
    for command in ('train', 'test', 'cost', 'convert-checkpoint'):
        assert command in out
    from odm_basicsr import cli  # the rest in this process: the same main()
    assert cli.main(['--version']) == 0
    assert re.match(r'odm-basicsr \d+\.\d+\.\d+', capsys.readouterr().out)
    assert cli.main(['trian']) == 2 and 'unknown command' in capsys.readouterr().err


def test_fp_edsr_train_auto_resume_and_test(tiny_data, tmp_path):
    """FP EDSR trains, --auto_resume continues to a larger total_iter on CPU, basicsr test reports PSNR."""
    opt = base_options(tiny_data, 'fp_edsr', dict(TINY_EDSR, type='EDSR'), model_type='SRModel', total_iter=3)
    path = write_options(tmp_path / 'fp.yml', opt)
    run_cli(['train', '-opt', path], tmp_path)
    exp = tmp_path / 'experiments' / 'fp_edsr'
    assert (exp / 'models' / 'net_g_3.pth').is_file() and (exp / 'training_states' / '3.state').is_file()
    run_cli(['train', '-opt', path, '--auto_resume', '--force_yml', 'train:total_iter=6', 'logger:save_checkpoint_freq=6'],
            tmp_path)
    log = read_log(exp)
    assert 'Resuming training from epoch: 0, iter: 3' in log
    assert (exp / 'models' / 'net_g_6.pth').is_file()
    test_path = write_options(tmp_path / 'fp_test.yml', make_test_options(opt, 'fp_edsr_test', exp / 'models' / 'net_g_6.pth'))
    run_cli(['test', '-opt', test_path], tmp_path)
    test_log = read_log(tmp_path / 'results' / 'fp_edsr_test', prefix='test_')
    assert last_psnr(test_log) > 10
    assert not (tmp_path / 'odm_basicsr').exists()  # nothing written outside the working-directory layout


def shrink_preset(preset_file, data_root, pretrain, name, total_iter):
    """Load a shipped preset and shrink it to a tiny network and the tiny data, keeping its ODM settings."""
    with open(osp.join(REPO, preset_file)) as f:
        preset = yaml.safe_load(f)
    network = dict(preset['network_g'], **TINY_EDSR)
    extra = {k: preset['train'][k] for k in ('odm_opt', 'cooperation', 'quant_lr_mul', 'calibration')
             if k in preset['train']}
    if 'calibration' in extra:
        extra['calibration'] = dict(extra['calibration'], num_batches=2)
    if 'odm_opt' in extra:  # a weight that is visible on a tiny net within a few steps
        extra['odm_opt'] = dict(extra['odm_opt'], loss_weight=1e-4)
    opt = base_options(data_root, name, network, preset['model_type'], total_iter, **extra)
    opt['datasets']['train']['batch_size_per_gpu'] = 6  # 18 tiles -> 3 iterations per epoch
    opt['path']['pretrain_network_g'] = str(pretrain)
    opt['logger']['save_checkpoint_freq'] = 3
    return opt


PRESETS = {'v1': ('options/train_ODM_EDSR_x4_w4a4.yml', 'sign_conflict_ratio'),
           'v2': ('options/v2/train_ODMv2_EDSR_x4_w4a4.yml', 'grad_cos'),
           'qat': ('options/qat/train_QAT_EDSR_x4_w4a4.yml', None)}


@pytest.fixture(scope='module')
def fp_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_basicsr_checkpoint(EDSR(**TINY_EDSR), tmp_path_factory.mktemp('fp') / 'fp_edsr.pth')


@pytest.mark.parametrize('variant', list(PRESETS))
def test_preset_calibrates_trains_resumes_exactly_and_tests(variant, tiny_data, fp_checkpoint, tmp_path):
    """Each preset, shrunk, runs calibration, cooperative training with its statistic in the log, and
    validation; a run stopped at a checkpoint and resumed with --auto_resume ends bit-identical to an
    uninterrupted one; basicsr test reproduces the validation PSNR from the checkpoint."""
    preset_file, stat_key = PRESETS[variant]
    full = shrink_preset(preset_file, tiny_data, fp_checkpoint, f'{variant}_full', 6)
    run_cli(['train', '-opt', write_options(tmp_path / 'full.yml', full)], tmp_path)
    log = read_log(tmp_path / 'experiments' / f'{variant}_full')
    assert 'Calibrating 4 quantized layers on 2 training batches' in log
    assert 'ODM variant:' in log and 'l_pix:' in log
    if stat_key:
        assert f'{stat_key}:' in log and 'l_reg:' in log
    else:
        assert 'l_reg' not in log
    if variant == 'v1':
        assert 'got an offset' in log
    if variant == 'v2_teacher':
        assert 'l_distill' in log and 'l_pix' not in log and 'Distribution offset: body.' in log

    part = shrink_preset(preset_file, tiny_data, fp_checkpoint, f'{variant}_part', 3)
    part_path = write_options(tmp_path / 'part.yml', part)
    run_cli(['train', '-opt', part_path], tmp_path)
    run_cli(['train', '-opt', part_path, '--auto_resume', '--force_yml', 'train:total_iter=6'], tmp_path)
    part_log = read_log(tmp_path / 'experiments' / f'{variant}_part')
    assert 'calibration is skipped' in part_log and 'generator states restored' in part_log
    full_state = torch.load(tmp_path / 'experiments' / f'{variant}_full' / 'models' / 'net_g_6.pth')['params']
    part_state = torch.load(tmp_path / 'experiments' / f'{variant}_part' / 'models' / 'net_g_6.pth')['params']
    assert full_state.keys() == part_state.keys()
    for key in full_state:
        assert torch.equal(full_state[key], part_state[key]), key
    assert any('act_quantizer.lower' in k for k in full_state)

    test_opt = make_test_options(full, f'{variant}_test', tmp_path / 'experiments' / f'{variant}_full' / 'models' /
                            'net_g_6.pth')
    run_cli(['test', '-opt', write_options(tmp_path / 'test.yml', test_opt)], tmp_path)
    test_log = read_log(tmp_path / 'results' / f'{variant}_test', prefix='test_')
    assert last_psnr(test_log) == pytest.approx(last_psnr(log), abs=1e-4)


@pytest.mark.parametrize('variant', ['v1', 'v2', 'qat', 'v2_teacher'])
def test_torchrun_two_ranks_stay_bit_identical_and_validate(variant, tiny_data, fp_checkpoint, tmp_path):
    """`torchrun --nproc_per_node 2 ... --launcher pytorch` on CPU (gloo) through BasicSR's pipeline, with a val
    section validated mid-training and at the end (BasicSR validates on rank 0 alone): ODM v1 with offsets and sign
    cooperation, ODM v2 with cosine, and plain QAT, whose DDP forward syncs the quantizers' buffers (its validation
    through the wrapper failed with 'Connection closed by peer'). Both ranks end bit-identical, and the validation PSNR
    rank 0 logs is the one `basicsr test` computes from the saved checkpoint in one process. v2_teacher: ODM v2 on
    the FP teacher alone (train.distill_opt, no pixel_opt)."""
    preset_file, stat_key = PRESETS[variant.replace('_teacher', '')]
    opt = shrink_preset(preset_file, tiny_data, fp_checkpoint, f'ddp_{variant}', 4)
    if variant.endswith('_teacher'):
        del opt['train']['pixel_opt']
        opt['train']['distill_opt'] = {'loss': 'l1'}
    opt['datasets']['train']['batch_size_per_gpu'] = 3
    opt['logger']['save_checkpoint_freq'] = 4
    opt['val']['val_freq'] = 2  # rank 1 trains on while rank 0 validates
    path = write_options(tmp_path / 'ddp.yml', opt)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    port = 29611 + ['v1', 'v2', 'qat', 'v2_teacher'].index(variant)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}',
           osp.join(REPO, 'tests', 'ddp_worker.py'), 'train', '-opt', path, '--launcher', 'pytorch']
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    log = read_log(tmp_path / 'experiments' / f'ddp_{variant}')
    assert 'World size (gpu number): 2' in log and (stat_key is None or stat_key in log)
    if variant == 'v1':
        assert 'got an offset' in log
    assert len(re.findall(r'# psnr: ([0-9.]+)', log)) >= 2  # iterations 2 and 4
    rank0, rank1 = (torch.load(tmp_path / f'rank{r}_final.pth') for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    changed = False
    fp = torch.load(fp_checkpoint)['params']
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        changed |= key in fp and not torch.equal(rank0[key], fp[key])
    assert changed  # training really moved the weights
    checkpoint = tmp_path / 'experiments' / f'ddp_{variant}' / 'models' / 'net_g_4.pth'
    test_opt = make_test_options(opt, f'ddp_{variant}_test', checkpoint)
    run_cli(['test', '-opt', write_options(tmp_path / 'test.yml', test_opt)], tmp_path)
    test_log = read_log(tmp_path / 'results' / f'ddp_{variant}_test', prefix='test_')
    assert last_psnr(test_log) == pytest.approx(last_psnr(log), abs=1e-4)


def test_teacher_only_training_resumes_bit_identically_with_the_fp_teacher(tiny_data, fp_checkpoint, tmp_path):
    """train.distill_opt without pixel_opt (a GAN checkpoint fine-tuned on its FP teacher alone), with ODM v2,
    through basicsr train: a run stopped at iteration 3 and resumed with --auto_resume ends bit-identical to an
    uninterrupted one, and the resumed run rebuilds the teacher from the FP checkpoint, not from the resumed
    net_g_3.pth that BasicSR points path.pretrain_network_g at."""
    def teacher_options(name, total_iter):
        opt = shrink_preset('options/v2/train_ODMv2_EDSR_x4_w4a4.yml', tiny_data, fp_checkpoint, name, total_iter)
        del opt['train']['pixel_opt']
        opt['train']['distill_opt'] = {'loss': 'l1', 'features': ['body.1']}
        return opt

    run_cli(['train', '-opt', write_options(tmp_path / 'full.yml', teacher_options('teacher_full', 6))], tmp_path)
    part_path = write_options(tmp_path / 'part.yml', teacher_options('teacher_part', 3))
    run_cli(['train', '-opt', part_path], tmp_path)
    run_cli(['train', '-opt', part_path, '--auto_resume', '--force_yml', 'train:total_iter=6'], tmp_path)
    log = read_log(tmp_path / 'experiments' / 'teacher_part')
    assert 'l_distill:' in log and 'l_pix' not in log and 'grad_cos' in log
    assert log.count(f'FP teacher: {fp_checkpoint} with the quantizers off') == 1  # the resumed run's log
    assert 'Resuming training from epoch' in log and 'net_g_3.pth with the quantizers off' not in log
    full, part = (torch.load(tmp_path / 'experiments' / n / 'models' / 'net_g_6.pth')['params']
                  for n in ('teacher_full', 'teacher_part'))
    assert full.keys() == part.keys() and not any('teacher' in k for k in full)
    for key in full:
        assert torch.equal(full[key], part[key]), key

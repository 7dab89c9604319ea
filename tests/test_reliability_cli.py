"""Reliability through the real `basicsr` command: a run killed right after a checkpoint resumes bit-identically
with --auto_resume; checkpoints of another scale / architecture, corrupt checkpoints and truncated LMDBs end the
command with a clear message and leave nothing that looks like a run.

Every bad input is refused before anything is written, with a message that names it.
"""
import odm_basicsr  # noqa: F401  (must precede any basicsr import)
import copy
import os
import os.path as osp
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from basicsr.archs.edsr_arch import EDSR

from conftest import REPO, base_options, make_test_options, read_log, run_cli, save_basicsr_checkpoint, write_options

TINY_EDSR = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)
ODM_TRAIN = dict(odm_opt=dict(type='ODMLoss', regularizer='variance', loss_weight=1e-4), cooperation='sign',
                 calibration=dict(num_batches=2))


@pytest.fixture(scope='module')
def fp_checkpoint(tmp_path_factory):
    """An FP BasicSR EDSR x2 (num_feat 8, num_block 2) checkpoint, {'params': state_dict}."""
    torch.manual_seed(0)
    return save_basicsr_checkpoint(EDSR(**TINY_EDSR), tmp_path_factory.mktemp('fp') / 'fp_edsr_x2.pth')


def cli_env():
    return dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', PYTHONPATH=REPO)


def files_under(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def assert_tensors_equal(a, b, where='state'):
    """Recursive exact comparison of (nested) checkpoint contents."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f'{where}: keys differ'
        for k in a:
            assert_tensors_equal(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f'{where}: lengths differ'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tensors_equal(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


# ---------------------------------------------------------------------------------------------------------------
# 1. SIGKILL right after a checkpoint, then --auto_resume: bit-identical to an uninterrupted run
# ---------------------------------------------------------------------------------------------------------------
def odm_v1_options(data_root, pretrain, name, total_iter):
    """The shipped ODM v1 preset (variance regularizer, sign cooperation, offsets auto, quantizers at 10x), shrunk
    to a tiny EDSR x2 on the tiny data: 18 tiles / batch 6 = 3 iterations per epoch, a checkpoint every epoch."""
    with open(osp.join(REPO, 'options', 'train_ODM_EDSR_x4_w4a4.yml')) as f:
        preset = yaml.safe_load(f)
    network = dict(preset['network_g'], **TINY_EDSR)
    assert network['offsets'] == 'auto' and preset['train']['cooperation'] == 'sign'
    extra = {k: copy.deepcopy(preset['train'][k]) for k in ('odm_opt', 'cooperation', 'quant_lr_mul', 'calibration')}
    extra['calibration']['num_batches'] = 2
    extra['odm_opt']['loss_weight'] = 1e-4  # visible on a tiny net within a few steps
    opt = base_options(data_root, name, network, preset['model_type'], total_iter, **extra)
    opt['datasets']['train']['batch_size_per_gpu'] = 6
    opt['datasets']['train']['num_worker_per_gpu'] = 0
    opt['path']['pretrain_network_g'] = str(pretrain)
    opt['logger']['save_checkpoint_freq'] = 3
    return opt


ITERS_PER_EPOCH = 3
TOTAL_ITER = 48  # ~40 ms an iteration: the run goes on for seconds after its first training state


@pytest.fixture(scope='module')
def kill_and_resume(tiny_data, fp_checkpoint, tmp_path_factory):
    """The same ODM v1 options run twice: in killed/ SIGKILLed right after its first training state, then resumed
    with --auto_resume to the end; in full/ uninterrupted. Returns what the tests check."""
    root = tmp_path_factory.mktemp('kill_and_resume')
    opt = odm_v1_options(tiny_data, fp_checkpoint, 'odm_v1_kill', TOTAL_ITER)
    killed_cwd, full_cwd = root / 'killed', root / 'full'
    killed_cwd.mkdir()
    full_cwd.mkdir()
    killed_opt = write_options(killed_cwd / 'train.yml', opt)
    full_opt = write_options(full_cwd / 'train.yml', opt)
    exp = killed_cwd / 'experiments' / opt['name']
    states, models = exp / 'training_states', exp / 'models'

    # SIGKILL as soon as the first training state is on disk. ODMModel writes it as <iter>.state.tmp and renames it,
    # and BasicSR writes net_g_<iter>.pth before it: once <iter>.state exists, both are complete.
    console_path = root / 'killed_console.txt'
    with open(console_path, 'w') as console:
        proc = subprocess.Popen([sys.executable, '-m', 'odm_basicsr', 'train', '-opt', killed_opt], cwd=killed_cwd,
                                env=cli_env(), stdout=console, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not (states.is_dir() and any(f.endswith('.state') for f in os.listdir(states))):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    at_kill = dict(returncode=proc.returncode, console=console_path.read_text(),
                   latest_exists=(models / 'net_g_latest.pth').exists(),
                   states=sorted(os.listdir(states)) if states.is_dir() else [], first_log=read_log(exp))
    saved = sorted(int(f[:-len('.state')]) for f in at_kill['states'] if f.endswith('.state'))
    resume_iter = saved[-1] if saved else None
    net_at_kill = (torch.load(models / f'net_g_{resume_iter}.pth', weights_only=True)['params']
                   if resume_iter is not None else None)

    run_cli(['train', '-opt', killed_opt, '--auto_resume'], killed_cwd)
    run_cli(['train', '-opt', full_opt], full_cwd)
    full_exp = full_cwd / 'experiments' / opt['name']
    load = lambda path: torch.load(path, weights_only=True)  # noqa: E731
    return dict(
        at_kill=at_kill, saved=saved, resume_iter=resume_iter, net_at_kill=net_at_kill,
        resumed_log=read_log(exp), full_log=read_log(full_exp),
        full_net=load(full_exp / 'models' / 'net_g_latest.pth')['params'],
        resumed_net=load(models / 'net_g_latest.pth')['params'],
        full_state=load(full_exp / 'training_states' / f'{TOTAL_ITER}.state'),
        resumed_state=load(states / f'{TOTAL_ITER}.state'))


@pytest.mark.slow
def test_kill_after_checkpoint_then_auto_resume_is_bit_identical(kill_and_resume):
    r = kill_and_resume
    at_kill = r['at_kill']
    # the kill really landed mid-run: killed by the signal (a run that had already finished would have exited 0),
    # after a complete checkpoint and before the final one
    assert at_kill['returncode'] == -signal.SIGKILL, at_kill['console'][-4000:]
    assert not at_kill['latest_exists']
    assert r['saved'] and r['resume_iter'] < TOTAL_ITER, at_kill['states']
    assert all(it % ITERS_PER_EPOCH == 0 for it in r['saved'])
    assert not [f for f in at_kill['states'] if f.endswith('.tmp')]
    assert r['net_at_kill'] is not None
    assert 'Calibrating 4 quantized layers on 2 training batches' in at_kill['first_log']

    resumed_log, resume_iter = r['resumed_log'], r['resume_iter']
    assert resumed_log != at_kill['first_log']
    assert 'Resuming: calibration is skipped' in resumed_log and 'Calibrating' not in resumed_log
    assert 'generator states restored' in resumed_log
    # the state at an epoch end records the next epoch: the finished epoch is not replayed
    assert f'Resuming training from epoch: {resume_iter // ITERS_PER_EPOCH}, iter: {resume_iter}.' in resumed_log
    assert 'Calibrating 4 quantized layers' in r['full_log']

    full_net, resumed_net = r['full_net'], r['resumed_net']
    # quantizer parameters (activation ranges) and buffers (calibration flags, offset switches) are compared too
    assert any(k.endswith('act_quantizer.lower') for k in full_net)
    assert any(k.endswith('act_quantizer.calibrated') for k in full_net)
    assert any(k.endswith(('offset.shift_on', 'offset.scale_on')) and bool(v) for k, v in full_net.items())
    assert_tensors_equal(full_net, resumed_net, 'net_g_latest')
    assert any(not torch.equal(r['net_at_kill'][k], resumed_net[k]) for k in resumed_net)  # training went on

    full_state, resumed_state = r['full_state'], r['resumed_state']
    assert full_state['optimizers'][0]['state'], 'the optimizer state is empty'
    for key in ('epoch', 'iter', 'optimizers', 'schedulers', 'skipped_steps'):
        assert_tensors_equal(full_state[key], resumed_state[key], f'{TOTAL_ITER}.state.{key}')
    for key in ('python', 'numpy'):  # the data stream (crops, flips) is driven by these
        assert_tensors_equal(full_state['generators'][key], resumed_state['generators'][key], f'generators.{key}')


@pytest.mark.slow
def test_torch_generator_state_after_resume_matches(kill_and_resume):
    full, resumed = kill_and_resume['full_state']['generators'], kill_and_resume['resumed_state']['generators']
    assert torch.equal(full['torch'], resumed['torch'])


@pytest.mark.slow
@pytest.mark.parametrize('workers', [0, 2])
def test_resume_from_a_mid_epoch_checkpoint_is_bit_identical(workers, tiny_data, fp_checkpoint, tmp_path):
    """A checkpoint in the middle of an epoch (iteration 4 of 3-iteration epochs): the resumed run skips the
    epoch's batches that were trained on, restores the generators after them, and ends where an uninterrupted run
    ends. BasicSR alone replays the epoch from its start (other data, other weights). With data-loader workers too
    (re-seeded at each epoch start by BasicSR)."""
    opt = odm_v1_options(tiny_data, fp_checkpoint, 'odm_v1_mid_epoch', 8)
    opt['logger']['save_checkpoint_freq'] = 4
    opt['datasets']['train']['num_worker_per_gpu'] = workers
    full_cwd, part_cwd = tmp_path / 'full', tmp_path / 'part'
    full_cwd.mkdir()
    part_cwd.mkdir()
    run_cli(['train', '-opt', write_options(full_cwd / 'train.yml', opt)], full_cwd)
    part_opt = write_options(part_cwd / 'train.yml', opt)
    run_cli(['train', '-opt', part_opt, '--force_yml', 'train:total_iter=4'], part_cwd)
    run_cli(['train', '-opt', part_opt, '--auto_resume'], part_cwd)
    exp = part_cwd / 'experiments' / opt['name']
    log = read_log(exp)
    assert 'Resuming training from epoch: 1, iter: 4.' in log
    assert 'skipping the 1 batch of epoch 1 that the interrupted run trained on' in log, log[-3000:]
    load = lambda root: torch.load(root / 'experiments' / opt['name'] / 'models' / 'net_g_8.pth',  # noqa: E731
                                   weights_only=True)['params']
    at_4 = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)['params']
    full, resumed = load(full_cwd), load(part_cwd)
    assert any(not torch.equal(at_4[k], resumed[k]) for k in resumed)  # training went on
    assert_tensors_equal(full, resumed, 'net_g_8')
    state = lambda root: torch.load(root / 'experiments' / opt['name'] / 'training_states' / '8.state',  # noqa: E731
                                    weights_only=True)
    full_state, resumed_state = state(full_cwd), state(part_cwd)
    assert full_state['epoch_length'] == 3 and full_state['optimizers'][0]['state']
    for key in ('epoch', 'iter', 'optimizers', 'schedulers', 'generators'):  # torch's generator too
        assert_tensors_equal(full_state[key], resumed_state[key], f'8.state.{key}')


# ---------------------------------------------------------------------------------------------------------------
# 2, 3. Checkpoints that do not fit, corrupt checkpoints and truncated LMDBs, through the command
# ---------------------------------------------------------------------------------------------------------------
NET_X2 = dict(TINY_EDSR, type='ODMEDSR')
NET_X4 = dict(TINY_EDSR, type='ODMEDSR', upscale=4)  # other scale than the x2 checkpoint
NET_RDN = dict(type='ODMRDN', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, num_layer=2, growth=8,
               upscale=2)  # other architecture

# case: (command, network, checkpoint kind, lmdb truncation)
CASES = {
    'train-other-scale': ('train', NET_X4, 'fp', None),
    'train-other-arch': ('train', NET_RDN, 'fp', None),
    'test-other-scale': ('test', NET_X4, 'fp', None),
    'test-other-arch': ('test', NET_RDN, 'fp', None),
    'train-random-bytes-checkpoint': ('train', NET_X2, 'random', None),
    'train-truncated-checkpoint': ('train', NET_X2, 'truncated', None),
    'train-lmdb-below-one-page': ('train', NET_X2, None, 4096),
    'train-lmdb-cut-in-half': ('train', NET_X2, None, 0.5),
}
MISMATCH = ['train-other-scale', 'train-other-arch', 'test-other-scale', 'test-other-arch']
CORRUPT = ['train-random-bytes-checkpoint', 'train-truncated-checkpoint']


class FailedRun:
    def __init__(self, proc, cwd, option_file, checkpoint, opt):
        self.proc, self.cwd, self.option_file, self.checkpoint, self.opt = proc, cwd, option_file, checkpoint, opt

    @property
    def error_lines(self):
        """The last non-empty lines of stderr, from the last line that does not start with a space (the exception
        line, or the message of a SystemExit) on."""
        lines = [ln for ln in self.proc.stderr.splitlines() if ln.strip()]
        start = max(i for i, ln in enumerate(lines) if not ln.startswith(' '))
        return lines[start:]

    def written(self):
        """Files the command wrote under its working directory (the option file excluded)."""
        return [f for f in files_under(self.cwd) if f != osp.basename(self.option_file)]


@pytest.fixture(scope='module')
def failed_run(tiny_data, fp_checkpoint, tmp_path_factory):
    """Runs a case of CASES once per module (shared by the plain and the xfail tests) and returns a FailedRun."""
    cache = {}

    def run(case):
        if case in cache:
            return cache[case]
        command, network, ckpt_kind, lmdb_cut = CASES[case]
        cwd = tmp_path_factory.mktemp(case)  # where the command runs: only the option file is put there
        inputs = tmp_path_factory.mktemp(case + '-inputs')
        data_root = tiny_data
        checkpoint = None
        if ckpt_kind == 'fp':
            checkpoint = str(fp_checkpoint)
        elif ckpt_kind == 'random':
            checkpoint = str(inputs / 'random_bytes.pth')
            with open(checkpoint, 'wb') as f:
                f.write(random.Random(0).randbytes(4096))
        elif ckpt_kind == 'truncated':
            checkpoint = str(inputs / 'truncated.pth')
            with open(fp_checkpoint, 'rb') as f:
                full = f.read()
            with open(checkpoint, 'wb') as f:
                f.write(full[:len(full) // 2])
        if lmdb_cut is not None:
            data_root = inputs / 'data'
            shutil.copytree(tiny_data, data_root)
            mdb = data_root / 'train_HR.lmdb' / 'data.mdb'
            size = mdb.stat().st_size
            keep = lmdb_cut if isinstance(lmdb_cut, int) else int(size * lmdb_cut) // 4096 * 4096
            assert keep < size
            os.truncate(mdb, keep)
        opt = base_options(data_root, case, network, **copy.deepcopy(ODM_TRAIN))
        opt['path']['pretrain_network_g'] = checkpoint
        if command == 'test':
            opt = make_test_options(opt, case, checkpoint)
        option_file = write_options(cwd / f'{case}.yml', opt)
        proc = run_cli([command, '-opt', option_file], cwd, check=False, timeout=300)
        cache[case] = FailedRun(proc, cwd, option_file, checkpoint, opt)
        return cache[case]

    return run


def assert_nothing_resumable(run):
    """Whatever was written is at most BasicSR's option copy and log: no checkpoint, no training state, no image."""
    written = run.written()
    leftovers = [f for f in written if not f.endswith(('.yml', '.log'))]
    assert not leftovers, leftovers
    for f in written:  # and only in the experiment / results folder of this option file
        assert f.split(os.sep)[:2] in (['experiments', run.opt['name']], ['results', run.opt['name']]), f


MISMATCH_HINTS = {
    'other-scale': ('does not fit network_g (ODMEDSR)', 'missing keys (2): upsample.2.weight, upsample.2.bias',
                    'the upsampler differs: check upscale (the checkpoint may be for another scale)'),
    'other-arch': ('does not fit network_g (ODMRDN)', 'unexpected keys (12): conv_first.weight',
                   'likely cause: the checkpoint belongs to another architecture'),
}


def assert_refused_before_anything_is_written(run):
    assert run.proc.returncode > 0, run.proc.stderr[-3000:]  # an error exit, not a crash by a signal
    assert 'Traceback' not in run.proc.stderr, run.proc.stderr[-3000:]
    assert run.written() == []  # no experiments/, results/, tb_logger/ or log


@pytest.mark.parametrize('case', MISMATCH)
def test_checkpoint_of_other_scale_or_architecture_is_refused_before_anything_is_written(failed_run, case):
    run = failed_run(case)
    assert_refused_before_anything_is_written(run)
    header, keys, hint = MISMATCH_HINTS[case.split('-', 1)[1]]
    message = run.proc.stderr
    assert f"path.pretrain_network_g: '{run.checkpoint}' {header}" in message, message
    assert keys in message and hint in message, message


@pytest.mark.parametrize('case', CORRUPT)
def test_corrupt_checkpoint_is_reported_as_corrupt_before_anything_is_written(failed_run, case):
    run = failed_run(case)
    assert_refused_before_anything_is_written(run)
    message = run.proc.stderr
    assert f"path.pretrain_network_g: '{run.checkpoint}'" in message, message
    assert 'unsafe' not in message and 'weights_only' not in message
    assert any(w in message for w in ('corrupt', 'truncated', 'not a PyTorch checkpoint')), message


def test_lmdb_truncated_below_one_page_is_refused_by_the_command_before_anything_is_written(failed_run):
    run = failed_run('train-lmdb-below-one-page')
    assert_refused_before_anything_is_written(run)
    assert 'datasets.train.dataroot_gt:' in run.proc.stderr and 'data.mdb is truncated (4096 bytes)' in \
        run.proc.stderr


def test_lmdb_cut_in_half_is_refused_before_anything_is_written(failed_run):
    run = failed_run('train-lmdb-cut-in-half')
    assert_refused_before_anything_is_written(run)
    assert 'datasets.train.dataroot_gt:' in run.proc.stderr and 'data.mdb is truncated: LMDB holds' in \
        run.proc.stderr

"""What a new user meets first: shipped files found from any folder, commands that speak one language, bad input
caught first with one error per cause, and quiet, truthful output. Each test failed before these were fixed."""
import copy
import math
import os
import os.path as osp

import pytest
import torch
import yaml

from conftest import REPO, base_options, run_cli, write_options
from odm_basicsr.cli import main
from odm_basicsr.options_check import OptionError, check_options, load_option_file
from odm_basicsr.utils.shipped import PACKAGE_DIR, option_files_dir, resolve_shipped, resolve_shipped_paths

NET = dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)
COMMANDS = ('calibrate', 'compare', 'convert-checkpoint', 'cost', 'demo', 'export', 'infer', 'options', 'prepare')
DEMO_CHECKPOINT = 'odm_basicsr/pretrained/EDSR_demo_x4_f32b8_FP.pth'


# -- shipped files, from any folder -----------------------------------------------------------------------------------
def test_shipped_checkpoint_paths_resolve_to_the_package_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_shipped(DEMO_CHECKPOINT) == osp.join(PACKAGE_DIR, 'pretrained', 'EDSR_demo_x4_f32b8_FP.pth')
    assert osp.isfile(resolve_shipped(DEMO_CHECKPOINT))
    assert resolve_shipped('experiments/x/models/net_g_latest.pth') == 'experiments/x/models/net_g_latest.pth'
    (tmp_path / 'odm_basicsr' / 'pretrained').mkdir(parents=True)  # a local file of that name wins
    (tmp_path / DEMO_CHECKPOINT).write_bytes(b'')
    assert resolve_shipped(DEMO_CHECKPOINT) == DEMO_CHECKPOINT
    nested = {'path': {'pretrain_network_g': 'odm_basicsr/pretrained/RCAN_demo_x4_f32g2b4_FP.pth'},
              'compare': {'entries': [{'checkpoint': 'odm_basicsr/pretrained/RCAN_demo_x4_f32g2b4_FP.pth'}]}}
    resolve_shipped_paths(nested)
    assert osp.isabs(nested['path']['pretrain_network_g']) and osp.isabs(nested['compare']['entries'][0]['checkpoint'])


def test_demo_option_file_checks_clean_from_an_empty_folder(tmp_path, monkeypatch):
    """The demo's FP test file names the shipped checkpoint relative to the checkout; from elsewhere it is found."""
    from odm_basicsr.options_check import check_option_file
    monkeypatch.chdir(tmp_path)
    opt = check_option_file(osp.join(option_files_dir(), 'demo', 'test_FP_EDSR_demo_x4.yml'), is_train=False,
                            sections=('network_g', 'path'))
    assert opt['path']['pretrain_network_g'] == resolve_shipped(DEMO_CHECKPOINT)


def test_basicsr_parse_options_resolves_shipped_paths(monkeypatch):
    import basicsr.test
    import basicsr.train
    from odm_basicsr._compat import _with_shipped_paths
    assert basicsr.train.parse_options.__qualname__.startswith('_with_shipped_paths')
    assert basicsr.test.parse_options.__qualname__.startswith('_with_shipped_paths')
    fake = _with_shipped_paths(lambda root, is_train=True: ({'path': {'pretrain_network_g': DEMO_CHECKPOINT}}, None))
    monkeypatch.chdir('/')
    assert fake('/', is_train=False)[0]['path']['pretrain_network_g'] == resolve_shipped(DEMO_CHECKPOINT)


def test_options_command_copies_every_shipped_file_and_keeps_edited_ones(tmp_path, capsys):
    dest = tmp_path / 'opts'
    main(['options', str(dest)])
    shipped = sorted(osp.relpath(osp.join(r, f), option_files_dir()) for r, _, fs in os.walk(option_files_dir())
                     for f in fs if f.endswith('.yml'))
    copied = sorted(osp.relpath(osp.join(r, f), dest) for r, _, fs in os.walk(dest) for f in fs)
    assert copied == shipped and 'train_ODM_EDSR_x4_w4a4.yml' in copied and len(copied) > 100
    edited = dest / 'train_ODM_EDSR_x4_w4a4.yml'
    edited.write_text('name: mine\n')
    main(['options', str(dest)])
    assert edited.read_text() == 'name: mine\n' and 'were kept (--overwrite replaces them)' in capsys.readouterr().out
    main(['options', str(dest), '--overwrite'])
    assert edited.read_text() != 'name: mine\n'


def test_every_shipped_option_file_runs_on_a_cpu_machine():
    """num_gpu: auto (the visible GPUs, else the CPU) in every shipped file, the grid's included."""
    for root, _, files in os.walk(option_files_dir()):
        for name in files:
            with open(osp.join(root, name)) as f:
                opt = yaml.safe_load(f)
            assert opt.get('num_gpu', 'auto') == 'auto', (name, opt.get('num_gpu'))


def test_no_message_calls_the_install_folder_the_repository_root():
    from odm_basicsr.options_check import checkpoint_hint
    assert 'repository root' not in checkpoint_hint(DEMO_CHECKPOINT)
    for root, _, files in os.walk(PACKAGE_DIR):
        for name in (f for f in files if f.endswith('.py')):
            with open(osp.join(root, name), encoding='utf-8') as f:
                assert 'repository root' not in f.read(), name


def test_demo_refuses_a_work_dir_inside_the_package():
    with pytest.raises(SystemExit, match='lies inside the installed package'):
        main(['demo', '--work-dir', osp.join(PACKAGE_DIR, 'pretrained')])


# -- one language ----------------------------------------------------------------------------------------------------
def _help(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, '-h'])
    assert info.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize('command', COMMANDS)
def test_every_usage_line_names_its_command_and_the_help_is_plain_text(capsys, command):
    text = _help(capsys, command)
    assert text.startswith(f'usage: basicsr {command} '), text[:80]
    assert '``' not in text


def test_the_same_thing_has_the_same_flag_with_the_old_names_as_aliases(capsys):
    assert '--out OUT, --output OUT' in _help(capsys, 'infer')
    assert '--tile-overlap TILE_OVERLAP, --tile_overlap TILE_OVERLAP' in _help(capsys, 'infer')
    for command in ('export', 'compare', 'cost'):
        assert '--size HxW, --input-size HxW' in _help(capsys, command), command
    for command in ('calibrate', 'compare', 'export'):
        assert '--out OUT, --output OUT' in _help(capsys, command), command
    for command in ('calibrate', 'compare', 'infer'):
        text = _help(capsys, command)
        assert '--device {auto,cpu,cuda}' in text and 'where the network runs' in text, command
    assert '--force-yml KEY=VALUE' in _help(capsys, 'calibrate')


def test_train_and_test_usage(capsys):
    main(['test', '-h'])
    text = capsys.readouterr().out
    assert text.startswith('usage: ') and ' test -opt OPTION_FILE' in text and 'auto-resume' not in text.split('\n')[0]
    main(['train', '-h'])
    assert '--auto-resume' in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(['train'])
    assert ' train -opt OPTION_FILE' in str(info.value) and '-opt OPTION_FILE is required' in str(info.value)


def test_hyphen_spellings_reach_basicsr_as_its_own():
    from odm_basicsr.cli import _normalise_basicsr_argv
    assert _normalise_basicsr_argv(['-opt', 'x.yml', '--auto-resume', '--force-yml', 'a=1', '--local-rank=1']) == [
        '-opt', 'x.yml', '--auto_resume', '--force_yml', 'a=1', '--local_rank=1']


def test_storage_is_in_binary_units():
    from odm_basicsr.quant import cost_report, format_cost_report
    from basicsr.archs import build_network
    text = format_cost_report(cost_report(build_network(dict(NET, w_bit=4, a_bit=4)), (3, 12, 12)))
    assert 'KiB' in text and 'KB' not in text.replace('KiB', '')


# -- bad input: caught first, one error per cause ----------------------------------------------------------------------
def test_a_misspelt_section_is_one_error(tiny_data):
    opt = base_options(tiny_data, 'typo', dict(NET), odm_opt=dict(type='ODMLoss', regularizer='variance',
                                                                  loss_weight=1e-4))
    opt['netwrok_g'] = opt.pop('network_g')
    with pytest.raises(OptionError) as info:
        check_options(opt)
    errors = str(info.value).split('\n  - ')[1:]
    assert errors == ["netwrok_g: unknown top-level key (did you mean 'network_g'?)."], errors


def test_a_misspelt_dataset_key_gets_did_you_mean(tiny_data):
    opt = base_options(tiny_data, 'typo', dict(NET))
    opt['datasets']['train']['gt_szie'] = opt['datasets']['train'].pop('gt_size')
    with pytest.raises(OptionError) as info:
        check_options(opt)
    message = str(info.value)
    assert "datasets.train.gt_szie: unknown key (did you mean 'gt_size'?" in message
    assert 'gt_size: missing' not in message


def test_a_checkpoint_of_another_architecture_is_named_so():
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from basicsr.archs import build_network
    from odm_basicsr.quant import CheckpointMismatchError
    state = RRDBNet(3, 3, num_feat=8, num_block=2, num_grow_ch=4, scale=2).state_dict()
    with pytest.raises(CheckpointMismatchError) as info:
        build_network(dict(NET)).load_state_dict(state)
    message = str(info.value)
    assert 'likely cause: the checkpoint belongs to another architecture' in message
    assert 'number of blocks' not in message and 'upsampler differs' not in message


# -- quiet, truthful output ------------------------------------------------------------------------------------------
def test_the_end_of_training_validation_is_not_repeated_and_keeps_the_last_iteration(tiny_data, monkeypatch):
    from types import SimpleNamespace

    from basicsr.models import build_model
    from basicsr.models.sr_model import SRModel
    opt = dict(base_options(tiny_data, 'val_once', dict(NET)), is_train=True, dist=False, rank=0, world_size=1)
    opt['train']['total_iter'] = 300
    model = build_model(opt)
    calls = []
    monkeypatch.setattr(SRModel, 'validation', lambda self, loader, it, tb, save: calls.append(it))
    loader = SimpleNamespace(dataset=SimpleNamespace(opt={'name': 'val'}))
    model.validation(loader, 300, None, False)  # val_freq 300
    model.validation(loader, 302, None, False)  # BasicSR's call after its loop, counter past total_iter
    assert calls == [300]
    other = build_model(opt)
    other.validation(loader, 302, None, False)  # val_freq that does not divide total_iter: one, labelled 300
    assert calls == [300, 300]


def test_psnr_vs_bitops_plot_is_linear_and_its_labels_cannot_collide():
    matplotlib = pytest.importorskip('matplotlib')
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from odm_basicsr.tools.compare_cli import psnr_bitops_figure
    rows = [dict(dataset='s', label=label, psnr=psnr, bitops=bitops) for label, psnr, bitops in (
        ('bicubic', 29.4, None), ('FP', 31.6, 2.0e13), ('QAT w4a4', 31.2, 1.24e13), ('ODM v1 w4a4', 31.5, 1.24e13),
        ('ODM v2 w4a4', 31.1, 1.24e13), ('QAT w2a2', 30.3, 1.23e13))]
    fig = psnr_bitops_figure(rows, ['s'], plt)
    ax = fig.axes[0]
    assert ax.get_xscale() == 'linear' and not ax.texts  # no annotation to overlap
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f'{r["label"]}: {r["psnr"]:.2f} dB' for r in rows]
    plt.close(fig)


def test_compare_fidelity_is_the_psnr_between_the_outputs_computed_independently(tiny_data):
    """basicsr compare's fidelity column against a float64 numpy PSNR of the two networks' outputs, per image."""
    import numpy as np
    from basicsr.archs import build_network
    from basicsr.data import build_dataset

    from odm_basicsr.quant import calibrate
    from odm_basicsr.tools.compare_cli import run
    from test_compare import FP_NET, ODM_NET, compare_options, save_basicsr_checkpoint
    torch.manual_seed(0)
    fp = build_network(dict(FP_NET, type='EDSR')).eval()
    quant = build_network(dict(ODM_NET)).eval()
    quant.load_state_dict(fp.state_dict(), strict=False)
    calibrate(quant, [torch.rand(2, 3, 16, 16)], progress=False)
    root = tiny_data / 'fidelity_check'
    root.mkdir(exist_ok=True)
    opt = compare_options(tiny_data, (save_basicsr_checkpoint(fp, root / 'fp.pth'),
                                      save_basicsr_checkpoint(quant, root / 'q.pth')))
    result = run(opt, (16, 16), torch.device('cpu'), log=lambda line: None)
    got = next(r['fidelity_db'] for r in result['rows'] if r['label'] == 'ODM v2 w4a4')
    dataset = build_dataset(dict(opt['datasets']['test_1'], phase='val', scale=2))
    values = []
    for i in range(len(dataset)):
        lq = dataset[i]['lq'].unsqueeze(0)
        with torch.no_grad():
            a = quant(lq).clamp(0, 1).double().numpy()[..., 2:-2, 2:-2]
            b = fp(lq).clamp(0, 1).double().numpy()[..., 2:-2, 2:-2]
        values.append(10 * math.log10(1 / np.mean((a - b) ** 2)))
    assert got == pytest.approx(float(np.mean(values)), abs=1e-3)

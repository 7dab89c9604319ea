"""Bad option values are one clear error naming the key, raised before anything is written."""
import copy
import os

import pytest
import torch
import yaml

from conftest import base_options, write_options
from odm_basicsr.cli import main
from odm_basicsr.options_check import OptionError, check_options

NET = dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)
GOOD_TRAIN = dict(odm_opt=dict(type='ODMLoss', regularizer='variance', loss_weight=1e-4), cooperation='sign',
                  calibration=dict(num_batches=2))


def good(tiny_data):
    return base_options(tiny_data, 'check', NET, **copy.deepcopy(GOOD_TRAIN))


def edit(opt, dotted, value):
    keys = dotted.split('.')
    target = opt
    for k in keys[:-1]:
        target = target[k]
    if value is DELETE:
        target.pop(keys[-1])
    else:
        target[keys[-1]] = value
    return opt


DELETE = object()
CASES = [
    ('network_g.w_bti', 4, r"network_g.w_bti: unknown key \(did you mean 'w_bit'\?\)"),
    ('network_g.w_bit', 1, 'w_bit must be an integer bit-width from 2 to 8'),
    ('network_g.a_bit', 16, 'a_bit must be an integer bit-width from 2 to 8'),
    ('network_g.a_bit', 4.5, 'a_bit must be an integer'),
    ('network_g.weight_clip', 'wc', 'network_g.weight_clip: .wc. is not one of'),
    ('network_g.offsets', 'shfit', r"network_g.offsets: 'shfit' is not one of .* \(did you mean 'shift'\?\)"),
    ('network_g.scope', 'head', 'network_g.scope'),
    ('network_g.outer_bit', 12, 'outer_bit must be an integer bit-width'),
    ('network_g.integer_zero_point', 'yes', 'network_g.integer_zero_point: must be true or false'),
    ('train.odm_opt.regularizer', 'varience', r"did you mean 'variance'"),
    ('train.odm_opt.stat', 'mad', 'train.odm_opt.stat'),
    ('train.odm_opt.loss_weight', -1.0, 'train.odm_opt.loss_weight: must be a number >= 0'),
    ('train.odm_opt.lambda', 1.0, 'train.odm_opt.lambda: unknown key'),
    ('train.cooperation', 'cos', r"train.cooperation: 'cos' is not one of .*did you mean 'cosine'"),
    ('train.calibration.num_batches', 0, 'train.calibration.num_batches: must be an integer >= 1'),
    ('train.calibration.num_batch', 4, r"did you mean 'num_batches'"),
    ('train.calibration.offset_top_k', 1.5, 'offset_top_k: must be a fraction'),
    ('train.calibration.offset_migration', 0, r'offset_migration: must be a number in \(0, 1\]'),
    ('train.calibration.offset_keep_zero', 'yes', 'offset_keep_zero: must be true or false'),
    ('train.quant_lr_mul', 0, 'train.quant_lr_mul: must be a number > 0'),
    ('train.max_skipped_steps', 0, 'max_skipped_steps'),
    ('train.compile', 'yes', 'train.compile: must be true or false'),
    ('train.guard_on_device', 1, 'train.guard_on_device: must be true or false'),
    ('train.weight_clip_interval', 0, 'train.weight_clip_interval: must be an integer >= 1'),
    ('path.pretrain_network_g', 'nowhere/EDSR_Mx4.pth', 'pretrain_network_g: checkpoint .* does not exist'),
    ('datasets.train.dataroot_gt', '/nonexistent/DIV2K_HR.lmdb', 'dataroot_gt: .* does not exist.*basicsr prepare'),
    ('datasets.val.dataroot_lq', '/nonexistent/LRbicx2', 'dataroot_lq: folder .* does not exist'),
    ('network_g.type', 'EDSR', 'needs an ODM arch'),
    # BasicSR's own sections: these failed with a traceback after the folders were made, or silently
    ('path.pretrain_network', 'EDSR_Mx4.pth', r"path.pretrain_network: unknown key \(did you mean 'pretrain_network_g'"),
    ('model_type', 'ODMmodel', r"model_type: 'ODMmodel' is not registered .*did you mean 'ODMModel'"),
    ('num_gpu', 'two', 'num_gpu: must be an integer >= 0 or auto'),
    ('scale', '2', r"scale: must be an integer >= 1, got '2' \(it is text: write 2 without quotes\)\.$"),
    ('train.optim_g.lr', '1e-4', r"train.optim_g.lr: must be a number >= 0, got '1e-4' \(YAML read '1e-4' as text"),
    ('train.optim_g.type', 'AdamW', "train.optim_g.type: BasicSR builds no 'AdamW' optimizer .*builds Adam\\)"),
    ('train.optim_g.type', 'adam', r"did you mean 'Adam'"),
    ('train.optim_g.weight_decy', 0, r"train.optim_g.weight_decy: unknown key \(did you mean 'weight_decay'"),
    ('train.scheduler.type', 'MultiStepLr', r"did you mean 'MultiStepLR'"),
    ('train.scheduler.milestone', [2], r"train.scheduler.milestone: unknown key \(did you mean 'milestones'"),
    ('train.pixel_opt.type', 'L1loss', r"train.pixel_opt.type: 'L1loss' is not registered .*did you mean 'L1Loss'"),
    ('train.total_iter', '4', 'train.total_iter: must be an integer >= 1'),
    ('val.val_frq', 2, r"val.val_frq: unknown key \(did you mean 'val_freq'"),
    ('val.metrics.psnr.type', 'calculate_PSNR', r"did you mean 'calculate_psnr'"),
    ('val.metrics.psnr.crop_boarder', 2, r"did you mean 'crop_border'"),
    ('logger.print_freq', 0, 'logger.print_freq: must be an integer >= 1'),
    ('logger', DELETE, 'logger: missing. A training file needs it'),
    ('datasets.train.io_backend.type', 'LMDB', r"datasets.train.io_backend.type: must be one of .*did you mean 'lmdb'"),
    ('datasets.train.batch_size_per_gpu', '2', 'datasets.train.batch_size_per_gpu: must be an integer >= 1'),
    ('datasets.train.gt_size', DELETE, 'datasets.train.gt_size: missing'),
    ('datasets.val.type', 'PairedImageDatset', r"did you mean 'PairedImageDataset'"),
]


@pytest.mark.parametrize('key, value, message', CASES, ids=[c[0] + '=' + str(c[1]) for c in CASES])
def test_bad_value_is_a_clear_error_and_nothing_is_written(tiny_data, tmp_path, key, value, message):
    opt = edit(good(tiny_data), key, value)
    with pytest.raises(OptionError, match=message):
        check_options(opt)
    path = write_options(tmp_path / 'bad.yml', opt)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit) as exc:
            main(['train', '-opt', path])
    finally:
        os.chdir(cwd)
    assert key.split('.')[-1] in str(exc.value)
    assert sorted(os.listdir(tmp_path)) == ['bad.yml']  # no experiments/, tb_logger/ or log


def test_files_of_the_wrong_kind_are_named_for_what_they_are(tiny_data, tmp_path):
    def message(opt):
        with pytest.raises(OptionError) as info:
            check_options(opt)
        return str(info.value)

    state = tmp_path / '4.state'
    torch.save({'epoch': 0, 'iter': 4, 'optimizers': [], 'schedulers': []}, state)
    assert 'is a training state (.state' in message(edit(good(tiny_data), 'path.pretrain_network_g', str(state)))
    assert 'is a folder; give the checkpoint file' in message(edit(good(tiny_data), 'path.pretrain_network_g',
                                                                 str(tmp_path)))
    network = tmp_path / 'net_g_4.pth'
    torch.save({'params': {}}, network)
    assert 'path.resume_state: ' in message(edit(good(tiny_data), 'path.resume_state', str(network)))
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert 'is empty (BasicSR reads every file' in message(edit(good(tiny_data), 'datasets.val.dataroot_gt',
                                                               str(empty)))
    assert 'network_g: the network cannot be built' in message(edit(good(tiny_data), 'network_g.rgb_mean', [0.4]))


def test_data_of_another_scale_the_same_folder_twice_and_another_runs_state(tiny_data, tmp_path, monkeypatch):
    """Each failed in BasicSR after the folders were made ('Scale mismatches', lmdb 'already open', a missing
    models/net_g_<iter>.pth)."""
    def message(opt):
        with pytest.raises(OptionError) as info:
            check_options(opt)
        return str(info.value)

    x4 = edit(edit(good(tiny_data), 'scale', 4), 'network_g.upscale', 4)  # the tiny data is x2
    text = message(x4)
    assert 'datasets.train: a GT image is' in text and '(x2), but scale is 4' in text
    assert 'datasets.val: a GT image is' in text
    # validation crops GT to LQ x scale, so a larger GT is fine there (x1 data read as x... is not: GT < LQ x 4)
    x1 = edit(edit(good(tiny_data), 'scale', 1), 'network_g.upscale', 1)
    text = message(x1)
    assert 'datasets.train: a GT image is' in text and 'datasets.val' not in text
    same = edit(good(tiny_data), 'datasets.val.dataroot_lq', good(tiny_data)['datasets']['val']['dataroot_gt'])
    assert 'datasets.val.dataroot_lq: the same folder as dataroot_gt' in message(same)
    monkeypatch.chdir(tmp_path)
    state = tmp_path / 'experiments' / 'other_run' / 'training_states' / '4.state'
    state.parent.mkdir(parents=True)
    state.write_bytes(b'')
    text = message(edit(good(tiny_data), 'path.resume_state', str(state)))
    assert "resuming loads the network from 'experiments/check/models/net_g_4.pth'" in text
    assert 'Is the state of another run?' in text
    renamed = state.parent / 'best.state'  # BasicSR reads the iteration inside it: not checked by name
    renamed.write_bytes(b'')
    check_options(edit(good(tiny_data), 'path.resume_state', str(renamed)))
    # --auto_resume reads no path.resume_state: without states of this run it starts fresh
    check_options(dict(edit(good(tiny_data), 'path.resume_state', str(state)), auto_resume=True))


def test_cost_size_must_be_positive():
    import argparse
    from odm_basicsr.tools.cli_io import parse_size
    assert parse_size('180x320') == (180, 320)
    for text in ('0x10', '10', 'axb', '-4x4'):
        with pytest.raises(argparse.ArgumentTypeError, match='size must look like 180x320'):
            parse_size(text)


def test_an_fp_network_g_gets_its_keys_checked(tiny_data):
    """train_FP_* files (and BasicSR's own) build a plain arch: a misspelled key was a TypeError traceback."""
    opt = edit(good(tiny_data), 'model_type', 'SRModel')
    opt['train'] = {k: v for k, v in opt['train'].items() if k not in ('odm_opt', 'cooperation', 'calibration')}
    opt['network_g'] = dict(NET, type='EDSR')
    check_options(copy.deepcopy(opt))
    opt['network_g']['num_blocks'] = opt['network_g'].pop('num_block')
    with pytest.raises(OptionError, match=r"network_g.num_blocks: unknown key \(did you mean 'num_block'\?\)"):
        check_options(copy.deepcopy(opt))
    opt['network_g']['type'] = 'EDSRR'
    with pytest.raises(OptionError, match=r"network_g.type: 'EDSRR' is not a registered arch \(did you mean 'EDSR'"):
        check_options(opt)


def test_whole_float_counts_as_basicsr_writes_them_pass(tiny_data):
    opt = good(tiny_data)  # BasicSR's own files write val_freq: !!float 5e3
    opt['val']['val_freq'] = opt['logger']['save_checkpoint_freq'] = 4.0
    check_options(opt)


def test_num_gpu_without_cuda_is_an_error(tiny_data, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    opt = edit(good(tiny_data), 'num_gpu', 1)
    with pytest.raises(OptionError, match='num_gpu: 1 but this machine has no CUDA device: set num_gpu: 0'):
        check_options(opt)
    check_options(edit(opt, 'num_gpu', 'auto'))


def test_force_yml_values_are_read_as_basicsr_reads_them(tiny_data, tmp_path):
    """--force_yml values: BasicSR kept 1e-6 and -1 as strings, so λ or lr sweeps in exponent notation failed after
    the folders were made; the check read them as numbers. Both now read them with one function."""
    import basicsr.utils.options
    from odm_basicsr._compat import force_yml_value
    assert basicsr.utils.options._postprocess_yml_value is force_yml_value
    for text, value in [('1e-6', 1e-6), ('-1', -1), ('2e-4', 2e-4), ('!!float 5e3', 5000.0), ('4', 4), ('1.5', 1.5),
                        ('~', None), ('none', None), ('true', True), ('False', False), ('[1, 2]', [1, 2]),
                        ('body.*.conv1', 'body.*.conv1'), ('inf', 'inf'), ('2024_05', '2024_05'), ('.5', 0.5),
                        ('[a, b]', ['a', 'b']), ('+3', 3), ('1.', 1.0)]:
        got = force_yml_value(text)
        assert got == value and type(got) is type(value), (text, got)
    path = write_options(tmp_path / 'opt.yml', good(tiny_data))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:  # a key under a section the file does not have: BasicSR cannot set it (KeyError after the folders)
        with pytest.raises(SystemExit, match='--force-yml train:calibration:dataset:name=x: the option file has no '
                                             'section train:calibration:dataset'):
            main(['train', '-opt', path, '--force-yml', 'train:calibration:dataset:name=x'])  # the hyphen spelling
        with pytest.raises(SystemExit, match='train.odm_opt.loss_weight: must be a number >= 0, got -1'):
            main(['train', '-opt', path, '--force_yml', 'train:odm_opt:loss_weight=-1'])
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(tmp_path)) == ['opt.yml']


def test_integer_zero_point_without_onnx_is_an_error_before_anything_is_written(tiny_data, monkeypatch):
    import sys
    opt = edit(good(tiny_data), 'network_g.integer_zero_point', True)
    check_options(copy.deepcopy(opt))  # onnx is installed here
    monkeypatch.setitem(sys.modules, 'onnx', None)  # as if it were not
    with pytest.raises(OptionError, match='integer_zero_point: true needs onnx'):
        check_options(opt)


def test_lmdb_without_meta_info_or_truncated(tiny_data, tmp_path):
    broken = tmp_path / 'broken.lmdb'
    broken.mkdir()
    (broken / 'data.mdb').write_bytes(b'\0' * 100)
    opt = edit(good(tiny_data), 'datasets.train.dataroot_gt', str(broken))
    with pytest.raises(OptionError, match='has no meta_info.txt'):
        check_options(opt)
    (broken / 'meta_info.txt').write_text('a.png (4,4,3) 1\n')
    with pytest.raises(OptionError, match='truncated'):
        check_options(opt)


def test_odm_arch_with_srmodel_is_refused_without_quantizer_state_and_odm_loss_needs_odm_arch(tiny_data, tmp_path):
    from basicsr.utils.registry import ARCH_REGISTRY

    from conftest import save_basicsr_checkpoint
    from odm_basicsr.quant import calibrate, is_quantizer_param
    opt = good(tiny_data)
    opt['model_type'] = 'SRModel'
    for key in ('odm_opt', 'cooperation', 'calibration'):
        opt['train'].pop(key)
    opt['path']['pretrain_network_g'] = None
    with pytest.raises(OptionError, match='SRModel never calibrates'):  # it would train with [-1, 1] ranges
        check_options(opt)
    net_opt = dict(opt['network_g'])
    net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    fp_state = {k: v for k, v in net.state_dict().items() if not is_quantizer_param(k)}
    torch.save({'params': fp_state}, tmp_path / 'fp.pth')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'fp.pth')
    with pytest.raises(OptionError, match='has no quantizer state'):
        check_options(opt)
    opt['path']['pretrain_network_g'] = save_basicsr_checkpoint(net, tmp_path / 'uncalibrated.pth')
    with pytest.raises(OptionError, match='never calibrated'):
        check_options(opt)
    calibrate(net, [torch.rand(1, 3, 8, 8)], progress=False)
    opt['path']['pretrain_network_g'] = save_basicsr_checkpoint(net, tmp_path / 'calibrated.pth')
    warnings = check_options(opt)  # a calibrated checkpoint trains as plain QAT, with a warning
    assert any('no ODM' in w for w in warnings)
    opt = good(tiny_data)
    opt['model_type'] = 'SRModel'
    opt['network_g']['type'] = 'EDSR'
    for key in ('w_bit', 'a_bit'):
        opt['network_g'].pop(key, None)
    with pytest.raises(OptionError, match='the ODM loss needs an ODM quantized arch'):
        check_options(opt)


def test_good_options_pass(tiny_data):
    assert check_options(good(tiny_data)) == []


def test_cost_command_prints_per_layer_and_totals(capsys, tmp_path):
    from odm_basicsr.tools.cost_cli import main as cost_main
    opt = {'network_g': dict(NET, w_bit=4, a_bit=4)}
    path = write_options(tmp_path / 'net.yml', opt)
    cost_main(['-opt', path, '--size', '12x16'])
    out = capsys.readouterr().out
    assert '| body.0.conv1 | 4/4 |' in out and '| conv_first | 32/32 |' in out and '**total**' in out
    assert 'BitOPs ratio quantized/FP' in out


def test_option_file_loading_errors_are_clear(tmp_path):
    """Every command (train, test, cost, export) loads option files through load_option_file."""
    from odm_basicsr.options_check import check_option_file, load_option_file
    with pytest.raises(SystemExit, match="option file '.*missing.yml' does not exist"):
        load_option_file(str(tmp_path / 'missing.yml'))
    bad = tmp_path / 'bad.yml'
    bad.write_text('network_g: [unclosed\n')
    with pytest.raises(SystemExit, match='is not valid YAML'):
        load_option_file(str(bad))
    scalar = tmp_path / 'scalar.yml'
    scalar.write_text('just a string\n')
    with pytest.raises(SystemExit, match='does not hold a mapping of options'):
        check_option_file(str(scalar), is_train=False)


def test_sections_limit_what_is_validated(tmp_path):
    """A command that reads no data (export, cost) validates network_g and path but not the test folders."""
    from odm_basicsr.options_check import check_option_file
    opt = {'name': 'x', 'model_type': 'ODMModel', 'scale': 2,
           'network_g': {'type': 'ODMEDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                         'upscale': 2, 'w_bit': 4, 'a_bit': 4},
           'datasets': {'test_1': {'name': 's', 'type': 'PairedImageDataset', 'dataroot_gt': str(tmp_path / 'no_gt'),
                                   'dataroot_lq': str(tmp_path / 'no_lq'), 'io_backend': {'type': 'disk'}}}}
    path = tmp_path / 'opt.yml'
    path.write_text(yaml.safe_dump(opt))
    with pytest.raises(SystemExit, match='no_gt'):
        check_option_file(str(path), is_train=False)
    assert check_option_file(str(path), is_train=False, sections=('model_type', 'network_g', 'path'))['name'] == 'x'
    opt['network_g']['w_bit'] = 9
    path.write_text(yaml.safe_dump(opt))
    with pytest.raises(SystemExit, match='w_bit'):
        check_option_file(str(path), is_train=False, sections=('network_g',))


def test_a_checkpoint_inside_the_experiment_folder_the_run_archives_is_refused(tiny_data, tmp_path, monkeypatch):
    """basicsr calibrate writes experiments/<name>/models/net_g_calibrated.pth; a training run of the same name would
    rename that folder before loading it."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from conftest import save_basicsr_checkpoint
    monkeypatch.chdir(tmp_path)
    opt = good(tiny_data)
    net_opt = dict(opt['network_g'])
    models = tmp_path / 'experiments' / opt['name'] / 'models'
    models.mkdir(parents=True)
    opt['path']['pretrain_network_g'] = save_basicsr_checkpoint(
        ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt), models / 'net_g_calibrated.pth')
    with pytest.raises(OptionError, match='archives'):
        check_options(opt)
    opt['name'] = 'another_name'
    check_options(opt)


# -- silent mistakes that used to start a full run ---------------------------------------------------------------------
def _errors(opt, **kwargs):
    with pytest.raises(OptionError) as info:
        check_options(opt, **kwargs)
    return str(info.value)


@pytest.mark.parametrize('dotted, value, expected', [
    ('train.odm_opts', {'type': 'ODMLoss'}, "train.odm_opts: unknown key (did you mean 'odm_opt'?)"),
    ('train.cooperaton', 'cosine', "train.cooperaton: unknown key (did you mean 'cooperation'?)"),
    ('train.total_iters', 10, "train.total_iters: unknown key (did you mean 'total_iter'?)"),
    ('netwrok_g', {'type': 'EDSR'}, "netwrok_g: unknown top-level key (did you mean 'network_g'?)"),
    ('scale', 4, 'scale: 4 but network_g.upscale is 2'),
    ('network_g.outer_bit', 8, 'network_g.outer_bit: has no effect with scope body'),
    ('network_g.scope', ['body.*.conv3'], 'network_g.scope: pattern(s)'),
])
def test_silent_mistakes_are_errors_naming_the_key(tiny_data, dotted, value, expected):
    opt = good(tiny_data)
    edit(opt, dotted, value)
    text = _errors(opt)
    assert expected in text
    if dotted == 'network_g.scope':
        assert 'body.0.conv1' in text and 'conv_last' in text  # the real layer names


def test_odm_loss_alone_is_not_a_silent_hybrid(tiny_data):
    opt = good(tiny_data)
    opt['train']['odm_opt'] = {'type': 'ODMLoss'}
    text = _errors(opt)
    assert 'train.odm_opt.regularizer: missing' in text and 'train.odm_opt.loss_weight: missing' in text


def test_force_yml_with_dots_is_refused_with_the_colon_form(tiny_data, tmp_path):
    path = write_options(tmp_path / 'opt.yml', good(tiny_data))
    with pytest.raises(SystemExit, match='--force-yml network_g:w_bit=') as info:
        main(['train', '-opt', path, '--force_yml', 'network_g.w_bit=3'])
    assert 'not ":"' not in str(info.value)
    assert os.listdir(tmp_path) == ['opt.yml']  # nothing written


def test_strict_load_false_gets_the_loaders_checks_before_anything_is_written(tiny_data, tmp_path):
    """The ODM archs' checked loading refuses a checkpoint of another width or scale even with strict_load_g false;
    the option check refuses it too, before BasicSR creates the run's folders."""
    from basicsr.archs.edsr_arch import EDSR

    from conftest import save_basicsr_checkpoint
    opt = good(tiny_data)
    opt['path']['strict_load_g'] = False
    for name, fp in (('wider', EDSR(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=2)),
                     ('x4', EDSR(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=4))):
        opt['path']['pretrain_network_g'] = save_basicsr_checkpoint(fp, tmp_path / f'{name}.pth')
        assert 'does not fit network_g' in _errors(opt)


def test_strict_load_false_accepts_a_warm_start_with_missing_keys_only(tiny_data, tmp_path):
    """A shallower FP checkpoint (missing keys only) is a warm start under strict_load_g false, an error otherwise."""
    from basicsr.archs.edsr_arch import EDSR

    from conftest import save_basicsr_checkpoint
    opt = good(tiny_data)
    net = {k: v for k, v in NET.items() if k not in ('type', 'w_bit', 'a_bit') and k in (
        'num_in_ch', 'num_out_ch', 'num_feat', 'upscale')}
    opt['path']['pretrain_network_g'] = save_basicsr_checkpoint(EDSR(**net, num_block=NET['num_block'] - 1),
                                                                tmp_path / 'shallow.pth')
    assert 'missing keys' in _errors(opt)
    opt['path']['strict_load_g'] = False
    check_options(opt)


def test_export_refuses_a_network_without_quantized_layers(tmp_path):
    from basicsr.archs.edsr_arch import EDSR

    from conftest import save_basicsr_checkpoint
    fp = EDSR(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)
    opt = {'name': 'fp', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0,
           'network_g': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2,
                         'upscale': 2},
           'path': {'pretrain_network_g': save_basicsr_checkpoint(fp, tmp_path / 'fp.pth')}}
    path = write_options(tmp_path / 'fp.yml', opt)
    with pytest.raises(SystemExit, match='no quantized layers.*basicsr calibrate'):
        main(['export', '-opt', path, '--out', str(tmp_path / 'fp.onnx')])
    assert not (tmp_path / 'fp.onnx').exists()


@pytest.mark.parametrize('optim_g', [{'type': 'SGD', 'lr': 1e-4}, {'type': 'Adam', 'lr': 1e-4, 'foreach': True}])
def test_device_guard_needs_fused_adam(tiny_data, optim_g):
    opt = edit(edit(good(tiny_data), 'train.guard_on_device', True), 'train.optim_g', optim_g)
    with pytest.raises(OptionError, match='train.guard_on_device: true needs optim_g type Adam or AdamW'):
        check_options(opt)
    opt['train']['guard_on_device'] = None  # the default: the host guard where the optimizer cannot skip on device
    if optim_g['type'] == 'Adam':
        check_options(opt)
    else:  # BasicSR 1.4.2's BaseModel.get_optimizer builds Adam only
        with pytest.raises(OptionError, match="train.optim_g.type: BasicSR builds no 'SGD' optimizer"):
            check_options(opt)

"""The shipped option files: the generated grid is complete and current, every file loads as BasicSR loads it, is
self-consistent, builds its network and model, and fails early naming the right prepare/download step when its
data or checkpoint is missing; the demo files pass the checks once ``prepare_demo`` has run."""
import copy
import glob
import json
import os
import os.path as osp
import re

import pytest
import torch
import yaml

import odm_basicsr  # noqa: F401  (compat fixes + registration, before any basicsr import)
from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.options import ordered_yaml
from conftest import REPO, run_cli
from odm_basicsr.data.demo import demo_paths, prepare_demo
from odm_basicsr.data.photos import DEMO_TRAIN, DEMO_VAL
from odm_basicsr.options_check import OptionError, check_options
from odm_basicsr.quant import quantized_layers, set_quantization
from odm_basicsr.tools import option_grid

ARCHS = ('EDSR', 'RDN', 'SRResNet')  # v1, v2 and QAT
SWINIR_VARIANTS = ('ODMv2', 'QAT')  # SwinIR: no v1 (its offsets are conv-only, SwinIR's quantized body is Linear)
SCALES = (2, 4)
BITS = (2, 3, 4)
ODM_TYPE = {'EDSR': 'ODMEDSR', 'RDN': 'ODMRDN', 'SRResNet': 'ODMMSRResNet', 'SwinIR': 'ODMSwinIR'}
BENCHMARK_SETS = ('Set5', 'Set14', 'B100', 'Urban100')
VARIANT_FILES = {'ODM': 'options/{kind}_ODM_', 'ODMv2': 'options/v2/{kind}_ODMv2_', 'QAT': 'options/qat/{kind}_QAT_'}
GRID = [VARIANT_FILES[variant].format(kind=kind) + f'{arch}_x{s}_w{b}a{b}.yml' for variant in VARIANT_FILES
        for arch in ARCHS for s in SCALES for b in BITS for kind in ('train', 'test')]
V1_GRID = [f for f in GRID if '_ODM_' in f]
GRID += [VARIANT_FILES[variant].format(kind=kind) + f'SwinIR_x{s}_w{b}a{b}.yml' for variant in SWINIR_VARIANTS
         for s in SCALES for b in BITS for kind in ('train', 'test')]
# The only option file the generator does not write: the recipe that trained the shipped demo FP checkpoint.
HAND_WRITTEN = {'options/demo/train_FP_EDSR_demo_x4.yml'}
FILE_RE = re.compile(r'^(?P<kind>train|test)_(?P<variant>ODM|ODMv2|QAT|FP)_(?P<arch>EDSR|RDN|SRResNet|SwinIR)(?P<demo>_demo)?'
                     r'_x(?P<scale>\d)(?:_w(?P<w>\d)a(?P<a>\d))?\.yml$')


def rel(path):
    return osp.relpath(path, REPO)


ALL_FILES = sorted(rel(p) for folder in ('', 'v2', 'qat', 'demo')
                   for p in glob.glob(osp.join(REPO, 'options', folder, '*.yml'))
                   if not osp.basename(p).startswith('compare_'))
COMPARE_FILES = sorted(rel(p) for folder in ('', 'demo')
                       for p in glob.glob(osp.join(REPO, 'options', folder, 'compare_*.yml')))
DEMO_FILES = [f for f in ALL_FILES if f.startswith('options/demo/')]


def load(rel_path):
    """The option dict exactly as BasicSR's parse_options reads the file."""
    with open(osp.join(REPO, rel_path)) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def meta(rel_path):
    m = FILE_RE.match(osp.basename(rel_path))
    assert m, f'{rel_path}: unexpected option file name'
    d = m.groupdict()
    return dict(kind=d['kind'], variant=d['variant'], arch=d['arch'], demo=bool(d['demo']), scale=int(d['scale']),
                bits=None if d['w'] is None else int(d['w']), a=None if d['a'] is None else int(d['a']))


def plain(obj):
    """OrderedDicts (ordered_yaml) -> dicts, for comparisons and cache keys."""
    return json.loads(json.dumps(obj))


def network_key(net):
    return json.dumps(plain(net), sort_keys=True)


def test_option_files_found():
    assert len(GRID) == 108 + 24 and len(ALL_FILES) == len(GRID) + 8
    assert len(COMPARE_FILES) == 2 * 4 + 1
    assert all(FILE_RE.match(osp.basename(f)) for f in ALL_FILES), ALL_FILES


# 1. -------------------------------------------------------------------------------------------------------------
def test_grid_is_complete_and_equals_the_generator(capsys):
    missing = [f for f in GRID if not osp.isfile(osp.join(REPO, f))]
    assert not missing, f'missing option files: {missing}'
    assert option_grid.main(['--check']) == 0, capsys.readouterr().out
    assert 'stale: none' in capsys.readouterr().out
    generated = set(option_grid.all_files())
    assert set(GRID) <= generated
    # every file under options/ is generated (no stale, orphaned file), except the hand-written FP demo recipe
    assert set(ALL_FILES) - generated == HAND_WRITTEN
    assert generated == set(ALL_FILES + COMPARE_FILES) - HAND_WRITTEN


# 2. -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('path', ALL_FILES)
def test_file_parses_and_is_consistent(path):
    m = meta(path)
    opt = load(path)
    s = m['scale']
    assert isinstance(opt['name'], str) and opt['name']
    assert opt['scale'] == s
    net = opt['network_g']
    if m['variant'] == 'FP':
        assert net['type'] == 'EDSR' and opt['model_type'] == 'SRModel'
        assert 'w_bit' not in net and 'a_bit' not in net
    else:
        assert net['type'] == ODM_TYPE[m['arch']] and opt['model_type'] == 'ODMModel'
        assert net['w_bit'] == net['a_bit'] == m['bits'] == m['a']
        clip = 'percentile' if m['bits'] == 2 else 'max'  # v1 and plain QAT: P99 at 2 bits
        expected_quant = {'ODM': (clip, 'auto'), 'ODMv2': ('wcc', 'none'), 'QAT': (clip, 'none')}[m['variant']]
        assert (net['weight_clip'], net['offsets']) == expected_quant
        assert net.get('scope', 'body') == 'body'
    assert net['upscale'] == s

    metrics = opt['val']['metrics']
    assert set(metrics) == {'psnr', 'ssim'}
    for metric in metrics.values():
        assert metric['crop_border'] == s and metric['test_y_channel'] is True

    datasets = opt['datasets']
    for phase, ds in datasets.items():
        assert ds['type'] == 'PairedImageDataset'
        lq, gt = ds['dataroot_lq'], ds['dataroot_gt']
        if ds['io_backend']['type'] == 'lmdb':
            assert f'X{s}' in osp.basename(lq) and lq.endswith('.lmdb') and gt.endswith('.lmdb'), (phase, lq)
        else:
            assert osp.basename(lq) == f'LRbicx{s}', (phase, lq)
        assert 'LR' not in gt and 'bicx' not in gt, (phase, gt)
    if m['kind'] == 'train':
        assert set(datasets) == {'train', 'val'}
        train = datasets['train']
        assert train['io_backend']['type'] == 'lmdb'
        if m['demo']:
            assert train['gt_size'] == load('options/demo/train_FP_EDSR_demo_x4.yml')['datasets']['train']['gt_size']
        else:
            # the paper's patch; SwinIR's own (64 LR pixels, its img_size)
            assert train['gt_size'] == ({4: 192, 2: 96}[s] if m['arch'] != 'SwinIR' else 64 * s)
            assert train['batch_size_per_gpu'] == 8 and opt['train']['total_iter'] == 60000
        assert train['gt_size'] % s == 0
        assert 'train' in opt and opt['path'].get('resume_state') is None
    else:
        assert set(datasets) == {f'test_{i}' for i in range(1, len(datasets) + 1)}
        assert 'train' not in opt
        if not m['demo']:
            assert [ds['name'] for ds in datasets.values()] == list(BENCHMARK_SETS)
            for ds in datasets.values():
                assert ds['dataroot_gt'] == f'datasets/{ds["name"]}/GTmod12'


@pytest.mark.parametrize('path', [f for f in ALL_FILES if osp.basename(f).startswith('test_')])
def test_test_file_matches_its_training_file(path):
    """The test net is the trained net (same arch, bits, offsets) and its checkpoint is that experiment's."""
    test = load(path)
    train_path = path.replace('test_', 'train_', 1)
    train = load(train_path)
    assert plain(test['network_g']) == plain(train['network_g'])
    assert test['scale'] == train['scale']
    if meta(path)['demo']:
        assert test['path']['pretrain_network_g'] == option_grid.DEMO_FP_CHECKPOINT
        assert plain(test['datasets']['test_1']) == plain(train['datasets']['val'])
    else:
        assert test['path']['pretrain_network_g'] == f'experiments/{train["name"]}/models/net_g_latest.pth'
        assert plain(test['datasets']['test_1']) == {**plain(train['datasets']['val']), 'name': 'Set5'}


@pytest.mark.parametrize('kind', ['train', 'test'])
@pytest.mark.parametrize('variant', ['ODMv2', 'QAT'])
def test_twins_differ_from_v1_only_in_the_quantizer_and_regularizer(variant, kind):
    """Every arch, scale and bit-width has its v2 and QAT twin, train and test, equal to v1 but for the quantizer,
    the regularizer, the name and (test files) the checkpoint of the twin's own training run."""
    pairs = [(f, f.replace('_ODM_', f'_{variant}_').replace('options/', VARIANT_FILES[variant].split('{')[0]))
             for f in V1_GRID if osp.basename(f).startswith(kind)]
    assert len(pairs) == 18
    for v1_path, twin_path in pairs:
        _check_twin(plain(load(v1_path)), plain(load(twin_path)), variant)


@pytest.mark.parametrize('kind', ['train', 'test'])
def test_swinir_qat_twins_differ_from_v2_only_in_the_quantizer_and_regularizer(kind):
    pairs = [(f, f.replace('options/v2/', 'options/qat/').replace('_ODMv2_', '_QAT_')) for f in GRID
             if 'SwinIR' in f and '_ODMv2_' in f and osp.basename(f).startswith(kind)]
    assert len(pairs) == 6
    for v2_path, twin_path in pairs:
        _check_twin(plain(load(v2_path)), plain(load(twin_path)), 'QAT')


def _check_twin(v1, twin, variant):
    assert twin['name'] != v1['name'] and variant in twin['name'].split('_')
    if 'train' not in v1:
        assert twin['path'].pop('pretrain_network_g') != v1['path'].pop('pretrain_network_g')
    for key in ('weight_clip', 'offsets'):
        v1['network_g'].pop(key)
        twin['network_g'].pop(key)
    for key in ('odm_opt', 'cooperation', 'calibration'):
        v1.get('train', {}).pop(key, None)
        twin.get('train', {}).pop(key, None)
    for opt in (v1, twin):
        opt.pop('name')
    assert twin == v1


@pytest.mark.parametrize('path', COMPARE_FILES)
def test_compare_file_entries_are_the_test_files_networks_and_checkpoints(path):
    """Each quantized entry of a compare file is the network and checkpoint of a test (or demo training) file of
    the grid; the FP entry is the training files' FP checkpoint with the FP arch of the same shape."""
    from odm_basicsr.tools.compare_cli import check_compare
    opt = plain(load(path))
    try:
        entries, reference = check_compare(opt)
    except Exception as err:  # only the datasets may be missing here
        assert all('datasets.' in line for line in str(err).splitlines()[1:]), str(err)
        entries, reference = opt['compare']['entries'], opt['compare']['reference']
    assert reference == 'FP' and entries[0]['label'] == 'FP'
    demo = '/demo/' in path
    sources = DEMO_FILES if demo else [f for f in GRID if osp.basename(f).startswith('test_')]
    by_checkpoint = {}
    for source in sources:
        other = plain(load(source))
        if 'network_g' in other and 'w_bit' in other['network_g']:
            ckpt = (f'experiments/{other["name"]}/models/net_g_latest.pth' if demo else
                    other['path']['pretrain_network_g'])
            by_checkpoint[ckpt] = other['network_g']
    quantized = entries[1:]
    assert len(quantized) == (6 if demo else 9 if 'SwinIR' not in path else 6)
    for entry in quantized:
        assert entry['network_g'] == by_checkpoint[entry['checkpoint']], entry['label']
    fp = entries[0]['network_g']
    sample = quantized[0]['network_g']
    assert {k: v for k, v in fp.items() if k != 'type'} == {
        k: v for k, v in sample.items() if k not in ('type', 'w_bit', 'a_bit', 'weight_clip', 'scope', 'offsets',
                                                     'quantize_attention')}
    assert len({e['label'] for e in entries}) == len(entries)


def test_demo_files_share_the_fp_network_and_data():
    fp = plain(load('options/demo/train_FP_EDSR_demo_x4.yml'))
    paths = demo_paths('datasets/demo')
    for path in DEMO_FILES:
        opt = plain(load(path))
        net = {k: v for k, v in opt['network_g'].items()
               if k not in ('type', 'w_bit', 'a_bit', 'weight_clip', 'scope', 'offsets')}
        assert net == {k: v for k, v in fp['network_g'].items() if k != 'type'}, path
        phases = opt['datasets']
        val = phases['val'] if 'val' in phases else phases['test_1']
        assert (val['dataroot_gt'], val['dataroot_lq']) == (paths['val_gt'], paths['val_lq'])
        if 'train' in phases:
            assert (phases['train']['dataroot_gt'], phases['train']['dataroot_lq']) == (paths['train_gt'],
                                                                                       paths['train_lq'])
        if 'train_FP' not in path:
            assert opt['path']['pretrain_network_g'] == option_grid.DEMO_FP_CHECKPOINT


# 3. -------------------------------------------------------------------------------------------------------------
def test_mode_options(opt, pretrain=None):
    """``opt`` completed as BasicSR's parse_options completes it for testing (no launcher, CPU)."""
    opt = copy.deepcopy(opt)
    opt.update(is_train=False, dist=False, rank=0, world_size=1, num_gpu=0, auto_resume=False)
    for phase, ds in opt['datasets'].items():
        ds['phase'] = phase.split('_')[0]
        ds['scale'] = opt['scale']
    opt['path']['pretrain_network_g'] = pretrain
    return opt


test_mode_options.__test__ = False  # a helper, not a test

_BUILT = {}
_FORWARDED = set()


def expected_quantized_layers(net):
    if net['type'] == 'ODMRDN':
        return net['num_block'] * net['num_layer']  # scope body: every conv inside the dense blocks
    if net['type'] in ('ODMEDSR', 'ODMMSRResNet'):
        return 2 * net['num_block']  # scope body: conv1 and conv2 of every residual block
    if net['type'] == 'ODMSwinIR':
        return 4 * sum(net['depths'])  # scope body: qkv, proj, fc1, fc2 of every Swin block
    return 0


@pytest.mark.parametrize('path', ALL_FILES)
def test_file_builds_its_network_and_model(path):
    opt = load(path)
    net_opt = plain(opt['network_g'])
    key = (opt['model_type'], network_key(net_opt))
    if key not in _BUILT:  # each distinct (model, network) config is built once: RDN has 22M parameters
        model = build_model(test_mode_options(opt))
        net = model.net_g
        out = None
        forward_key = (net_opt['type'], net_opt.get('num_feat'), opt['scale'])
        # one forward per arch/width/scale, on one thread (two threads on a shared 2-core CPU take seconds)
        if forward_key not in _FORWARDED:
            _FORWARDED.add(forward_key)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                set_quantization(net, False)  # shapes only: the built net is not calibrated yet
                with torch.no_grad():
                    out = tuple(net(torch.rand(1, 3, 6, 5)).shape)
            finally:
                torch.set_num_threads(threads)
        # keep a summary only: holding the 22M-parameter RDNs alive slows the rest of the module down
        _BUILT[key] = dict(model=type(model).__name__, is_train=model.is_train, net=type(net).__name__, out=out,
                           quantized=[(layer.weight_quantizer.bits, layer.act_quantizer.bits,
                                       layer.weight_quantizer.weight_clip) for _, layer in quantized_layers(net)],
                           quant_config=getattr(net, 'quant_config', None))
        del model, net
    built = _BUILT[key]
    s = opt['scale']
    assert built['model'] == ('SRModel' if meta(path)['variant'] == 'FP' else 'ODMModel')
    assert built['is_train'] is False
    assert built['net'] == net_opt['type']
    if built['out'] is not None:
        assert built['out'] == (1, 3, 6 * s, 5 * s)
    assert len(built['quantized']) == expected_quantized_layers(net_opt)
    if net_opt['type'] in ODM_TYPE.values():
        assert len(built['quantized']) > 0
        cfg = built['quant_config']
        assert (cfg.w_bit, cfg.a_bit, cfg.weight_clip, cfg.offsets) == (
            net_opt['w_bit'], net_opt['a_bit'], net_opt['weight_clip'], net_opt['offsets'])
        assert set(built['quantized']) == {(net_opt['w_bit'], net_opt['a_bit'], net_opt['weight_clip'])}


def test_build_network_on_a_copy_gives_the_registered_arch_and_leaves_the_options_intact():
    for path in ('options/train_ODM_EDSR_x2_w2a2.yml', 'options/demo/test_FP_EDSR_demo_x4.yml'):
        opt = load(path)
        before = plain(opt['network_g'])
        net = build_network(copy.deepcopy(opt['network_g']))
        assert type(net).__name__ == before['type']
        assert plain(opt['network_g']) == before


# 4. -------------------------------------------------------------------------------------------------------------
def expected_step(path):
    parts = path.split('/')
    if any('DIV2K' in p for p in parts):
        return 'basicsr prepare div2k --root datasets/DIV2K'
    if any(p in BENCHMARK_SETS for p in parts):
        return 'basicsr prepare benchmark --root datasets'
    raise AssertionError(f'unexpected dataset path {path}')


def error_lines(message):
    assert message.startswith('Invalid options:\n  - ')
    return message.split('\n  - ')[1:]


@pytest.mark.parametrize('path', GRID)
def test_missing_inputs_are_reported_with_the_step_that_makes_them(path, tmp_path, monkeypatch):
    m = meta(path)
    opt = load(path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError) as exc:
        check_options(plain(opt), is_train=m['kind'] == 'train')
    lines = error_lines(str(exc.value))
    expected = {}
    for phase, ds in opt['datasets'].items():
        for key in ('dataroot_gt', 'dataroot_lq'):
            expected[f'datasets.{phase}.{key}:'] = (ds[key], expected_step(ds[key]))
    pretrain = opt['path']['pretrain_network_g']
    if m['kind'] == 'test':
        step = 'basicsr train'
        train_name = load(path.replace('test_', 'train_', 1))['name']
        assert f'training experiment {train_name!r}' in str(exc.value)
    else:
        step = {'EDSR': 'BasicSR model zoo', 'SRResNet': 'BasicSR model zoo',
                'RDN': 'basicsr convert-checkpoint --arch RDN', 'SwinIR': 'SwinIR release'}[m['arch']]
    expected['path.pretrain_network_g:'] = (pretrain, step)
    if opt['num_gpu'] not in (0, 'auto') and not torch.cuda.is_available():  # the files' num_gpu: 1 needs a GPU
        assert any(line.startswith(f'num_gpu: {opt["num_gpu"]} but this machine has no CUDA') for line in lines)
        lines = [line for line in lines if not line.startswith('num_gpu:')]
    # one line per missing input, and nothing else is wrong with the file
    assert len(lines) == len(expected), str(exc.value)
    for prefix, (missing, step) in expected.items():
        line = next((l for l in lines if l.startswith(prefix)), None)
        assert line is not None, f'{prefix} not reported:\n{exc.value}'
        assert repr(missing) in line and 'does not exist' in line, line
        assert step in line, f'{line!r} lacks {step!r}'
    assert os.listdir(tmp_path) == []


def test_cli_train_without_data_fails_before_writing_anything(tmp_path):
    proc = run_cli(['train', '-opt', osp.join(REPO, 'options', 'train_ODM_EDSR_x4_w4a4.yml')], cwd=str(tmp_path),
                   check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert 'datasets/DIV2K/DIV2K_train_HR_sub.lmdb' in out
    assert 'datasets/DIV2K/DIV2K_train_LR_bicubic_X4_sub.lmdb' in out
    assert 'basicsr prepare div2k' in out
    assert 'EDSR_Mx4_f64b16_DIV2K_official-0c287733.pth' in out
    assert 'Traceback' not in out
    assert os.listdir(tmp_path) == []  # no experiments/, tb_logger/, results/ or log


# 5. -------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def demo_cwd(tmp_path_factory):
    """A working directory with datasets/demo prepared and odm_basicsr/ (the shipped checkpoint) reachable."""
    cwd = tmp_path_factory.mktemp('demo_cwd')
    log = []
    prepare_demo(str(cwd / 'datasets' / 'demo'), log=log.append)
    os.symlink(osp.join(REPO, 'odm_basicsr'), cwd / 'odm_basicsr')
    return cwd


@pytest.mark.parametrize('path', DEMO_FILES)
def test_demo_files_pass_the_checks_once_the_demo_is_prepared(path, demo_cwd, monkeypatch):
    opt = plain(load(path))
    monkeypatch.chdir(demo_cwd)
    assert check_options(opt, is_train=osp.basename(path).startswith('train_')) == []
    # and in an empty directory the demo data is reported with its own step
    monkeypatch.chdir(demo_cwd / 'datasets')
    with pytest.raises(OptionError, match=r'basicsr prepare demo --root datasets/demo'):
        check_options(opt, is_train=osp.basename(path).startswith('train_'))


@pytest.mark.parametrize('path', [f for f in DEMO_FILES if 'train_FP' not in f])
def test_demo_models_load_the_shipped_fp_checkpoint_strictly(path, demo_cwd, monkeypatch):
    monkeypatch.chdir(demo_cwd)
    opt = load(path)
    assert opt['path']['strict_load_g'] is True
    model = build_model(test_mode_options(opt, pretrain=opt['path']['pretrain_network_g']))
    params = torch.load(option_grid.DEMO_FP_CHECKPOINT, map_location='cpu')['params']
    state = model.net_g.state_dict()
    assert params and set(params) <= set(state)
    for name, value in params.items():
        assert torch.equal(state[name], value), name


def test_prepare_demo_is_idempotent_and_the_split_is_disjoint(demo_cwd):
    root = str(demo_cwd / 'datasets' / 'demo')
    paths = demo_paths(root)
    watched = [osp.join(paths['train_gt'], 'data.mdb'), osp.join(paths['train_lq'], 'data.mdb'), paths['split']]
    before = {p: os.stat(p).st_mtime_ns for p in watched}
    log = []
    assert prepare_demo(root, log=log.append) == paths
    assert {p: os.stat(p).st_mtime_ns for p in watched} == before
    assert any('already complete' in line for line in log), log

    with open(paths['split']) as f:
        split = f.read()
    m = re.search(r'train = (.*); held-out validation = (.*)\n', split)
    assert m, split
    train, val = m.group(1).split(', '), m.group(2).split(', ')
    assert train == list(DEMO_TRAIN) and val == list(DEMO_VAL)
    assert not set(train) & set(val)
    # the data matches the split: LMDB tiles only of train photos, the val folders exactly the held-out photos
    for key in ('train_gt', 'train_lq'):
        with open(osp.join(paths[key], 'meta_info.txt')) as f:
            photos = {line.split()[0].rsplit('_s', 1)[0] for line in f if line.strip()}
        assert photos == set(DEMO_TRAIN), key
    for key in ('val_gt', 'val_lq'):
        assert sorted(os.listdir(paths[key])) == sorted(f'{n}.png' for n in DEMO_VAL)

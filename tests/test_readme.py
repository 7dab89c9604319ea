"""The README is a first screen for a BasicSR user; the option reference (docs/OPTIONS.md) shows the real defaults
(each value is compared with what the code does when the key is absent); the tables of docs/RESULTS.md are their
JSON's; and no file in the repository refers to the specification outside it."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import)
import inspect
import os.path as osp
import re
import subprocess

import pytest
import yaml
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY

from conftest import REPO, base_options
from odm_basicsr.data.calibration import calibration_dataset_opt, calibration_settings, refine_settings
from odm_basicsr.quant import QuantConfig
from odm_basicsr.quant.refine import RefineConfig
from odm_basicsr.models.odm_model import default_cooperation
from odm_basicsr.options_check import OptionError, check_options


def option_reference():
    text = open(osp.join(REPO, 'docs', 'OPTIONS.md'), encoding='utf-8').read()
    section = text.split('\n## Option reference\n', 1)[1].split('\n## ', 1)[0]
    block = re.search(r'```yaml\n(.*?)```', section, re.S)
    assert block, 'docs/OPTIONS.md: the option reference has no yaml block'
    return yaml.safe_load(block.group(1))


REFERENCE = option_reference()
NET = dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)


def test_readme_is_a_first_screen_for_a_basicsr_user_and_links_the_docs():
    text = open(osp.join(REPO, 'README.md'), encoding='utf-8').read()
    assert len(text.encode()) <= 10_240  # a first screen; the research tables live in docs/RESULTS.md
    for link in re.findall(r'\]\((docs/[^)#]+)', text):
        assert osp.isfile(osp.join(REPO, link)), link
    headings = re.findall(r'^## (.+)$', text, re.M)
    assert headings[:3] == ['Install', 'Demo, no download', 'Your own option file'], headings
    for needed in ('pip install odm-basicsr', 'make install', 'basicsr demo', 'basicsr options', 'model_type: ODMModel',
                   'type: ODMEDSR', 'w_bit: 4', 'odm_opt:', 'tb_logger/', 'experiments/<name>/', '**fidelity**',
                   '**WCC**', '**scope**', '@inproceedings', '--launcher pytorch', 'basicsr calibrate',
                   'basicsr export'):
        assert needed in text, needed
    assert not re.search(r'^\|', text, re.M)  # no research table on the first screen
    assert 'DEMO_TIME' not in text


@pytest.mark.parametrize('arch', ['ODMEDSR', 'ODMMSRResNet', 'ODMRDN', 'ODMQuant'])
def test_network_defaults_are_the_quant_config(arch):
    """The README's network_g keys are QuantConfig's, with its defaults, and every ODM arch takes them."""
    assert list(REFERENCE['network_g']) == list(QuantConfig.keys())
    assert REFERENCE['network_g'] == QuantConfig().as_dict()
    params = inspect.signature(ARCH_REGISTRY.get(arch).__init__).parameters
    assert any(p.kind == p.VAR_KEYWORD for p in params.values())  # **quantization
    fp_arch = {'ODMQuant': dict(arch=dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=4, num_block=1,
                                          upscale=2))}.get(arch, dict(num_in_ch=3, num_out_ch=3, num_feat=4, num_block=1))
    built = ARCH_REGISTRY.get(arch)(**fp_arch)
    expected = QuantConfig() if arch != 'ODMQuant' else QuantConfig(scope='body')  # ODMQuant: the arch's body scope
    assert built.quant_config == expected
    with pytest.raises(TypeError, match="unexpected keyword argument 'w_bits' \\(did you mean 'w_bit'\\?\\)"):
        ARCH_REGISTRY.get(arch)(w_bits=4, **fp_arch)


def test_loss_defaults_and_the_required_keys():
    odm = REFERENCE['train']['odm_opt']
    params = inspect.signature(LOSS_REGISTRY.get(odm['type']).__init__).parameters
    assert params['stat'].default == odm['stat']
    assert odm['regularizer'] == odm['loss_weight'] == 'required'
    loss_cls = LOSS_REGISTRY.get(odm['type'])
    for kwargs in ({'loss_weight': 1e-6}, {'regularizer': 'mismatch'}):
        with pytest.raises(ValueError, match='neither has a default'):
            loss_cls(**kwargs)


@pytest.mark.parametrize('missing', ['regularizer', 'loss_weight'])
def test_required_loss_keys_are_errors_when_absent(tiny_data, missing):
    odm_opt = {'type': 'ODMLoss', 'regularizer': 'mismatch', 'loss_weight': 1e-6}
    del odm_opt[missing]
    opt = base_options(tiny_data, 'readme', dict(NET), odm_opt=odm_opt)
    with pytest.raises(OptionError, match=f'train.odm_opt.{missing}'):
        check_options(opt)


def test_cooperation_default_is_the_regularizers():
    assert REFERENCE['train']['cooperation'] is None
    assert default_cooperation({'regularizer': 'variance'}) == 'sign'
    assert default_cooperation({'regularizer': 'mismatch'}) == 'cosine'


def test_model_defaults(tiny_data):
    model = build_model(dict(base_options(tiny_data, 'readme', dict(NET, w_bit=4, a_bit=4)), is_train=True,
                             dist=False, rank=0, world_size=1))
    assert model.quant_lr_mul == REFERENCE['train']['quant_lr_mul']
    assert model.max_skipped_steps == REFERENCE['train']['max_skipped_steps']
    assert model.range_lr == REFERENCE['train']['range_lr']
    assert model.weight_clip_interval == REFERENCE['train']['weight_clip_interval']
    # compile and guard_on_device: absent means per device (true on CUDA with Adam, false on CPU, as here)
    assert REFERENCE['train']['compile'] is None and REFERENCE['train']['guard_on_device'] is None
    assert model.compiled is False and model.guard_on_device is False


def test_calibration_defaults():
    ref = REFERENCE['train']['calibration']
    num_batches, settings = calibration_settings({}, offset_mode='auto')
    assert num_batches == ref['num_batches']
    assert settings == dict(offset_top_k=ref['offset_top_k'], offset_threshold=ref['offset_threshold'],
                            method=ref['method'], sequential=ref['sequential'],
                            offset_migration=ref['offset_migration'], offset_keep_zero=ref['offset_keep_zero'],
                            per_layer_judge=ref['per_layer'])
    assert ref['refine'] is False and refine_settings({}, default=False) is None  # training: off unless set
    assert refine_settings({'train': {'calibration': {'refine': True}}}, default=False) == RefineConfig()
    assert RefineConfig() == RefineConfig(iters=200, lr=0.03, batch=4, loss='l1', feature_weight=0.0)
    assert REFERENCE['train']['distill_opt'] is None
    train_set = {'name': 'train'}
    assert ref['dataset'] is None
    assert calibration_dataset_opt({'datasets': {'train': train_set}})[1] == train_set


def test_no_file_refers_to_the_spec_outside_the_repository():
    files = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for rel in files:
        path = osp.join(REPO, rel)
        if not osp.isfile(path) or rel.endswith(('.pth', '.png', '.lmdb')):
            continue
        with open(path, 'rb') as f:
            if b'..' + b'/shared' in f.read():  # split so this file does not match itself
                offenders.append(rel)
    assert offenders == []


def _mean_half_range(values):
    import statistics
    return f'{statistics.mean(values):.2f} ± {(max(values) - min(values)) / 2:.2f}'


def _table(section, first_column):
    """{first cell: {header: cell}} of the markdown table in ``section`` whose header starts with ``first_column``."""
    lines = [line for line in section.splitlines() if line.startswith('| ')]
    header = next(line for line in lines if line.split('|')[1].strip() == first_column)
    names = [c.strip() for c in header.split('|')[1:-1]]
    rows = {}
    for line in lines[lines.index(header) + 1:]:
        cells = [c.strip() for c in line.split('|')[1:-1]]
        if len(cells) == len(names):
            rows.setdefault(cells[0], []).append(dict(zip(names, cells)))
    return rows


def test_results_ptq_table_matches_the_benchmark_json():
    """docs/RESULTS.md's PTQ fidelity cells (per-layer weights: auto, min/max, P1/P99) are the mean ± half-range over
    the seeds' ptq_fidelity JSONs."""
    import json
    text = open(osp.join(REPO, 'docs', 'RESULTS.md'), encoding='utf-8').read()
    section = text.split('## PTQ fidelity (a small proxy)', 1)[1].split('\n## ', 1)[0]
    rows = _table(section, 'arch')
    assert set(rows) == {'EDSR', 'RRDBNet', 'SRVGGNetCompact', 'RCAN'}, rows
    seeds = ['ptq_fidelity.json', 'ptq_fidelity_seed1.json', 'ptq_fidelity_seed2.json']
    files = [json.load(open(osp.join(REPO, 'benchmarks', 'results', name)))['results'] for name in seeds]
    for arch, cells in rows.items():
        assert len(cells) == 4, (arch, cells)
        for cell in cells:
            bits = int(cell['bits'][1])
            for method in ('auto', 'minmax', 'percentile'):
                values = [r['fidelity_db'] for results in files for r in results if r['arch'] == arch and
                          r['bits'] == bits and r['method'] == method and r['granularity'] == 'layer']
                assert len(values) == 3 and cell[f'{method} (layer)'] == _mean_half_range(values), (arch, bits, method)


def test_export_ptq_files_table_matches_the_benchmark_json():
    """Each row of EXPORT.md's shipped-PTQ-files table is benchmarks/ptq_files_export.py's JSON for that arch."""
    import json
    text = open(osp.join(REPO, 'docs', 'EXPORT.md'), encoding='utf-8').read()
    section = text.split('| PTQ file, w4a4 |', 1)[1].split('\n\n', 1)[0]
    rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:5]]
            for line in section.splitlines()[2:]}
    results = json.load(open(osp.join(REPO, 'benchmarks', 'results', 'ptq_files_export.json')))['results']
    assert set(rows) == {'EDSR', 'RCAN', 'RRDBNet', 'SRVGGNetCompact'}, rows
    for arch, cells in rows.items():
        free, integer = (next(r for r in results if r['arch'] == arch and r['integer_zero_point'] == grid)
                         for grid in (False, True))
        want = [f'{free["psnr"]:.4f} / {integer["psnr"]:.4f}'] + [
            f'{r["export_min_db"]:.1f} ({r["export_mean_db"]:.1f})' for r in (free, integer)]
        assert cells == want, (arch, cells, want)


def test_export_runtimes_table_matches_the_benchmark_json():
    """Each row of EXPORT.md's onnxruntime-vs-OpenVINO table is benchmarks/export_runtimes.py's JSON."""
    import json
    text = open(osp.join(REPO, 'docs', 'EXPORT.md'), encoding='utf-8').read()
    section = text.split('| network | bits | parity to PyTorch, min: onnxruntime / OpenVINO (dB) |', 1)[1]
    lines = section.split('\n\n', 1)[0].splitlines()[2:]
    rows = json.load(open(osp.join(REPO, 'benchmarks', 'results', 'export_runtimes.json')))['rows']
    assert len(lines) == len(rows) == 8

    def parity(values):
        return 'bit-identical' if min(values) == float('inf') else f'{min(values):.1f}'

    def mean(values):
        return f'{sum(values) / len(values):.2f}'
    for line, row in zip(lines, rows):
        want = [row['network'], row['bits'], f'{parity(row["parity_onnxruntime_db"])} / '
                f'{parity(row["parity_openvino_db"])}',
                ' / '.join(mean(row[f'fidelity_{k}_db']) for k in ('pytorch', 'onnxruntime', 'openvino')),
                f'{row["onnxruntime_vs_fp32"]:.2f}x / {row["openvino_vs_fp32"]:.2f}x', f'{row["openvino_f32_share"]:.0%}']
        assert [c.strip() for c in line.split('|')[1:-1]] == want, (line, want)


def test_results_proxy_tables_match_the_benchmark_json():
    """docs/RESULTS.md's final PSNR (mean ± half-range over seeds) of each variant in the EDSR w4a4 / w2a2 and the
    SRVGGNetCompact w2a2 tables is what benchmarks/proxy_table.py reads from the 1000-iteration proxy JSONs."""
    import glob
    import statistics
    import sys
    sys.path.insert(0, osp.join(REPO, 'benchmarks'))
    import proxy_table
    text = open(osp.join(REPO, 'docs', 'RESULTS.md'), encoding='utf-8').read()
    sections = {('EDSR', 4): text.split('#### w4a4:', 1)[1].split('\n#### ', 1)[0],
                ('EDSR', 2): text.split('#### w2a2:', 1)[1].split('\n#### ', 1)[0],
                ('SRVGGNetCompact', 2): text.split('### A second proxy arch: SRVGGNetCompact', 1)[1].split('\n### ', 1)[0]}
    files = sorted(glob.glob(osp.join(REPO, 'benchmarks', 'results', 'proxy_*.json')))
    checked = 0
    for (arch, bits), section in sections.items():
        runs = proxy_table.load_runs(files, 1000, arch)
        for variant, cells in _table(section, 'variant').items():
            values = [r['psnr'] for (v, b, _), r in runs.items() if v == variant and b == bits]
            assert len(values) == int(cells[0]['seeds']), (arch, bits, variant, len(values))
            assert cells[0]['final: mean ± half-range'] == (
                f'{statistics.mean(values):.2f} ± {proxy_table.half_range(values):.2f}'), (arch, bits, variant)
            checked += 1
    assert checked >= 30

"""``basicsr compare``: checks before anything is computed, and the table, crop grid and plot through the command line,
with the numbers of ``basicsr test`` on the same entry."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import)
import copy
import csv
import json
import os
import os.path as osp

import cv2
import pytest
import torch
from basicsr.archs.edsr_arch import EDSR

from conftest import REPO, base_options, make_test_options, read_log, run_cli, save_basicsr_checkpoint, write_options
from odm_basicsr.quant import calibrate
from odm_basicsr.tools.compare_cli import CompareError, check_compare, load_entries

FP_NET = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)
ODM_NET = dict(FP_NET, type='ODMEDSR', w_bit=4, a_bit=4, weight_clip='wcc')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """An FP EDSR checkpoint and a calibrated ODM EDSR checkpoint made from it."""
    from basicsr.archs import build_network
    root = tmp_path_factory.mktemp('compare_ckpt')
    torch.manual_seed(0)
    fp = EDSR(**FP_NET)
    fp_path = save_basicsr_checkpoint(fp, root / 'fp.pth')
    net = build_network(dict(ODM_NET))
    net.load_state_dict(fp.state_dict(), strict=False)
    calibrate(net, [torch.rand(2, 3, 16, 16)], progress=False)
    return fp_path, save_basicsr_checkpoint(net, root / 'odm.pth')


def compare_options(tiny_data, checkpoints, **compare_extra):
    fp_path, odm_path = checkpoints
    val = dict(base_options(tiny_data, 'x', dict(FP_NET, type='EDSR'))['datasets']['val'], name='Set5')
    return {
        'name': 'cmp', 'scale': 2, 'num_gpu': 0, 'datasets': {'test_1': val},
        'compare': dict({'reference': 'FP', 'published': {'arch': 'EDSR'}, 'entries': [
            {'label': 'FP', 'network_g': dict(FP_NET, type='EDSR'), 'checkpoint': fp_path},
            {'label': 'ODM v2 w4a4', 'network_g': dict(ODM_NET), 'checkpoint': odm_path},
            {'label': 'not yet', 'network_g': dict(ODM_NET),
             'checkpoint': 'experiments/ODMv2_EDSR_Mx4_w4a4_DIV2K_60k_B8/models/net_g_latest.pth'},
        ]}, **compare_extra),
        'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': 2, 'test_y_channel': True}}},
    }


def test_duplicate_labels_missing_sets_and_bad_reference_are_errors(tiny_data, checkpoints):
    opt = compare_options(tiny_data, checkpoints, reference='nobody')
    opt['compare']['entries'].append(copy.deepcopy(opt['compare']['entries'][0]))
    opt['datasets']['test_2'] = dict(opt['datasets']['test_1'], dataroot_gt='/nowhere/Set14/GTmod12')
    with pytest.raises(CompareError) as info:
        check_compare(opt)
    message = str(info.value)
    assert "entry 'FP': the label is used twice" in message
    assert "/nowhere/Set14/GTmod12" in message and 'basicsr prepare benchmark' in message
    assert "compare.reference: 'nobody'" in message


def test_bad_crops_and_a_wrong_upscale_are_errors_before_computing(tiny_data, checkpoints):
    opt = compare_options(tiny_data, checkpoints, crops=[{'image': 'chelsea', 'box': [0, 0, 0, 8]},
                                                         {'image': 'nowhere', 'box': [0, 0, 8, 8]},
                                                         {'image': 'chelsea', 'box': [0, 0, 9999, 8]}])
    with pytest.raises(CompareError) as info:
        check_compare(opt)
    message = str(info.value)
    assert 'compare.crops[0]: {image' in message and "compare.crops[1]: image 'nowhere' is in no test set" in message
    assert 'compare.crops[2]: box [0, 0, 9999, 8] lies outside chelsea' in message
    opt = compare_options(tiny_data, checkpoints)
    opt['compare']['entries'][1]['network_g']['upscale'] = 4
    entries, _ = check_compare(opt)
    with pytest.raises(CompareError, match=r"entry 'ODM v2 w4a4' \(ODMEDSR\): upscale 4 but the compare file's scale is 2"):
        load_entries(entries, torch.device('cpu'), 2)


def test_an_entry_that_does_not_fit_its_checkpoint_is_named_before_computing(tiny_data, checkpoints):
    opt = compare_options(tiny_data, checkpoints)
    opt['compare']['entries'][1]['network_g']['num_feat'] = 16  # the checkpoint has 8
    entries, _ = check_compare(opt)
    with pytest.raises(CompareError, match=r"entry 'ODM v2 w4a4' \(ODMEDSR\): .*odm.pth does not fit"):
        load_entries(entries, torch.device('cpu'), 2)


def test_an_entry_whose_checkpoint_records_other_bits_is_named_before_computing(tiny_data, checkpoints, tmp_path):
    """A w4a4 checkpoint fits a w2a2 network_g by keys and shapes; its quantization record tells them apart, so its
    row is not labelled (and costed) as w2a2."""
    from odm_basicsr.quant import quantization_record
    from basicsr.archs import build_network
    state = torch.load(checkpoints[1], weights_only=True)
    recorded = tmp_path / 'odm_recorded.pth'
    torch.save(dict(state, quantization=quantization_record(build_network(dict(ODM_NET)))), recorded)
    opt = compare_options(tiny_data, (checkpoints[0], str(recorded)))
    entries, _ = check_compare(opt)
    load_entries(entries, torch.device('cpu'), 2)  # the record agrees
    opt['compare']['entries'][1]['network_g'].update(w_bit=2, a_bit=2)
    entries, _ = check_compare(opt)
    with pytest.raises(CompareError, match=r"entry 'ODM v2 w4a4' \(ODMEDSR\): .*another quantization than its "
                                           r"network_g \(4 layer\(s\) .*checkpoint 'w4 a4 wcc layer', network_g 'w2 a2"):
        load_entries(entries, torch.device('cpu'), 2)


def test_missing_checkpoints_name_the_training_run_and_all_missing_is_an_error(tiny_data, checkpoints):
    opt = compare_options(tiny_data, checkpoints)
    entries, _ = check_compare(opt)
    nets, missing = load_entries(entries, torch.device('cpu'), 2)
    assert set(nets) == {'FP', 'ODM v2 w4a4'}
    assert missing['not yet'] == 'not trained yet: basicsr train -opt options/v2/train_ODMv2_EDSR_x4_w4a4.yml'
    with pytest.raises(CompareError, match='no entry has a checkpoint yet'):
        load_entries(entries[2:], torch.device('cpu'), 2)


def test_grid_compare_file_without_checkpoints_says_what_to_run(tmp_path):
    for name in ('Set5', 'Set14', 'B100', 'Urban100'):
        for sub in ('GTmod12', 'LRbicx4'):
            os.makedirs(tmp_path / 'datasets' / name / sub)
    proc = run_cli(['compare', '-opt', osp.join(REPO, 'options', 'compare_EDSR_x4.yml')], tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'Traceback' not in out
    assert 'no entry has a checkpoint yet' in out
    assert 'EDSR_Mx4_f64b16_DIV2K_official-0c287733.pth' in out
    for variant in ('options/train_ODM_EDSR_x4_w2a2.yml', 'options/v2/train_ODMv2_EDSR_x4_w4a4.yml',
                    'options/qat/train_QAT_EDSR_x4_w3a3.yml'):
        assert f'basicsr train -opt {variant}' in out
    assert not (tmp_path / 'results').exists()


@pytest.mark.slow
def test_compare_through_the_cli_matches_basicsr_test(tiny_data, checkpoints, tmp_path):
    opt = compare_options(tiny_data, checkpoints)
    run_cli(['compare', '-opt', write_options(tmp_path / 'cmp.yml', opt), '--size', '16x16'], tmp_path)
    out = tmp_path / 'results' / 'cmp'
    result = json.loads((out / 'compare.json').read_text())
    rows = {r['label']: r for r in result['rows']}
    assert set(rows) == {'bicubic', 'FP', 'ODM v2 w4a4'} and result['missing'] == {
        'not yet': 'not trained yet: basicsr train -opt options/v2/train_ODMv2_EDSR_x4_w4a4.yml'}
    assert rows['FP']['delta_psnr'] == 0 and rows['FP']['fidelity_db'] is None  # identical to the reference
    assert rows['ODM v2 w4a4']['bits'] == 'w4a4' and rows['ODM v2 w4a4']['bitops'] < rows['FP']['bitops']
    assert rows['bicubic']['bitops'] is None
    # the published rows of EDSR x2 do not exist; x4 rows would be for another scale: none here
    assert result['published'] == []
    with open(out / 'compare.csv') as f:
        assert {r['label'] for r in csv.DictReader(f)} == set(rows)
    md = (out / 'compare.md').read_text()
    assert 'ODM v2 w4a4' in md and 'not trained yet' in md
    crops = [p for p in os.listdir(out) if p.startswith('crops_')]
    assert len(crops) == 1 and cv2.imread(str(out / crops[0])) is not None
    if (out / 'psnr_vs_bitops.png').exists() is False:
        pytest.importorskip('matplotlib')
    assert cv2.imread(str(out / 'psnr_vs_bitops.png')) is not None
    # basicsr test on the same entry reports the same PSNR / SSIM
    test_opt = make_test_options(base_options(tiny_data, 'x', dict(ODM_NET)), 'cmp_test', checkpoints[1])
    test_opt['datasets']['test_1'] = dict(opt['datasets']['test_1'])
    run_cli(['test', '-opt', write_options(tmp_path / 'test.yml', test_opt)], tmp_path)
    log = read_log(tmp_path / 'results' / 'cmp_test', prefix='test_')
    assert f'# psnr: {rows["ODM v2 w4a4"]["psnr"]:.4f}' in log
    assert f'# ssim: {rows["ODM v2 w4a4"]["ssim"]:.4f}' in log


def test_published_rows_match_arch_and_scale():
    from odm_basicsr.data.published import published_rows
    rows = published_rows('EDSR', 4, bits=[2])
    assert ('ODM', 2) in {(m, b) for m, b, _ in rows}
    odm = next(v for m, b, v in rows if m == 'ODM')
    assert odm['Set5'] == (31.50, 0.882) and odm['Urban100'] == (25.17, 0.755)
    assert published_rows('EDSR', 2) == []


def test_published_rows_of_the_matching_arch_and_set_are_marked_as_published(tiny_data, checkpoints, monkeypatch):
    from odm_basicsr.data import published
    from odm_basicsr.tools.compare_cli import format_markdown, run
    monkeypatch.setitem(published.PUBLISHED, ('EDSR', 2), [('ODM', 4, {'Set5': (37.5, 0.95), 'Set14': (33.0, None)}),
                                                          ('DAQ', 4, {'Urban100': (30.0, 0.9)}),
                                                          ('ODM', 2, {'Set5': (36.0, 0.94)})])  # no w2 entry
    result = run(compare_options(tiny_data, checkpoints), (16, 16), torch.device('cpu'), log=lambda line: None)
    assert result['published'] == [dict(dataset='Set5', method='ODM', bits=4, psnr=37.5, ssim=0.95)]
    md = format_markdown(result)
    assert 'not measured here' in md and '| ODM | 4 | 37.50 | 0.950 |' in md

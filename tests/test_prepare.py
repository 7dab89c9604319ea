"""``basicsr prepare div2k | benchmark`` on small fake dataset trees made from skimage photos."""
import os
import os.path as osp

import cv2
import lmdb
import numpy as np
import pytest
import yaml

from conftest import REPO, run_cli
from odm_basicsr.data.photos import bicubic_downscale, load_photo, mod_crop, sub_images, write_png
from odm_basicsr.options_check import OptionError, check_options
from odm_basicsr.tools import prepare

# HR sizes with a flush last column (236), a flush last row (180) and a single tile (96); all multiples of 4
DIV2K_HR = {'0001': ('astronaut', 192, 236), '0002': ('coffee', 180, 240), '0003': ('chelsea', 96, 96)}
CROP, STEP = 96, 48


def _hr(photo, h, w):
    return np.ascontiguousarray(load_photo(photo)[:h, :w])


def _read(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _make_div2k(root, images, lr_scales=(2, 4)):
    """Official DIV2K layout under ``root``: HR PNGs and bicubic LR PNGs named <stem>x<s>.png."""
    hrs = {}
    for stem, (photo, h, w) in images.items():
        hrs[stem] = _hr(photo, h, w)
        write_png(str(root / 'DIV2K_train_HR' / f'{stem}.png'), hrs[stem])
        for s in lr_scales:
            write_png(str(root / 'DIV2K_train_LR_bicubic' / f'X{s}' / f'{stem}x{s}.png'),
                      bicubic_downscale(mod_crop(hrs[stem], s), s))
    return hrs


def _lmdb_images(path):
    """key -> RGB image of a BasicSR LMDB."""
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False)
    with env.begin() as txn:
        out = {key.decode(): cv2.cvtColor(cv2.imdecode(np.frombuffer(val, np.uint8), cv2.IMREAD_COLOR),
                                          cv2.COLOR_BGR2RGB) for key, val in txn.cursor()}
    env.close()
    return out


def _prepare(argv, cwd, monkeypatch):
    """``basicsr prepare`` in this process (fast), one worker."""
    monkeypatch.chdir(cwd)
    prepare.main(list(argv) + ['--workers', '1'])


def _prepare_error(argv, cwd, monkeypatch):
    with pytest.raises(SystemExit) as err:
        _prepare(argv, cwd, monkeypatch)
    return str(err.value)


# -------------------------------------------------------------------------------------------------- div2k
@pytest.fixture(scope='module')
def div2k(tmp_path_factory):
    """The fake DIV2K tree prepared once through the command line (process pool, default --workers)."""
    cwd = tmp_path_factory.mktemp('div2k')
    root = cwd / 'datasets' / 'DIV2K'
    hrs = _make_div2k(root, DIV2K_HR)
    proc = run_cli(['prepare', 'div2k', '--root', 'datasets/DIV2K', '--crop', str(CROP), '--step', str(STEP)], cwd)
    return cwd, root, hrs, proc


def test_div2k_lmdbs_hold_the_tiles_with_equal_keys(div2k):
    cwd, root, hrs, proc = div2k
    n_tiles = sum(len(sub_images(hr, CROP, STEP)) for hr in hrs.values())
    assert n_tiles == 12 + 12 + 1
    hr_tiles = _lmdb_images(root / 'DIV2K_train_HR_sub.lmdb')
    assert len(hr_tiles) == n_tiles and len(os.listdir(root / 'DIV2K_train_HR_sub')) == n_tiles + 1  # + settings
    for stem, hr in hrs.items():  # row-major from s001, as BasicSR's extract_subimages
        for i, tile in enumerate(sub_images(hr, CROP, STEP), start=1):
            np.testing.assert_array_equal(hr_tiles[f'{stem}_s{i:03d}'], tile)
    for s in (2, 4):
        lmdb_path = root / f'DIV2K_train_LR_bicubic_X{s}_sub.lmdb'
        assert {'data.mdb', 'meta_info.txt'} <= set(os.listdir(lmdb_path))
        lr_tiles = _lmdb_images(lmdb_path)
        assert sorted(lr_tiles) == sorted(hr_tiles)
        assert {t.shape for t in lr_tiles.values()} == {(CROP // s, CROP // s, 3)}
        lr = _read(root / 'DIV2K_train_LR_bicubic' / f'X{s}' / f'0001x{s}.png')  # last tile: flush bottom-right
        np.testing.assert_array_equal(lr_tiles['0001_s012'], lr[-CROP // s:, -CROP // s:])
        with open(lmdb_path / 'meta_info.txt') as f:
            assert f.readline().strip() == f'0001_s001.png ({CROP // s},{CROP // s},3) 1'
    assert 'not found: skipping x3' in proc.stdout
    assert 'datasets/DIV2K/DIV2K_train_LR_bicubic_X4_sub.lmdb' in proc.stdout and f'{n_tiles} tiles' in proc.stdout


def test_div2k_rerun_is_a_no_op(div2k, monkeypatch, capsys):
    cwd, root, _, _ = div2k
    watched = [root / 'DIV2K_train_HR_sub.lmdb' / 'data.mdb', root / 'DIV2K_train_LR_bicubic_X4_sub.lmdb' / 'data.mdb',
               root / 'DIV2K_train_HR_sub' / '0002_s005.png']
    before = [p.stat().st_mtime_ns for p in watched]
    _prepare(['div2k', '--root', 'datasets/DIV2K', '--crop', str(CROP), '--step', str(STEP)], cwd, monkeypatch)
    out = capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in watched] == before
    assert out.count('skipped') == 3 and 'sub-images: 0 written' in out and 'Create lmdb' not in out


def test_div2k_resumes_an_interrupted_run(tmp_path, monkeypatch, capsys):
    root = tmp_path / 'DIV2K'
    hrs = _make_div2k(root, {'0001': DIV2K_HR['0001']}, lr_scales=(4,))
    argv = ['div2k', '--root', str(root), '--crop', str(CROP), '--step', str(STEP)]
    _prepare(argv, tmp_path, monkeypatch)
    os.remove(root / 'DIV2K_train_HR_sub' / '0001_s007.png')  # a lost tile and an LMDB without meta_info.txt
    os.remove(root / 'DIV2K_train_LR_bicubic_X4_sub.lmdb' / 'meta_info.txt')
    capsys.readouterr()
    _prepare(argv, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert 'sub-images: 1 written' in out and out.count('Create lmdb') == 2
    np.testing.assert_array_equal(_lmdb_images(root / 'DIV2K_train_HR_sub.lmdb')['0001_s007'],
                                  sub_images(hrs['0001'], CROP, STEP)[6])
    assert len(_lmdb_images(root / 'DIV2K_train_LR_bicubic_X4_sub.lmdb')) == 12
    assert not any(name.endswith('.tmp.lmdb') for name in os.listdir(root))
    message = _prepare_error(['div2k', '--root', str(root), '--crop', '48', '--step', '48'], tmp_path, monkeypatch)
    assert 'DIV2K_train_HR_sub was made with crop=96 step=48' in message


def test_div2k_missing_hr_is_a_clear_error_and_creates_nothing(tmp_path):
    proc = run_cli(['prepare', 'div2k', '--root', 'datasets/DIV2K'], tmp_path, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert 'datasets/DIV2K/DIV2K_train_HR' in proc.stderr and prepare.DIV2K_URL in proc.stderr
    assert 'DIV2K_train_HR.zip' in proc.stderr and '--make-lr' in proc.stderr
    assert os.listdir(tmp_path) == []


def test_div2k_lr_problems_are_named(tmp_path, monkeypatch):
    root = tmp_path / 'DIV2K'
    _make_div2k(root, {'0001': DIV2K_HR['0001'], '0002': DIV2K_HR['0002']}, lr_scales=(4,))
    message = _prepare_error(['div2k', '--root', str(root), '--scales', '3'], tmp_path, monkeypatch)
    assert 'DIV2K_train_LR_bicubic/X3' in message and '--make-lr' in message and prepare.DIV2K_URL in message
    os.remove(root / 'DIV2K_train_LR_bicubic' / 'X4' / '0002x4.png')
    write_png(str(root / 'DIV2K_train_LR_bicubic' / 'X4' / '0001x4.png'), np.zeros((48, 50, 3), np.uint8))
    message = _prepare_error(['div2k', '--root', str(root), '--crop', str(CROP), '--step', str(STEP)], tmp_path,
                             monkeypatch)
    assert '0001x4.png is 50x48, expected 59x48' in message and '0002x4.png is missing' in message
    assert not osp.exists(root / 'DIV2K_train_HR_sub.lmdb')


def test_div2k_make_lr_from_hr(tmp_path, monkeypatch):
    root = tmp_path / 'DIV2K'
    hr = _make_div2k(root, {'0001': ('coffee', 197, 243)}, lr_scales=())['0001']  # not a multiple of 4
    _prepare(['div2k', '--root', str(root), '--scales', '4', '--make-lr', '--crop', str(CROP), '--step', str(STEP)],
             tmp_path, monkeypatch)
    lr = _read(root / 'DIV2K_train_LR_bicubic' / 'X4' / '0001x4.png')
    np.testing.assert_array_equal(lr, bicubic_downscale(mod_crop(hr, 4), 4))
    assert sorted(os.listdir(root / 'DIV2K_train_LR_bicubic')) == ['X4', 'X4_sub']
    hr_tiles = _lmdb_images(root / 'DIV2K_train_HR_sub.lmdb')
    lr_tiles = _lmdb_images(root / 'DIV2K_train_LR_bicubic_X4_sub.lmdb')
    assert sorted(hr_tiles) == sorted(lr_tiles) and len(hr_tiles) == len(sub_images(hr, CROP, STEP))
    np.testing.assert_array_equal(lr_tiles['0001_s002'], lr[:24, 12:36])  # HR corner (0, 48) / 4


def test_option_file_names_what_prepare_makes(tmp_path, monkeypatch):
    """Default crop/step: the paths of options/train_ODM_EDSR_x4_w4a4.yml exist, pass the option check and load."""
    _make_div2k(tmp_path / 'datasets' / 'DIV2K', {'0001': ('astronaut', 512, 512)}, lr_scales=(4,))
    write_png(str(tmp_path / 'datasets' / 'Set5' / 'HR' / 'baby.png'), _hr('chelsea', 100, 100))
    _prepare(['div2k', '--root', 'datasets/DIV2K', '--scales', '4'], tmp_path, monkeypatch)
    _prepare(['benchmark', '--root', 'datasets', '--sets', 'Set5', '--scales', '4'], tmp_path, monkeypatch)
    with open(osp.join(REPO, 'options', 'train_ODM_EDSR_x4_w4a4.yml')) as f:
        opt = yaml.safe_load(f)
    train = opt['datasets']['train']
    assert train['dataroot_gt'] == 'datasets/DIV2K/DIV2K_train_HR_sub.lmdb'
    assert train['dataroot_lq'] == 'datasets/DIV2K/DIV2K_train_LR_bicubic_X4_sub.lmdb'
    assert len(_lmdb_images(train['dataroot_gt'])) == 4  # 512 = 0, 32 with crop 480
    try:
        check_options(opt, is_train=True)
    except OptionError as err:  # e.g. the pretrained checkpoint is not here
        assert 'datasets.' not in str(err) and 'datasets/' not in str(err), str(err)

    from basicsr.data.paired_image_dataset import PairedImageDataset
    dataset = PairedImageDataset(dict(train, gt_size=96, phase='train', scale=4))
    sample = dataset[0]
    assert len(dataset) == 4 and sample['gt'].shape == (3, 96, 96) and sample['lq'].shape == (3, 24, 24)


# ---------------------------------------------------------------------------------------------- benchmark
def test_benchmark_makes_gtmod12_and_bicubic_lr(tmp_path):
    write_png(str(tmp_path / 'datasets' / 'Set5' / 'HR' / 'astro.png'), _hr('astronaut', 100, 130))
    cv2.imwrite(str(tmp_path / 'datasets' / 'Set5' / 'HR' / 'coffee.jpg'), _hr('coffee', 77, 90)[..., ::-1])
    os.makedirs(tmp_path / 'datasets' / 'Set14' / 'original')
    gray = np.ascontiguousarray(load_photo('camera')[:50, :61, 0])
    cv2.imwrite(str(tmp_path / 'datasets' / 'Set14' / 'original' / 'cam.png'), gray)
    proc = run_cli(['prepare', 'benchmark', '--root', 'datasets'], tmp_path)
    assert 'skipping B100' in proc.stdout and 'skipping Urban100' in proc.stdout
    for name, src in (('Set5', 'HR'), ('Set14', 'original')):
        set_dir = tmp_path / 'datasets' / name
        sources = {osp.splitext(f)[0]: _read(set_dir / src / f) for f in os.listdir(set_dir / src)}
        for sub in ('GTmod12', 'LRbicx2', 'LRbicx3', 'LRbicx4'):
            assert sorted(os.listdir(set_dir / sub)) == sorted(stem + '.png' for stem in sources)
        for stem, img in sources.items():
            gt = cv2.imread(str(set_dir / 'GTmod12' / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
            assert gt.ndim == 3 and gt.shape[2] == 3 and gt.shape[0] % 12 == 0 and gt.shape[1] % 12 == 0
            np.testing.assert_array_equal(gt[..., ::-1], mod_crop(img, 12))
            for s in (2, 3, 4):
                np.testing.assert_array_equal(_read(set_dir / f'LRbicx{s}' / f'{stem}.png'),
                                              bicubic_downscale(gt[..., ::-1], s))
    cam = _read(tmp_path / 'datasets' / 'Set14' / 'GTmod12' / 'cam.png')
    assert cam.shape == (48, 60, 3) and (cam[..., 0] == cam[..., 2]).all()
    assert not any(name.endswith('.tmp') for name in os.listdir(tmp_path / 'datasets' / 'Set5'))


def test_benchmark_keeps_a_correct_existing_lr_folder(tmp_path, monkeypatch, capsys):
    set_dir = tmp_path / 'Set5'
    write_png(str(set_dir / 'HR' / 'astro.png'), _hr('astronaut', 100, 130))
    write_png(str(set_dir / 'LRbicx4' / 'astro.png'), np.full((24, 30, 3), 7, np.uint8))  # 96x120 / 4
    _prepare(['benchmark', '--root', str(tmp_path), '--sets', 'Set5', '--scales', '4'], tmp_path, monkeypatch)
    assert f'using existing {set_dir}/LRbicx4' in capsys.readouterr().out
    assert (_read(set_dir / 'LRbicx4' / 'astro.png') == 7).all()
    assert _read(set_dir / 'GTmod12' / 'astro.png').shape == (96, 120, 3)


def test_benchmark_refuses_a_wrong_existing_lr_folder(tmp_path, monkeypatch):
    set_dir = tmp_path / 'Set5'
    write_png(str(set_dir / 'HR' / 'astro.png'), _hr('astronaut', 100, 130))
    write_png(str(set_dir / 'HR' / 'coffee.png'), _hr('coffee', 60, 60))
    wrong = np.full((25, 30, 3), 7, np.uint8)
    write_png(str(set_dir / 'LRbicx4' / 'astro.png'), wrong)
    message = _prepare_error(['benchmark', '--root', str(tmp_path), '--sets', 'Set5', '--scales', '4'], tmp_path,
                             monkeypatch)
    assert f'{set_dir}/LRbicx4 exists but does not match' in message
    assert 'astro.png is 30x25, expected 30x24' in message and 'coffee.png is missing' in message
    np.testing.assert_array_equal(_read(set_dir / 'LRbicx4' / 'astro.png'), wrong)


def test_benchmark_missing_sets(tmp_path, monkeypatch):
    write_png(str(tmp_path / 'Set5' / 'HR' / 'astro.png'), _hr('astronaut', 24, 24))
    message = _prepare_error(['benchmark', '--root', str(tmp_path), '--sets', 'Set5', 'B100'], tmp_path, monkeypatch)
    assert f'{tmp_path}/B100 not found' in message and 'DatasetPreparation.md' in message and '<Set>/HR' in message
    assert not osp.exists(tmp_path / 'Set5' / 'GTmod12')  # checked before anything is written
    message = _prepare_error(['benchmark', '--root', str(tmp_path / 'empty')], tmp_path, monkeypatch)
    assert 'none of the sets' in message and 'DatasetPreparation.md' in message

"""``basicsr infer``: tiling equals whole-image inference, a folder is upscaled through PyTorch and through ONNX, and
bad input is one clear error before anything is written."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import)
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network

from conftest import run_cli, save_basicsr_checkpoint, write_options
from odm_basicsr.data.photos import bicubic_downscale, load_photo
from odm_basicsr.quant import calibrate
from odm_basicsr.tools.infer_cli import tile_boxes, upscale_tiled

NET = dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=2, w_bit=4, a_bit=4,
           offsets='auto')


def to_tensor(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().unsqueeze(0) / 255.


@pytest.mark.parametrize('height, width, tile', [(37, 50, 16), (16, 16, 16), (9, 40, 8), (20, 20, 0)])
def test_tiles_cover_the_image_once(height, width, tile):
    cover = np.zeros((height, width), int)
    for y0, y1, x0, x1 in tile_boxes(height, width, tile):
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        assert tile <= 0 or (y1 - y0 <= tile and x1 - x0 <= tile)
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()


def test_tiled_equals_whole_image_when_the_overlap_covers_the_receptive_field():
    """A quantized net with static ranges sees the same context per output pixel in a tile as in the whole image
    once the overlap reaches its receptive-field radius (here 8 LR px: 6 convs of 3x3 before the upsampler, then the
    upsampler conv and conv_last at HR), so the
    tiled output equals the untiled one; with no overlap the tile seams differ."""
    torch.manual_seed(0)
    net = build_network(dict(NET, num_block=2)).eval()
    lr = to_tensor(bicubic_downscale(load_photo('astronaut'), 8)[:45, :61])
    calibrate(net, [lr], progress=False)
    with torch.no_grad():
        whole = net(lr)
        run = lambda patch: net(patch)  # noqa: E731
        tiled = upscale_tiled(run, lr, 16, 8)
        seams = upscale_tiled(run, lr, 16, 0)
    assert tiled.shape == whole.shape == (1, 3, 90, 122)
    assert torch.allclose(tiled, whole, atol=1e-5)
    assert (seams - whole).abs().max() > 1e-3


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A calibrated ODM EDSR x2 checkpoint and its test option file, and a folder of LR photos (one grey)."""
    root = tmp_path_factory.mktemp('infer')
    torch.manual_seed(0)
    net = build_network(dict(NET)).eval()
    lrs = {name: bicubic_downscale(load_photo(name), 4)[:40, :56] for name in ('astronaut', 'chelsea', 'coffee')}
    calibrate(net, [to_tensor(lrs['astronaut'])], offset_mode='auto', offset_top_k=0.5, progress=False)
    ckpt = save_basicsr_checkpoint(net, root / 'net_g.pth')
    opt = {'name': 'infer_test', 'model_type': 'ODMModel', 'scale': 2, 'num_gpu': 0, 'network_g': dict(NET),
           'path': {'pretrain_network_g': ckpt, 'strict_load_g': True, 'param_key_g': 'params'}}
    opt_path = write_options(root / 'test_infer.yml', opt)
    folder = root / 'lr'
    folder.mkdir()
    for name, img in lrs.items():
        cv2.imwrite(str(folder / f'{name}.png'), img[:, :, ::-1])
    cv2.imwrite(str(folder / 'grey.png'), cv2.cvtColor(lrs['coffee'][:, :, ::-1].copy(), cv2.COLOR_BGR2GRAY))
    (folder / 'notes.txt').write_text('not an image')
    return dict(root=root, net=net, opt=opt_path, folder=folder, ckpt=ckpt)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255. ** 2 / max(mse, 1e-12))


@pytest.mark.slow
def test_infer_upscales_a_folder_through_pytorch_and_onnx(trained, tmp_path):
    pytest.importorskip('onnxruntime')
    folder = trained['folder']
    proc = run_cli(['infer', '-opt', trained['opt'], '--input', str(folder), '--out', 'sr_torch', '--tile', '24',
                    '--tile-overlap', '8'], cwd=tmp_path)
    assert 'wrote 4 PNG(s)' in proc.stdout, proc.stdout
    assert 'tile' in proc.stdout  # the progress bars
    names = sorted(os.listdir(tmp_path / 'sr_torch'))
    assert names == ['astronaut.png', 'chelsea.png', 'coffee.png', 'grey.png']
    # the PyTorch output is the network's output on the whole image, written as BasicSR writes images
    rgb = cv2.imread(str(folder / 'chelsea.png'))[:, :, ::-1].copy()
    with torch.no_grad():
        want = trained['net'](to_tensor(rgb))[0].clamp(0, 1).numpy().transpose(1, 2, 0)
    want = np.rint(want * 255).astype(np.uint8)[:, :, ::-1]
    got = cv2.imread(str(tmp_path / 'sr_torch' / 'chelsea.png'))
    assert got.shape == (80, 112, 3)
    assert np.abs(got.astype(int) - want).max() <= 1
    grey = cv2.imread(str(tmp_path / 'sr_torch' / 'grey.png'), cv2.IMREAD_UNCHANGED)
    assert grey.shape == (80, 112)

    run_cli(['export', '-opt', trained['opt'], '--format', 'onnx', '--out', 'net.onnx', '--size', '16x16'],
            cwd=tmp_path)
    proc = run_cli(['infer', '--onnx', 'net.onnx', '--input', str(folder), '--out', 'sr_onnx', '--tile', '24',
                    '--tile-overlap', '8'], cwd=tmp_path)
    assert 'wrote 4 PNG(s)' in proc.stdout, proc.stdout
    for name in names:
        a = cv2.imread(str(tmp_path / 'sr_onnx' / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / 'sr_torch' / name), cv2.IMREAD_UNCHANGED)
        assert a.shape == b.shape and _psnr(a, b) >= 40, name


@pytest.mark.parametrize('case, expected', [
    ('missing_input', 'does not exist'),
    ('empty_folder', 'holds no image'),
    ('output_is_input', 'would overwrite the inputs'),
    ('negative_tile', '--tile and --tile-overlap must be >= 0'),
    ('uncalibrated', 'never calibrated'),
    ('missing_onnx', 'basicsr export'),
    ('not_an_image', '1 of 1 input(s) are not images OpenCV can read (nothing was loaded or written)'),
])
def test_bad_input_is_one_error_and_nothing_is_written(trained, tmp_path, case, expected):
    from odm_basicsr.tools.infer_cli import main
    args = ['-opt', trained['opt'], '--input', str(trained['folder']), '--out', str(tmp_path / 'out')]
    if case == 'missing_input':
        args[3] = str(tmp_path / 'nowhere')
    elif case == 'empty_folder':
        (tmp_path / 'empty').mkdir()
        args[3] = str(tmp_path / 'empty')
    elif case == 'output_is_input':
        args[5] = str(trained['folder'])
    elif case == 'negative_tile':
        args += ['--tile', '-1']
    elif case == 'uncalibrated':
        torch.manual_seed(0)
        ckpt = save_basicsr_checkpoint(build_network(dict(NET)), tmp_path / 'fresh.pth')
        opt = {'name': 'fresh', 'model_type': 'ODMModel', 'scale': 2, 'num_gpu': 0, 'network_g': dict(NET),
               'path': {'pretrain_network_g': ckpt}}
        args[1] = write_options(tmp_path / 'fresh.yml', opt)
    elif case == 'missing_onnx':
        args[:2] = ['--onnx', str(tmp_path / 'none.onnx')]
    elif case == 'not_an_image':  # checked before the network: its checkpoint does not even exist
        (tmp_path / 'fake.png').write_text('not a PNG')
        opt = {'name': 'gone', 'model_type': 'ODMModel', 'scale': 2, 'num_gpu': 0, 'network_g': dict(NET),
               'path': {'pretrain_network_g': str(tmp_path / 'gone.pth')}}
        args[1], args[3] = write_options(tmp_path / 'gone.yml', opt), str(tmp_path / 'fake.png')
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(trained['folder']))
    with pytest.raises(SystemExit) as info:
        main(args)
    assert expected in str(info.value), str(info.value)
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(trained['folder']))) == before

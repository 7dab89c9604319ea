"""Integer export: folded integer mappings, ONNX QDQ parity in onnxruntime, bit-packed checkpoints, CLI.

Networks are small ODMEDSR / ODMRDN with random weights, calibrated on crops of a real photo (astronaut); the parity
input is another real photo (chelsea), downscaled. Run with -s to see the PSNR and size lines.
"""
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.archs import build_network

from odm_basicsr.data.photos import bicubic_downscale, load_photo
from odm_basicsr.quant import calibrate, quantized_layers
from odm_basicsr.quant import export as qexport

from conftest import REPO, run_cli, save_basicsr_checkpoint, write_options

EDSR = dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=2)
RDN = dict(type='ODMRDN', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, num_layer=2, growth=8, upscale=2)
CASES = {
    'edsr_w4a4_offsets': dict(EDSR, w_bit=4, a_bit=4, offsets='auto'),
    'edsr_w2a2_wcc': dict(EDSR, w_bit=2, a_bit=2, weight_clip='wcc'),
    'edsr_w8a8_offsets': dict(EDSR, w_bit=8, a_bit=8, offsets='auto'),
    'rdn_w4a4_percentile': dict(RDN, w_bit=4, a_bit=4, weight_clip='percentile'),
}


def to_tensor(img):
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255)[None]


@pytest.fixture(scope='module')
def photos():
    """Calibration batches (2 x (2, 3, 48, 48)) from astronaut and an LR chelsea (1, 3, 60, 88) test input."""
    lr = to_tensor(bicubic_downscale(load_photo('astronaut'), 4))
    crops = [lr[..., y:y + 48, x:x + 48] for y, x in ((0, 0), (40, 60), (80, 16), (70, 78))]
    batches = [torch.cat(crops[:2]), torch.cat(crops[2:])]
    test = to_tensor(bicubic_downscale(load_photo('chelsea')[30:270, 40:392], 4))
    return batches, test


def make_net(case, batches, seed=0):
    torch.manual_seed(seed)
    cfg = CASES[case]
    net = build_network(dict(cfg)).eval()
    if cfg.get('offsets', 'none') != 'none':
        calibrate(net, batches, offset_mode='auto', offset_top_k=0.5, progress=False)
        with torch.no_grad():  # trained offsets are no longer the calibration values: perturb them
            for _, layer in quantized_layers(net):
                layer.offset.shift.add_(0.05 * torch.randn_like(layer.offset.shift))
                layer.offset.scale.mul_(1 + 0.1 * torch.rand_like(layer.offset.scale))
    else:
        calibrate(net, batches, progress=False)
    if cfg.get('weight_clip') == 'wcc':
        with torch.no_grad():
            for i, (_, layer) in enumerate(quantized_layers(net)):
                layer.weight_quantizer.gamma.fill_(0.8 + 0.1 * i)
    return net


def psnr(a, b):
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64))**2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture(scope='module')
def nets(photos):
    return {case: make_net(case, photos[0]) for case in CASES}


@pytest.mark.parametrize('bits', range(2, 9))
def test_bit_packing_is_lossless(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, size=1001, dtype=np.uint8)
    packed = qexport.pack_bits(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == math.ceil(1001 * bits / 8)
    assert np.array_equal(qexport.unpack_bits(packed, bits, 1001), codes)
    if bits < 8:
        with pytest.raises(ValueError):
            qexport.pack_bits(np.array([2**bits]), bits)


@pytest.mark.parametrize('case', CASES)
def test_integer_weight_mapping_is_exact(nets, case):
    """codes·scale (+ offset) are the fake-quantized weights; k·step - u is bit-identical to them."""
    for name, layer in quantized_layers(nets[case]):
        fold = qexport.fold_layer(layer)
        pair = qexport._offset_pair(layer)
        fake = layer.weight_quantizer(layer.weight if pair is None else layer.effective_weight(pair)).detach()
        bits, codes, upper = fold['w_bits'], fold['weight_codes'], fold['weight_upper']
        assert codes.dtype == torch.int8
        if bits <= 7:  # odd integers m in [-(2^b - 1), 2^b - 1]: no zero level
            assert (codes.abs() % 2 == 1).all() and codes.abs().max() <= 2**bits - 1
        assert torch.equal(qexport.grid_weight(fold['weight_k'], upper, bits), fake), name
        dequant = codes.float() * fold['weight_scale'] + fold['weight_offset']
        assert (dequant - fake).abs().max() <= 2**-22 * upper, name  # float32 rounding: <= 2 ulps of u_w
        assert len(torch.unique(fold['weight_k'])) <= 2**bits


def test_folded_bias_is_exact_on_interior_pixels(nets, photos):
    """y = s·conv_valid(i, W_q) + int_bias away from the border (offsets and l folded into the bias)."""
    net = nets['edsr_w4a4_offsets']
    feats = {}

    def keep(name):
        def hook(module, inputs, output):
            feats[name] = (inputs[0].clone(), output.clone())  # EDSR applies an in-place ReLU next
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in quantized_layers(net)]
    try:
        with torch.no_grad():
            net(photos[1])
    finally:
        for h in hooks:
            h.remove()
    for name, layer in quantized_layers(net):
        fold = qexport.fold_layer(layer)
        x, y = feats[name]
        if fold['in_shift'] is not None:
            x = x - fold['in_shift'].view(1, -1, 1, 1)
        if fold['in_scale'] is not None:
            x = x / fold['in_scale'].view(1, -1, 1, 1)
        codes = torch.round((torch.clamp(x, fold['act_lower'], fold['act_upper']) - fold['act_lower']) /
                            fold['act_scale'])
        w_q = fold['weight_codes'].float() * fold['weight_scale'] + fold['weight_offset']
        y_int = fold['act_scale'] * F.conv2d(codes, w_q) + fold['int_bias'].view(1, -1, 1, 1)
        assert torch.allclose(y_int, y[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-4), name


@pytest.mark.parametrize('case', CASES)
def test_onnxruntime_matches_fake_quant(nets, photos, case, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    net, test = nets[case], photos[1]
    n_layers = len(quantized_layers(net))
    info = qexport.export_onnx(net, test[..., :32, :40], str(tmp_path / 'model.onnx'))
    assert info['quantize_linear'] == n_layers
    assert info['dequantize_linear'] == 2 * n_layers  # activation and weight of each quantized conv
    assert info['int8_weight_initializers'] == n_layers
    assert info['ops']['Conv'] == sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    session = ort.InferenceSession(str(tmp_path / 'model.onnx'), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        want = net(test).numpy()  # another size than the tracing input: height and width are dynamic
    got = session.run(None, {'lr': test.numpy()})[0]
    value = psnr(got, want)
    print(f'\n{case}: onnxruntime vs PyTorch fake-quant on chelsea {tuple(test.shape[2:])}: PSNR {value:.1f} dB, '
          f'max |diff| {np.abs(got - want).max():.2e}, ONNX {info["bytes"]} bytes')
    assert value >= 45


@pytest.mark.parametrize('case', CASES)
def test_packed_round_trip_is_bit_identical_and_small(nets, photos, case, tmp_path):
    net, test = nets[case], photos[1]
    written = qexport.save_packed(net, str(tmp_path / 'net.packed.pth'))
    fresh = build_network(dict(CASES[case])).eval()  # another random init: everything must come from the file
    qexport.load_packed(str(tmp_path / 'net.packed.pth'), fresh)
    with torch.no_grad():
        assert torch.equal(fresh(test), net(test))
    sizes = qexport.size_report(net)
    bits = CASES[case]['w_bit']
    print(f'\n{case}: packed {written} bytes vs float32 checkpoint {sizes["float_checkpoint_bytes"]} bytes; '
          f'quantized weights {sizes["quant_weight_packed_bytes"]} vs {sizes["quant_weight_float_bytes"]} bytes')
    assert written < sizes['float_checkpoint_bytes']
    assert sizes['quant_weight_ratio'] <= bits / 32 + 0.01
    if bits == 4:
        assert sizes['quant_weight_ratio'] < 0.3
    # a re-pack of the unpacked network gives the same codes
    again = qexport.pack_checkpoint(fresh)
    for name, entry in qexport.pack_checkpoint(net)['layers'].items():
        assert torch.equal(again['layers'][name]['codes'], entry['codes'])


def test_uncalibrated_network_is_refused(tmp_path):
    net = build_network(dict(CASES['edsr_w4a4_offsets']))
    with pytest.raises(ValueError, match='never calibrated'):
        qexport.export_onnx(net, torch.rand(1, 3, 16, 16), str(tmp_path / 'x.onnx'))
    with pytest.raises(ValueError, match='never calibrated'):
        qexport.pack_checkpoint(net)


def test_cli_export_onnx_and_packed(nets, photos, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    case = 'edsr_w4a4_offsets'
    net = nets[case]
    ckpt = save_basicsr_checkpoint(net, tmp_path / 'net_g.pth')
    opt = {'name': 'export_test', 'model_type': 'ODMModel', 'scale': 2, 'num_gpu': 0, 'network_g': dict(CASES[case]),
           'path': {'pretrain_network_g': ckpt, 'strict_load_g': True, 'param_key_g': 'params'}}
    opt_path = write_options(tmp_path / 'test_export.yml', opt)
    proc = run_cli(['export', '-opt', opt_path, '--format', 'onnx', '--mode', 'exact', '--out', 'out/model.onnx',
                    '--size', '24x32'], cwd=tmp_path)
    assert 'QuantizeLinear' in proc.stdout and 'float32 checkpoint' in proc.stdout, proc.stdout
    session = ort.InferenceSession(str(tmp_path / 'out' / 'model.onnx'), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        want = net(photos[1]).numpy()
    assert psnr(session.run(None, {'lr': photos[1].numpy()})[0], want) >= 45

    proc = run_cli(['export', '-opt', opt_path, '--format', 'packed'], cwd=tmp_path)
    assert 'packed / float32' in proc.stdout, proc.stdout
    fresh = qexport.load_packed(str(tmp_path / 'export_test.packed.pth'), build_network(dict(CASES[case])).eval())
    with torch.no_grad():
        assert torch.equal(fresh(photos[1]), net(photos[1]))


def test_cli_refuses_uncalibrated_checkpoint(tmp_path):
    torch.manual_seed(0)
    ckpt = save_basicsr_checkpoint(build_network(dict(CASES['edsr_w2a2_wcc'])), tmp_path / 'fresh.pth')
    opt = {'name': 'uncalibrated', 'model_type': 'ODMModel', 'scale': 2, 'num_gpu': 0,
           'network_g': dict(CASES['edsr_w2a2_wcc']), 'path': {'pretrain_network_g': ckpt}}
    proc = run_cli(['export', '-opt', write_options(tmp_path / 'opt.yml', opt), '--format', 'packed'], cwd=tmp_path,
                   check=False)
    assert proc.returncode != 0
    assert 'never calibrated' in proc.stderr, proc.stderr
    assert not (tmp_path / 'uncalibrated.packed.pth').exists()


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['EDSR', 'RDN'])
def test_cli_export_of_the_grid_option_files_runs_in_onnxruntime(arch, photos, tmp_path):
    """The real test option files (EDSR-baseline 64x16, RDN 16x8x64, x4 w4a4, ODM v1): a calibrated checkpoint of
    that architecture is written where the file expects the trained one, ``basicsr export`` writes ONNX and packed
    files, onnxruntime matches the fake-quant output (>= 45 dB) and the packed file rebuilds it bit-identically."""
    import yaml
    ort = pytest.importorskip('onnxruntime')
    option_file = osp.join(REPO, 'options', f'test_ODM_{arch}_x4_w4a4.yml')
    with open(option_file) as f:
        opt = yaml.safe_load(f)
    torch.manual_seed(0)
    net = build_network(dict(opt['network_g'])).eval()
    lr = photos[0][0][:, :, :24, :24]  # small crops keep the 22M-parameter RDN quick
    # percentile, as the grid files set it: auto's per-layer sweep would run the big RDN twice per quantized layer
    calibrate(net, [lr, photos[0][1][:, :, :24, :24]], offset_mode='auto', offset_top_k=0.25, progress=False,
              method='percentile')
    ckpt = tmp_path / opt['path']['pretrain_network_g']
    ckpt.parent.mkdir(parents=True)
    save_basicsr_checkpoint(net, ckpt)
    test = photos[1][..., :20, :28]
    proc = run_cli(['export', '-opt', option_file, '--format', 'onnx', '--mode', 'exact', '--out', 'model.onnx',
                    '--size', '16x16'], cwd=tmp_path)
    assert 'QuantizeLinear' in proc.stdout, proc.stdout
    session = ort.InferenceSession(str(tmp_path / 'model.onnx'), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        want = net(test)
    assert psnr(session.run(None, {'lr': test.numpy()})[0], want.numpy()) >= 45
    proc = run_cli(['export', '-opt', option_file, '--format', 'packed', '--out', 'model.packed.pth'], cwd=tmp_path)
    assert 'packed / float32' in proc.stdout, proc.stdout
    fresh = qexport.load_packed(str(tmp_path / 'model.packed.pth'), build_network(dict(opt['network_g'])).eval())
    with torch.no_grad():
        assert torch.equal(fresh(test), want)

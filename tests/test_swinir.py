"""ODMSwinIR: SwinIR checkpoints load strict, the quantized Linear layers and (optionally) attention products, their
cost and export, and train / test / cost / export through the command line on a small SwinIR."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import)
import json
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs.swinir_arch import SwinIR
from basicsr.utils.registry import ARCH_REGISTRY

from conftest import base_options, cost_and_export_in_process, make_test_options, read_log, run_cli, write_options
from odm_basicsr.options_check import OptionError, check_options
from odm_basicsr.quant import (MatMul, QuantLinear, activation_points, calibrate, cost_report, is_quantizer_param,
                               quantized_layers, set_quantization)
from odm_basicsr.quant import export as qexport

SMALL = dict(upscale=2, in_chans=3, img_size=16, window_size=4, img_range=1., depths=[2, 2], embed_dim=12,
             num_heads=[2, 2], mlp_ratio=2, upsampler='pixelshuffledirect', resi_connection='1conv')
BODY = ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')


def odm_swinir(**kwargs):
    return ARCH_REGISTRY.get('ODMSwinIR')(**SMALL, **kwargs)


@pytest.fixture(scope='module')
def fp_state():
    torch.manual_seed(0)
    return SwinIR(**SMALL).state_dict()


@pytest.mark.parametrize('quantize_attention', [False, True])
def test_swinir_checkpoint_loads_strict_and_the_fp_function_is_unchanged(fp_state, quantize_attention):
    torch.manual_seed(0)
    fp = SwinIR(**SMALL).eval()
    net = odm_swinir(w_bit=4, a_bit=4, quantize_attention=quantize_attention).eval()
    net.load_state_dict(fp_state, strict=True)
    own = net.state_dict()
    assert {k for k in own if not is_quantizer_param(k)} == set(fp_state)  # the FP keys, nothing renamed
    names = [n for n, _ in quantized_layers(net)]
    assert len(names) == 4 * sum(SMALL['depths'])
    assert all(n.startswith('layers.') and n.endswith(BODY) for n in names)
    assert all(isinstance(m, QuantLinear) for _, m in quantized_layers(net))
    matmuls = [m for m in net.modules() if isinstance(m, MatMul)]
    assert len(matmuls) == 2 * sum(SMALL['depths']) and all(m.quantized == quantize_attention for m in matmuls)
    assert len(activation_points(net)) == len(names) + (2 * len(matmuls) if quantize_attention else 0)
    set_quantization(net, False)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), fp(x))


def test_params_ema_checkpoint_loads_through_basicsr(fp_state, tmp_path):
    from basicsr.models import build_model
    path = tmp_path / 'swinir.pth'
    torch.save({'params_ema': fp_state}, path)
    opt = {'is_train': False, 'dist': False, 'num_gpu': 0, 'model_type': 'ODMModel', 'scale': 2,
           'network_g': dict(SMALL, type='ODMSwinIR', w_bit=4, a_bit=4),
           'path': {'pretrain_network_g': str(path), 'strict_load_g': True, 'param_key_g': 'params_ema'}, 'val': {}}
    net = build_model(opt).net_g
    for key, value in fp_state.items():
        assert torch.equal(net.state_dict()[key], value), key


def assert_padded_to_the_window_and_cropped(net, scale):
    """``net`` (calibrated here) on a 13 x 10 input equals ``net`` on its reflect-padded 16 x 12 copy, cropped to
    (13 scale) x (10 scale)."""
    calibrate(net, [torch.rand(2, 3, 16, 16)], progress=False)
    x = torch.rand(1, 3, 13, 10)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 3), 'reflect')
    with torch.no_grad():
        out = net(x)
        assert out.shape == (1, 3, 13 * scale, 10 * scale)
        assert torch.equal(out, net(padded)[..., :13 * scale, :10 * scale])


def test_any_input_size_is_padded_to_the_window_and_cropped(fp_state):
    """As BasicSR's SwinIRModel tests: reflect-pad to a multiple of window_size, crop the output back."""
    torch.manual_seed(0)
    net = odm_swinir(w_bit=4, a_bit=4).eval()
    net.load_state_dict(fp_state)
    assert_padded_to_the_window_and_cropped(net, scale=2)


def test_without_upsampler_the_output_keeps_the_input_size():
    """upsampler '' (BasicSR's denoising / JPEG SwinIR) keeps the input's size, whatever upscale says: the padded
    input is cropped back to H x W, not to H*upscale x W*upscale (which left the padding in)."""
    torch.manual_seed(0)
    options = dict(SMALL, upsampler='')
    net = ARCH_REGISTRY.get('ODMSwinIR')(**options, w_bit=4, a_bit=4).eval()
    net.load_state_dict(SwinIR(**options).state_dict())
    assert_padded_to_the_window_and_cropped(net, scale=1)


def test_attention_quantization_is_calibrated_and_costed(fp_state):
    torch.manual_seed(0)
    batches = [torch.rand(2, 3, 16, 16)]
    reports, costs = {}, {}
    for quantize_attention in (False, True):
        net = odm_swinir(w_bit=4, a_bit=4, weight_clip='wcc', quantize_attention=quantize_attention).eval()
        net.load_state_dict(fp_state)
        reports[quantize_attention] = calibrate(net, batches, progress=False, method='minmax')
        costs[quantize_attention] = cost_report(net, (3, 16, 16))
    qk = 'layers.0.residual_group.blocks.0.attn.qk_matmul'
    assert f'{qk}.left' in reports[True]['ranges'] and f'{qk}.left' not in reports[False]['ranges']
    low, high = reports[True]['ranges']['layers.0.residual_group.blocks.0.attn.av_matmul.left']
    assert low >= 0 and high <= 1  # the softmax output
    rows = {False: {r['name']: r for r in costs[False]['layers']}, True: {r['name']: r for r in costs[True]['layers']}}
    # the products are counted either way: 32x32 when FP, a_bit x a_bit when quantized
    tokens, dim = 16 * 16, SMALL['embed_dim']
    for quantized, bits in ((False, 32), (True, 4)):
        row = rows[quantized][qk]
        assert row['macs'] == tokens * 16 * dim  # every token against the 16 of its 4x4 window, over all heads
        assert row['bitops'] == row['macs'] * bits * bits
    linear = rows[True]['layers.0.residual_group.blocks.0.attn.qkv']
    assert (linear['w_bit'], linear['a_bit']) == (4, 4) and linear['macs'] == tokens * dim * 3 * dim
    assert costs[True]['total']['bitops'] < costs[False]['total']['bitops'] < costs[False]['total']['fp_bitops']


@pytest.mark.parametrize('quantize_attention', [False, True])
def test_onnx_parity_and_exact_packed_round_trip(fp_state, quantize_attention, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    net = odm_swinir(w_bit=4, a_bit=4, weight_clip='wcc', weight_granularity='channel',
                     quantize_attention=quantize_attention).eval()
    net.load_state_dict(fp_state)
    calibrate(net, [torch.rand(2, 3, 16, 16)], progress=False)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    info = qexport.export_onnx(net, x, str(tmp_path / 'swinir.onnx'))
    points = len(activation_points(net))
    assert info['quantize_linear'] == points and info['int8_weight_initializers'] == len(quantized_layers(net))
    session = ort.InferenceSession(str(tmp_path / 'swinir.onnx'), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].shape[2:] == [16, 16]  # traced for one size (the window masks)
    with torch.no_grad():
        want = net(x).numpy()
    mse = float(np.mean((session.run(None, {'lr': x.numpy()})[0] - want)**2))
    assert 10 * np.log10(1 / max(mse, 1e-20)) >= 45
    qexport.save_packed(net, str(tmp_path / 'swinir.packed.pth'))
    fresh = qexport.load_packed(str(tmp_path / 'swinir.packed.pth'),
                                odm_swinir(w_bit=4, a_bit=4, weight_clip='wcc', weight_granularity='channel',
                                           quantize_attention=quantize_attention).eval())
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))


def test_offsets_and_bad_attention_values_are_refused():
    with pytest.raises(ValueError, match='offsets must be none'):
        odm_swinir(offsets='auto')
    for key, value, expected in (('offsets', 'auto', 'must be none for ODMSwinIR'),
                                 ('quantize_attention', 'yes', 'must be true or false')):
        with pytest.raises(OptionError, match=expected):
            check_options({'model_type': 'ODMModel', 'network_g': dict(SMALL, type='ODMSwinIR', **{key: value})},
                          is_train=False)


def test_odmquant_uses_the_swinir_body_scope():
    net = ARCH_REGISTRY.get('ODMQuant')(arch=dict(SMALL, type='SwinIR'), w_bit=4, a_bit=4)
    names = [n for n, _ in quantized_layers(net)]
    assert len(names) == 4 * sum(SMALL['depths']) and all(n.endswith(BODY) for n in names)


@pytest.mark.slow
def test_train_test_cost_export_through_the_cli(tiny_data, fp_state, tmp_path):
    """The shipped v2 SwinIR file, shrunk to the small config and the tiny data: basicsr train (calibration,
    cosine cooperation with the regularizer on the Linear inputs, WCC, validation), basicsr test, cost, export."""
    import yaml

    with open(os.path.join(os.path.dirname(__file__), '..', 'options', 'v2', 'train_ODMv2_SwinIR_x4_w4a4.yml')) as f:
        shipped = yaml.safe_load(f)
    network = dict(shipped['network_g'], **SMALL, quantize_attention=True)
    train_extra = {k: shipped['train'][k] for k in ('odm_opt', 'cooperation', 'quant_lr_mul')}
    opt = base_options(tiny_data, 'swinir_v2', network, total_iter=3, **train_extra)
    opt['train']['calibration'] = dict(shipped['train']['calibration'], num_batches=2)
    torch.save({'params': fp_state}, tmp_path / 'fp.pth')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'fp.pth')
    run_cli(['train', '-opt', write_options(tmp_path / 'train.yml', opt)], tmp_path)
    exp = tmp_path / 'experiments' / 'swinir_v2'
    log = read_log(exp)
    assert 'Calibrating' in log and 'grad_cos:' in log and 'l_reg:' in log and '# psnr:' in log
    assert 'ODM variant:' in log and f'{4 * sum(SMALL["depths"])} quantized layers' in log
    ckpt = exp / 'models' / 'net_g_latest.pth'
    state = torch.load(ckpt, weights_only=True)['params']
    assert any(k.endswith('weight_quantizer.gamma') for k in state)  # WCC on the Linear layers
    assert any('qk_matmul.left.act_quantizer' in k for k in state)
    test_file = write_options(tmp_path / 'test.yml', make_test_options(opt, 'swinir_v2_test', ckpt))
    run_cli(['test', '-opt', test_file], tmp_path)
    assert '# psnr:' in read_log(tmp_path / 'results' / 'swinir_v2_test', prefix='test_')
    cost_and_export_in_process(test_file, tmp_path)
    cost = json.loads((tmp_path / 'cost.json').read_text())
    names = {r['name'] for r in cost['layers']}
    assert 'layers.0.residual_group.blocks.0.attn.qkv' in names and 'layers.0.residual_group.blocks.0.attn.qk_matmul' \
        in names
    assert (tmp_path / 'net.onnx').is_file() and (tmp_path / 'net.packed.pth').is_file()
    # basicsr infer through the fixed-size ONNX model: tiles that fit 16x16 with their context, output 2x the input
    lr_dir = opt['datasets']['val']['dataroot_lq']
    proc = run_cli(['infer', '--onnx', 'net.onnx', '--input', lr_dir, '--out', 'sr_onnx', '--tile-overlap', '4'],
                   tmp_path)
    assert 'input fixed at 16x16' in proc.stdout and 'tile 8' in proc.stdout, proc.stdout
    for name in os.listdir(lr_dir):
        lr = cv2.imread(os.path.join(lr_dir, name))
        assert cv2.imread(str(tmp_path / 'sr_onnx' / name)).shape == (2 * lr.shape[0], 2 * lr.shape[1], 3)
    # on an image of exactly the model's size (one tile, no padding) ONNX and PyTorch give the same PNG
    os.makedirs(tmp_path / 'lr16')
    cv2.imwrite(str(tmp_path / 'lr16' / 'patch.png'), lr[:16, :16])
    run_cli(['infer', '--onnx', 'net.onnx', '--input', 'lr16', '--out', 'sr16_onnx', '--tile-overlap', '0'],
            tmp_path)
    run_cli(['infer', '-opt', test_file, '--input', 'lr16', '--out', 'sr16_torch', '--tile', '0'], tmp_path)
    onnx_out = cv2.imread(str(tmp_path / 'sr16_onnx' / 'patch.png')).astype(int)
    torch_out = cv2.imread(str(tmp_path / 'sr16_torch' / 'patch.png')).astype(int)
    assert onnx_out.shape == (32, 32, 3) and np.abs(onnx_out - torch_out).max() <= 1

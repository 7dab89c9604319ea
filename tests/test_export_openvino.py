"""The integer ONNX graph through the second runtime, OpenVINO's CPU plugin (the ``openvino`` extra): parity with
the PyTorch network, the layers it runs as int8 kernels, ``basicsr export --runtime openvino`` (report and
profile), ``basicsr infer --onnx --runtime openvino``, and the error that names the extra when OpenVINO is missing.

Networks are small (random weights), built with integer zero points and calibrated on crops of the photos
scikit-image ships (``test_export.photos``).
"""
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network

from odm_basicsr.cli import main as cli_main
from odm_basicsr.quant import calibrate, quantized_layers
from odm_basicsr.quant import export_integer as qint
from odm_basicsr.quant import export_openvino as qov

from conftest import save_basicsr_checkpoint, write_options
from test_export import psnr
from test_export import photos  # noqa: F401  (a fixture)
from test_export_integer import MORE_CASES

pytest.importorskip('onnxruntime')
pytest.importorskip('openvino')

RRDB = dict(MORE_CASES['rrdb_w8a8_channel'], scope='all', integer_zero_point=True,
            arch=dict(MORE_CASES['rrdb_w8a8_channel']['arch'], num_block=2))
SRVGG = dict(MORE_CASES['srvgg_w4a4'], integer_zero_point=True)


def calibrated(config, batches):
    """The network, calibrated with min/max ranges (the fastest method; the export does not depend on it)."""
    torch.manual_seed(0)
    net = build_network(config).eval()
    calibrate(net, batches, progress=False, method='minmax')
    return net


def exported(config, batches, test, path):
    net = calibrated(config, batches)
    qint.export_onnx_integer(net, test, str(path), batches)
    return net


def test_kernel_precision_reads_the_exec_type_suffix():
    assert [qov.kernel_precision(t) for t in ('brgconv_avx512_I8', 'ref_I8', 'jit_uni_U8', 'jit_avx512_f32',
                                              'reorder_brgemm_f32', 'jit_avx2_FP32', 'brgemm_avx512_I32')] == \
        ['int8', 'int8', 'int8', 'f32', 'f32', 'f32', 'int8']


@pytest.mark.parametrize('name', ['rrdb', 'srvgg'])
def test_openvino_runs_every_quantized_conv_as_an_int8_kernel_and_matches_pytorch(name, photos, tmp_path):
    """Each quantized conv is one int8 Convolution in OpenVINO's executed graph (the FP ones run in f32), and its
    output is the PyTorch network's: at least 45 dB on real photos (the float ops between integer kernels round in
    another order than onnxruntime's, so it need not be bit-exact)."""
    batches, test = photos
    net = exported(RRDB if name == 'rrdb' else SRVGG, batches, test, tmp_path / 'net.onnx')
    session = qov.OpenVINOSession(str(tmp_path / 'net.onnx'), threads=1, profile=True)
    assert [(i.name, i.shape[:2]) for i in session.get_inputs()] == [('lr', ['dim0', 3])]
    for x in batches[:3]:
        with torch.no_grad():
            assert psnr(session.run(None, {'lr': x.numpy()})[0], net(x).numpy()) >= 45
    session.run(None, {'lr': test.numpy()})
    layers = qov.executed_layers(session)
    int8_convs = sum(1 for t, p, _, _ in layers if t == 'Convolution' and p == 'int8')
    f32_convs = sum(1 for t, p, _, _ in layers if t == 'Convolution' and p == 'f32')
    convs = sum(1 for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert int8_convs == len(quantized_layers(net)) and int8_convs + f32_convs == convs, layers
    if name == 'rrdb':  # a dense block's concats stay on u8 codes: 4 per dense block, 3 dense blocks per RRDB
        assert sum(1 for t, p, _, _ in layers if t == 'Concat' and p == 'int8') == 4 * 3 * 2, layers
    summary = qov.layer_summary(layers)
    assert summary.startswith(f'int8 kernels: {int8_convs} Convolution') or f', {int8_convs} Convolution' in summary


def test_openvino_time_shares_sum_to_one(photos, tmp_path):
    batches, test = photos
    exported(SRVGG, batches, test, tmp_path / 'net.onnx')
    shares = qov.operator_time_shares(str(tmp_path / 'net.onnx'), {'lr': test.numpy()}, runs=2, threads=1)
    assert abs(sum(share for _, share, _, _ in shares) - 1) < 1e-9
    assert ('Convolution int8' in [op for op, _, _, _ in shares]) and all(ms >= 0 for _, _, ms, _ in shares)
    lines = qov.time_share_lines(shares)
    floats = [op[:-4] for op, _, _, _ in shares if op.endswith(' f32')]
    assert lines[-1].startswith('in f32 (no int8 kernel in OpenVINO): ') and all(op in lines[-1] for op in floats)


def srvgg_test_file(batches, folder, name):
    """A calibrated SRVGG (integer zero points) and the test option file ``basicsr export`` reads for it."""
    net = calibrated(SRVGG, batches)
    ckpt = save_basicsr_checkpoint(net, folder / 'net_g.pth')
    opt = {'name': name, 'model_type': 'ODMModel', 'scale': 4, 'num_gpu': 0, 'network_g': dict(SRVGG),
           'path': {'pretrain_network_g': ckpt, 'strict_load_g': True, 'param_key_g': 'params'}}
    return net, write_options(folder / 'test.yml', opt)


def test_export_and_infer_through_openvino(photos, tmp_path, monkeypatch, capsys):
    batches, test = photos
    net, opt_path = srvgg_test_file(batches, tmp_path, 'ov_test')
    monkeypatch.chdir(tmp_path)
    cli_main(['export', '-opt', opt_path, '--runtime', 'openvino', '--profile', '--size', '24x32'])
    stdout = capsys.readouterr().out
    summary = next(line for line in stdout.splitlines() if line.startswith('openvino runs: int8 kernels: '))
    assert '4 Convolution' in summary.split(';')[0] and '2 Convolution' in summary.split(';')[1], summary
    assert 'openvino vs PyTorch on the 8 calibration images: PSNR mean' in stdout, stdout
    profile = stdout.split('openvino profile, 24x32 input, 5 runs')[1].splitlines()[1:]
    assert any(line.split()[:2] == ['Convolution', 'int8'] for line in profile), profile
    assert profile[-1].startswith('in f32 (no int8 kernel in OpenVINO): '), profile
    assert 'integer kernels (QLinearConv' not in stdout  # onnxruntime's own report is not printed
    lr = tmp_path / 'lr'
    lr.mkdir()
    cv2.imwrite(str(lr / 'a.png'), (test[0].numpy().transpose(1, 2, 0)[:, :, ::-1] * 255).astype(np.uint8))
    outputs = {}
    for runtime in ('openvino', 'onnxruntime'):
        cli_main(['infer', '--onnx', 'ov_test.onnx', '--runtime', runtime, '--input', str(lr), '--out', runtime,
                  '--tile', '16'])
        assert f'ov_test.onnx on {runtime} (CPU)' in capsys.readouterr().out
        outputs[runtime] = cv2.imread(str(tmp_path / runtime / 'a.png')).astype(np.float64)
    assert outputs['openvino'].shape == (4 * test.shape[2], 4 * test.shape[3], 3)
    assert np.abs(outputs['openvino'] - outputs['onnxruntime']).max() <= 1  # 8-bit PNGs of the same integer graph


def test_a_missing_openvino_is_named_with_its_extra_before_anything_is_written(photos, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import openvino -> ImportError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as err:
        cli_main(['export', '-opt', 'missing.yml', '--runtime', 'openvino'])
    assert 'pip install "odm-basicsr[openvino]"' in str(err.value) and list(tmp_path.iterdir()) == []
    (tmp_path / 'lr.png').write_bytes(cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    (tmp_path / 'net.onnx').write_bytes(b'not read')
    with pytest.raises(SystemExit) as err:
        cli_main(['infer', '--onnx', 'net.onnx', '--runtime', 'openvino', '--input', 'lr.png', '--out', 'out'])
    assert 'pip install "odm-basicsr[openvino]"' in str(err.value) and not (tmp_path / 'out').exists()
    with pytest.raises(SystemExit) as err:
        cli_main(['export', '-opt', 'missing.yml', '--format', 'packed', '--runtime', 'openvino'])
    assert err.value.code == 2 and 'needs --format onnx' in capsys.readouterr().err


def test_the_exact_mode_file_runs_through_openvino_too(photos, tmp_path, monkeypatch, capsys):
    """``--mode exact`` (QDQ on every quantized input, float convs in onnxruntime) through OpenVINO: it still runs
    every quantized conv as an int8 kernel, the report says so, and its output is the PyTorch network's (>= 45 dB,
    the bar of the integer file in OpenVINO) on the random input."""
    batches, _ = photos
    net, opt_path = srvgg_test_file(batches, tmp_path, 'ov_exact')
    monkeypatch.chdir(tmp_path)
    cli_main(['export', '-opt', opt_path, '--mode', 'exact', '--runtime', 'openvino', '--size', '24x32'])
    stdout = capsys.readouterr().out
    assert 'onnx model (exact): ov_exact.onnx' in stdout and 'openvino runs: ' in stdout, stdout
    parity = float(stdout.split('openvino vs PyTorch on a random 24x32 input: ')[1].split('PSNR ')[1].split(' dB')[0])
    assert parity >= 45, stdout
    int8_part = stdout.split('openvino runs: int8 kernels: ')[1].split(';')[0]
    assert f'{len(quantized_layers(net))} Convolution' in int8_part, stdout  # it folds the QDQ convs to int8 too
    assert 'calibration images' not in stdout  # the real-image check is the integer mode's

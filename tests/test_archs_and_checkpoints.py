"""ODM archs, checkpoint loading through BasicSR's model, the EDSR-PyTorch importer, and fidelity at 8/2 bits."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import, also in spawned workers)
import re

import numpy as np
import pytest
import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY

from conftest import save_basicsr_checkpoint
from odm_basicsr.archs.rdn_arch import RDN
from odm_basicsr.data.photos import bicubic_downscale, load_photo, mod_crop
from odm_basicsr.quant import (CheckpointMismatchError, calibrate, convert_edsr_pytorch_edsr,
                               convert_edsr_pytorch_rdn, is_quantizer_param, quantized_layers)
from odm_basicsr.tools.convert_checkpoint import main as convert_main

EDSR_SMALL = dict(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=3, upscale=2)


def model_opt(network, pretrain, strict=True, is_train=False, param_key='params'):
    return {'name': 'ckpt', 'model_type': 'SRModel', 'is_train': is_train, 'dist': False, 'rank': 0,
            'world_size': 1, 'num_gpu': 0, 'scale': network.get('upscale', 2), 'network_g': dict(network),
            'path': {'pretrain_network_g': str(pretrain), 'strict_load_g': strict, 'param_key_g': param_key},
            'val': {}}


def test_default_scopes_are_the_papers():
    edsr = ARCH_REGISTRY.get('ODMEDSR')(3, 3, 64, 16, 4)
    assert len(edsr.quantized_names) == 32 and all(re.match(r'body\.\d+\.conv[12]$', n) for n in edsr.quantized_names)
    assert sum(p.numel() for n, p in edsr.named_parameters() if 'quantizer' not in n) == 1517571
    rdn = ARCH_REGISTRY.get('ODMRDN')(num_block=16, num_layer=8)
    assert len(rdn.quantized_names) == 128
    srres = ARCH_REGISTRY.get('ODMMSRResNet')(num_block=16)
    assert len(srres.quantized_names) == 32
    wide = ARCH_REGISTRY.get('ODMEDSR')(3, 3, 16, 2, 4, scope='all', outer_bit=8)
    bits = {n: m.weight_quantizer.bits for n, m in quantized_layers(wide)}
    assert bits['body.0.conv1'] == 4 and bits['conv_first'] == 8 and bits['conv_last'] == 8


@pytest.mark.parametrize('fp_cls, odm_type, kwargs', [
    (EDSR, 'ODMEDSR', EDSR_SMALL),
    (MSRResNet, 'ODMMSRResNet', dict(num_feat=16, num_block=2, upscale=4)),
    (RDN, 'ODMRDN', dict(num_feat=8, num_block=2, num_layer=2, growth=8, upscale=3)),
])
@pytest.mark.parametrize('key', ['params', 'params_ema'])
def test_fp_checkpoint_loads_through_basicsr_with_only_quantizer_keys_missing(tmp_path, fp_cls, odm_type, kwargs,
                                                                              key, caplog):
    fp = fp_cls(**kwargs)
    path = save_basicsr_checkpoint(fp, tmp_path / 'fp.pth', key)
    model = build_model(model_opt(dict(kwargs, type=odm_type, w_bit=8, a_bit=8), path, param_key=key))
    net = model.net_g
    for name, tensor in fp.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor), name
    assert net.quantizer_state_loaded is False
    # quantizer state that was never calibrated does not count as loaded (ODMModel calibrates it) ...
    path_raw = save_basicsr_checkpoint(net, tmp_path / 'uncalibrated.pth')
    assert build_model(model_opt(dict(kwargs, type=odm_type, w_bit=8, a_bit=8), path_raw)).net_g.quantizer_state_loaded \
        is False
    # ... a calibrated ODM checkpoint loads back completely
    calibrate(net, [torch.rand(1, 3, 8, 8)], progress=False)
    path2 = save_basicsr_checkpoint(net, tmp_path / 'odm.pth')
    model2 = build_model(model_opt(dict(kwargs, type=odm_type, w_bit=8, a_bit=8), path2))
    assert model2.net_g.quantizer_state_loaded is True


@pytest.mark.parametrize('strict', [True, False])
@pytest.mark.parametrize('change, cause', [({'num_block': 2}, 'num_block'), ({'num_feat': 8}, 'num_feat'),
                                           ({'num_in_ch': 1}, 'num_in_ch')])
def test_wrong_checkpoint_is_a_clear_error_even_non_strict(tmp_path, strict, change, cause):
    """Unexpected keys (a deeper checkpoint) and shape mismatches are refused whatever strict_load_g says."""
    path = save_basicsr_checkpoint(EDSR(**EDSR_SMALL), tmp_path / 'fp.pth')
    network = dict(EDSR_SMALL, type='ODMEDSR', **change)
    with pytest.raises(CheckpointMismatchError, match=cause):
        build_model(model_opt(network, path, strict=strict))


@pytest.mark.parametrize('change, cause', [({'num_block': 4}, 'num_block'), ({'upscale': 4}, 'upscale')])
def test_missing_keys_are_refused_strict_and_a_warm_start_non_strict(tmp_path, change, cause):
    """strict_load_g false allows missing keys only: a x2 checkpoint warm-starts a x4 network (the second
    upsampler stage keeps its initialisation), a shallower one a deeper network; strict refuses both."""
    fp = EDSR(**EDSR_SMALL)
    path = save_basicsr_checkpoint(fp, tmp_path / 'fp.pth')
    network = dict(EDSR_SMALL, type='ODMEDSR', **change)
    with pytest.raises(CheckpointMismatchError, match=cause):
        build_model(model_opt(network, path, strict=True))
    torch.manual_seed(0)
    net = build_model(model_opt(network, path, strict=False)).net_g
    loaded = net.state_dict()
    for name, tensor in fp.state_dict().items():
        assert torch.equal(loaded[name], tensor), name
    extra = [k for k in loaded if k not in fp.state_dict() and not is_quantizer_param(k)]
    assert extra and all(('upsample.2' in k) if 'upscale' in change else k.startswith('body.3.') for k in extra)


def test_other_architecture_checkpoint_is_refused(tmp_path):
    path = save_basicsr_checkpoint(MSRResNet(num_feat=16, num_block=3, upscale=2), tmp_path / 'srres.pth')
    with pytest.raises(CheckpointMismatchError, match='missing keys|unexpected keys'):
        build_model(model_opt(dict(EDSR_SMALL, type='ODMEDSR'), path))


def _to_edsr_pytorch(sd, num_block):
    """The inverse mapping (BasicSR -> EDSR-PyTorch), written independently of the importer."""
    out = {}
    for k, v in sd.items():
        name, leaf = k.rsplit('.', 1)
        if name == 'conv_first':
            out[f'head.0.{leaf}'] = v
        elif name.startswith('body.'):
            i, conv = name.split('.')[1:]
            out[f'body.{i}.body.{0 if conv == "conv1" else 2}.{leaf}'] = v
        elif name == 'conv_after_body':
            out[f'body.{num_block}.{leaf}'] = v
        elif name.startswith('upsample.'):
            out[f'tail.0.{name.split(".")[1]}.{leaf}'] = v
        elif name == 'conv_last':
            out[f'tail.1.{leaf}'] = v
    mean = torch.tensor((0.4488, 0.4371, 0.4040)) * 255
    out['sub_mean.weight'] = torch.eye(3).view(3, 3, 1, 1)
    out['sub_mean.bias'] = -mean
    out['add_mean.weight'] = torch.eye(3).view(3, 3, 1, 1)
    out['add_mean.bias'] = mean
    return out


def test_edsr_pytorch_checkpoint_converts_and_loads(tmp_path):
    fp = EDSR(3, 3, 16, 3, 4)
    legacy = _to_edsr_pytorch(fp.state_dict(), 3)
    torch.save(legacy, tmp_path / 'edsr_baseline_x4.pt')
    # unconverted: a clear error that says to convert
    with pytest.raises(CheckpointMismatchError, match='convert-checkpoint'):
        torch.save({'params': legacy}, tmp_path / 'raw.pth')
        build_model(model_opt(dict(EDSR_SMALL, type='ODMEDSR', upscale=4), tmp_path / 'raw.pth'))
    convert_main(['--arch', 'EDSR', str(tmp_path / 'edsr_baseline_x4.pt'), str(tmp_path / 'converted.pth')])
    model = build_model(model_opt(dict(EDSR_SMALL, type='ODMEDSR', upscale=4), tmp_path / 'converted.pth'))
    for name, tensor in fp.state_dict().items():
        assert torch.equal(model.net_g.state_dict()[name], tensor)
    assert convert_edsr_pytorch_edsr(legacy).keys() == fp.state_dict().keys()


def test_rdn_edsr_pytorch_layout_converts():
    for scale in (2, 4):
        net = RDN(num_feat=8, num_block=2, num_layer=2, growth=8, upscale=scale)
        legacy = {}
        for k, v in net.state_dict().items():
            name, leaf = k.rsplit('.', 1)
            m = re.match(r'rdbs\.(\d+)\.convs\.(\d+)$', name)
            if name in ('sfe1', 'sfe2'):
                legacy[f'SFENet{name[-1]}.{leaf}'] = v
            elif m:
                legacy[f'RDBs.{m.group(1)}.convs.{m.group(2)}.conv.0.{leaf}'] = v
            elif name.endswith('.lff'):
                legacy[f'RDBs.{name.split(".")[1]}.LFF.{leaf}'] = v
            elif name.startswith('gff.'):
                legacy[f'GFF.{name[-1]}.{leaf}'] = v
            elif name == 'upsample.0':
                legacy[f'UPNet.0.{leaf}'] = v
            elif name == 'upsample.2':
                legacy[f'UPNet.2.{leaf}'] = v
            elif name == 'conv_last':
                legacy[f'UPNet.{4 if scale == 4 else 2}.{leaf}'] = v
        converted = convert_edsr_pytorch_rdn(legacy)
        assert set(converted) == set(net.state_dict())
        assert all(torch.equal(converted[k], v) for k, v in net.state_dict().items())


def _psnr(a, b):
    mse = torch.mean((a.clamp(0, 1) - b.clamp(0, 1))**2).item()
    return 10 * np.log10(1.0 / mse)


def test_8bit_close_to_fp_and_2bit_measurably_different():
    torch.manual_seed(0)
    fp = EDSR(3, 3, 16, 4, 2)
    hr = mod_crop(load_photo('astronaut')[100:228, 100:228], 2)
    lr = torch.from_numpy(bicubic_downscale(hr, 2)).permute(2, 0, 1)[None].float() / 255
    calib = [torch.from_numpy(bicubic_downscale(mod_crop(load_photo(n)[:96, :96], 2), 2)).permute(2, 0, 1)[None].float()
             / 255 for n in ('coffee', 'rocket')]
    with torch.no_grad():
        ref = fp(lr)
    results = {}
    for bits in (8, 2):
        q = ARCH_REGISTRY.get('ODMEDSR')(3, 3, 16, 4, 2, w_bit=bits, a_bit=bits)
        q.load_state_dict(fp.state_dict())
        calibrate(q, calib, progress=False)
        with torch.no_grad():
            results[bits] = _psnr(q(lr), ref)
    assert results[8] > 40, results
    assert results[2] < results[8] - 3, results  # an untrained net: the residual path is small

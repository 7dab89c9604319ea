"""Calibration linear in depth (the block judge of ``auto``) and refinement of the quantizers from the FP output."""
import odm_basicsr  # noqa: F401
import pytest
import torch
import torch.nn as nn
from basicsr.utils.registry import ARCH_REGISTRY

from odm_basicsr.data.photos import load_photo
from odm_basicsr.options_check import OptionError, check_options
from odm_basicsr.quant import calibrate, quantized_layers, set_quantization
from odm_basicsr.quant.calibrate import MAX_UNIT_LAYERS, _per_batch_errors, judging_units
from odm_basicsr.quant.distance import FeatureTap, feature_distance, output_distance
from odm_basicsr.quant.refine import RefineConfig, block_outputs, refine

from conftest import base_options, save_basicsr_checkpoint, write_options

TINY_EDSR = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)


def edsr(blocks=2, bits=2, **quant):
    torch.manual_seed(0)
    return ARCH_REGISTRY.get('ODMQuant')(arch=dict(TINY_EDSR, num_block=blocks), w_bit=bits, a_bit=bits, **quant)


@pytest.fixture(scope='module')
def crops():
    """Six 16x16 crops of a real photo (N, 3, 16, 16) in [0, 1], as three batches of two."""
    img = torch.from_numpy(load_photo('astronaut')[:128, :128].copy()).permute(2, 0, 1).float()[None] / 255
    tiles = [img[..., i:i + 16, j:j + 16] for i in (0, 32, 64) for j in (0, 48)]
    return [torch.cat(tiles[k:k + 2]) for k in range(0, 6, 2)]


def test_judging_units_are_the_blocks_or_the_layer_itself():
    net = edsr(blocks=3, scope='all')
    units = judging_units(net, [n for n, _ in quantized_layers(net)])
    assert units['body.1'] == ['body.1.conv1', 'body.1.conv2']  # a residual block: its two convs
    assert units['conv_first'] == ['conv_first']  # a layer of the network itself
    assert units['upsample'] == ['upsample.0']  # the upsampler: this conv and a PixelShuffle

    class Wide(nn.Module):  # a parent with more quantized layers than a unit may hold: each is judged alone
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(*[nn.Conv2d(2, 2, 1) for _ in range(MAX_UNIT_LAYERS + 1)])
            self.listed = nn.ModuleList([nn.Conv2d(2, 2, 1)])  # a ModuleList cannot be run: the layer itself

    names = [f'block.{i}' for i in range(MAX_UNIT_LAYERS + 1)] + ['listed.0']
    assert list(judging_units(Wide(), names)) == names


def test_per_batch_errors_split_the_stacked_batches():
    out, ref = torch.zeros(5, 2), torch.zeros(5, 2)
    out[3:] = 1.0  # the second batch (rows 3-4) is off by one everywhere
    assert _per_batch_errors([out], [ref], [3, 2]).tolist() == [0.0, 1.0]
    windows = torch.zeros(10, 2)  # dim 0 a multiple of the crops (attention windows): split the same way
    windows[6:] = 2.0
    assert _per_batch_errors([windows], [torch.zeros(10, 2)], [3, 2]).tolist() == [0.0, 4.0]


def _count_network_passes(net, batches, judge):
    calls = []
    hook = net.register_forward_hook(lambda *a: calls.append(1))
    report = calibrate(net, batches, progress=False, per_layer_judge=judge)
    hook.remove()
    return len(calls), report


@pytest.mark.parametrize('bits', [2, 8])
def test_the_block_judge_runs_the_network_a_fixed_number_of_times_whatever_the_depth(crops, bits):
    """Locality: with the block judge, calibration runs the whole network the same number of times at 2 and at 6
    blocks (each layer's trials run its block only); the network judge runs it once more per layer and candidate."""
    counts = {}
    for blocks in (2, 6):
        for judge in ('block', 'network'):
            counts[blocks, judge], report = _count_network_passes(edsr(blocks, bits), crops, judge)
            assert report['per_layer_judge'] == judge
    assert counts[2, 'block'] == counts[6, 'block']
    assert counts[6, 'network'] > counts[2, 'network'] > counts[2, 'block']


def test_auto_judge_is_the_network_judge_on_small_networks_only(crops):
    assert calibrate(edsr(2), crops, progress=False)['per_layer_judge'] == 'network'  # 4 layers
    assert calibrate(edsr(26), crops[:1], progress=False)['per_layer_judge'] == 'block'  # 52 layers: > 100 passes


def test_the_block_judge_never_ends_above_the_uniform_method_on_the_calibration_batches(crops):
    report = calibrate(edsr(4), crops, progress=False, per_layer_judge='block')
    assert report['refined_error'] <= report['candidates'][report['chosen']] + 1e-12


def test_the_block_judges_choices_are_the_ranges_set(crops):
    net = edsr(2, bits=2)
    report = calibrate(net, crops, progress=False, per_layer_judge='block')
    assert set(report['per_layer'].values()) <= {'mse', 'percentile', 'minmax'}
    assert report['ranges'] == {n: report['candidate_ranges'][m][n] for n, m in report['per_layer'].items()}


def test_distances():
    a, b = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    assert float(output_distance(a, b, 'l1')) == 1.5 and float(output_distance(a, b, 'mse')) == 2.5
    assert float(feature_distance([a], [b])) == pytest.approx(5.0)  # |a - b|^2 / |b|^2 = 5 / 1
    assert float(feature_distance([2 * b], [b])) == pytest.approx(1.0)  # scale-free: 1 whatever |b|


def test_feature_tap_keeps_the_named_outputs():
    net = edsr(2)
    set_quantization(net, False)
    with FeatureTap(net, ['body.0', 'body.1']) as tap:
        net(torch.rand(1, 3, 8, 8))
    assert [f.shape[1] for f in tap.features] == [8, 8]
    with FeatureTap(net, ['body.0']) as tap:
        pass
    net(torch.rand(1, 3, 8, 8))
    assert tap.features == []  # the hooks are gone after the block


@pytest.mark.parametrize('feature_weight', [0.0, 1.0])
def test_refine_brings_the_quantized_output_closer_to_the_fp_output(crops, feature_weight):
    net = edsr(2, bits=2)
    calibrate(net, crops, progress=False)
    weights = {n: p.detach().clone() for n, p in net.named_parameters() if 'quantizer' not in n}
    before = {n: p.detach().clone() for n, p in net.named_parameters() if 'act_quantizer' in n}
    report = refine(net, crops, RefineConfig(iters=20, batch=2, feature_weight=feature_weight),
                    progress=False)
    assert report['iters'] == 20 and report['mse_after'] < 0.95 * report['mse_before']
    with torch.no_grad():  # the reported error is the real one
        x = torch.cat(crops)
        set_quantization(net, False)
        fp = net(x)
        set_quantization(net, True)
        assert float(((net(x) - fp)**2).mean()) == pytest.approx(report['mse_after'], rel=1e-5)
    for name, param in net.named_parameters():  # only the quantizers learn
        if name in weights:
            assert torch.equal(param, weights[name]), name
    assert any(not torch.equal(p, before[n]) for n, p in net.named_parameters() if n in before)
    assert all(p.requires_grad for p in net.parameters())  # the frozen weights are trainable again


def test_refine_is_deterministic_for_a_seed(crops):
    states = []
    for seed in (3, 3, 4):
        net = edsr(2, bits=2)
        calibrate(net, crops, progress=False)
        refine(net, crops, RefineConfig(iters=5, lr=1e-2, batch=2), seed=seed, progress=False)
        states.append(net.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])  # another seed, other crops


def test_block_outputs_are_the_blocks():
    assert block_outputs(edsr(2)) == ['body.0', 'body.1']


def _options(tiny_data, refine_value, pretrain=True, **cal):
    network = {'type': 'ODMQuant', 'arch': dict(TINY_EDSR), 'w_bit': 4, 'a_bit': 4}
    opt = base_options(tiny_data, 'refine_check', network, total_iter=2)
    opt['train']['calibration'] = dict(cal, refine=refine_value)
    opt['path']['pretrain_network_g'] = 'fp.pth' if pretrain else None
    return opt


@pytest.mark.parametrize('value, message', [
    ({'iters': 0}, r'train.calibration.refine.iters: must be an integer >= 1, got 0'),
    ({'itres': 5}, r"train.calibration.refine.itres: unknown key \(did you mean 'iters'\?\)"),
    ({'lr': -1}, r'train.calibration.refine.lr: must be a number > 0'),
    ({'loss': 'l2'}, r"train.calibration.refine.loss: 'l2' is not one of l1, mse"),
    ('yes', r'train.calibration.refine: must be true, false or a mapping'),
])
def test_refine_options_are_checked_with_their_key(tiny_data, value, message):
    with pytest.raises(OptionError, match=message):
        check_options(_options(tiny_data, value), is_train=True)


def test_refine_without_the_fp_checkpoint_names_the_key(tiny_data):
    with pytest.raises(OptionError, match=r'train.calibration.refine needs path.pretrain_network_g'):
        check_options(_options(tiny_data, True, pretrain=False), is_train=True)


def test_per_layer_judge_is_checked(tiny_data):
    with pytest.raises(OptionError, match=r"train.calibration.per_layer: 'blok' is not one of auto, block, network "
                                          r"\(did you mean 'block'\?\)"):
        check_options(_options(tiny_data, False, per_layer='blok'), is_train=True)


def test_ctrl_c_during_refinement_writes_nothing(tiny_data, tmp_path, monkeypatch):
    from basicsr.archs.edsr_arch import EDSR

    from odm_basicsr.tools import calibrate_cli
    fp_arch = dict(TINY_EDSR)
    fp_arch.pop('type')
    opt = _options(tiny_data, {'iters': 3}, num_batches=1)
    opt['path']['pretrain_network_g'] = save_basicsr_checkpoint(EDSR(**fp_arch), tmp_path / 'fp.pth')
    path = write_options(tmp_path / 'ptq.yml', opt)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(calibrate_cli, 'refine', interrupted)
    out = tmp_path / 'calibrated.pth'
    with pytest.raises(SystemExit, match='interrupted: nothing was written'):
        calibrate_cli.main(['-opt', path, '--out', str(out)])
    assert not out.exists() and not (tmp_path / 'calibrated.pth.tmp').exists()

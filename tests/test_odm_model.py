"""ODMModel in-process: the regularizer never trains quantizer parameters; DDP gradient averaging."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import, also in spawned workers)
import copy
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY

from conftest import base_options, save_basicsr_checkpoint
from odm_basicsr.options_check import OptionError, check_options
from odm_basicsr.quant import calibrate, is_quantizer_param, quantized_layers

NET = dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2, w_bit=4, a_bit=4)


def model_options(data_root, network, pretrain=None, dist_rank=None, **train_extra):
    opt = base_options(data_root, 'inproc', network, **train_extra)
    opt.update(is_train=True, dist=dist_rank is not None, rank=dist_rank or 0, world_size=2 if dist_rank is not None else 1)
    for ds in opt['datasets'].values():
        ds['scale'] = 2
        ds['phase'] = 'train'
    opt['path']['pretrain_network_g'] = pretrain
    return opt


def batches(seed, n, size=8):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, 2 * size, 2 * size, generator=g))
            for _ in range(3)]


def test_regularizer_never_trains_quantizer_parameters(tiny_data):
    """With the pixel loss switched off, a step driven by the regularizer alone (cooperation none) moves the
    network weights but leaves every quantizer parameter (ranges, offsets) exactly where calibration put it."""
    opt = model_options(tiny_data, dict(NET, offsets='shift'),
                        odm_opt=dict(type='ODMLoss', regularizer='variance', loss_weight=1.0), cooperation='none',
                        calibration=dict(num_batches=2, offset_top_k=1.0))
    opt['train']['pixel_opt']['loss_weight'] = 0.0
    model = build_model(opt)
    before = {k: v.detach().clone() for k, v in model.net_g.named_parameters()}
    for lq, gt in batches(0, 2):
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(1)
    after = dict(model.net_g.named_parameters())
    quant = [k for k in before if is_quantizer_param(k)]
    assert any('offset.shift' in k for k in quant) and any('act_quantizer.lower' in k for k in quant)
    for k in quant:
        assert torch.equal(before[k], after[k]), k
    moved = [k for k in before if not is_quantizer_param(k) and not torch.equal(before[k], after[k])]
    assert any('body.0.conv1.weight' == k for k in moved)
    assert model.log_dict['l_reg'] > 0


def _ddp_worker(rank, opt_template, pretrain, out_dir, port):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    torch.set_num_threads(1)
    opt = copy.deepcopy(opt_template)
    opt.update(dist=True, rank=rank, world_size=2)
    opt['path']['pretrain_network_g'] = pretrain
    model = build_model(opt)
    for lq, gt in batches(1, 4):
        model.feed_data({'lq': lq[2 * rank:2 * rank + 2], 'gt': gt[2 * rank:2 * rank + 2]})
        model.optimize_parameters(1)
    torch.save(model.get_bare_model(model.net_g).state_dict(), os.path.join(out_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['qat', 'v2', 'offsets'])
def test_ddp_ranks_identical_and_plain_qat_equals_single_process_on_the_union(tiny_data, tmp_path, variant):
    """'offsets': v1 offsets without a regularizer, the 'offsets only' ablation. Layers whose offset calibration
    left off get no gradient, which DDP used to refuse at the second step."""
    torch.manual_seed(0)
    offsets = 'shift' if variant == 'offsets' else 'none'
    net = ARCH_REGISTRY.get('ODMEDSR')(**{k: v for k, v in NET.items() if k != 'type'},
                                       weight_clip='wcc' if variant == 'v2' else 'max', offsets=offsets)
    # the checkpoint carries quantizer state (and, for 'offsets', half of the layers with an offset)
    calibrate(net, [torch.rand(2, 3, 8, 8)], offset_mode=offsets, offset_top_k=0.5 if offsets != 'none' else None,
              progress=False)
    pretrain = save_basicsr_checkpoint(net, tmp_path / 'calibrated.pth')
    extra = dict(odm_opt=dict(type='ODMLoss', regularizer='mismatch', loss_weight=1e-3),
                 cooperation='cosine') if variant == 'v2' else {}
    opt = model_options(tiny_data, dict(NET, weight_clip=net.quant_config.weight_clip, offsets=offsets),
                        str(pretrain), **extra)
    port = {'qat': 29655, 'v2': 29656, 'offsets': 29657}[variant]
    mp.spawn(_ddp_worker, args=(opt, str(pretrain), str(tmp_path), port), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    if variant != 'qat':
        return  # regularizers are per-rank batch statistics: not expected to equal one big batch
    single = build_model(opt)
    for lq, gt in batches(1, 4):
        single.feed_data({'lq': lq, 'gt': gt})
        single.optimize_parameters(1)
    ref = single.net_g.state_dict()
    moved = False
    for key in rank0:
        assert torch.allclose(rank0[key], ref[key], atol=1e-6, rtol=1e-5), key
        moved |= not torch.equal(ref[key], net.state_dict()[key])
    assert moved


class _Unsafe:
    pass


def test_non_finite_step_is_skipped_then_training_stops(tiny_data):
    opt = model_options(tiny_data, NET, odm_opt=dict(type='ODMLoss', regularizer='mismatch', loss_weight=1e-3),
                        cooperation='cosine', calibration=dict(num_batches=1), max_skipped_steps=2)
    model = build_model(opt)
    (lq, gt), = batches(2, 2)[:1]
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)  # one good step: the optimizer has state
    weights = {k: v.detach().clone() for k, v in model.net_g.named_parameters()}
    adam = copy.deepcopy(model.optimizer_g.state_dict()['state'])
    model.cri_pix = lambda out, target: (out - target).abs().mean() * float('nan')
    model.optimize_parameters(2)
    for k, v in model.net_g.named_parameters():
        assert torch.equal(weights[k], v), k
    for idx, state in model.optimizer_g.state_dict()['state'].items():
        assert torch.equal(state['exp_avg'], adam[idx]['exp_avg'])
    with pytest.raises(FloatingPointError, match='2 consecutive non-finite steps'):
        model.optimize_parameters(3)


def test_checkpoint_needing_unsafe_unpickling_is_refused(tiny_data, tmp_path):
    torch.save({'params': {'x': _Unsafe()}}, tmp_path / 'unsafe.pth')
    opt = model_options(tiny_data, NET, str(tmp_path / 'unsafe.pth'))
    with pytest.raises(ValueError, match='unsafe unpickling'):
        build_model(opt)


@pytest.mark.parametrize('cooperation', ['none', 'sign', 'cosine'])
def test_reg_grad_ratio_is_taken_before_cooperation_on_one_process(tiny_data, cooperation):
    """reg_grad_ratio = lambda |g_reg| / |g_R| over the network weights, from the gradients before they are combined
    (on one process the reconstruction gradients are the very p.grad tensors the combined gradient overwrites)."""
    weight = 1e-2
    opt = model_options(tiny_data, NET, odm_opt=dict(type='ODMLoss', regularizer='mismatch', loss_weight=weight),
                        cooperation=cooperation, calibration=dict(num_batches=2))
    model = build_model(opt)
    lq, gt = batches(3, 2)[0]
    net = model.net_g
    weights = [p for n, p in net.named_parameters() if not is_quantizer_param(n)]
    for layer in model.quant_layers:
        layer.collect_input = True
    output = net(lq)
    g_rec = torch.autograd.grad(model.cri_pix(output, gt), weights, retain_graph=True)
    g_reg = torch.autograd.grad(model.cri_odm(model.quant_layers), weights, allow_unused=True)
    for layer in model.quant_layers:
        layer.collect_input, layer.quant_input = False, None
    expected = (torch.stack([g.norm() for g in g_reg if g is not None]).norm() /
                torch.stack([g.norm() for g in g_rec]).norm()).item()
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    assert model.log_dict['reg_grad_ratio'] == pytest.approx(expected, rel=1e-4)


def test_data_parallel_is_refused_with_the_ddp_command(tiny_data, monkeypatch):
    from basicsr.models.base_model import BaseModel

    from odm_basicsr.options_check import check_options
    opt = model_options(tiny_data, NET)
    opt['num_gpu'] = 2  # BasicSR wraps in DataParallel when num_gpu > 1 and no launcher is used
    with pytest.raises(OptionError, match='num_gpu: 2 without a launcher.*torchrun'):
        check_options(opt, is_train=True)
    opt['launcher'] = 'pytorch'
    check_options(opt, is_train=True)
    # and the model itself, should a wrapper slip through (BasicSR's DataParallel needs CUDA: wrap by hand)
    monkeypatch.setattr(BaseModel, 'model_to_device', lambda self, net: torch.nn.DataParallel(net))
    with pytest.raises(ValueError, match='DataParallel.*torchrun'):
        build_model(model_options(tiny_data, NET))


def test_network_checkpoint_write_is_atomic(tiny_data, tmp_path, monkeypatch):
    """An interrupted torch.save leaves the previous net_g_<iter>.pth intact (and no partial file under its name)."""
    opt = model_options(tiny_data, NET, calibration=dict(num_batches=1))
    opt['path']['models'] = str(tmp_path)
    model = build_model(opt)
    model.save_network(model.net_g, 'net_g', 5)
    good = (tmp_path / 'net_g_5.pth').read_bytes()
    saved = torch.load(tmp_path / 'net_g_5.pth', weights_only=True)
    assert set(saved) == {'params', 'quantization'}  # BasicSR reads 'params'; the record is beside it
    assert saved['quantization'] == {'body.0.conv1': 'w4 a4 max layer', 'body.0.conv2': 'w4 a4 max layer',
                                     'body.1.conv1': 'w4 a4 max layer', 'body.1.conv2': 'w4 a4 max layer'}

    def interrupted(obj, path):
        with open(path, 'wb') as f:
            f.write(b'PK\x03\x04 half')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save_network(model.net_g, 'net_g', 5)
    assert (tmp_path / 'net_g_5.pth').read_bytes() == good


@pytest.mark.parametrize('change, message', [
    (dict(w_bit=2, a_bit=2), "4 layer\\(s\\) \\(e.g. body.0.conv1\\): checkpoint 'w4 a4 max layer', network_g 'w2 a2 max layer'"),
    (dict(weight_clip='percentile'), "4 layer.*: checkpoint 'w4 a4 max layer', network_g 'w4 a4 percentile layer'"),
])
def test_a_checkpoint_of_another_quantization_is_refused_by_name(tiny_data, tmp_path, change, message, monkeypatch):
    """The keys and shapes of a w4a4 checkpoint fit a w2a2 (or percentile-clipped) network: the record that ODMModel
    writes beside 'params' makes it an option error (test, training, export), not silently wrong PSNR."""
    opt = model_options(tiny_data, NET, calibration=dict(num_batches=1))
    opt['path']['models'] = str(tmp_path)
    model = build_model(opt)
    model.save_network(model.net_g, 'net_g', 5)
    checkpoint = str(tmp_path / 'net_g_5.pth')
    same = model_options(tiny_data, NET, checkpoint)
    check_options(same, is_train=False)
    other = model_options(tiny_data, dict(NET, **change), checkpoint)
    with pytest.raises(OptionError, match=f"path.pretrain_network_g: .* was trained or calibrated with another "
                                          f"quantization than network_g:\n    {message}"):
        check_options(other, is_train=False)
    # fine-tuning from it (ODMModel) is allowed: a warning, and the ranges are calibrated again for network_g
    warnings = check_options(other, is_train=True)
    assert any('was trained or calibrated with another quantization' in w and 'calibrated again' in w
               for w in warnings), warnings
    from odm_basicsr.models.odm_model import ODMModel
    calibrations = []
    original = ODMModel.run_calibration
    monkeypatch.setattr(ODMModel, 'run_calibration', lambda self: calibrations.append(1) or original(self))
    build_model(model_options(tiny_data, NET, checkpoint))
    assert calibrations == []  # the same record: the checkpoint's ranges are kept
    fine_tune = build_model(model_options(tiny_data, dict(NET, **change), checkpoint, calibration=dict(num_batches=1)))
    assert calibrations == [1] and fine_tune._other_record()
    # a checkpoint without a record (FP, or written before records) is compared by keys and shapes only
    state = torch.load(checkpoint, weights_only=True)
    torch.save({'params': state['params']}, tmp_path / 'old.pth')
    check_options(model_options(tiny_data, dict(NET, **change), str(tmp_path / 'old.pth')), is_train=False)


def test_resuming_with_another_quantization_is_refused_before_anything_is_written(tiny_data, tmp_path, monkeypatch):
    """--auto_resume (or path.resume_state) loads experiments/<name>/models/net_g_<iter>.pth: a run resumed after
    its network_g changed bits continued silently; now the option check compares the record."""
    from conftest import write_options
    from odm_basicsr.cli import main
    monkeypatch.chdir(tmp_path)
    opt = model_options(tiny_data, NET, calibration=dict(num_batches=1))
    opt['path']['models'] = str(tmp_path / 'experiments' / 'inproc' / 'models')
    os.makedirs(opt['path']['models'])
    model = build_model(opt)
    model.save_network(model.net_g, 'net_g', 4)
    os.makedirs(tmp_path / 'experiments' / 'inproc' / 'training_states')
    (tmp_path / 'experiments' / 'inproc' / 'training_states' / '4.state').write_bytes(b'')
    changed = base_options(tiny_data, 'inproc', dict(NET, w_bit=2, a_bit=2))
    path = write_options(tmp_path / 'opt.yml', changed)
    before = sorted(str(p) for p in tmp_path.rglob('*'))
    with pytest.raises(SystemExit, match=r"resuming: 'experiments/inproc/models/net_g_4.pth' was trained or "
                                         r"calibrated with another quantization than network_g"):
        main(['train', '-opt', path, '--auto_resume'])
    assert sorted(str(p) for p in tmp_path.rglob('*')) == before


def test_uncalibrated_quantizer_state_in_the_checkpoint_is_calibrated_by_odm_model(tiny_data, tmp_path):
    net = ARCH_REGISTRY.get('ODMEDSR')(**{k: v for k, v in NET.items() if k != 'type'})
    pretrain = save_basicsr_checkpoint(net, tmp_path / 'uncalibrated.pth')  # quantizer keys, calibrated false
    model = build_model(model_options(tiny_data, NET, str(pretrain), calibration=dict(num_batches=1)))
    assert all(m.act_quantizer.is_calibrated for m in model.quant_layers)
    lq, gt = batches(4, 2)[0]
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)


@pytest.mark.parametrize('start', ['fp', 'calibrated'])
def test_ema_copy_is_calibrated_and_runs(tiny_data, tmp_path, start):
    """With ema_decay > 0 the EMA network shares the calibration (from ODMModel's own calibration, or from a
    checkpoint that carries it) and its quantized forward runs, e.g. in validation."""
    net = ARCH_REGISTRY.get('ODMEDSR')(**{k: v for k, v in NET.items() if k != 'type'})
    if start == 'calibrated':
        calibrate(net, [torch.rand(1, 3, 8, 8)], progress=False)
        pretrain = save_basicsr_checkpoint(net, tmp_path / 'calibrated.pth')
    else:
        fp_state = {k: v for k, v in net.state_dict().items() if not is_quantizer_param(k)}
        torch.save({'params': fp_state}, tmp_path / 'fp.pth')
        pretrain = str(tmp_path / 'fp.pth')
    opt = model_options(tiny_data, NET, pretrain, calibration=dict(num_batches=1))
    opt['train']['ema_decay'] = 0.9
    model = build_model(opt)
    lq, gt = batches(5, 2)[0]
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    ema_layers = [m for _, m in quantized_layers(model.net_g_ema)]
    assert ema_layers and all(m.act_quantizer.is_calibrated for m in ema_layers)
    with torch.no_grad():
        assert torch.isfinite(model.net_g_ema(lq)).all()


@pytest.mark.parametrize('regularizer, cooperation, expected', [('variance', None, 'sign'), ('mismatch', None, 'cosine'),
                                                                ('mismatch', 'sign', 'sign'), (None, None, 'sign')])
def test_cooperation_default_follows_the_regularizer(tiny_data, regularizer, cooperation, expected):
    """A file that names only the regularizer gets that variant's own cooperation, never a v1/v2 hybrid."""
    extra = dict(calibration=dict(num_batches=1))
    if regularizer:
        extra['odm_opt'] = dict(type='ODMLoss', regularizer=regularizer, loss_weight=1e-6)
    if cooperation:
        extra['cooperation'] = cooperation
    model = build_model(model_options(tiny_data, NET, **extra))
    assert model.cooperation == expected


def test_relative_range_learning_scales_each_range_by_its_calibrated_width(tiny_data):
    """range_lr relative: each activation quantizer's bounds get lr x quant_lr_mul x (u - l), so one Adam step moves
    a bound by about that much; absolute keeps one shared quantizer group at lr x quant_lr_mul."""
    extra = dict(calibration=dict(num_batches=1), quant_lr_mul=10)
    absolute = build_model(model_options(tiny_data, NET, **extra))
    assert len(absolute.optimizer_g.param_groups) == 2 and absolute.range_groups == []
    model = build_model(model_options(tiny_data, NET, range_lr='relative', **extra))
    quantizers = [layer.act_quantizer for layer in model.quant_layers]
    assert len(model.range_groups) == len(quantizers) == 4
    for quantizer, group in model.range_groups:
        width = float(quantizer.upper - quantizer.lower)
        assert width > 2.5  # calibrated on 0-255 features, not the [-1, 1] placeholder
        assert group['lr'] == pytest.approx(1e-4 * 10 * width) and group['initial_lr'] == pytest.approx(group['lr'])
    before = [(float(q.lower), float(q.upper)) for q in quantizers]
    for lq, gt in batches(0, 2)[:1]:
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(1)
    for (low, high), (quantizer, group) in zip(before, model.range_groups):
        moved = max(abs(float(quantizer.lower) - low), abs(float(quantizer.upper) - high))
        assert moved <= group['lr'] * 1.01  # Adam's first step is at most lr per parameter
    assert any(abs(float(q.upper) - h) > 1e-3 * 2 for q, (_, h) in zip(quantizers, before))  # beyond absolute steps


def test_zero_preserving_offsets_through_build_model(tiny_data):
    """train.calibration.offset_keep_zero / offset_migration reach calibration through ODMModel: the conv2 of every
    EDSR block reads a ReLU's output, so it may get a scale but never a shift; the scales start at (std_c/std)^0.5."""
    opt = model_options(tiny_data, dict(NET, offsets='auto'),
                        calibration=dict(num_batches=2, offset_top_k=1.0, offset_keep_zero=True, offset_migration=0.5))
    model = build_model(opt)
    kinds = {name: layer.offset.kind for name, layer in quantized_layers(model.net_g)}
    assert all(kind != 'none' for kind in kinds.values())  # top_k 1.0: every layer has an offset
    after_relu = {name: kind for name, kind in kinds.items() if name.endswith('conv2')}
    assert after_relu and set(after_relu.values()) == {'scale'}
    lq, gt = batches(2, 2)[0]
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)  # trains with the selection
    assert math.isfinite(model.log_dict['l_pix'])


@pytest.mark.parametrize('regularizer', ['mismatch', 'variance'])
def test_mismatch_step_uses_the_forwards_quantizer_output(tiny_data, monkeypatch, regularizer):
    """ODM v2's step takes the regularizer target from its own forward (no grid_target pass); v1 keeps no target
    (no extra activations held); both drop what they kept after the step."""
    from odm_basicsr.quant.quantizer import ActQuantizer
    opt = model_options(tiny_data, dict(NET, weight_clip='wcc' if regularizer == 'mismatch' else 'max'),
                        odm_opt=dict(type='ODMLoss', regularizer=regularizer, loss_weight=1e-3),
                        calibration=dict(num_batches=2))
    model = build_model(opt)
    calls = []
    original = ActQuantizer.grid_target
    monkeypatch.setattr(ActQuantizer, 'grid_target', lambda self, x: calls.append(1) or original(self, x))
    kept = []
    monkeypatch.setattr(type(model.step), 'collect', lambda self, enabled, f=type(model.step).collect: (
        f(self, enabled), kept.append([layer.collect_target for layer in self.quant_layers])))
    lq, gt = batches(0, 2)[0]
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    assert calls == []
    assert kept[0] == [regularizer == 'mismatch'] * len(model.quant_layers) and not any(kept[-1])
    assert all(layer.quant_target is None and layer.quant_input is None for layer in model.quant_layers)
    assert model.log_dict['l_reg'] > 0

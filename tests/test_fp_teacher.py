"""The FP teacher of QAT (train.distill_opt), and the parts of the training step tested alone: CooperativeStep and
NonFiniteGuard."""
import odm_basicsr  # noqa: F401  (must precede any basicsr import)
import pytest
import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.models import build_model

from conftest import save_basicsr_checkpoint
from odm_basicsr.losses.odm_loss import ODMLoss
from odm_basicsr.models.cooperative_step import CooperativeStep
from odm_basicsr.models.step_guard import NonFiniteGuard
from odm_basicsr.options_check import OptionError, check_options
from odm_basicsr.quant import QuantConfig, calibrate, combine_gradients, is_quantizer_param, quantize_modules
from test_odm_model import NET, batches, model_options

FP_ARGS = {k: v for k, v in NET.items() if k not in ('type', 'w_bit', 'a_bit')}
V2 = dict(odm_opt=dict(type='ODMLoss', regularizer='mismatch', loss_weight=1e-2), cooperation='cosine')


@pytest.fixture(scope='module')
def fp_edsr(tmp_path_factory):
    torch.manual_seed(3)
    net = EDSR(**FP_ARGS)
    return net, save_basicsr_checkpoint(net, tmp_path_factory.mktemp('teacher') / 'fp.pth')


def teacher_model(tiny_data, pretrain, pixel=False, distill=None, **train):
    opt = model_options(tiny_data, dict(NET), pretrain=pretrain, calibration=dict(num_batches=1, refine=False),
                        distill_opt=distill or {'loss': 'l1'}, **train)
    if not pixel:
        del opt['train']['pixel_opt']
    torch.manual_seed(0)
    return build_model(opt)


def test_teacher_only_step_is_the_l1_to_the_fp_network(tiny_data, fp_edsr):
    """Without pixel_opt the task loss is L1 to the FP network's output; its gradient is exactly what training
    applies, and the teacher is the FP checkpoint (an independent EDSR with the same weights gives its output)."""
    fp, path = fp_edsr
    model = teacher_model(tiny_data, path)
    assert model.cri_pix is None and 'pixel_opt' not in model.opt['train']
    lq, gt = batches(0, 2)[0]
    with torch.no_grad():
        assert torch.equal(model.teacher.net(lq), fp.eval()(lq))
    params = [p for _, p in model.net_g.named_parameters()]
    out = model.net_g(lq)
    expected = torch.autograd.grad((out - fp(lq)).abs().mean(), params, allow_unused=True)
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimizer_g.step = lambda: None  # keep the weights: compare the gradient of this step
    model.optimize_parameters(1)
    log = model.log_dict
    assert 'l_distill' in log and 'l_pix' not in log
    assert log['l_distill'] == pytest.approx(float((out - fp(lq)).abs().mean()), rel=1e-6)
    for param, grad in zip(params, expected):
        assert torch.allclose(param.grad, torch.zeros_like(param) if grad is None else grad, atol=1e-7)


def test_teacher_gradient_counts_as_task_loss_under_cooperation(tiny_data, fp_edsr):
    """pixel + teacher with ODM v2: the cosine rule combines g_reg with the gradient of l_pix + l_distill."""
    fp, path = fp_edsr
    model = teacher_model(tiny_data, path, pixel=True, distill={'loss': 'mse', 'loss_weight': 0.5}, **V2)
    lq, gt = batches(1, 2)[0]
    weights = model.weight_params
    for layer in model.quant_layers:
        layer.collect_input = layer.collect_target = True
    out = model.net_g(lq)
    task = model.cri_pix(out, gt) + 0.5 * ((out - fp.eval()(lq))**2).mean()
    g_task = torch.autograd.grad(task, weights, retain_graph=True)
    g_reg = torch.autograd.grad(model.cri_odm(model.quant_layers), weights, allow_unused=True)
    g_reg = [torch.zeros_like(p) if g is None else g for p, g in zip(weights, g_reg)]
    model.step.collect(False)
    expected, _ = combine_gradients(list(g_task), g_reg, 'cosine')
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimizer_g.step = lambda: None
    model.optimize_parameters(1)
    assert {'l_pix', 'l_distill', 'l_reg', 'grad_cos'} <= set(model.log_dict)
    for param, grad in zip(weights, expected):
        assert torch.allclose(param.grad, grad, rtol=1e-4, atol=1e-7)


def test_teacher_features_join_the_loss_and_the_teacher_is_never_saved(tiny_data, fp_edsr, tmp_path):
    _, path = fp_edsr
    plain = teacher_model(tiny_data, path)
    featured = teacher_model(tiny_data, path, distill={'features': ['body.0', 'body.1'], 'feature_weight': 10.0})
    lq, gt = batches(2, 2)[0]
    for model in (plain, featured):
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(1)
    assert featured.log_dict['l_distill'] > plain.log_dict['l_distill']  # the same step plus the feature term
    featured.opt['path']['models'] = str(tmp_path)
    featured.save_network(featured.net_g, 'net_g', 1)
    saved = torch.load(tmp_path / 'net_g_1.pth')['params']
    assert set(saved) == set(featured.get_bare_model(featured.net_g).state_dict())


@pytest.mark.parametrize('change, message', [
    ({'distill_opt': {'loss': 'l2'}}, r"train.distill_opt.loss: 'l2' is not one of l1, mse"),
    ({'distill_opt': {'los': 'l1'}}, r"train.distill_opt.los: unknown key \(did you mean 'loss'\?\)"),
    ({'distill_opt': {'features': ['body.9']}}, r"train.distill_opt.features: 'body.9' is not a module of "
                                                r"network_g \(did you mean 'body.1'\?\)"),
    ({'distill_opt': {'loss_weight': -1}}, r'train.distill_opt.loss_weight: must be a number >= 0'),
    ({'pretrain': None}, r'train.distill_opt needs path.pretrain_network_g'),
    ({'distill_opt': None}, r'train: needs pixel_opt \(a loss to HR\) or distill_opt'),
])
def test_teacher_options_are_checked(tiny_data, change, message):
    opt = model_options(tiny_data, dict(NET), pretrain='fp.pth', distill_opt={'loss': 'l1'})
    del opt['train']['pixel_opt']
    if 'pretrain' in change:
        opt['path']['pretrain_network_g'] = None
    else:
        opt['train']['distill_opt'] = change['distill_opt']
        if change['distill_opt'] is None:
            del opt['train']['distill_opt']
    with pytest.raises(OptionError, match=message):
        check_options(opt)


def test_a_teacher_of_another_architecture_is_refused_before_training(tiny_data, tmp_path):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    path = save_basicsr_checkpoint(RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=4, scale=2), tmp_path / 'r.pth')
    opt = model_options(tiny_data, dict(NET), pretrain=path, distill_opt={'loss': 'l1'})
    with pytest.raises(OptionError, match='another architecture|does not fit|architecture'):
        check_options(opt)


# -- the training step's parts, alone ------------------------------------------------------------------------------
def _tiny_quantized(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3, padding=1))
    quantize_modules(net, ['0', '2'], QuantConfig(w_bit=4, a_bit=4))
    calibrate(net, [torch.rand(2, 3, 8, 8)], progress=False, method='minmax')
    return net


@pytest.mark.parametrize('cooperation', ['sign', 'cosine'])
def test_cooperative_step_alone(cooperation):
    net = _tiny_quantized()
    weights = [p for n, p in net.named_parameters() if not is_quantizer_param(n)]
    quant = [p for n, p in net.named_parameters() if is_quantizer_param(n)]
    layers = [net[0], net[2]]
    regularizer = ODMLoss(regularizer='mismatch' if cooperation == 'cosine' else 'variance', loss_weight=0.1)
    step = CooperativeStep(weights, quant, layers, regularizer, cooperation, distributed=False)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    step.collect(True)
    out = net(x)
    task = ((out - y)**2).mean()
    g_task = torch.autograd.grad(task, weights + quant, retain_graph=True)
    g_reg = torch.autograd.grad(regularizer(layers), weights, retain_graph=True, allow_unused=True)
    g_reg = [torch.zeros_like(p) if g is None else g for p, g in zip(weights, g_reg)]
    expected, _ = combine_gradients(list(g_task[:len(weights)]), g_reg, cooperation)
    logged = step.backward(task)
    step.collect(False)
    assert set(logged) == {'l_reg', 'sign_conflict_ratio' if cooperation == 'sign' else 'grad_cos', 'reg_grad_ratio'}
    for param, grad in zip(weights, expected):
        assert torch.allclose(param.grad, grad, rtol=1e-5, atol=1e-8)
    for param, grad in zip(quant, g_task[len(weights):]):  # the quantizers get the task gradient only
        assert torch.allclose(param.grad, grad, rtol=1e-5, atol=1e-8)
    assert all(layer.quant_input is None for layer in layers)


def test_cooperative_step_without_a_regularizer_is_plain_backward():
    net = _tiny_quantized()
    params = list(net.parameters())
    step = CooperativeStep(params, [], [net[0], net[2]], None, 'sign', distributed=False)
    x = torch.rand(1, 3, 8, 8)
    loss = net(x).abs().mean()
    expected = torch.autograd.grad(loss, params, retain_graph=True)
    assert step.backward(loss) == {}
    assert all(torch.allclose(p.grad, g) for p, g in zip(params, expected))


def test_non_finite_guard_alone():
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([param], lr=0.5)
    guard = NonFiniteGuard([param], max_skipped_steps=2, on_device=False, device=torch.device('cpu'),
                           distributed=False)
    param.grad = torch.ones(2)
    guard.step(optimizer, {'l': torch.tensor(1.0)}, 1)
    assert torch.equal(param.detach(), torch.full((2, ), 0.5)) and guard.skipped_steps == 0
    param.grad = torch.tensor([float('nan'), 1.0])
    guard.step(optimizer, {'l': torch.tensor(1.0)}, 2)
    assert torch.equal(param.detach(), torch.full((2, ), 0.5)) and guard.skipped_steps == 1  # skipped
    param.grad = torch.ones(2)
    with pytest.raises(FloatingPointError, match='2 consecutive non-finite steps'):
        guard.step(optimizer, {'l': torch.tensor(float('inf'))}, 3)


@pytest.mark.parametrize('bits', [4, 8])
def test_the_teacher_presets_pass_the_checks_and_build_a_teacher_only_model(bits, tiny_data, tmp_path):
    """The RealSR-style RRDBNet presets (options/distill/), shrunk to the tiny x2 data and a tiny RRDBNet: valid,
    a teacher and no pixel loss, quantizers refined before QAT."""
    import os.path as osp

    import yaml
    from basicsr.archs.rrdbnet_arch import RRDBNet

    from conftest import REPO
    with open(osp.join(REPO, 'options', 'distill', f'train_QAT_teacher_RealSR_RRDBNet_x4_w{bits}a{bits}.yml')) as f:
        preset = yaml.safe_load(f)
    tiny = model_options(tiny_data, dict(NET))
    arch = dict(preset['network_g']['arch'], num_feat=8, num_block=1, num_grow_ch=4, scale=2)
    fp_args = {k: v for k, v in arch.items() if k != 'type'}
    pretrain = save_basicsr_checkpoint(RRDBNet(**fp_args), tmp_path / 'rrdb.pth')
    opt = dict(preset, scale=2, num_gpu=0, datasets=tiny['datasets'], network_g=dict(preset['network_g'], arch=arch),
               path=dict(preset['path'], pretrain_network_g=pretrain), is_train=True, dist=False, rank=0, world_size=1)
    opt['train'] = dict(preset['train'], calibration=dict(preset['train']['calibration'], num_batches=1,
                                                          refine={'iters': 2}))
    opt['logger'] = tiny['logger']
    assert 'pixel_opt' not in opt['train'] and opt['train']['distill_opt']['loss'] == 'l1'
    assert check_options(opt) == []
    torch.manual_seed(0)
    model = build_model(opt)
    assert model.teacher is not None and model.cri_pix is None
    assert model.calibration_report['refine']['iters'] == 2

import math
import os
from collections import OrderedDict
from contextlib import nullcontext

import torch
import torch.distributed as dist
from basicsr.data import build_dataset
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from odm_basicsr._compat import pretrain_before_resume
from odm_basicsr.data.calibration import calibration_batches, calibration_settings, refine_settings
from odm_basicsr.models.cooperative_step import CooperativeStep
from odm_basicsr.models.fp_teacher import FPTeacher, teacher_network
from odm_basicsr.models.step_guard import NonFiniteGuard
from odm_basicsr.options_check import device_guard_supported
from odm_basicsr.quant import (QUANTIZATION_KEY, QuantConfig, WeightQuantizer, activation_points, calibrate,
                               is_quantizer_param, quantization_record, quantized_layers, record_mismatches,
                               refresh_quantizer_state)
from odm_basicsr.quant.refine import refine
from odm_basicsr.utils.resume import batches_to_skip, generator_states, restore_generator_states
from odm_basicsr.utils.safe_load import safe_torch_load

DEFAULT_COOPERATION = {'variance': 'sign', 'mismatch': 'cosine'}  # each regularizer with its own paper's rule


def _is_compile_error(error):
    """Whether ``error`` was raised by torch.compile's machinery (dynamo, inductor, a backend compiler) rather than
    by the network itself."""
    module = type(error).__module__ or ''
    return module.startswith(('torch._dynamo', 'torch._inductor', 'torch._functorch', 'triton')) or \
        'BackendCompilerFailed' in type(error).__name__ or 'InductorError' in type(error).__name__


def default_cooperation(odm_opt):
    """``train.cooperation`` when the option file leaves it out: sign for v1's variance regularizer, cosine for
    v2's mismatch regularizer (so a bare regularizer is never a v1/v2 hybrid); sign without a regularizer."""
    return DEFAULT_COOPERATION.get((odm_opt or {}).get('regularizer'), 'sign')


@MODEL_REGISTRY.register()
class ODMModel(SRModel):
    """SRModel with ODM quantization-aware training.

    Options under ``train`` (besides SRModel's):
        odm_opt (dict | None): the regularizer, ``{type: ODMLoss, regularizer, stat, loss_weight}``. None gives
            plain QAT.
        cooperation (str): 'sign' (v1) | 'cosine' (v2) | 'cosine_tensor' (one cosine per weight tensor) | 'none':
            how the regularizer gradient joins the reconstruction gradient over the network weights. The regularizer
            never trains quantizer parameters.
        quant_lr_mul (float): learning-rate multiplier of quantizer parameters (ranges, gamma, offsets). Default 10.
        range_lr (str): 'absolute' (default, the paper's: every activation bound at lr x quant_lr_mul, in feature
            units) | 'relative': each activation quantizer's bounds at lr x quant_lr_mul x its calibrated width, so
            Adam moves them by a fraction of their own range per step, whatever the features' scale.
        calibration (dict): num_batches (default 8) batches for the activation ranges, from ``dataset`` (a BasicSR
            dataset block) if given, else from datasets.train; method ('auto', default | 'mse' | 'percentile', the
            paper's | 'minmax'), per_layer ('auto' | 'block' | 'network') and sequential (default false), see
            ``odm_basicsr.quant.calibrate``; for networks built with ``offsets`` the selection rule offset_top_k
            (fraction of layers) or offset_threshold; refine (default false here, true in ``basicsr calibrate``):
            learn the quantizers from the FP output first, ``odm_basicsr.quant.refine``.
        max_skipped_steps (int): consecutive non-finite steps tolerated before training stops. Default 5.
        compile (bool): run the training forward (and so its backward) through ``torch.compile``: every quantizer
            and offset becomes part of a few fused kernels. Compiled at the first step; eager, with a warning, if
            compilation fails. Validation and the EMA copy stay eager. Default: true on CUDA, false on CPU.
        guard_on_device (bool): the non-finite guard decides on the device (fused Adam/AdamW skips the step on a
            device flag) instead of reading the flag on the host each step; skips are counted on the device and
            reported, and ``max_skipped_steps`` enforced, when the log is read (print_freq) or a state is saved.
            Default: true on CUDA when optim_g is Adam/AdamW, false on CPU.
        weight_clip_interval (int): recompute the weight quantizers' clip statistic (max|W| or P99|W|) every N
            iterations and reuse it in between (WCC's gamma still applies every step). Default 1 (every step).
    """

    _pending_log = None  # the last step's loss_dict, reduced when log_dict is read (no host sync per step)
    _log_dict = OrderedDict()

    def __init__(self, opt):
        if opt.get('dist') and (opt.get('network_g') or {}).get('offsets', 'none') != 'none':
            # offsets that calibration leaves off (and, without a regularizer, every gated-off offset) get no
            # gradient: DDP must not wait for them
            opt['find_unused_parameters'] = True
        super().__init__(opt)

    def model_to_device(self, net):
        net = super().model_to_device(net)
        if isinstance(net, torch.nn.DataParallel):
            raise ValueError(
                'ODMModel does not support DataParallel (num_gpu > 1 without a launcher): the regularizer reads the '
                'features of each replica, which DataParallel discards. Train on several GPUs with DDP: torchrun '
                '--nproc_per_node N -m odm_basicsr train -opt FILE --launcher pytorch; or set num_gpu: 1.')
        return net

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BasicSR's save_network (same file name and content), written atomically: a temporary file, then a
        rename, so an interrupted write never leaves a truncated models/net_g_<iter>.pth. Beside 'params' it stores
        the network's ``quantization_record`` (bits, clip, granularity per layer), which the option check compares
        with network_g."""
        label = 'latest' if current_iter == -1 else current_iter
        save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        save_dict = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            save_dict[key] = {(k[7:] if k.startswith('module.') else k): v.cpu() for k, v in state.items()}
        save_dict[QUANTIZATION_KEY] = quantization_record(self.get_bare_model(nets[0]))  # BasicSR reads 'params'
        torch.save(save_dict, save_path + '.tmp')
        os.replace(save_path + '.tmp', save_path)

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.cooperation = train_opt.get('cooperation') or default_cooperation(train_opt.get('odm_opt'))
        self.quant_lr_mul = float(train_opt.get('quant_lr_mul', 10))
        self.range_lr = train_opt.get('range_lr', 'absolute')
        self.max_skipped_steps = int(train_opt.get('max_skipped_steps', 5))
        self.weight_clip_interval = int(train_opt.get('weight_clip_interval', 1))
        cuda = self.device.type == 'cuda'
        guard, optim_ok = train_opt.get('guard_on_device'), device_guard_supported(train_opt.get('optim_g'))
        if guard and not optim_ok:
            raise ValueError('train.guard_on_device: true needs optim_g type Adam or AdamW, fused (their fused kernels '
                             f'skip a step on a device flag); got {train_opt.get("optim_g")}.')
        self.guard_on_device = (cuda and optim_ok) if guard is None else bool(guard)
        self.current_iter = 0
        self.quant_layers = [m for _, m in quantized_layers(self.net_g)]
        self.weight_quantizers = [m for m in self.net_g.modules() if isinstance(m, WeightQuantizer)]
        compile_opt = train_opt.get('compile')
        # the training forward (and so its backward) through torch.compile; validation and the EMA copy stay eager
        self.compiled_network = torch.compile(self.net_g) if (cuda if compile_opt is None else compile_opt) else None
        self._compile_checked = False
        # SRModel insists on a pixel or perceptual loss; with a teacher alone, a zero-weight placeholder stands in
        placeholder = bool(train_opt.get('distill_opt')) and not (train_opt.get('pixel_opt')
                                                                 or train_opt.get('perceptual_opt'))
        if placeholder:
            train_opt['pixel_opt'] = {'type': 'L1Loss', 'loss_weight': 0.0}
        try:
            super().init_training_settings()
        finally:
            if placeholder:
                del train_opt['pixel_opt']
        if placeholder:
            self.cri_pix = None
        self.cri_odm = build_loss(train_opt['odm_opt']).to(self.device) if train_opt.get('odm_opt') else None
        self.teacher = self.build_teacher() if train_opt.get('distill_opt') else None
        self.step = CooperativeStep(self.weight_params, self.quant_params, self.quant_layers, self.cri_odm,
                                    self.cooperation, bool(self.opt['dist']))
        self.guard = NonFiniteGuard(self.weight_params + self.quant_params, self.max_skipped_steps,
                                    self.guard_on_device, self.device, bool(self.opt['dist']))
        logger = get_root_logger()
        logger.info(f'ODM variant: {self.variant_description()}')
        logger.info(f'Training step: network {"compiled" if self.compiled else "eager"}, non-finite guard on '
                    f'the {"device" if self.guard_on_device else "host"}, weight clip statistic every '
                    f'{self.weight_clip_interval} iteration(s).')
        if self.opt['path'].get('resume_state'):
            logger.info('Resuming: calibration is skipped; quantizer state comes from the checkpoint.')
        elif getattr(self.get_bare_model(self.net_g), 'quantizer_state_loaded', False) and not self._other_record():
            logger.info('The pretrained checkpoint carries quantizer state: calibration is skipped.')
            self.scale_range_learning_rates()
        else:
            if self._other_record():
                logger.warning('The pretrained checkpoint was trained at another quantization than network_g ('
                               + '; '.join(self._other_record()[:3]) + '): its quantizer ranges are calibrated again.')
            self.run_calibration()
            self.scale_range_learning_rates()

    def build_teacher(self):
        """The FP teacher (``FPTeacher``): network_g again, with the FP checkpoint the option file names (also when
        resuming, where BasicSR points path.pretrain_network_g at the resumed net_g_<iter>.pth); never saved."""
        path_opt = self.opt['path']
        checkpoint = pretrain_before_resume(self.opt)
        net = teacher_network(self.opt['network_g']).to(self.device)
        self.load_network(net, checkpoint, path_opt.get('strict_load_g', True), path_opt.get('param_key_g', 'params'))
        teacher = FPTeacher(net, self.opt['train']['distill_opt'])
        get_root_logger().info(f'FP teacher: {checkpoint} with the quantizers off ({teacher.kind} on the output'
                               + (f', features {", ".join(teacher.features)}' if teacher.features else '')
                               + f', weight {teacher.loss_weight:g}).')
        return teacher

    def _other_record(self):
        """How the quantization record of path.pretrain_network_g differs from net_g's ([] when it agrees or has
        none): a w4a4 checkpoint fine-tuned at w2a2 has the right keys but ranges for another grid."""
        if not hasattr(self, '_record_lines'):
            path = self.opt['path'].get('pretrain_network_g')
            ckpt = safe_torch_load(path) if path else None
            record = ckpt.get(QUANTIZATION_KEY) if isinstance(ckpt, dict) else None
            self._record_lines = record_mismatches(record, self.get_bare_model(self.net_g))
        return self._record_lines

    # ------------------------------------------------------------------------------------------------------
    def variant_description(self):
        net = self.get_bare_model(self.net_g)
        cfg = getattr(net, 'quant_config', None) or QuantConfig()
        if self.cri_odm is None:
            reg = 'no regularizer (plain QAT)'
        else:
            stat = f'/{self.cri_odm.stat}' if self.cri_odm.regularizer == 'variance' else ''
            reg = (f'{self.cri_odm.regularizer}{stat} regularizer x {self.cri_odm.loss_weight:g}, '
                   f'cooperation={self.cooperation}')
        return (f'w{cfg.w_bit}a{cfg.a_bit}, weight_clip={cfg.weight_clip}, offsets={cfg.offsets}, {reg}, '
                f'{len(self.quant_layers)} quantized layers')

    def _param_split(self):
        weights, quant = [], []
        for name, param in self.net_g.named_parameters():
            if param.requires_grad:
                (quant if is_quantizer_param(name) else weights).append(param)
        return weights, quant

    def setup_optimizers(self):
        """Adam groups: network weights at lr, quantizer parameters at lr x quant_lr_mul; with range_lr relative,
        one more group per activation quantizer (its two bounds), scaled once calibrated."""
        train_opt = self.opt['train']
        optim_opt = dict(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        lr = optim_opt.pop('lr')
        self.weight_params, self.quant_params = self._param_split()
        groups = [{'params': self.weight_params, 'lr': lr}]
        shared = self.quant_params
        self.range_groups = []  # [(ActQuantizer, its param group)]
        if self.range_lr == 'relative':
            quantizers = [point.act_quantizer for _, point in activation_points(self.net_g)]
            bounds = {id(p) for q in quantizers for p in (q.lower, q.upper)}
            shared = [p for p in shared if id(p) not in bounds]
            for quantizer in quantizers:
                group = {'params': [quantizer.lower, quantizer.upper], 'lr': lr * self.quant_lr_mul}
                groups.append(group)
                self.range_groups.append((quantizer, group))
        if shared:
            groups.append({'params': shared, 'lr': lr * self.quant_lr_mul})
        if self.guard_on_device:
            optim_opt['fused'] = True
        self.optimizer_g = self.get_optimizer(optim_type, groups, lr, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    # ------------------------------------------------------------------------------------------------------
    def _train_dataset(self):
        """A fresh training dataset (calibration, epoch length). Not cached: a dataset that has read from an LMDB
        keeps its environment open, and BasicSR's own train loader may not open it again in this process."""
        return build_dataset(dict(self.opt['datasets']['train'], phase='train'))

    def _average_over_ranks(self, tensor):
        if not self.opt['dist']:
            return tensor
        t = tensor.detach().to(self.device, torch.float64).clone()
        dist.all_reduce(t)
        return (t / dist.get_world_size()).to(tensor.device, tensor.dtype)

    def scale_range_learning_rates(self):
        """range_lr relative: each range group's learning rate x the calibrated width u - l of its quantizer (and
        the scheduler's initial_lr with it). Not on resume: the optimizer state carries the scaled rates."""
        index = {id(group): i for i, group in enumerate(self.optimizer_g.param_groups)}
        for quantizer, group in self.range_groups:
            width = float((quantizer.upper - quantizer.lower).detach())
            group['lr'] *= width
            group['initial_lr'] = group.get('initial_lr', group['lr'] / width) * width
            for scheduler in self.schedulers:  # schedulers that recompute from their base rates (cosine)
                if hasattr(scheduler, 'base_lrs'):
                    scheduler.base_lrs[index[id(group)]] = group['initial_lr']
        if self.range_groups:
            widths = [float((q.upper - q.lower).detach()) for q, _ in self.range_groups]
            get_root_logger().info(f'range_lr relative: activation ranges learn at lr x {self.quant_lr_mul:g} x their '
                                   f'width ({min(widths):.3g} to {max(widths):.3g}).')

    def run_calibration(self):
        """Initialise activation ranges (and select/initialise offsets), then sync ranks and the EMA copy."""
        logger = get_root_logger()
        net = self.get_bare_model(self.net_g)
        offset_mode = getattr(net, 'quant_config', QuantConfig()).offsets
        num_batches, settings = calibration_settings(self.opt, offset_mode)
        rng_states = generator_states()
        batches = calibration_batches(self.opt, num_batches, self.device, self.opt['rank'])
        restore_generator_states(rng_states)  # calibration must not change the training data stream
        logger.info(f'Calibrating {len(self.quant_layers)} quantized layers on {len(batches)} training batches '
                    f'(method {settings["method"]}).')
        report = calibrate(net, batches, offset_mode, progress=self.opt['rank'] == 0,
                           reduce_fn=self._average_over_ranks, **settings)
        refine_config = refine_settings(self.opt, default=False)
        if refine_config is not None:  # every rank refines on its batches; rank 0's result is broadcast below
            refined = refine(net, batches, refine_config, seed=int(self.opt.get('manual_seed') or 0),
                             progress=self.opt['rank'] == 0)
            logger.info(f'Refined the quantizers from the FP output: {refined["iters"]} iterations, output MSE vs FP '
                        f'on the calibration crops {refined["mse_before"]:.3g} -> {refined["mse_after"]:.3g}.')
            report['refine'] = refined
        if self.opt['dist']:
            with torch.no_grad():
                for tensor in list(net.parameters()) + list(net.buffers()):
                    dist.broadcast(tensor.data, src=0)
            refresh_quantizer_state(net)
        for name, kind, score in report['offsets']:
            logger.info(f'Distribution offset: {name} <- {kind} (mismatch score {score:.4f})')
        if offset_mode != 'none':
            logger.info(f'{len(report["offsets"])} of {len(report["scores"])} layers got an offset. Scores: ' +
                        ', '.join(f'{n}: ' + ' / '.join(f'{kind} {v:.4f}' for kind, v in s.items())
                                  for n, s in report['scores'].items()))
        low = min(r[0] for r in report['ranges'].values())
        high = max(r[1] for r in report['ranges'].values())
        logger.info(f'Activation ranges calibrated: lower bounds from {low:.3f}, upper bounds up to {high:.3f}.')
        if hasattr(self, 'net_g_ema'):
            self.net_g_ema.load_state_dict(net.state_dict())
        self.calibration_report = report

    def model_ema(self, decay=0.999):
        """BasicSR's EMA averages parameters only; also copy buffers (calibration flags, offset gates)."""
        super().model_ema(decay)
        net = self.get_bare_model(self.net_g)
        ema_buffers = dict(self.net_g_ema.named_buffers())
        for name, buf in net.named_buffers():
            ema_buffers[name].data.copy_(buf.data)
        for _, layer in activation_points(self.net_g_ema):  # the python mirrors of the buffers copied in place
            if not layer.act_quantizer.is_calibrated:  # once calibrated it stays so: no per-step device read
                layer.act_quantizer.refresh()
            if layer.offset is not None:
                layer.offset.refresh()

    # ------------------------------------------------------------------------------------------------------
    # exact resumption: BasicSR saves no generator state and restarts the interrupted epoch
    def _iters_per_epoch(self):
        """Batches per epoch of BasicSR's train loader (EnlargedSampler, drop_last=True)."""
        if getattr(self, '_epoch_length', None) is None:
            dataset_opt = self.opt['datasets']['train']
            num_samples = math.ceil(len(self._train_dataset()) * dataset_opt.get('dataset_enlarge_ratio', 1) /
                                    self.opt.get('world_size', 1))
            self._epoch_length = max(num_samples // dataset_opt['batch_size_per_gpu'], 1)
        return self._epoch_length

    @master_only
    def save_training_state(self, epoch, current_iter):
        """BasicSR's training state plus the python / numpy / torch generator states. A checkpoint on the last
        iteration of an epoch records the next epoch, so that resuming does not replay the finished one."""
        if current_iter == -1:
            return
        self.guard.report()
        if current_iter % self._iters_per_epoch() == 0:
            epoch += 1
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers], 'generators': generator_states(),
                 'epoch_length': self._iters_per_epoch(),
                 'skipped_steps': self.skipped_steps}
        if self.weight_clip_interval > 1:  # the cached clip statistics the next iterations reuse
            state['weight_clip_statistics'] = [None if q.cached_clip_statistic is None else
                                               q.cached_clip_statistic.cpu() for q in self.weight_quantizers]
        save_path = os.path.join(self.opt['path']['training_states'], f'{current_iter}.state')
        tmp_path = save_path + '.tmp'
        torch.save(state, tmp_path)
        os.replace(tmp_path, save_path)  # never leaves a half-written state behind

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if 'generators' in resume_state:
            states = dict(resume_state['generators'])
            # BasicSR builds the CPUPrefetcher after this call, and iter(loader) draws the DataLoader's base seed
            # from the torch generator once more than the uninterrupted run did. The torch state is therefore
            # restored at the first feed_data, followed by the one draw the epoch start makes where the state
            # closes an epoch. A mid-epoch state continues the epoch (utils/resume.py skips its trained batches and
            # restores python / numpy after them): no epoch start, no draw.
            self._pending_torch_rng_state = states.pop('torch')
            self._pending_epoch_start = not batches_to_skip(resume_state, self._iters_per_epoch())
            restore_generator_states(states)
        self.skipped_steps = resume_state.get('skipped_steps', 0)
        for quantizer, statistic in zip(self.weight_quantizers, resume_state.get('weight_clip_statistics') or []):
            quantizer.cached_clip_statistic = None if statistic is None else statistic.to(self.device)
        get_root_logger().info(f'Resumed ODM training at iter {resume_state["iter"]}, epoch {resume_state["epoch"]}; '
                               'generator states restored, calibration not repeated.')

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """SRModel.validation, once per iteration. BasicSR's train_pipeline validates again after its loop, with
        the iteration counter past total_iter (a 300-iteration run reported '@ 302 iter'): that call is labelled
        total_iter, and skipped when iteration total_iter was just validated (the weights are the same)."""
        if self.is_train and isinstance(current_iter, int):  # basicsr test passes the run's name instead
            total = self.opt['train'].get('total_iter')
            if isinstance(total, int) and current_iter > total:
                current_iter = total
            name = dataloader.dataset.opt.get('name')
            validated = getattr(self, '_validated_iters', {})
            if validated.get(name) == current_iter:
                return
            self._validated_iters = dict(validated, **{name: current_iter})
        super().validation(dataloader, current_iter, tb_logger, save_img)

    def test(self):
        """SRModel.test through the bare network. BasicSR validates on rank 0 alone (``dist_validation``); a forward
        through the DDP wrapper there would broadcast the quantizers' buffers to ranks that are not listening, and
        fail ('Connection closed by peer') or hang. The bare network computes the same output."""
        if hasattr(self, 'net_g_ema'):
            return super().test()
        net = self.get_bare_model(self.net_g)
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq)
        net.train()

    # ------------------------------------------------------------------------------------------------------
    def feed_data(self, data):
        pending = getattr(self, '_pending_torch_rng_state', None)
        if pending is not None:
            torch.set_rng_state(pending)
            if self._pending_epoch_start:
                torch.empty((), dtype=torch.int64).random_()  # the base-seed draw of the epoch's iter(loader)
            self._pending_torch_rng_state = None
        super().feed_data(data)

    def optimize_parameters(self, current_iter):
        """One step: the training forward, the task loss (``task_loss``), their backward with the regularizer under
        cooperation (``CooperativeStep``), then the optimizer step unless it is non-finite (``NonFiniteGuard``)."""
        self.current_iter = current_iter
        self.optimizer_g.zero_grad(set_to_none=False)
        sync_context = self.net_g.no_sync() if (self.step.uses_regularizer and self.opt['dist']) else nullcontext()
        self.step.collect(True)
        if self.weight_clip_interval > 1:
            reuse = (current_iter - 1) % self.weight_clip_interval != 0
            for quantizer in self.weight_quantizers:
                quantizer.reuse_clip_statistic = reuse
        tap = self.teacher.student_tap(self.get_bare_model(self.net_g)) if self.teacher else nullcontext()
        try:
            with sync_context:
                with tap:
                    self.output = self._training_forward(self.lq)
                loss_dict = OrderedDict()
                features = tap.features if self.teacher else ()
                loss_dict.update(self.step.backward(self.task_loss(loss_dict, features)))
        finally:
            self.step.collect(False)
        self.guard.step(self.optimizer_g, loss_dict, current_iter)
        self._pending_log = OrderedDict((k, v.detach()) for k, v in loss_dict.items())
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def task_loss(self, loss_dict, student_features=()):
        """The loss whose gradient trains every parameter: the pixel loss to HR (``l_pix``) and the FP teacher's
        distance (``l_distill``), each where configured and logged in ``loss_dict``."""
        total = None
        if self.cri_pix is not None:
            total = loss_dict['l_pix'] = self.cri_pix(self.output, self.gt)
        if self.teacher is not None:
            loss_dict['l_distill'] = self.teacher.loss(self.output, self.lq, student_features)
            total = loss_dict['l_distill'] if total is None else total + loss_dict['l_distill']
        return total

    @property
    def compiled(self):
        """Whether the training forward runs through torch.compile (it falls back to eager if compilation fails)."""
        return self.compiled_network is not None

    def _training_forward(self, lq):
        """net_g(lq), through the compiled network when train.compile is on. Compilation happens at the first call;
        if it fails (no C++ compiler or Triton, an unsupported op), training continues eager with a warning."""
        if self.compiled_network is None:
            return self.net_g(lq)
        if self._compile_checked:
            return self.compiled_network(lq)
        try:
            output = self.compiled_network(lq)
        except Exception as error:  # torch.compile's failures come as many exception types
            if not _is_compile_error(error):
                raise
            get_root_logger().warning(f'train.compile: the network could not be compiled ({type(error).__name__}: '
                                      f'{str(error).strip().splitlines()[0][:200] if str(error).strip() else ""}); '
                                      'training continues eager.')
            self.compiled_network = None
            output = self.net_g(lq)
        self._compile_checked = True
        return output

    # ------------------------------------------------------------------------------------------------------
    # logging without a host sync per step: the last step's losses are reduced when the log is read
    @property
    def log_dict(self):
        if self._pending_log is not None:
            pending, self._pending_log = self._pending_log, None
            self.guard.report()
            log = self.reduce_loss_dict(pending)
            log['offset_layers'] = float(sum(
                1 for m in self.quant_layers if m.offset is not None and m.offset.kind != 'none'))
            self._log_dict = log
        return self._log_dict

    @log_dict.setter
    def log_dict(self, value):
        self._pending_log = None
        self._log_dict = value

    @property
    def skipped_steps(self):
        """Consecutive skipped (non-finite) steps up to now (``NonFiniteGuard``)."""
        return self.guard.skipped_steps

    @skipped_steps.setter
    def skipped_steps(self, value):
        self.guard.skipped_steps = value

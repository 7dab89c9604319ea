"""Shared by the benchmarks: option dicts built from the real preset files, the demo data, timers and tables.

The variants are the project's own presets (options/train_ODM_EDSR_x4_w4a4.yml and its twins in options/v2/ and
options/qat/) with only the data, batch, network size and iteration counts overridden, so a benchmark measures what
a user would run.
"""
import copy
import json
import os
import os.path as osp
import platform
import statistics
import sys
import threading
import time

import torch
import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

import odm_basicsr  # noqa: E402,F401  (compat fixes + registration before any basicsr import)
from odm_basicsr.data.demo import demo_paths, prepare_demo  # noqa: E402

PRESETS = {
    'QAT': 'options/qat/train_QAT_EDSR_x4_w4a4.yml',
    'ODM v1': 'options/train_ODM_EDSR_x4_w4a4.yml',
    'ODM v2': 'options/v2/train_ODMv2_EDSR_x4_w4a4.yml',
}
DEMO_FP_RECIPE = 'options/demo/train_FP_EDSR_demo_x4.yml'
DEMO_DATA = osp.join(REPO, 'datasets', 'demo')


def load_yaml(path):
    with open(osp.join(REPO, path)) as f:
        return yaml.safe_load(f)


SWINIR_FP_RECIPE = 'options/ptq/train_FP_SwinIR_demo_x4.yml'


def swinir_fp_network():
    """The small FP SwinIR of the PTQ and proxy rows (not shipped: ``basicsr train -opt SWINIR_FP_RECIPE`` makes it,
    about 8 min on 2 CPU cores): (its recipe's network_g, the checkpoint that training writes)."""
    recipe = load_yaml(SWINIR_FP_RECIPE)
    return recipe['network_g'], osp.join(REPO, 'experiments', recipe['name'], 'models', 'net_g_latest.pth')


def proxy_network():
    """network_g of the demo FP recipe (EDSR 32 features x 8 blocks, x4): the proxy model."""
    return load_yaml(DEMO_FP_RECIPE)['network_g']


def demo_data():
    """Prepared demo data set (made on first use, about 10 s)."""
    prepare_demo(DEMO_DATA, log=lambda *a: None)
    return demo_paths(DEMO_DATA)


def variant_options(variant, network=None, batch=8, gt_size=192, num_gpu=0, total_iter=100, seed=10,
                    quant_bits=None, calib_batches=2, name=None):
    """A complete, parsed-looking BasicSR option dict for ``variant`` ('FP' or a PRESETS key) on the demo data.

    network (dict | None): FP architecture keys to use instead of the preset's (EDSR-baseline); quant_bits (int |
    None): w_bit = a_bit override.
    """
    paths = demo_data()
    base = load_yaml(PRESETS['QAT' if variant == 'FP' else variant])
    opt = copy.deepcopy(base)
    net = opt['network_g']
    if network:
        net.update({k: v for k, v in network.items() if k != 'type'})
    if variant == 'FP':
        opt['model_type'] = 'SRModel'
        net['type'] = 'EDSR'
        for key in ('w_bit', 'a_bit', 'weight_clip', 'scope', 'outer_bit', 'offsets'):
            net.pop(key, None)
        for key in ('odm_opt', 'cooperation', 'quant_lr_mul', 'calibration', 'max_skipped_steps'):
            opt['train'].pop(key, None)
    elif quant_bits:
        net['w_bit'] = net['a_bit'] = int(quant_bits)
    opt['name'] = name or f'bench_{variant.replace(" ", "_")}'
    opt['num_gpu'] = num_gpu
    opt['manual_seed'] = seed
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    train = opt['datasets']['train']
    train.update(dataroot_gt=paths['train_gt'], dataroot_lq=paths['train_lq'], batch_size_per_gpu=batch,
                 gt_size=gt_size, num_worker_per_gpu=0, dataset_enlarge_ratio=1, phase='train', scale=opt['scale'])
    opt['datasets']['val'].update(dataroot_gt=paths['val_gt'], dataroot_lq=paths['val_lq'], phase='val',
                                  scale=opt['scale'])
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}
    opt['train']['total_iter'] = total_iter
    if 'calibration' in opt['train']:
        opt['train']['calibration']['num_batches'] = calib_batches
    return opt


def fixed_batch(opt, seed=0):
    """One training batch {'lq', 'gt'} from the demo data (BasicSR's PairedImageDataset, fixed seed)."""
    import random

    from basicsr.data import build_dataset
    random.seed(seed)
    dataset = build_dataset(dict(opt['datasets']['train']))
    items = [dataset[i] for i in range(opt['datasets']['train']['batch_size_per_gpu'])]
    return {k: torch.stack([it[k] for it in items]) for k in ('lq', 'gt')}


class PeakRSS:
    """Peak resident memory of this process, sampled every 2 ms by a thread, relative to the value at start (MiB)."""

    def __init__(self):
        self._page = os.sysconf('SC_PAGE_SIZE')

    def _rss(self):
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mib(self):
        return (self.peak - self.start) / 2**20


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_time(fn, iters, warmup, device):
    """Median wall time (s) of ``fn()`` over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def machine_description(device):
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)} (torch {torch.__version__})'
    return f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads (torch {torch.__version__})'


def onnx_session_with_head_output(path):
    """An onnxruntime CPU session of the ONNX model at ``path`` with its first Conv's output (the FP head conv) as a
    second graph output, so that PyTorch can be fed what onnxruntime's head computed."""
    import onnx
    import onnxruntime as ort
    model = onnx.load(path)
    head = next(node for node in model.graph.node if node.op_type == 'Conv').output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(head, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])


def edsr_after_head(net, feat):
    """An EDSR (ODMEDSR, or EDSR quantized by ODMQuant) from its head conv's output ``feat`` (N, C, H, W): body,
    global residual, upsampler, tail, back to [0, 1] images (N, 3, sH, sW)."""
    return net.conv_last(net.upsample(net.conv_after_body(net.body(feat)) + feat)) / net.img_range + net.mean


def time_interleaved(sessions, x, runs, warmup):
    """Median seconds of each ONNX session (``run(None, {'lr': array})``: onnxruntime or OpenVINO) on the LR tensor
    ``x``, all in this process, run round-robin: ``warmup`` rounds, then ``runs`` timed ones."""
    times = [[] for _ in sessions]
    for i in range(warmup + runs):
        for k, sess in enumerate(sessions):
            started = time.perf_counter()
            sess.run(None, {'lr': x.numpy()})
            if i >= warmup:
                times[k].append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def markdown_table(header, rows):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def write_json(path, payload):
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(payload, f, indent=2)

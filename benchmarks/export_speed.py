"""onnxruntime CPU latency of FP32 vs the exact and the integer ONNX export, and the integer export's fidelity.

Latency (part 1). Each network is exported as FP32 ONNX and, at w8a8 and w4a4, in both modes of
``basicsr export --format onnx``: ``exact`` (the reference QDQ graph) and ``integer`` (the default: QLinearConv).
    EDSR body         EDSR-baseline x4 (64 features, 16 blocks), the paper's body scope, ODM v2's quantizer (wcc)
    EDSR all/8        the same with scope: all and outer_bit: 8 (head, upsampler and tail at 8 bits)
    EDSR body v1      the body scope with ODM v1's calibrated distribution offsets (top 25% of layers)
    MSRResNet body    MSRResNet x4 (64 features, 16 blocks), body scope, wcc
Weights are random (latency does not depend on their values); every quantized network is calibrated on 8 photo
crops. Input: chelsea, bicubic x4, 80x120 LR (320x480 output), batch 1. onnxruntime CPUExecutionProvider, all graph
optimizations, --threads intra-op threads. All models of one network are timed in one process, interleaved
round-robin (--warmup runs, then --runs), and compared with that network's FP32 model; the medians are reported.

Fidelity (part 2). The demo's trained FP EDSR (32 features x 8 blocks, x4, shipped in odm_basicsr/pretrained/),
quantized by ODMEDSR (body scope, wcc), calibrated (method auto) on 8 demo training batches, at w8a8, w4a4 and
w2a2, with the paper's free grids and built with ``integer_zero_point: true`` (integer grids, output requantizers,
int32 bias, int8 weight grid at 8 bits: what a network trained with it computes). Fidelity: PSNR (RGB, 0-1) of
onnxruntime's output against the PyTorch fake-quant output, mean over the 3 held-out demo photos; and PSNR vs HR
(Y, border 4) of the PyTorch network and of the integer ONNX graph: what the integer grid costs before any fine-tuning, and whether the
requantization's code flips (fidelity) cost quality. In eval, a network built with integer_zero_point computes its
quantized layers as the integer kernels do (``integer_kernel_output``); the integer graph is also compared with its
fake-quant forward (``set_integer_kernel_eval(net, False)``, training's arithmetic), per photo.

    python benchmarks/export_speed.py [--runs 15] [--warmup 3] [--threads 2]
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch

from common import REPO, demo_data, markdown_table, write_json

from basicsr.archs import build_network  # noqa: E402  (after common: odm_basicsr registers its archs first)
from basicsr.data import build_dataset  # noqa: E402
from basicsr.metrics import calculate_psnr  # noqa: E402
from basicsr.utils import tensor2img  # noqa: E402
from odm_basicsr.data.calibration import calibration_batches as demo_calibration_batches  # noqa: E402
from odm_basicsr.data.photos import bicubic_downscale, load_photo  # noqa: E402
from odm_basicsr.quant import calibrate, quantized_layers, set_integer_kernel_eval  # noqa: E402
from odm_basicsr.quant import export as qexport  # noqa: E402
from odm_basicsr.quant import export_integer as qint  # noqa: E402
from odm_basicsr.utils.safe_load import load_network_state  # noqa: E402

EDSR_BASELINE = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4)
MSRRESNET = dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4)
NETWORKS = {  # name: (FP network, quantized twin, its extra keys)
    'EDSR body': (EDSR_BASELINE, 'ODMEDSR', dict(weight_clip='wcc')),
    'EDSR all/8': (EDSR_BASELINE, 'ODMEDSR', dict(weight_clip='wcc', scope='all', outer_bit=8)),
    'EDSR body v1': (EDSR_BASELINE, 'ODMEDSR', dict(offsets='auto')),
    'MSRResNet body': (MSRRESNET, 'ODMMSRResNet', dict(weight_clip='wcc')),
}
LR_SIZE = (80, 120)
DEMO_EDSR = dict(type='ODMEDSR', num_in_ch=3, num_out_ch=3, num_feat=32, num_block=8, upscale=4, res_scale=1,
                 img_range=255., rgb_mean=[0.4488, 0.4371, 0.4040], weight_clip='wcc')
DEMO_CHECKPOINT = osp.join(REPO, 'odm_basicsr', 'pretrained', 'EDSR_demo_x4_f32b8_FP.pth')


def cpu_description():
    """CPU model name and the ISA flags that decide onnxruntime's integer kernels."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name') and name in ('', 'x86_64'):
                    name = line.split(':', 1)[1].strip()
                if line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8') if f in flags]
    return dict(cpu=name, isa=isa, cores=os.cpu_count())


def to_tensor(img):
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255)[None]


def photo_batches():
    crops = []
    for name in ('astronaut', 'coffee', 'rocket', 'motorcycle'):
        lr = to_tensor(bicubic_downscale(load_photo(name)[:384, :384], 4))
        crops += [lr[..., y:y + 48, x:x + 48] for y, x in ((0, 0), (48, 48))]
    return [torch.cat(crops[i:i + 2]) for i in range(0, 8, 2)]


def build_quantized(network, bits, batches):
    fp, twin, extra = NETWORKS[network]
    torch.manual_seed(0)
    net = build_network(dict(fp, type=twin, w_bit=bits, a_bit=bits, **extra)).eval()
    offsets = extra.get('offsets', 'none') != 'none'
    calibrate(net, batches, offset_mode='auto' if offsets else 'none', offset_top_k=0.25, progress=False)
    return net


def session(path, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])


def psnr(a, b):
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64))**2))
    return float('inf') if mse == 0 else 10 * np.log10(1.0 / mse)


def latency_group(fp_name, networks, x, batches, args, tmp):
    """Export, check and time FP32 + every (network, bits, mode) sharing one FP arch; interleaved timing."""
    fp_cfg = NETWORKS[networks[0]][0]
    torch.manual_seed(0)
    fp = build_network(dict(fp_cfg)).eval()
    path = osp.join(tmp, f'{fp_name}_fp32.onnx')
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(fp, (x, ), path, dynamo=False, opset_version=13, input_names=['lr'], output_names=['sr'])
    models = [(dict(network=fp_name, bits='FP32', mode='-'), session(path, args.threads))]
    for network in networks:
        for bits in (8, 4):
            net = build_quantized(network, bits, batches)
            with torch.no_grad():
                want = net(x).numpy()
            for mode in ('exact', 'integer'):
                path = osp.join(tmp, f'{network}_{bits}_{mode}.onnx'.replace(' ', '_').replace('/', '_'))
                if mode == 'exact':
                    info = qexport.export_onnx(net, x, path)
                else:
                    info = qint.export_onnx_integer(net, x, path, batches)
                kernels = qint.onnx_integer_ops(path, path + '.optimized.onnx')
                sess = session(path, args.threads)
                row = dict(network=network, bits=f'w{bits}a{bits}', mode=mode, onnx_bytes=info['bytes'],
                           quantized_layers=len(quantized_layers(net)), integer_kernels=kernels['integer_kernels'],
                           float_quantized_convs=kernels['float_convs'],
                           fidelity_db=round(psnr(sess.run(None, {'lr': x.numpy()})[0], want), 1),
                           chained=info.get('chained'), requantized=info.get('requantized'))
                models.append((row, sess))
    times = [[] for _ in models]
    for i in range(args.warmup + args.runs):
        for k, (_, sess) in enumerate(models):
            t0 = time.perf_counter()
            sess.run(None, {'lr': x.numpy()})
            if i >= args.warmup:
                times[k].append(time.perf_counter() - t0)
    fp_ms = statistics.median(times[0]) * 1e3
    rows = []
    for (row, _), t in zip(models, times):
        row['latency_ms'] = round(statistics.median(t) * 1e3, 1)
        row['latency_spread_ms'] = [round(min(t) * 1e3, 1), round(max(t) * 1e3, 1)]
        row['vs_fp32'] = round(statistics.median(t) * 1e3 / fp_ms, 3)
        rows.append(row)
    return rows


def fidelity_part(bits_list=(8, 4, 2)):
    """The trained demo EDSR: integer-export fidelity and PSNR vs HR, free grids vs integer zero points."""
    import onnxruntime  # noqa: F401
    paths = demo_data()
    dataset = build_dataset(dict(name='heldout', type='PairedImageDataset', dataroot_gt=paths['val_gt'],
                                 dataroot_lq=paths['val_lq'], io_backend={'type': 'disk'}, phase='val', scale=4))
    images = [(dataset[i]['lq'][None], dataset[i]['gt'][None]) for i in range(len(dataset))]
    train = dict(name='cal', type='PairedImageDataset', dataroot_gt=paths['train_gt'], dataroot_lq=paths['train_lq'],
                 io_backend={'type': 'lmdb'}, gt_size=96, use_hflip=False, use_rot=False, batch_size_per_gpu=4)
    batches = demo_calibration_batches(dict(scale=4, manual_seed=0, datasets=dict(train=train)), 8, 'cpu')
    state = load_network_state(DEMO_CHECKPOINT, 'params')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in bits_list:
            for grid in ('free', 'integer zero point'):
                net = build_network(dict(DEMO_EDSR, w_bit=bits, a_bit=bits,
                                         integer_zero_point=grid != 'free')).eval()
                net.load_state_dict(state, strict=False)
                calibrate(net, batches, progress=False)
                path = osp.join(tmp, f'demo_{bits}.onnx')
                qint.export_onnx_integer(net, images[0][0], path, [b for b in batches])
                exact_path = osp.join(tmp, f'demo_{bits}_exact.onnx')
                qexport.export_onnx(net, images[0][0], exact_path)
                sess, exact = session(path, 2), session(exact_path, 2)
                fake_quant = set_integer_kernel_eval(copy.deepcopy(net), False)  # training's arithmetic, in eval
                fid, fid_fake, fid_exact, hr, hr_onnx = [], [], [], [], []
                for lq, gt in images:
                    with torch.no_grad():
                        want, want_fake = net(lq), fake_quant(lq)
                    got = sess.run(None, {'lr': lq.numpy()})[0]
                    fid.append(psnr(got, want.numpy()))
                    fid_fake.append(psnr(got, want_fake.numpy()))
                    hr_onnx.append(calculate_psnr(tensor2img(torch.from_numpy(got)), tensor2img(gt), 4,
                                                  test_y_channel=True))
                    fid_exact.append(psnr(exact.run(None, {'lr': lq.numpy()})[0], want.numpy()))
                    hr.append(calculate_psnr(tensor2img(want), tensor2img(gt), 4, test_y_channel=True))
                rows.append(dict(bits=f'w{bits}a{bits}', grid=grid, integer_fidelity_db=round(statistics.mean(fid), 1),
                                 integer_fidelity_min_db=round(min(fid), 1),
                                 integer_vs_fake_quant_db=[round(v, 1) for v in fid_fake],
                                 exact_fidelity_db=round(statistics.mean(fid_exact), 1),
                                 torch_psnr_vs_hr=round(statistics.mean(hr), 3),
                                 integer_onnx_psnr_vs_hr=round(statistics.mean(hr_onnx), 3)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=15)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--skip-fidelity', action='store_true')
    parser.add_argument('--skip-latency', action='store_true', help='keep the latency part of an existing --json file')
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'export_speed.json'))
    args = parser.parse_args()
    import onnxruntime as ort
    torch.set_num_threads(args.threads)
    batches = photo_batches()
    h, w = LR_SIZE
    x = to_tensor(bicubic_downscale(load_photo('chelsea')[:4 * h, :4 * w], 4))
    machine = cpu_description()
    results = []
    if args.skip_latency:
        with open(args.json) as f:
            previous = json.load(f)
        results, machine, table = previous['latency'], previous['setting'], previous['table']
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results += latency_group('EDSR-baseline', ['EDSR body', 'EDSR all/8', 'EDSR body v1'], x, batches, args,
                                     tmp)
            results += latency_group('MSRResNet', ['MSRResNet body'], x, batches, args, tmp)
    if not args.skip_latency:
        rows = [[r['network'], r['bits'], r['mode'], f'{r["latency_ms"]:.1f}', f'{r["vs_fp32"]:.2f}x',
                 f'{r["latency_spread_ms"][0]:.0f}-{r["latency_spread_ms"][1]:.0f}',
                 '-' if r['mode'] == '-' else f'{r["integer_kernels"]} / {r["quantized_layers"]}',
                 '-' if r['mode'] == '-' else r['fidelity_db']] for r in results]
        table = markdown_table(['network', 'bits', 'ONNX mode', 'median ms', 'vs FP32', 'min-max ms',
                                'integer kernels / quantized layers', 'ORT vs torch (dB)'], rows)
    print(f'{machine["cpu"]} ({", ".join(machine["isa"])}), onnxruntime {ort.__version__}, {args.threads} threads, '
          f'LR {h}x{w}, median of {args.runs} runs after {args.warmup} warm-up runs')
    print(table)
    fidelity, fidelity_table = [], ''
    if not args.skip_fidelity:
        fidelity = fidelity_part()
        fidelity_table = markdown_table(
            ['bits', 'activation grid', 'integer ONNX vs torch (dB, mean / min)',
             'integer ONNX vs the fake-quant forward, per photo (dB)', 'exact ONNX vs torch (dB)',
             'PSNR vs HR (Y): torch / integer ONNX'],
            [[r['bits'], r['grid'], f'{r["integer_fidelity_db"]} / {r["integer_fidelity_min_db"]}',
              ' / '.join(str(v) for v in r['integer_vs_fake_quant_db']), r['exact_fidelity_db'],
              f'{r["torch_psnr_vs_hr"]:.3f} / {r["integer_onnx_psnr_vs_hr"]:.3f}']
             for r in fidelity])
        print('\nTrained demo EDSR (32x8, x4), calibrated, 3 held-out photos:')
        print(fidelity_table)
    setting = previous['setting'] if args.skip_latency else dict(
        lr_size=list(LR_SIZE), threads=args.threads, runs=args.runs, warmup=args.warmup, onnxruntime=ort.__version__,
        torch=torch.__version__, load_average=os.getloadavg(), **machine)
    write_json(args.json, dict(setting=setting,
                               latency=results, fidelity=fidelity, table=table, fidelity_table=fidelity_table))


if __name__ == '__main__':
    main()

"""The same integer ONNX file through two CPU runtimes: onnxruntime and OpenVINO's CPU plugin (``--runtime openvino``).

Networks, each quantized as ``basicsr calibrate`` does with ``integer_zero_point: true`` (the deployment setting:
the PyTorch network computes the integer graph's roundings): ODMQuant, scope all, per-channel weights, the default
calibration (``auto``, no refinement) on 16 LR crops of 24x24 from the demo LMDB (4 batches of 4, seed 0), at w8a8
and w4a4, then ``export_onnx_integer`` (what ``basicsr export --format onnx`` writes):
- the demo EDSR, RRDBNet and SRVGGNetCompact (``odm_basicsr/pretrained``; small networks trained on the demo
  photos: a SMALL PROXY for their latency);
- with ``--weights DIR``, the RealSR DF2K x4 RRDBNet (23 blocks, trained by others; the shared tools'
  ``third_party_weights.py`` fetches it).

Measured on centre crops (64x64 LR) of the 3 held-out demo photos, not used for calibration:
- parity: PSNR (RGB, 0-1, border 4) of each runtime's output against the PyTorch network's;
- fidelity: PSNR of each runtime's output against the FP network;
- latency: one 64x64 LR input, ``--threads`` threads, the FP32 ONNX graph and the integer one in both runtimes, all
  timed in one process, interleaved; medians, and each runtime's ratio to its own FP32;
- what each runtime runs: onnxruntime's optimized graph (integer kernels, ops on uint8, float ops) and OpenVINO's
  executed layers (int8 kernels, f32 ones), with the f32 layers' share of OpenVINO's profiled time.

Run:  .venv/bin/python benchmarks/export_runtimes.py [--weights DIR] [--runs 7] [--threads 2] [--json PATH]
"""
import argparse
import os.path as osp
import sys
import tempfile
import time
import warnings

import onnxruntime
import openvino
import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import REPO, demo_data, markdown_table, time_interleaved, write_json  # noqa: E402

from basicsr.archs import build_network  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402

from calibration_depth import REALSR, SCALE, data_options, heldout_crops  # noqa: E402
from export_speed import cpu_description, session  # noqa: E402
from odm_basicsr.data.calibration import calibration_batches  # noqa: E402
from odm_basicsr.quant import calibrate  # noqa: E402
from odm_basicsr.quant import export_integer as qint  # noqa: E402
from odm_basicsr.quant import export_openvino as qov  # noqa: E402
from odm_basicsr.tools.cli_io import fidelity_psnr  # noqa: E402
from odm_basicsr.utils.safe_load import load_network_state  # noqa: E402
from ptq_fidelity import ARCHS, PRETRAINED  # noqa: E402

CROP = 64


def networks(weights):
    """{name: (FP arch options, state-dict path)}."""
    nets = {f'{arch} demo': (ARCHS[arch][0], osp.join(PRETRAINED, ARCHS[arch][1]))
            for arch in ('EDSR', 'RRDBNet', 'SRVGGNetCompact')}
    if weights:
        nets['RealSR DF2K'] = (dict(type='RRDBNet', num_block=23, **REALSR), osp.join(weights, 'realsr_df2k_x4.pth'))
    return nets


def mean(values):
    return round(sum(values) / len(values), 2)


def fp32_onnx(fp, x, path):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(fp, (x, ), path, dynamo=False, opset_version=13, input_names=['lr'], output_names=['sr'],
                          dynamic_axes={'lr': {0: 'n', 2: 'h', 3: 'w'}, 'sr': {0: 'n', 2: 'h', 3: 'w'}})
    return path


def case(name, arch, fp, bits, batches, crops, tmp, threads):
    """Calibrate, export and check one network in both runtimes; returns (row, onnx path)."""
    net = ARCH_REGISTRY.get('ODMQuant')(arch=dict(arch), w_bit=bits, a_bit=bits, scope='all',
                                        weight_granularity='channel', integer_zero_point=True)
    net.load_state_dict(fp.state_dict(), strict=True)
    started = time.perf_counter()
    calibrate(net.eval(), batches, progress=False)
    calibrate_s = time.perf_counter() - started
    path = osp.join(tmp, f'{name.replace(" ", "_")}_w{bits}.onnx')
    info = qint.export_onnx_integer(net, crops[0], path, batches)
    kernels = qint.onnx_integer_ops(path, path + '.optimized.onnx')
    runtimes = {'onnxruntime': session(path, threads), 'openvino': qov.OpenVINOSession(path, threads, profile=True)}
    runtimes['openvino'].run(None, {'lr': crops[0].numpy()})  # the run whose executed layers are counted
    row = dict(network=name, bits=f'w{bits}a{bits}', calibrate_s=round(calibrate_s, 1), onnx_bytes=info['bytes'],
               onnxruntime_nodes=qint.node_summary(kernels['ops'], kernels['uint8_ops']),
               openvino_layers=qov.layer_summary(qov.executed_layers(runtimes['openvino'])))
    with torch.no_grad():
        wants = [net(x) for x in crops]
        references = [fp(x) for x in crops]
    row['fidelity_pytorch_db'] = [round(fidelity_psnr(w, r, SCALE), 2) for w, r in zip(wants, references)]
    for runtime, sess in runtimes.items():
        gots = [torch.from_numpy(sess.run(None, {'lr': x.numpy()})[0]) for x in crops]
        row[f'parity_{runtime}_db'] = [round(fidelity_psnr(g, w, SCALE), 2) for g, w in zip(gots, wants)]
        row[f'fidelity_{runtime}_db'] = [round(fidelity_psnr(g, r, SCALE), 2) for g, r in zip(gots, references)]
    shares = qov.operator_time_shares(path, {'lr': crops[0].numpy()}, runs=3, threads=threads)
    row['openvino_f32_share'] = round(sum(s for op, s, _, _ in shares if op.endswith(' f32')), 3)
    row['openvino_time_shares'] = [[op, round(s, 4), round(ms, 2), n] for op, s, ms, n in shares]
    print(f'{name} w{bits}a{bits}: parity onnxruntime {row["parity_onnxruntime_db"]}, openvino '
          f'{row["parity_openvino_db"]}; {calibrate_s:.0f} s calibration', flush=True)
    return row, path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--weights', help='folder with the RealSR state dicts (third_party_weights.py)')
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'export_runtimes.json'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = demo_data()
    batches = calibration_batches(data_options(paths, 24 * SCALE, 4, 0), 4, torch.device('cpu'))
    crops = heldout_crops(paths, CROP)
    rows, fp_ms = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (arch, checkpoint) in networks(args.weights).items():
            fp = build_network(dict(arch)).eval()
            fp.load_state_dict(load_network_state(checkpoint), strict=True)
            fp_path = fp32_onnx(fp, crops[0], osp.join(tmp, f'{name.replace(" ", "_")}_fp32.onnx'))
            cases = [case(name, arch, fp, bits, batches, crops, tmp, args.threads) for bits in (8, 4)]
            sessions = [session(fp_path, args.threads), qov.OpenVINOSession(fp_path, args.threads)]
            for _, path in cases:
                sessions += [session(path, args.threads), qov.OpenVINOSession(path, args.threads)]
            seconds = time_interleaved(sessions, crops[0], args.runs, args.warmup)
            fp_ms[name] = dict(onnxruntime=round(seconds[0] * 1e3, 2), openvino=round(seconds[1] * 1e3, 2))
            for k, (row, _) in enumerate(cases):
                ort_s, ov_s = seconds[2 + 2 * k], seconds[3 + 2 * k]
                row.update(onnxruntime_ms=round(ort_s * 1e3, 2), openvino_ms=round(ov_s * 1e3, 2),
                           onnxruntime_vs_fp32=round(ort_s / seconds[0], 3),
                           openvino_vs_fp32=round(ov_s / seconds[1], 3), fp32_ms=fp_ms[name])
                rows.append(row)
    table = markdown_table(
        ['network', 'bits', 'parity onnxruntime / OpenVINO (dB, min)',
         'fidelity PyTorch / onnxruntime / OpenVINO (dB)', 'FP32 ms onnxruntime / OpenVINO',
         'integer vs FP32: onnxruntime / OpenVINO', 'OpenVINO time in f32'],
        [[r['network'], r['bits'], f'{min(r["parity_onnxruntime_db"])} / {min(r["parity_openvino_db"])}',
          f'{mean(r["fidelity_pytorch_db"])} / {mean(r["fidelity_onnxruntime_db"])} / '
          f'{mean(r["fidelity_openvino_db"])}',
          f'{r["fp32_ms"]["onnxruntime"]} / {r["fp32_ms"]["openvino"]}',
          f'{r["onnxruntime_vs_fp32"]} / {r["openvino_vs_fp32"]}', f'{r["openvino_f32_share"]:.0%}'] for r in rows])
    print(f'{CROP}x{CROP} LR, {args.threads} threads\n{table}')
    for r in rows:
        print(f'{r["network"]} {r["bits"]}\n  onnxruntime: {r["onnxruntime_nodes"]}\n'
              f'  openvino: {r["openvino_layers"]}')
        print('  openvino time: ' + ', '.join(f'{op} {share:.1%}' for op, share, _, _ in r['openvino_time_shares'][:8]))
    command = 'python benchmarks/export_runtimes.py' + (' --weights DIR' if args.weights else '')
    write_json(args.json, dict(machine=cpu_description(), threads=args.threads, lr_size=[CROP, CROP], runs=args.runs,
                               onnxruntime=onnxruntime.__version__, openvino=openvino.__version__, rows=rows,
                               command=f'{command} --runs {args.runs} --threads {args.threads}'))


if __name__ == '__main__':
    main()

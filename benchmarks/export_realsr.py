"""Integer ONNX export of networks trained by others: the RealSR x4 RRDBNets (DF2K and DF2K_JPEG; 23 blocks, 16.7M
parameters, GAN-trained; the shared tools' ``third_party_weights.py`` fetches them).

Each network is quantized as ``basicsr calibrate`` does it for the RealSR presets: ODMQuant, scope all, per-channel
weights, the default calibration (``auto``, no refinement here) on 16 LR crops of 24x24 from the demo LMDB (4
batches of 4, seed 0). Then ``export_onnx_integer`` (what ``basicsr export --format onnx`` writes), at w8a8 and w4a4:
- ``integer_zero_point: true``: the network computes the integer graph's roundings (integer grids, 8-bit output
  requantizers, int32 bias), so what it reports is what the ONNX file computes;
- free grids (the default of the option files), DF2K only: the rows a user gets without it.

Measured on centre crops (64x64 LR) of the 3 held-out demo photos, not used for calibration:
- parity: PSNR (RGB, 0-1, border 4) of onnxruntime's output against the PyTorch network's;
- fidelity: PSNR of the PyTorch network, and of the ONNX file, against the FP network;
- latency: onnxruntime CPU, all graph optimizations, ``--threads`` threads, one 64x64 LR input, every model and the
  FP32 ONNX graph timed in one process, interleaved; medians, and the ratio to FP32;
- the optimized graph's node counts (integer kernels and ops on uint8 codes, Q/DQ boundaries, float ops), and
  onnxruntime's profile (each op type's share of the summed kernel time, 3 runs): the QLinearConv kernels' own
  time against FP32 is the floor of a graph made only of integer convolutions.

Run:  .venv/bin/python benchmarks/export_realsr.py --weights DIR [--runs 7] [--threads 2] [--json PATH]
"""
import argparse
import os.path as osp
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import REPO, demo_data, markdown_table, time_interleaved, write_json  # noqa: E402

from basicsr.archs.rrdbnet_arch import RRDBNet  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402

from calibration_depth import REALSR, SCALE, data_options, heldout_crops  # noqa: E402
from export_speed import cpu_description, session  # noqa: E402
from odm_basicsr.data.calibration import calibration_batches  # noqa: E402
from odm_basicsr.quant import calibrate  # noqa: E402
from odm_basicsr.quant import export_integer as qint  # noqa: E402
from odm_basicsr.tools.cli_io import fidelity_psnr  # noqa: E402
from odm_basicsr.utils.safe_load import load_network_state  # noqa: E402

NETWORKS = {'RealSR DF2K': 'realsr_df2k_x4.pth', 'RealSR DF2K_JPEG': 'realsr_df2k_jpeg_x4.pth'}
CROP = 64


def mean(values):
    return round(sum(values) / len(values), 2)


def case(name, state, bits, integer_zero_point, batches, crops, tmp):
    """Calibrate, export and measure one network; returns (row, onnxruntime session)."""
    fp = RRDBNet(num_block=23, **REALSR).eval()
    fp.load_state_dict(state, strict=True)
    net = ARCH_REGISTRY.get('ODMQuant')(arch=dict(type='RRDBNet', num_block=23, **REALSR), w_bit=bits, a_bit=bits,
                                        scope='all', weight_granularity='channel',
                                        integer_zero_point=integer_zero_point)
    net.load_state_dict(state, strict=True)
    started = time.perf_counter()
    calibrate(net.eval(), batches, progress=False)
    calibrate_s = time.perf_counter() - started
    path = osp.join(tmp, f'{name.replace(" ", "_")}_w{bits}_{integer_zero_point}.onnx')
    started = time.perf_counter()
    info = qint.export_onnx_integer(net, crops[0], path, batches)
    export_s = time.perf_counter() - started
    kernels = qint.onnx_integer_ops(path, path + '.optimized.onnx')
    sess = session(path, 2)
    parity, torch_fidelity, onnx_fidelity = [], [], []
    with torch.no_grad():
        for x in crops:
            want, reference = net(x), fp(x)
            got = torch.from_numpy(sess.run(None, {'lr': x.numpy()})[0])
            parity.append(fidelity_psnr(got, want, SCALE))
            torch_fidelity.append(fidelity_psnr(want, reference, SCALE))
            onnx_fidelity.append(fidelity_psnr(got, reference, SCALE))
    row = dict(network=name, bits=f'w{bits}a{bits}', integer_zero_point=integer_zero_point,
               calibrate_s=round(calibrate_s, 1), export_s=round(export_s, 1), parity_db=[round(p, 2) for p in parity],
               fidelity_pytorch_db=[round(p, 2) for p in torch_fidelity],
               fidelity_onnx_db=[round(p, 2) for p in onnx_fidelity], onnx_bytes=info['bytes'],
               chained=info['chained'], requantized=info['requantized'], ops=kernels['ops'],
               nodes=qint.node_summary(kernels['ops'], kernels['uint8_ops']))
    print(f'{name} w{bits}a{bits} integer_zero_point={integer_zero_point}: parity {row["parity_db"]}, fidelity '
          f'{row["fidelity_pytorch_db"]} (PyTorch) {row["fidelity_onnx_db"]} (ONNX), {calibrate_s:.0f} s calibration',
          flush=True)
    return row, path


def fp32_onnx(state, x, tmp):
    fp = RRDBNet(num_block=23, **REALSR).eval()
    fp.load_state_dict(state, strict=True)
    path = osp.join(tmp, 'realsr_fp32.onnx')
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(fp, (x, ), path, dynamo=False, opset_version=13, input_names=['lr'], output_names=['sr'])
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--weights', required=True, help='folder with the RealSR state dicts (third_party_weights.py)')
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'export_realsr.json'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = demo_data()
    batches = calibration_batches(data_options(paths, 24 * SCALE, 4, 0), 4, torch.device('cpu'))
    crops = heldout_crops(paths, CROP)
    rows, files = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, file in NETWORKS.items():
            state = load_network_state(osp.join(args.weights, file))
            if not files:
                files.append(fp32_onnx(state, crops[0], tmp))
            for bits in (8, 4):
                for integer_zero_point in ((True, False) if name == 'RealSR DF2K' else (True, )):
                    row, path = case(name, state, bits, integer_zero_point, batches, crops, tmp)
                    rows.append(row)
                    files.append(path)
        seconds = time_interleaved([session(p, args.threads) for p in files], crops[0], args.runs, args.warmup)
        for row, path in zip(rows, files[1:]):  # where the time goes, after the timing (the profiler slows runs)
            shares = qint.operator_time_shares(path, {'lr': crops[0].numpy()}, runs=3, threads=args.threads)
            row['time_shares'] = [[op, round(share, 4), round(ms, 2), nodes] for op, share, ms, nodes in shares]
    fp_ms = seconds[0] * 1e3
    for row, s in zip(rows, seconds[1:]):
        row.update(latency_ms=round(s * 1e3, 1), vs_fp32=round(s * 1e3 / fp_ms, 3))
    table = markdown_table(
        ['network', 'bits', 'grids', 'parity to PyTorch (dB)', 'fidelity PyTorch / ONNX (dB)', 'ms', 'vs FP32',
         'calibration (s)'],
        [[r['network'], r['bits'], 'integer zero points' if r['integer_zero_point'] else 'free',
          f'{mean(r["parity_db"])} (min {min(r["parity_db"])})',
          f'{mean(r["fidelity_pytorch_db"])} / {mean(r["fidelity_onnx_db"])}', r['latency_ms'], r['vs_fp32'],
          r['calibrate_s']] for r in rows])
    print(f'FP32 ONNX: {fp_ms:.1f} ms ({CROP}x{CROP} LR)\n{table}')
    for r in rows:
        print(f'{r["network"]} {r["bits"]} {"izp" if r["integer_zero_point"] else "free"}: {r["nodes"]}')
        convs = sum(ms for op, _, ms, _ in r['time_shares'] if op == 'QLinearConv')
        print('  time: ' + ', '.join(f'{op} {share:.1%}' for op, share, _, _ in r['time_shares'][:8])
              + f'; QLinearConv kernels alone {convs:.0f} ms = {convs / fp_ms:.2f}x FP32')
    write_json(args.json, dict(machine=cpu_description(), threads=args.threads, lr_size=[CROP, CROP],
                               fp32_ms=round(fp_ms, 1), runs=args.runs, rows=rows,
                               command=f'python benchmarks/export_realsr.py --weights DIR --runs {args.runs} '
                                       f'--threads {args.threads}'))


if __name__ == '__main__':
    main()

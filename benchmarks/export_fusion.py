"""Would onnxruntime's integer Concat and LeakyReLU make the RealSR RRDBNet's integer graph faster? Timing probes.

``basicsr export`` leaves an RRDBNet's dense-block concatenations and LeakyReLUs in float: each conv output is
requantized to uint8, dequantized, and goes through a float LeakyRelu and a float Concat into the next conv's
QuantizeLinear. onnxruntime has integer kernels for both (QLinearLeakyRelu, QLinearConcat; contrib ops, fused from
``DQ -> op -> Q``). Using them would need extra roundings that the PyTorch network must model. This probe measures
first whether they pay. It rewrites the exported graph (``--onnx`` or exported here):

- ``as exported``: what ``basicsr export`` writes (QLinearConv; LeakyReLU and Concat in float);
- ``+ QLinearLeakyRelu``: a QuantizeLinear -> DequantizeLinear pair after each LeakyRelu (the scale of its input's
  grid), so that onnxruntime fuses ``DQ -> LeakyRelu -> Q``;
- ``+ QLinearConcat``: also one pair on each dense block's input (the float residual sum) for its concats, so that
  every concat input is dequantized and ``DQ... -> Concat -> Q`` fuses. Each piece keeps its own grid, and
  QLinearConcat requantizes it to the concat's output grid;
- ``+ QLinearConcat, one grid``: the same graph with every uint8 activation grid set to one scale and zero point
  (the int32 bias scales follow, so QLinearConv still fuses). Pieces then share their concat's grid and
  QLinearConcat copies them: the best case of a grid shared per concat.

The rewritten graphs compute other numbers than the network (only ``as exported`` is the network): they are TIMING
PROBES. Each is run through onnxruntime's profiler (all optimizations, ``--threads`` threads, ``--runs`` runs after a
warm-up; summed node time per op type) and timed against the FP32 graph in one process, interleaved (median of
``--runs``), in a fresh process (after calibration, the memory-bound Concat ran up to 5x slower in the process that
calibrated). The QLinearConv row of ``as exported`` over the FP32 graph's node time is the integer-conv floor.

The network: the RealSR DF2K x4 RRDBNet (23 blocks, trained by others; the shared tools' ``third_party_weights.py``
fetches it) as the RealSR presets quantize it for deployment (ODMQuant, scope all, per-channel weights,
``integer_zero_point: true``), calibrated by default (``auto``) on 16 LR crops of 24x24 from the demo LMDB.

Run:  .venv/bin/python benchmarks/export_fusion.py --weights DIR [--bits 8] [--onnx F] [--runs 15] [--json PATH]
"""
import argparse
import os.path as osp
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import helper, numpy_helper

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import REPO, demo_data, markdown_table, time_interleaved, write_json  # noqa: E402

from basicsr.archs.rrdbnet_arch import RRDBNet  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402

from calibration_depth import REALSR, SCALE, data_options  # noqa: E402
from export_runtimes import fp32_onnx  # noqa: E402
from export_speed import cpu_description, session  # noqa: E402
from odm_basicsr.data.calibration import calibration_batches  # noqa: E402
from odm_basicsr.quant import calibrate  # noqa: E402
from odm_basicsr.quant import export_integer as qint  # noqa: E402
from odm_basicsr.utils.safe_load import load_network_state  # noqa: E402

CROP = 64
ONE_GRID = (0.05, 128)  # the scale and zero point of every activation grid in the one-grid probe


class GraphEdit:
    """Constant lookup and node insertion over an onnx ModelProto."""

    def __init__(self, model):
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.constants = {n.output[0]: n for n in self.graph.node if n.op_type == 'Constant'}
        self.producers = {o: n for n in self.graph.node for o in n.output}
        self.count = sum(1 for name in self.inits if name.startswith('probe_const_'))  # unique over edits

    def value(self, name):
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        if name in self.constants:
            return numpy_helper.to_array(self.constants[name].attribute[0].t)
        node = self.producers.get(name)
        return self.value(node.input[0]) if node is not None and node.op_type == 'Identity' else None

    def constant(self, array):
        self.count += 1
        name = f'probe_const_{self.count}'
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def qdq_pair(self, tensor, scale, zero_point):
        """(Q, DQ) nodes that round ``tensor`` onto (scale, zero_point); the DQ's output is '<tensor>_dq<n>'."""
        s, z = self.constant(np.array(scale, np.float32)), self.constant(np.array(zero_point, np.uint8))
        codes, out = f'{tensor}_q{self.count}', f'{tensor}_dq{self.count}'
        return [helper.make_node('QuantizeLinear', [tensor, s, z], [codes]),
                helper.make_node('DequantizeLinear', [codes, s, z], [out])]


def insert_after(graph, anchor, nodes):
    index = list(graph.node).index(anchor)
    for k, node in enumerate(nodes):
        graph.node.insert(index + 1 + k, node)


def quantize_leaky_relus(model):
    """A Q -> DQ pair after every LeakyRelu fed by a DequantizeLinear, on that input's scale (zero point scaled by
    the slope, so the negative side fits). Returns the number of pairs."""
    edit = GraphEdit(model)
    pairs = 0
    for node in [n for n in model.graph.node if n.op_type == 'LeakyRelu']:
        dq = edit.producers.get(node.input[0])
        if dq is None or dq.op_type != 'DequantizeLinear':
            continue
        slope = next((a.f for a in node.attribute if a.name == 'alpha'), 0.01)
        scale, zero_point = float(edit.value(dq.input[1])), int(edit.value(dq.input[2]))
        raw = node.output[0] + '_raw'
        out = node.output[0]
        node.output[0] = raw
        q, dq_new = edit.qdq_pair(raw, scale, int(round(slope * zero_point)))
        dq_new.output[0] = out
        insert_after(model.graph, node, [q, dq_new])
        pairs += 1
    return pairs


def quantize_concat_inputs(model):
    """A Q -> DQ pair on ONE_GRID (not the tensor's observed range: the probe times, it does not compute the
    network) on every float Concat input that is not dequantized already, shared by the concats that read it; the
    tensor's other readers keep the float value.
    Returns the number of pairs."""
    edit = GraphEdit(model)
    replaced = {}
    for node in [n for n in model.graph.node if n.op_type == 'Concat']:
        for i, name in enumerate(node.input):
            producer = edit.producers.get(name)
            if producer is None or producer.op_type == 'DequantizeLinear':
                continue
            if name not in replaced:
                pair = edit.qdq_pair(name, *ONE_GRID)
                insert_after(model.graph, producer, pair)
                replaced[name] = pair[1].output[0]
            node.input[i] = replaced[name]
    return len(replaced)


def one_activation_grid(model):
    """Every uint8 QuantizeLinear / DequantizeLinear on ONE_GRID, and each int32 bias's scale on ONE_GRID's scale
    times its weight scale (what QLinearConv's fusion checks). Returns the number of nodes changed."""
    edit = GraphEdit(model)
    scale, zero_point = ONE_GRID
    s, z = edit.constant(np.array(scale, np.float32)), edit.constant(np.array(zero_point, np.uint8))
    changed = 0
    for node in model.graph.node:
        if node.op_type in ('QuantizeLinear', 'DequantizeLinear') and len(node.input) > 2:
            zp = edit.value(node.input[2])
            if zp is not None and zp.dtype == np.uint8 and zp.size == 1:
                node.input[1], node.input[2] = s, z
                changed += 1
    for conv in [n for n in model.graph.node if n.op_type == 'Conv' and len(n.input) > 2]:
        weight_dq, bias_dq = edit.producers.get(conv.input[1]), edit.producers.get(conv.input[2])
        if weight_dq is None or bias_dq is None or bias_dq.op_type != 'DequantizeLinear':
            continue
        bias_dq.input[1] = edit.constant((scale * edit.value(weight_dq.input[1])).astype(np.float32))
    return changed


def variants(path, tmp):
    """{probe name: path} of the rewritten graphs (module docstring)."""
    out = {'as exported': path}
    model = onnx.load(path)
    quantize_leaky_relus(model)
    out['+ QLinearLeakyRelu'] = osp.join(tmp, 'leaky.onnx')
    onnx.save(model, out['+ QLinearLeakyRelu'])
    quantize_concat_inputs(model)
    out['+ QLinearConcat'] = osp.join(tmp, 'concat.onnx')
    onnx.save(model, out['+ QLinearConcat'])
    one_activation_grid(model)
    out['+ QLinearConcat, one grid'] = osp.join(tmp, 'one_grid.onnx')
    onnx.save(model, out['+ QLinearConcat, one grid'])
    return out


def export_graph(args, tmp, fp):
    """Calibrate the RealSR network and write its integer ONNX file in ``tmp``; returns the path."""
    paths = demo_data()
    batches = calibration_batches(data_options(paths, 24 * SCALE, 4, 0), 4, torch.device('cpu'))
    net = ARCH_REGISTRY.get('ODMQuant')(arch=dict(type='RRDBNet', num_block=23, **REALSR), w_bit=args.bits,
                                        a_bit=args.bits, scope='all', weight_granularity='channel',
                                        integer_zero_point=True)
    net.load_state_dict(fp.state_dict(), strict=True)
    started = time.perf_counter()
    calibrate(net.eval(), batches, progress=False)
    path = osp.join(tmp, f'realsr_w{args.bits}a{args.bits}.onnx')
    qint.export_onnx_integer(net, batches[0][:1], path, batches)
    print(f'calibrated and exported in {time.perf_counter() - started:.0f} s', flush=True)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--weights', required=True, help='folder with the RealSR state dicts (third_party_weights.py)')
    parser.add_argument('--bits', type=int, default=8)
    parser.add_argument('--onnx', help='the integer ONNX file of this network, already exported (skips calibration)')
    parser.add_argument('--runs', type=int, default=15)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--exported-here', action='store_true', help=argparse.SUPPRESS)  # the timing process
    parser.add_argument('--json', help='default: benchmarks/results/export_fusion_w<bits>a<bits>.json')
    args = parser.parse_args()
    args.json = args.json or osp.join(REPO, 'benchmarks', 'results', f'export_fusion_w{args.bits}a{args.bits}.json')
    torch.set_num_threads(args.threads)
    fp = RRDBNet(num_block=23, **REALSR).eval()
    fp.load_state_dict(load_network_state(osp.join(args.weights, 'realsr_df2k_x4.pth')), strict=True)
    given = args.onnx and '--exported-here' not in sys.argv
    if not args.onnx:  # the timings run in a fresh process: after calibration, memory-bound ops (Concat) ran up to
        with tempfile.TemporaryDirectory() as tmp:  # 5x slower in this one
            argv = sys.argv[1:] + ['--onnx', export_graph(args, tmp, fp), '--json', args.json, '--exported-here']
            subprocess.run([sys.executable, osp.abspath(__file__)] + argv, check=True)
        return
    x = torch.rand(1, 3, CROP, CROP, generator=torch.Generator().manual_seed(0))
    feed = {'lr': x.numpy()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        probes = variants(args.onnx, tmp)
        paths = dict(FP32=fp32_onnx(fp, x, osp.join(tmp, 'fp32.onnx')), **probes)
        seconds = time_interleaved([session(p, args.threads) for p in paths.values()], x, args.runs, 2)
        for (name, path), wall in zip(paths.items(), seconds):
            shares = qint.operator_time_shares(path, feed, runs=args.runs, threads=args.threads)
            kernels = qint.onnx_integer_ops(path, path + '.optimized.onnx')
            rows.append(dict(graph=name, wall_ms=round(wall * 1e3, 1), node_ms=round(sum(r[2] for r in shares), 1),
                             op_ms={op: round(ms, 2) for op, _, ms, _ in shares},
                             nodes=qint.node_summary(kernels['ops'], kernels['uint8_ops'])))
            print(f'{name}: {rows[-1]["wall_ms"]} ms; {rows[-1]["nodes"]}', flush=True)
    fp_row, base = rows[0], rows[1]
    floor = base['op_ms'].get('QLinearConv', 0.0)

    def others(row):  # the node time outside QLinearConv (float Conv in the FP32 graph)
        return round(row['node_ms'] - row['op_ms'].get('QLinearConv', 0.0), 1)

    for row in rows:
        row.update(wall_vs_fp32=round(row['wall_ms'] / fp_row['wall_ms'], 3),
                   node_vs_fp32=round(row['node_ms'] / fp_row['node_ms'], 3), outside_qlinearconv_ms=others(row))
    shown = ('QLinearConcat', 'Concat', 'QLinearLeakyRelu', 'LeakyRelu', 'QuantizeLinear', 'DequantizeLinear')
    table = markdown_table(
        ['graph', 'wall ms (vs FP32)', 'node ms (vs FP32)', 'outside QLinearConv, ms'] + [f'{op} ms' for op in shown],
        [[r['graph'], f'{r["wall_ms"]} ({r["wall_vs_fp32"]}x)', f'{r["node_ms"]} ({r["node_vs_fp32"]}x)',
          r['outside_qlinearconv_ms'] if r is not fp_row else '-'] + [r['op_ms'].get(op, '-') for op in shown]
         for r in rows])
    floor_ratio = round(floor / fp_row['node_ms'], 3)
    print(f'RealSR DF2K w{args.bits}a{args.bits}, {CROP}x{CROP} LR, {args.threads} threads, onnxruntime '
          f'{onnxruntime.__version__}\n{table}\nfloor (QLinearConv node time over FP32 node time): {floor_ratio}x')
    write_json(args.json, dict(machine=cpu_description(), threads=args.threads, lr_size=[CROP, CROP], runs=args.runs,
                               bits=args.bits, onnxruntime=onnxruntime.__version__, floor_vs_fp32=floor_ratio,
                               rows=rows, command=f'python benchmarks/export_fusion.py --weights DIR --bits {args.bits} '
                               f'--runs {args.runs} --threads {args.threads}' + (' --onnx F' if given else ''),
                               onnx=args.onnx if given else 'exported by this script'))


if __name__ == '__main__':
    main()

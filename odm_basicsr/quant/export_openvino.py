"""The integer ONNX graph (``export_integer``) through a second runtime: OpenVINO's CPU plugin (the ``openvino``
extra).

OpenVINO reads the same QDQ file. Its low-precision transformations turn each QuantizeLinear -> DequantizeLinear
pair into a FakeQuantize and move the quantization into the ops around it, where the CPU plugin has an int8 kernel
(Convolution, Concat, eltwise ops on u8); what is left runs in f32. Which is which is read from the compiled model
(``executed_layers``): each executed layer's type and the kernel it ran (its ``exec_type``, such as
``brgconv_avx512_I8`` or ``jit_avx512_f32``).

The float ops run at f32 (``INFERENCE_PRECISION_HINT``): on a CPU with bf16 the plugin would otherwise round them to
bf16, and the output would no longer be the integer graph's.
"""
from collections import namedtuple

OPENVINO_EXTRA = 'pip install "odm-basicsr[openvino]"'
INTEGER_PRECISIONS = ('I8', 'U8', 'I32')  # exec_type suffixes of kernels on integer codes


ModelInput = namedtuple('ModelInput', 'name shape')


class OpenVINOSession:
    """A compiled OpenVINO CPU model with onnxruntime's call: ``run(None, {'lr': array})`` -> [output array].

    Args:
        path (str): an ONNX file.
        threads (int): inference threads (0: OpenVINO's default).
        profile (bool): collect per-layer times (``PERF_COUNT``), read by ``operator_time_shares``.
    """

    def __init__(self, path, threads=0, profile=False):
        openvino = require_openvino()
        config = {'INFERENCE_PRECISION_HINT': 'f32', 'PERF_COUNT': bool(profile)}
        if threads:
            config['INFERENCE_NUM_THREADS'] = int(threads)
        self.compiled = openvino.Core().compile_model(path, 'CPU', config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]

    def get_inputs(self):
        """[(name, shape)] of the inputs, as onnxruntime gives them: a static dimension as an int, a dynamic one as a
        string."""
        def dims(port):
            return [d.get_length() if d.is_static else f'dim{i}' for i, d in enumerate(port.get_partial_shape())]
        return [ModelInput(port.get_any_name(), dims(port)) for port in self.compiled.inputs]

    def run(self, output_names, feed):
        """[outputs] of one inference of ``feed`` ({input name: float32 array}); ``output_names`` is ignored (all)."""
        results = self.request.infer({name: feed[name] for name in self.input_names})
        return [results[port].copy() for port in self.compiled.outputs]


def require_openvino():
    """The ``openvino`` module, or an ImportError that names the extra to install."""
    try:
        import openvino
    except ImportError:
        raise ImportError(f'the OpenVINO runtime is not installed: {OPENVINO_EXTRA}') from None
    return openvino


def kernel_precision(exec_type):
    """'int8' for a kernel on integer codes (``brgconv_avx512_I8``, ``ref_I8``, ``jit_uni_I8``), 'f32' otherwise."""
    return 'int8' if exec_type.rsplit('_', 1)[-1].upper() in INTEGER_PRECISIONS else 'f32'


def executed_layers(session):
    """[(layer type, kernel precision, exec_type, microseconds)] of the last inference of a session built with
    ``profile=True``: only the layers that ran (not those fused into a neighbour or optimized out), without the graph's
    input and output."""
    rows = []
    for info in session.request.profiling_info:
        if info.status != info.Status.EXECUTED or info.node_type in ('Parameter', 'Result'):
            continue
        rows.append((info.node_type, kernel_precision(info.exec_type), info.exec_type,
                     info.real_time.total_seconds() * 1e6))
    return rows


def layer_summary(layers):
    """One line of ``executed_layers``: counts per layer type, int8 kernels first, then f32, most frequent first."""
    counts = {}
    for layer_type, precision, _, _ in layers:
        counts[(precision, layer_type)] = counts.get((precision, layer_type), 0) + 1

    def listed(precision):
        kinds = sorted(((n, t) for (p, t), n in counts.items() if p == precision), key=lambda nt: (-nt[0], nt[1]))
        return ', '.join(f'{n} {t}' for n, t in kinds) or 'none'
    return f'int8 kernels: {listed("int8")}; f32: {listed("f32")}'


def operator_time_shares(path, feed, runs=5, threads=0):
    """Where OpenVINO's time goes: per-layer times over ``runs`` inferences of ``feed`` after one warm-up, CPU, f32
    float ops, ``threads`` threads (0: its default).

    Returns:
        list[tuple[str, float, float, int]]: ('<layer type> <precision>', share of the summed layer time, milliseconds
        per run, layers), largest share first (the shape of ``export_integer.operator_time_shares``).
    """
    session = OpenVINOSession(path, threads, profile=True)
    session.run(None, feed)  # warm-up
    total, count = {}, {}
    for _ in range(runs):
        session.run(None, feed)
        for layer_type, precision, _, us in executed_layers(session):
            key = f'{layer_type} {precision}'
            total[key] = total.get(key, 0.0) + us
            count[key] = count.get(key, 0) + 1
    overall = sum(total.values()) or 1.0
    return sorted(((op, us / overall, us / 1e3 / runs, count[op] // runs) for op, us in total.items()),
                  key=lambda row: -row[1])


def time_share_lines(shares):
    """The report of ``operator_time_shares``: one line per layer type and precision, then the f32 layers with their
    summed share (the ops OpenVINO runs de-quantized, named with their cost)."""
    lines = [f'  {op:<26} {share:6.1%} {ms:9.2f} ms  {nodes} layers' for op, share, ms, nodes in shares]
    floats = [(op, share) for op, share, _, _ in shares if op.endswith(' f32')]
    if floats:
        lines.append(f'in f32 (no int8 kernel in OpenVINO): {sum(s for _, s in floats):.1%} of the time: '
                     + ', '.join(f'{op[:-4]} {share:.1%}' for op, share in floats))
    return lines

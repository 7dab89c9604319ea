"""The commands' one language: parsers named after their command, plain-text help, and the flags that several
commands share, each with one spelling (hyphens) and its older spellings as aliases. No heavy imports: ``-h`` is
fast."""
import argparse
import re

DEVICE_HELP = 'where the network runs: auto (CUDA when torch sees it, else CPU), cpu or cuda (default auto)'


def plain(text):
    """``text`` without reST literal markup (``x`` -> x), for help output."""
    return re.sub(r'``([^`]+)``', r'\1', text or '')


def command_parser(name, doc, raw=True):
    """The ArgumentParser of ``basicsr <name>``: its usage line names the command; ``doc`` becomes plain help."""
    return argparse.ArgumentParser(prog=f'basicsr {name}', description=plain(doc),
                                   formatter_class=argparse.RawDescriptionHelpFormatter if raw else
                                   argparse.HelpFormatter)


def add_device(parser):
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto', help=DEVICE_HELP)


RUNTIMES = ('onnxruntime', 'openvino')


def add_runtime(parser, help_text):
    """``--runtime onnxruntime|openvino``: which CPU runtime runs an ONNX file."""
    parser.add_argument('--runtime', choices=RUNTIMES, default='onnxruntime', help=help_text)


def add_out(parser, help_text, required=False):
    """``--out`` (alias ``--output``): where the command writes."""
    parser.add_argument('--out', '--output', dest='out', required=required, help=help_text)


def add_size(parser, default, help_text, type_):
    """``--size HxW`` (alias ``--input-size``): the LR input size."""
    parser.add_argument('--size', '--input-size', dest='size', type=type_, default=default, metavar='HxW',
                        help=help_text)


def add_force_yml(parser):
    parser.add_argument('--force-yml', '--force_yml', dest='force_yml', nargs='+', default=None, metavar='KEY=VALUE',
                        help='BasicSR-style overrides of the option file: key1:key2=value')

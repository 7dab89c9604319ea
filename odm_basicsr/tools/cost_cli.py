"""``basicsr cost -opt <file>``: BitOPs and storage of an option file's network, quantized next to FP."""
import json

from basicsr.archs import build_network

from odm_basicsr.options_check import check_option_file
from odm_basicsr.quant import cost_report, format_cost_report

from .cli_io import parse_size
from .cli_text import add_size, command_parser


def main(argv):
    parser = command_parser('cost', __doc__, raw=False)
    parser.add_argument('-opt', required=True, help='option file (train or test) whose network_g is measured')
    add_size(parser, (180, 320), 'LR input (default 180x320: a 720x1280 output at x4)', parse_size)
    parser.add_argument('--totals-only', action='store_true', help='print only the totals')
    parser.add_argument('--json', help='also write the report to this JSON file')
    args = parser.parse_args(argv)

    opt = check_option_file(args.opt, is_train=False, sections=('network_g',))
    if not isinstance(opt.get('network_g'), dict):
        raise SystemExit(f'error: {args.opt} has no network_g mapping.')
    network_opt = dict(opt['network_g'])
    net = build_network(dict(network_opt))
    inner = network_opt.get('arch') if isinstance(network_opt.get('arch'), dict) else {}  # ODMQuant
    channels = network_opt.get('num_in_ch', inner.get('num_in_ch', inner.get('in_chans', 3)))
    report = cost_report(net, (channels, *args.size))
    print(f'network_g: {network_opt["type"]} ({args.opt})')
    print(format_cost_report(report, per_layer=not args.totals_only))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)

"""The ``basicsr`` / ``odm-basicsr`` command: one dispatcher for every sub-command.

``train`` and ``test`` hand all remaining flags unchanged to BasicSR's own ``train_pipeline`` /
``test_pipeline`` (which parse ``sys.argv``), with the working directory as root: experiments/, results/
and tb_logger/ are created where the command runs.
"""
import os
import sys

from basicsr.test import test_pipeline
from basicsr.train import train_pipeline

from .options_check import check_option_file
from .tools.calibrate_cli import main as calibrate_main
from .tools.compare_cli import main as compare_main
from .tools.convert_checkpoint import main as convert_main
from .tools.cost_cli import main as cost_main
from .tools.demo import main as demo_main
from .tools.export_cli import main as export_main
from .tools.infer_cli import main as infer_main
from .tools.options_cli import main as options_main
from .tools.prepare import main as prepare_main
from .version import __version__

SUBCOMMANDS = {}


def subcommand(name, help_text):
    """Register ``func(argv)`` as sub-command ``name``."""

    def decorator(func):
        SUBCOMMANDS[name] = (help_text, func)
        return func

    return decorator


HYPHEN_SPELLINGS = {'--local-rank': '--local_rank', '--force-yml': '--force_yml', '--auto-resume': '--auto_resume'}
PIPELINE_USAGE = {
    'train': 'usage: {prog} train -opt OPTION_FILE [--launcher {{none,pytorch,slurm}}] [--auto-resume] [--debug] '
             '[--force-yml KEY=VALUE ...]',
    'test': 'usage: {prog} test -opt OPTION_FILE [--launcher {{none,pytorch,slurm}}] [--force-yml KEY=VALUE ...]',
}


def _normalise_basicsr_argv(argv):
    """BasicSR 1.4.2 spells its flags with underscores (--local_rank, --force_yml, --auto_resume); the hyphen
    spellings of the other commands (and torch.distributed.launch's --local-rank) are accepted too."""
    out = []
    for arg in argv:
        flag, sep, value = arg.partition('=')
        out.append(HYPHEN_SPELLINGS.get(flag, flag) + sep + value if flag in HYPHEN_SPELLINGS else arg)
    return out


def _option_path(argv):
    for i, arg in enumerate(argv):
        if arg == '-opt' and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith('-opt='):
            return arg.split('=', 1)[1]
    return None


def _run_pipeline(argv, is_train):
    argv = _normalise_basicsr_argv(argv)
    opt_path = _option_path(argv)
    if opt_path is None:
        usage = PIPELINE_USAGE['train' if is_train else 'test'].format(prog=_prog())
        raise SystemExit(f'{usage}\nerror: -opt OPTION_FILE is required (copy the shipped ones with "{_prog()} '
                         'options").')
    if not os.path.isfile(opt_path):
        raise SystemExit(f'error: option file {opt_path!r} does not exist.' + (
            f' The shipped option files are copied into options/ by "{_prog()} options".'
            if opt_path.replace(os.sep, '/').startswith('options/') else ''))
    check_option_file(opt_path, is_train=is_train, argv=argv)
    sys.argv = [sys.argv[0]] + argv
    root_path = os.getcwd()
    if is_train:
        train_pipeline(root_path)
    else:
        test_pipeline(root_path)


@subcommand('train', 'train with BasicSR\'s train_pipeline (flags: -opt, --launcher, --auto-resume, --debug, ...)')
def _train(argv):
    _run_pipeline(argv, is_train=True)


@subcommand('test', 'test with BasicSR\'s test_pipeline (flags: -opt, --launcher, --force-yml, ...)')
def _test(argv):
    _run_pipeline(argv, is_train=False)


@subcommand('calibrate', 'post-training quantization: calibrate network_g from its FP checkpoint, write '
            'net_g_calibrated.pth, report PSNR/SSIM and fidelity')
def _calibrate(argv):
    calibrate_main(argv)


@subcommand('cost', 'print BitOPs and storage of an option file\'s network, FP vs quantized')
def _cost(argv):
    cost_main(argv)


@subcommand('convert-checkpoint', 'convert an EDSR-PyTorch checkpoint (EDSR-baseline, RDN) to BasicSR layout')
def _convert(argv):
    convert_main(argv)


@subcommand('prepare', 'make the LMDBs / folders the option files name: prepare div2k | benchmark | demo')
def _prepare(argv):
    prepare_main(argv)


@subcommand('options', 'copy the shipped option files (grid, demo, PTQ, distillation, comparison) into a folder')
def _options(argv):
    options_main(argv)


@subcommand('demo', 'the main job end to end on photos scikit-image ships: FP, w4a4, w2a2, ODM vs plain QAT')
def _demo(argv):
    demo_main(argv)


@subcommand('export', 'integer export of a trained quantized network: ONNX QDQ or bit-packed checkpoint')
def _export(argv):
    export_main(argv)


@subcommand('compare', 'FP, quantized and bicubic side by side on test sets: table, crop grid, PSNR-vs-BitOPs plot')
def _compare(argv):
    compare_main(argv)


@subcommand('infer', 'upscale an image or a folder to PNGs with a trained network (test option file) or its ONNX '
            'export, tiled')
def _infer(argv):
    infer_main(argv)


def _print_help(prog):
    lines = [f'usage: {prog} <command> [options]', '', 'ODM quantization-aware training for BasicSR.', '',
             'commands:']
    for name, (help_text, _) in SUBCOMMANDS.items():
        lines.append(f'  {name:<20s}{help_text}')
    lines += ['', f'Run "{prog} <command> -h" for the options of one command.',
              f'Example: {prog} train -opt options/train_ODM_EDSR_x4_w4a4.yml']
    print('\n'.join(lines))


def _prog():
    """The command's name as the user typed it: basicsr or odm-basicsr (python -m odm_basicsr: odm-basicsr)."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'basicsr'
    return 'odm-basicsr' if prog in ('__main__.py', '-m', '-c') else prog


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    if not argv or argv[0] in ('-h', '--help'):
        _print_help(prog)
        return 0 if argv else 2
    if argv[0] in ('-V', '--version'):
        print(f'odm-basicsr {__version__}')
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        close = [n for n in SUBCOMMANDS if n.startswith(name[:2])]
        hint = f' Did you mean: {", ".join(close)}?' if close else ''
        print(f'{prog}: unknown command {name!r}.{hint} Commands: {", ".join(SUBCOMMANDS)}.', file=sys.stderr)
        return 2
    if name in ('train', 'test') and rest and rest[0] in ('-h', '--help'):
        print(PIPELINE_USAGE[name].format(prog=prog) + '\n\nAll flags are BasicSR\'s own, passed through to its '
              f'{name}_pipeline; BasicSR\'s underscore spellings (--auto_resume, --force_yml, --local_rank) work too.')
        return 0
    SUBCOMMANDS[name][1](rest)
    return 0


if __name__ == '__main__':
    sys.exit(main())

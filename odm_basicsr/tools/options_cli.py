"""``basicsr options [DEST]``: copy the option files that ship with the package (the training grid, demo, PTQ,
distillation and comparison files) into DEST (default ``options``), so that the commands of the README work from a
pip install: ``basicsr train -opt options/train_ODM_EDSR_x4_w4a4.yml``. A file already in DEST is kept, unless
``--overwrite``."""
import filecmp
import os
import os.path as osp
import shutil

from odm_basicsr.utils.shipped import option_files_dir

from .cli_text import command_parser


def main(argv=None):
    parser = command_parser('options', __doc__, raw=False)
    parser.add_argument('dest', nargs='?', default='options', help='folder to copy into (default: options)')
    parser.add_argument('--overwrite', action='store_true', help='replace files in DEST that differ')
    args = parser.parse_args(argv)
    source = option_files_dir()
    if source is None:
        raise SystemExit('error: this installation of odm-basicsr has no option files; reinstall it.')
    if osp.exists(args.dest) and not osp.isdir(args.dest):
        raise SystemExit(f'error: {args.dest!r} exists and is not a folder.')
    if osp.abspath(args.dest) == osp.abspath(source):
        print(f'{args.dest} is the shipped folder itself: nothing to copy.')
        return
    copied, same, kept = 0, 0, []
    for root, _, files in sorted(os.walk(source)):
        for name in sorted(f for f in files if f.endswith('.yml')):
            rel = osp.relpath(osp.join(root, name), source)
            target = osp.join(args.dest, rel)
            if osp.exists(target):
                if filecmp.cmp(osp.join(root, name), target, shallow=False):
                    same += 1
                    continue
                if not args.overwrite:
                    kept.append(rel)
                    continue
            os.makedirs(osp.dirname(target), exist_ok=True)
            shutil.copyfile(osp.join(root, name), target)
            copied += 1
    print(f'{copied} option file(s) copied into {args.dest}/' + (f', {same} already there' if same else '') + '.')
    if kept:
        print(f'{len(kept)} file(s) in {args.dest}/ differ from the shipped ones and were kept (--overwrite replaces '
              f'them): {", ".join(kept[:5])}{", ..." if len(kept) > 5 else ""}')
    print(f'Next: basicsr train -opt {osp.join(args.dest, "train_ODM_EDSR_x4_w4a4.yml")} (after "basicsr prepare '
          'div2k"), or "basicsr demo" (no download).')

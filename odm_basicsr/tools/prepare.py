"""``basicsr prepare``: make the LMDBs and folders that the option files name.

  basicsr prepare div2k --root datasets/DIV2K   -> DIV2K_train_HR_sub.lmdb, DIV2K_train_LR_bicubic_X{s}_sub.lmdb
  basicsr prepare benchmark --root datasets     -> <Set>/GTmod12, <Set>/LRbicx{s}

Every step can be re-run or resumed: finished images and complete LMDBs are kept, and new folders and LMDBs
are written under temporary names and renamed when complete. Folders that exist and were not made by an
interrupted run (e.g. downloaded LR images) are checked and used as they are, never overwritten.
"""
import os
import os.path as osp
import shutil
from multiprocessing import Pool

import cv2
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from PIL import Image
from tqdm import tqdm

from odm_basicsr.data.demo import prepare_demo as make_demo
from odm_basicsr.data.photos import bicubic_downscale, mod_crop, tile_origins, write_png

from .cli_text import command_parser, plain

IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
DIV2K_URL = 'https://data.vision.ee.ethz.ch/cvl/DIV2K/'
BENCHMARK_SETS = ('Set5', 'Set14', 'B100', 'Urban100')
SETTINGS_FILE = '.prepare_settings'
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


class PrepareError(Exception):
    """A problem with the input data; ``main`` turns it into a one-paragraph error message."""


# ---------------------------------------------------------------------------------------------------- helpers
def _images(folder):
    """Sorted image file names in ``folder`` (hidden temporary files excluded)."""
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMG_EXTS) and not f.startswith('.'))


def _size(path):
    """(h, w) of an image, from its header."""
    with Image.open(path) as img:
        return img.height, img.width


def _read_rgb(path):
    """uint8 RGB (H, W, 3); grayscale is repeated to 3 channels, alpha dropped."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise PrepareError(f'cannot read image {path}.')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _write_atomic(path, rgb):
    tmp = osp.join(osp.dirname(path), '.tmp_' + osp.basename(path))
    write_png(tmp, rgb)
    os.replace(tmp, path)


def _map(fn, jobs, workers, desc):
    """``[fn(job) for job in jobs]`` (in any order) with a progress bar, in a process pool if workers > 1."""
    if workers > 1 and len(jobs) > 1:
        with Pool(min(workers, len(jobs))) as pool:
            return list(tqdm(pool.imap_unordered(fn, jobs), total=len(jobs), desc=desc, unit='img'))
    return [fn(job) for job in tqdm(jobs, desc=desc, unit='img')]


def _listing(items, limit=8):
    items = list(items)
    more = f' ... ({len(items)} in all)' if len(items) > limit else ''
    return '; '.join(items[:limit]) + more


# ------------------------------------------------------------------------------- derived full-image folders
def _derive(job):
    """Write ``src`` mod-cropped to a multiple of ``mod`` and MATLAB-bicubic downscaled by ``scale`` to ``dst``."""
    src, dst, mod, scale = job
    img = mod_crop(_read_rgb(src), mod)
    _write_atomic(dst, bicubic_downscale(img, scale) if scale > 1 else img)


def _derived_folder(dst, sources, mod, scale, workers, what, extras_ok=False):
    """Make folder ``dst`` of PNGs ``name -> derived from sources[name]`` (see ``_derive``).

    An existing ``dst`` is checked (every name present with the right size; no extra images unless
    ``extras_ok``) and used as is; a mismatch is a PrepareError naming the files. A new one is written into
    ``dst + '.tmp'`` (resumed after an interruption) and renamed when complete.
    """
    expected = {}
    for name, src in sources.items():
        h, w = _size(src)
        expected[name] = ((h - h % mod) // scale, (w - w % mod) // scale)
    if osp.isdir(dst):
        problems = []
        for name, (h, w) in expected.items():
            path = osp.join(dst, name)
            if not osp.isfile(path):
                problems.append(f'{name} is missing')
            elif _size(path) != (h, w):
                got = _size(path)
                problems.append(f'{name} is {got[1]}x{got[0]}, expected {w}x{h}')
        extras = sorted(set(_images(dst)) - set(expected))
        if extras and not extras_ok:
            problems.append(f'unexpected images {_listing(extras, 4)}')
        if problems:
            raise PrepareError(f'{dst} exists but does not match {what}: {_listing(problems)}. It was left '
                               'untouched: fix or remove it, then run this command again.')
        note = f'; ignoring {len(extras)} images without a counterpart' if extras else ''
        print(f'using existing {dst} ({len(expected)} images{note})')
        return
    tmp = dst + '.tmp'
    os.makedirs(tmp, exist_ok=True)
    jobs = [(src, osp.join(tmp, name), mod, scale) for name, src in sources.items()
            if not osp.isfile(osp.join(tmp, name))]
    _map(_derive, jobs, workers, desc=osp.basename(dst))
    os.replace(tmp, dst)
    resumed = len(sources) - len(jobs)
    print(f'wrote {dst} ({len(expected)} images' + (f', {resumed} from an interrupted run)' if resumed else ')'))


# ------------------------------------------------------------------------------------- sub-images and LMDBs
def _tile_keys(stem, hr_size, crop, step):
    return [f'{stem}_s{i:03d}' for i in range(1, len(tile_origins(*hr_size, crop, step)) + 1)]


def _write_tiles(job):
    """Write the missing tiles of one image: HR tiles (``scale`` 1) or the LR tiles at the HR corners / scale.
    Returns (out_dir, number written)."""
    src, out_dir, stem, hr_size, scale, crop, step = job
    todo = [(osp.join(out_dir, key + '.png'), yx)
            for key, yx in zip(_tile_keys(stem, hr_size, crop, step), tile_origins(*hr_size, crop, step))
            if not osp.isfile(osp.join(out_dir, key + '.png'))]
    if todo:
        img, size = _read_rgb(src), crop // scale
        for path, (y, x) in todo:
            _write_atomic(path, img[y // scale:y // scale + size, x // scale:x // scale + size])
    return out_dir, len(todo)


def _check_settings(folder, settings):
    """Sub-image folders remember the crop/step they were made with; reusing one with other settings is an
    error (its tiles would silently be wrong)."""
    marker = osp.join(folder, SETTINGS_FILE)
    if osp.isfile(marker):
        with open(marker) as f:
            old = f.read().strip()
        if old != settings:
            raise PrepareError(f'{folder} was made with {old}, this run asks for {settings}. Remove it and its '
                               '.lmdb (or pass the same --crop/--step), then run this command again.')


def _write_settings(folder, settings):
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, SETTINGS_FILE), 'w') as f:
        f.write(settings + '\n')


def _lmdb(folder, lmdb_path, keys, tile, rebuild):
    """LMDB of ``folder/<key>.png`` with BasicSR's make_lmdb_from_imgs (compress_level 1). An existing one is
    kept if its meta_info.txt lists exactly these keys and shapes and no tile was rewritten; otherwise it is
    rebuilt under a temporary name and renamed."""
    keys = sorted(keys)
    lines = [f'{key}.png ({tile},{tile},3) 1' for key in keys]
    meta = osp.join(lmdb_path, 'meta_info.txt')
    if not rebuild and osp.isfile(meta) and osp.isfile(osp.join(lmdb_path, 'data.mdb')):
        with open(meta) as f:
            if sorted(line.strip() for line in f if line.strip()) == lines:
                print(f'skipped {lmdb_path}: complete ({len(keys)} tiles)')
                return
    tmp = lmdb_path[:-len('.lmdb')] + '.tmp.lmdb'
    for path in (tmp, lmdb_path):
        if osp.isdir(path):
            shutil.rmtree(path)
    make_lmdb_from_imgs(folder, tmp, [key + '.png' for key in keys], keys, batch=5000, compress_level=1)
    os.replace(tmp, lmdb_path)


# ----------------------------------------------------------------------------------------------------- div2k
def _div2k_missing(root, path, what):
    return (f'{what} not found: {path}. `basicsr prepare div2k --root {root}` expects the official DIV2K layout: '
            f'{root}/DIV2K_train_HR/0001.png ... 0800.png and {root}/DIV2K_train_LR_bicubic/X4/0001x4.png ... '
            f'(X2, X3 likewise). DIV2K comes from {DIV2K_URL} : unzip DIV2K_train_HR.zip and '
            f'DIV2K_train_LR_bicubic_X4.zip (and _X2/_X3 for those scales) into {root}. Alternatively, with the HR '
            'images alone, --make-lr makes the LR images from HR with MATLAB bicubic.')


def _div2k_arguments(parser):
    parser.add_argument('--root', default='datasets/DIV2K', help='folder holding DIV2K_train_HR (default %(default)s)')
    parser.add_argument('--scales', type=int, nargs='+', default=None,
                        help='scales to prepare (default: those of 2 3 4 whose LR folder exists)')
    parser.add_argument('--crop', type=int, default=480, help='HR sub-image size (default %(default)s)')
    parser.add_argument('--step', type=int, default=240, help='HR sub-image stride (default %(default)s)')
    parser.add_argument('--make-lr', action='store_true',
                        help='make missing DIV2K_train_LR_bicubic/X{s} folders from HR (MATLAB bicubic)')
    parser.add_argument('--workers', type=int, default=DEFAULT_WORKERS, help='processes (default %(default)s)')


def prepare_div2k(args):
    """DIV2K train sub-images (crop x crop, stride step) and their HR / LR LMDBs with equal keys."""
    root = osp.normpath(args.root)
    hr_dir = osp.join(root, 'DIV2K_train_HR')
    hr_names = [n for n in _images(hr_dir) if n.endswith('.png')] if osp.isdir(hr_dir) else []
    if not hr_names:
        raise PrepareError(_div2k_missing(root, hr_dir, 'DIV2K HR folder (or its PNG images)'))
    lr_dir = {s: osp.join(root, 'DIV2K_train_LR_bicubic', f'X{s}') for s in args.scales or (2, 3, 4)}
    scales = [s for s in lr_dir if osp.isdir(lr_dir[s]) or args.make_lr]
    for s in sorted(set(lr_dir) - set(scales)):
        if args.scales:
            raise PrepareError(_div2k_missing(root, lr_dir[s], f'DIV2K LR folder for x{s}'))
        print(f'note: {lr_dir[s]} not found: skipping x{s} (--make-lr makes it from HR)')
    if not scales:
        raise PrepareError(_div2k_missing(root, lr_dir[4], 'DIV2K LR folder (no X2, X3 or X4)'))
    if args.crop <= 0 or args.step <= 0 or any(args.crop % s or args.step % s for s in scales):
        raise PrepareError(f'--crop {args.crop} and --step {args.step} must be positive multiples of every scale '
                           f'({", ".join(map(str, scales))}).')

    stems = [n[:-4] for n in hr_names]
    hr_path = {stem: osp.join(hr_dir, stem + '.png') for stem in stems}
    sizes = {stem: _size(hr_path[stem]) for stem in stems}
    # scale -> (sub-image folder, stem -> source image)
    outputs = {1: (osp.join(root, 'DIV2K_train_HR_sub'), hr_path)}
    for s in scales:
        outputs[s] = (lr_dir[s] + '_sub', {stem: osp.join(lr_dir[s], f'{stem}x{s}.png') for stem in stems})
    settings = f'crop={args.crop} step={args.step} (HR pixels)'
    for folder, _ in outputs.values():
        _check_settings(folder, settings)

    for s in scales:
        _derived_folder(lr_dir[s], {f'{stem}x{s}.png': hr_path[stem] for stem in stems}, s, s, args.workers,
                        what=f'the HR images (each HR 0001.png needs LR 0001x{s}.png of size HR // {s})',
                        extras_ok=True)
    for folder, _ in outputs.values():
        _write_settings(folder, settings)
    jobs = [(src[stem], folder, stem, sizes[stem], s, args.crop, args.step)
            for s, (folder, src) in outputs.items() for stem in stems]
    written = {folder: 0 for folder, _ in outputs.values()}
    for folder, count in _map(_write_tiles, jobs, args.workers, desc='sub-images'):
        written[folder] += count
    keys = [key for stem in stems for key in _tile_keys(stem, sizes[stem], args.crop, args.step)]
    if not keys:
        raise PrepareError(f'no sub-images: every HR image is smaller than --crop {args.crop}.')
    print(f'sub-images: {sum(written.values())} written, {len(keys) * len(outputs) - sum(written.values())} '
          'already there')

    summary = []
    for s, (folder, _) in outputs.items():
        lmdb_path = osp.join(root, osp.relpath(folder, root).replace(os.sep, '_') + '.lmdb')
        _lmdb(folder, lmdb_path, keys, args.crop // s, rebuild=written[folder] > 0)
        summary.append(f'  {lmdb_path:<60s} {len(keys)} tiles of {args.crop // s}x{args.crop // s}')
    print('DIV2K ready (dataroot_gt is the HR LMDB, dataroot_lq the LR one of the scale):\n' + '\n'.join(summary))


# ------------------------------------------------------------------------------------------------- benchmark
def _benchmark_missing(root, problem):
    return (f'{problem}. `basicsr prepare benchmark --root {root}` expects {root}/<Set>/HR/<image>.png (or '
            f'<Set>/original/, as in BasicSR\'s downloads) for the sets {", ".join(BENCHMARK_SETS)}. The benchmark '
            'sets come from the EDSR benchmark download (benchmark.tar, folders <Set>/HR) or BasicSR\'s downloads '
            '(BasicSR docs/DatasetPreparation.md); unpack them into that layout.')


def _benchmark_arguments(parser):
    parser.add_argument('--root', default='datasets', help='folder holding the sets (default %(default)s)')
    parser.add_argument('--sets', nargs='+', default=None,
                        help=f'sets to prepare (default: those of {" ".join(BENCHMARK_SETS)} that exist)')
    parser.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4], help='LR scales (default 2 3 4)')
    parser.add_argument('--workers', type=int, default=DEFAULT_WORKERS, help='processes (default %(default)s)')


def prepare_benchmark(args):
    """Benchmark sets: <Set>/GTmod12 (HR cropped to multiples of 12) and <Set>/LRbicx{s} (MATLAB bicubic)."""
    root = osp.normpath(args.root)
    found = []
    for name in args.sets or BENCHMARK_SETS:
        set_dir = osp.join(root, name)
        if not osp.isdir(set_dir):
            if args.sets:
                raise PrepareError(_benchmark_missing(root, f'set folder {set_dir} not found'))
            print(f'warning: {set_dir} not found: skipping {name}')
            continue
        src = next((osp.join(set_dir, sub) for sub in ('HR', 'original', 'GTmod12')
                    if osp.isdir(osp.join(set_dir, sub))), None)
        if src is None or not _images(src):
            raise PrepareError(_benchmark_missing(root, f'no HR images in {set_dir}/HR (nor original/)'))
        found.append((set_dir, src))
    if not found:
        raise PrepareError(_benchmark_missing(root, f'none of the sets {", ".join(BENCHMARK_SETS)} is in {root}'))

    for set_dir, src in found:
        files = _images(src)
        stems = [osp.splitext(f)[0] for f in files]
        if len(set(stems)) != len(stems):
            raise PrepareError(f'{src} holds several images with the same name: {_listing(sorted(files))}.')
        gt_dir = osp.join(set_dir, 'GTmod12')
        _derived_folder(gt_dir, {stem + '.png': osp.join(src, f) for stem, f in zip(stems, files)}, 12, 1,
                        args.workers, what=f'{src} cropped to multiples of 12')
        for s in args.scales:
            _derived_folder(osp.join(set_dir, f'LRbicx{s}'), {stem + '.png': osp.join(gt_dir, stem + '.png')
                                                             for stem in stems},
                            s, s, args.workers, what=f'{gt_dir} downscaled by {s} (same names, size GT // {s})')
    print('benchmark ready: ' + ', '.join(f'{d} ({len(_images(osp.join(d, "GTmod12")))} images)' for d, _ in found))


# ---------------------------------------------------------------------------------------------------- demo
def _demo_arguments(parser):
    parser.add_argument('--root', default='datasets/demo', help='output folder (default %(default)s)')


def prepare_demo(args):
    """Demo data from the photos scikit-image ships (no download): x4 train LMDBs and held-out folders."""
    paths = make_demo(args.root)
    print('demo data ready: ' + ', '.join(f'{k}={v}' for k, v in paths.items()))


# ---------------------------------------------------------------------------------------------------- main

# name -> (add_arguments(parser), run(args)); run's docstring is the sub-command's help.
COMMANDS = {
    'div2k': (_div2k_arguments, prepare_div2k),
    'benchmark': (_benchmark_arguments, prepare_benchmark),
    'demo': (_demo_arguments, prepare_demo),
}


def main(argv):
    parser = command_parser('prepare', __doc__)
    sub = parser.add_subparsers(dest='dataset', required=True, metavar='{' + ','.join(COMMANDS) + '}')
    for name, (add_arguments, run) in COMMANDS.items():
        parser_of_name = sub.add_parser(name, help=plain(run.__doc__.splitlines()[0]), description=plain(run.__doc__))
        add_arguments(parser_of_name)
        parser_of_name.set_defaults(run=run)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except PrepareError as err:
        raise SystemExit(f'error: {err}')

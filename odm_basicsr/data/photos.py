"""Paired HR/LR data from photos that installed packages ship (scikit-image), and LMDBs in BasicSR's format.

No download: every image comes from ``skimage.data``. LR images are made with BasicSR's MATLAB-style bicubic
``imresize``. The split of the demo is fixed and written down here:
    train: DEMO_TRAIN        held-out validation: DEMO_VAL (textured photos; none is a crop of a train photo)
"""
import os
import os.path as osp
import tempfile

import cv2
import numpy as np
import skimage.data
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.matlab_functions import imresize

DEMO_TRAIN = ('astronaut', 'coffee', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'motorcycle', 'retina',
              'grass', 'gravel', 'moon')
DEMO_VAL = ('chelsea', 'camera', 'brick')


def load_photo(name):
    """HR photo ``name`` from skimage.data as uint8 RGB (H, W, 3); grayscale photos are repeated to 3 channels."""
    if name == 'motorcycle':
        img = skimage.data.stereo_motorcycle()[0]
    else:
        img = getattr(skimage.data, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def mod_crop(img, scale):
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def bicubic_downscale(img, scale):
    """MATLAB-style bicubic downscaling of a uint8 (H, W, 3) image by ``scale`` (H, W must be multiples)."""
    lr = imresize(img.astype(np.float64) / 255.0, 1.0 / scale)
    return np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8)


def tile_origins(h, w, crop, step):
    """Row-major top-left corners of crop x crop tiles with stride ``step`` over an h x w image, the last row and
    column flush with the edge (BasicSR's extract_subimages with threshold 0)."""
    def starts(n):
        out = list(range(0, n - crop + 1, step))
        if out and out[-1] != n - crop:
            out.append(n - crop)
        return out

    return [(y, x) for y in starts(h) for x in starts(w)]


def sub_images(img, crop, step):
    """The crop x crop tiles of ``img`` at ``tile_origins``."""
    return [img[y:y + crop, x:x + crop] for y, x in tile_origins(*img.shape[:2], crop, step)]


def write_png(path, rgb):
    os.makedirs(osp.dirname(path), exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_lmdb(folder, lmdb_path):
    """LMDB (data.mdb, lock.mdb, meta_info.txt) of every PNG in ``folder``, keys = file names, with BasicSR's
    ``make_lmdb_from_imgs``."""
    names = sorted(f for f in os.listdir(folder) if f.endswith('.png'))
    if not names:
        raise FileNotFoundError(f'no PNG images in {folder}')
    make_lmdb_from_imgs(folder, lmdb_path, names, [osp.splitext(n)[0] for n in names], batch=5000, compress_level=1,
                        multiprocessing_read=False)


def make_paired_lmdbs(photos, hr_lmdb, lr_lmdb, scale, crop, step, max_side=None):
    """Sub-image HR/LR LMDB pair (equal keys ``<photo>_s<idx>``) from a dict name -> uint8 RGB HR image.

    Args:
        crop, step (int): HR tile size and stride (multiples of ``scale``).
        max_side (int | None): HR photos are first cropped (centre) to at most this size per side.
    """
    if crop % scale or step % scale:
        raise ValueError('crop and step must be multiples of the scale')
    with tempfile.TemporaryDirectory() as tmp:
        for name, img in photos.items():
            if max_side:
                h, w = img.shape[:2]
                y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
                img = img[y0:y0 + max_side, x0:x0 + max_side]
            img = mod_crop(img, scale)
            for idx, tile in enumerate(sub_images(img, crop, step)):
                key = f'{name}_s{idx:03d}'
                write_png(osp.join(tmp, 'hr', key + '.png'), tile)
                write_png(osp.join(tmp, 'lr', key + '.png'), bicubic_downscale(tile, scale))
        make_lmdb(osp.join(tmp, 'hr'), hr_lmdb)
        make_lmdb(osp.join(tmp, 'lr'), lr_lmdb)


def make_paired_folders(photos, hr_dir, lr_dir, scale, max_side=None):
    """HR (mod-cropped) and bicubic LR PNG folders with equal file names, for validation and testing."""
    for name, img in photos.items():
        if max_side:
            h, w = img.shape[:2]
            y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
            img = img[y0:y0 + max_side, x0:x0 + max_side]
        img = mod_crop(img, scale)
        write_png(osp.join(hr_dir, name + '.png'), img)
        write_png(osp.join(lr_dir, name + '.png'), bicubic_downscale(img, scale))

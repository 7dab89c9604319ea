"""The demo data set: paired x4 data from the photos scikit-image ships, in the layout the demo option files name.

    <root>/train_HR_sub.lmdb, <root>/train_LR_bicubic_X4_sub.lmdb   192x192 HR tiles (stride 96) of DEMO_TRAIN
    <root>/val/HR, <root>/val/LRbicx4                               the whole DEMO_VAL photos (held out)
    <root>/SPLIT.txt                                                the split and the settings, written down

Every photo is centre-cropped to at most 512 pixels per side first. LR images are MATLAB-style bicubic.
Re-running is a no-op when the output is complete; an incomplete output is rebuilt.
"""
import os
import os.path as osp
import shutil

from .photos import DEMO_TRAIN, DEMO_VAL, load_photo, make_paired_folders, make_paired_lmdbs

DEMO_SCALE = 4
DEMO_FP_CHECKPOINT = 'odm_basicsr/pretrained/EDSR_demo_x4_f32b8_FP.pth'  # the FP EDSR the demo fine-tunes
DEMO_CROP, DEMO_STEP, DEMO_MAX_SIDE = 192, 96, 512


def demo_paths(root, scale=DEMO_SCALE):
    """The paths the demo option files name, for data root ``root``."""
    return {
        'train_gt': osp.join(root, 'train_HR_sub.lmdb'),
        'train_lq': osp.join(root, f'train_LR_bicubic_X{scale}_sub.lmdb'),
        'val_gt': osp.join(root, 'val', 'HR'),
        'val_lq': osp.join(root, 'val', f'LRbicx{scale}'),
        'split': osp.join(root, 'SPLIT.txt'),
    }


def _split_text(scale):
    return (f'demo split (fixed): train = {", ".join(DEMO_TRAIN)}; held-out validation = {", ".join(DEMO_VAL)}\n'
            f'source: skimage.data; centre crop to <= {DEMO_MAX_SIDE} px per side; scale x{scale}; '
            f'train tiles {DEMO_CROP}x{DEMO_CROP} HR, stride {DEMO_STEP}; LR by MATLAB-style bicubic\n')


def demo_is_complete(root, scale=DEMO_SCALE):
    paths = demo_paths(root, scale)
    if not osp.isfile(paths['split']):
        return False
    with open(paths['split']) as f:
        if f.read() != _split_text(scale):
            return False
    for key in ('train_gt', 'train_lq'):
        if not osp.isfile(osp.join(paths[key], 'meta_info.txt')):
            return False
    return all(osp.isfile(osp.join(paths[key], f'{name}.png')) for key in ('val_gt', 'val_lq') for name in DEMO_VAL)


def prepare_demo(root='datasets/demo', scale=DEMO_SCALE, log=print):
    """Write the demo data set under ``root`` (see the module docstring); returns ``demo_paths(root)``."""
    paths = demo_paths(root, scale)
    if demo_is_complete(root, scale):
        log(f'demo data already complete in {root} (delete the folder to rebuild)')
        return paths
    for key in ('train_gt', 'train_lq', 'val_gt', 'val_lq', 'split'):
        if osp.isdir(paths[key]):
            shutil.rmtree(paths[key])
        elif osp.isfile(paths[key]):
            os.remove(paths[key])
    os.makedirs(root, exist_ok=True)
    log(f'demo data: {len(DEMO_TRAIN)} train photos -> {paths["train_gt"]}, {paths["train_lq"]}')
    train = {name: load_photo(name) for name in DEMO_TRAIN}
    make_paired_lmdbs(train, paths['train_gt'], paths['train_lq'], scale, DEMO_CROP, DEMO_STEP, DEMO_MAX_SIDE)
    log(f'demo data: {len(DEMO_VAL)} held-out photos -> {paths["val_gt"]}, {paths["val_lq"]}')
    make_paired_folders({name: load_photo(name) for name in DEMO_VAL}, paths['val_gt'], paths['val_lq'], scale,
                        DEMO_MAX_SIDE)
    with open(paths['split'], 'w') as f:  # written last: its presence marks a complete data set
        f.write(_split_text(scale))
    return paths

"""Files that ship inside the package, found wherever it is installed: the FP checkpoints and the option files.

Option files name the shipped checkpoints as ``odm_basicsr/pretrained/<file>.pth``, a path relative to the source
checkout. Where no such file exists relative to the working directory (a pip install, run from any folder), the
path is resolved to the installed package's copy. The option files themselves sit in ``options/`` of the checkout
and, in a wheel, in ``odm_basicsr/option_files/``; ``basicsr options DEST`` copies them out.
"""
import os.path as osp

PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))  # .../odm_basicsr
SHIPPED_PREFIX = 'odm_basicsr/pretrained/'  # how option files name a shipped checkpoint


def option_files_dir():
    """The folder of the shipped option files: the wheel's ``odm_basicsr/option_files`` or the checkout's
    ``options``; None when neither exists."""
    for folder in (osp.join(PACKAGE_DIR, 'option_files'), osp.join(osp.dirname(PACKAGE_DIR), 'options')):
        if osp.isfile(osp.join(folder, 'train_ODM_EDSR_x4_w4a4.yml')):
            return folder
    return None


def resolve_shipped(path):
    """``path`` itself, unless it names a shipped checkpoint (``odm_basicsr/pretrained/...``) that does not exist
    relative to the working directory: then the installed package's file."""
    if not isinstance(path, str) or not path.replace('\\', '/').startswith(SHIPPED_PREFIX) or osp.exists(path):
        return path
    return osp.join(PACKAGE_DIR, *path.replace('\\', '/').split('/')[1:])


def resolve_shipped_paths(opt):
    """``opt`` (a nested option dict / list) with every shipped-checkpoint path resolved in place; returns it."""
    items = opt.items() if isinstance(opt, dict) else enumerate(opt) if isinstance(opt, list) else ()
    for key, value in list(items):
        if isinstance(value, (dict, list)):
            resolve_shipped_paths(value)
        elif isinstance(value, str):
            opt[key] = resolve_shipped(value)
    return opt

"""Import every ``*_<suffix>.py`` module of a sub-package so its classes register (BasicSR's scanning idiom)."""
import importlib
import os
from os import path as osp


def import_registered_modules(package_name, package_file, suffix):
    """Import ``<package_name>.<name>`` for each ``<name>_<suffix>.py`` beside ``package_file``."""
    folder = osp.dirname(osp.abspath(package_file))
    names = sorted(osp.splitext(f)[0] for f in os.listdir(folder) if f.endswith(f'_{suffix}.py'))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]

"""Startup hook of odm-basicsr, run by ``odm_basicsr_boot.pth`` when Python starts in an environment where the
package is installed, so that ``import basicsr`` works before ``import odm_basicsr``.

BasicSR 1.4.2 imports ``torchvision.transforms.functional_tensor`` (in ``basicsr/data/degradations.py``), which
torchvision 0.17 removed. This module only appends a finder to ``sys.meta_path``: it imports nothing at startup,
and it answers for that one module name only if no other finder does, with an alias that provides the one
function BasicSR uses (``rgb_to_grayscale``). Where torchvision still has the module, nothing changes.
"""
import importlib.abc
import importlib.util
import sys

REMOVED_MODULE = 'torchvision.transforms.functional_tensor'


class FunctionalTensorAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Meta-path finder of last resort for ``torchvision.transforms.functional_tensor``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != REMOVED_MODULE:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from torchvision.transforms import functional
        module.rgb_to_grayscale = functional.rgb_to_grayscale


def install():
    """Appends the finder once (idempotent)."""
    if not any(isinstance(finder, FunctionalTensorAlias) for finder in sys.meta_path):
        sys.meta_path.append(FunctionalTensorAlias())


install()

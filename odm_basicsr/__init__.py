"""odm-basicsr: ODM quantization-aware training for BasicSR.

Importing this package applies the BasicSR compat fixes and registers the ODM archs, losses and models.
The quantization core (``odm_basicsr.quant``) itself imports nothing from BasicSR.
"""
from . import _compat

_compat.apply_import_fixes()
import basicsr  # noqa: E402,F401

_compat.apply_runtime_fixes()

from .archs import *  # noqa: E402,F401,F403
from .losses import *  # noqa: E402,F401,F403
from .models import *  # noqa: E402,F401,F403
from .version import __version__  # noqa: E402,F401

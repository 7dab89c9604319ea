"""`import basicsr` before `import odm_basicsr` (a lab's own train.py) works once the package is installed."""
import subprocess
import sys

import pytest

import odm_basicsr_boot


def _run(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd='/', timeout=300)


@pytest.mark.slow
def test_import_basicsr_first_then_plugin():
    proc = _run('import basicsr\nimport odm_basicsr\nfrom basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY\n'
                "assert 'ODMEDSR' in ARCH_REGISTRY and 'ODMModel' in MODEL_REGISTRY\nprint('registered')")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'registered' in proc.stdout


def test_startup_hook_is_installed_and_imports_nothing():
    # the .pth runs the hook at interpreter start; it must not import torch/torchvision/basicsr there
    proc = _run('import sys\n'
                "assert 'odm_basicsr_boot' in sys.modules, 'the .pth did not run'\n"
                "assert any(type(f).__name__ == 'FunctionalTensorAlias' for f in sys.meta_path), sys.meta_path\n"
                "print(sorted(m for m in ('torch', 'torchvision', 'basicsr') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == '[]'


def test_alias_answers_only_for_the_removed_module():
    finder = odm_basicsr_boot.FunctionalTensorAlias()
    assert finder.find_spec('torchvision.transforms.functional') is None
    assert finder.find_spec('basicsr') is None
    spec = finder.find_spec(odm_basicsr_boot.REMOVED_MODULE)
    assert spec is not None and spec.loader is finder
    import importlib.util
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from torchvision.transforms import functional
    assert module.rgb_to_grayscale is functional.rgb_to_grayscale

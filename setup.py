"""odm-basicsr: ODM quantization-aware training as a BasicSR plugin."""
import os.path as osp

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

STARTUP_HOOK = 'odm_basicsr_boot.pth'  # runs odm_basicsr_boot.py at startup: `import basicsr` works first (README)


class BuildWithStartupHook(build_py):
    """build_py that also puts the startup .pth at the root of site-packages (wheel and editable installs)."""

    def run(self):
        super().run()
        self.copy_file(osp.join(osp.dirname(osp.abspath(__file__)), STARTUP_HOOK), osp.join(self.build_lib, STARTUP_HOOK))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [osp.join(self.build_lib, STARTUP_HOOK)]


class EditableWithStartupHook(editable_wheel):
    """``pip install -e``: an editable wheel holds only setuptools' own finder, so the .pth is added to its root.
    ``_run_build_commands`` is setuptools' (>= 64) private step that fills the wheel's folder; if a future setuptools
    drops it, the editable install still works, only without the startup hook (tests/test_import_order.py fails)."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        outputs = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        self.copy_file(osp.join(osp.dirname(osp.abspath(__file__)), STARTUP_HOOK), osp.join(unpacked_wheel, STARTUP_HOOK))
        return outputs


def get_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'odm_basicsr', 'version.py'), encoding='utf-8') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='odm-basicsr',
    version=get_version(),
    description='ODM (Overcoming Distribution Mismatch) quantization-aware training for BasicSR SR networks',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',  # as BasicSR's (LICENSE)
    license_files=['LICENSE'],
    packages=find_packages(exclude=('tests', 'options', 'benchmarks', 'experiments', 'results', 'tb_logger')),
    package_data={'odm_basicsr': ['pretrained/*.pth', 'pretrained/*.log']},  # the demo / PTQ FP checkpoints
    py_modules=['odm_basicsr_boot'],
    cmdclass={'build_py': BuildWithStartupHook, 'editable_wheel': EditableWithStartupHook},
    python_requires='>=3.10',  # torch 2.14.1 has no wheels for 3.9; tested on 3.11
    install_requires=[
        'basicsr>=1.4.2,<1.5',
        'torch',
        'torchvision',
        'numpy',
        'opencv-python',
        'lmdb',
        'pyyaml',
        'tensorboard',
        'scikit-image',
        'Pillow',
        'tqdm',
        'setuptools; python_version >= "3.12"',
    ],
    extras_require={
        'test': ['pytest'],
        'export': ['onnx', 'onnxruntime'],
        'plot': ['matplotlib'],  # basicsr compare's PSNR-vs-BitOPs plot
    },
    entry_points={
        'console_scripts': [
            'basicsr = odm_basicsr.cli:main',
            'odm-basicsr = odm_basicsr.cli:main',
        ],
    },
)

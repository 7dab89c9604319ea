"""odm-basicsr: ODM quantization-aware training as a BasicSR plugin."""
import os
import os.path as osp

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = osp.dirname(osp.abspath(__file__))
STARTUP_HOOK = 'odm_basicsr_boot.pth'  # runs odm_basicsr_boot.py at startup: `import basicsr` works first (README)
OPTION_FILES = 'option_files'  # options/ of the checkout, inside the installed package (odm_basicsr/utils/shipped.py)


def option_file_paths():
    """(source, path inside the package) of every option file under options/."""
    found = []
    for root, _, files in os.walk(osp.join(HERE, 'options')):
        for name in sorted(files):
            if name.endswith('.yml'):
                rel = osp.relpath(osp.join(root, name), osp.join(HERE, 'options'))
                found.append((osp.join(root, name), osp.join('odm_basicsr', OPTION_FILES, rel)))
    return found


class BuildWithStartupHook(build_py):
    """build_py that also puts the startup .pth at the root of site-packages (wheel and editable installs) and the
    option files into the package (wheels; an editable install reads the checkout's options/)."""

    def run(self):
        super().run()
        self.copy_file(osp.join(HERE, STARTUP_HOOK), osp.join(self.build_lib, STARTUP_HOOK))
        if not self.editable_mode:
            for source, target in option_file_paths():
                self.mkpath(osp.dirname(osp.join(self.build_lib, target)))
                self.copy_file(source, osp.join(self.build_lib, target))

    def get_outputs(self, include_bytecode=True):
        extra = [] if self.editable_mode else [osp.join(self.build_lib, t) for _, t in option_file_paths()]
        return super().get_outputs(include_bytecode) + [osp.join(self.build_lib, STARTUP_HOOK)] + extra


class EditableWithStartupHook(editable_wheel):
    """``pip install -e``: an editable wheel holds only setuptools' own finder, so the .pth is added to its root.
    ``_run_build_commands`` is setuptools' (>= 64) private step that fills the wheel's folder; if a future setuptools
    drops it, the editable install still works, only without the startup hook (tests/test_import_order.py fails)."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        outputs = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        self.copy_file(osp.join(HERE, STARTUP_HOOK), osp.join(unpacked_wheel, STARTUP_HOOK))
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
        'openvino': ['onnx', 'openvino'],  # the integer ONNX graph through OpenVINO's CPU plugin (--runtime openvino)
        'plot': ['matplotlib'],  # basicsr compare's PSNR-vs-BitOPs plot
    },
    entry_points={
        'console_scripts': [
            'basicsr = odm_basicsr.cli:main',
            'odm-basicsr = odm_basicsr.cli:main',
        ],
    },
)

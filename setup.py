"""odm-basicsr: ODM quantization-aware training as a BasicSR plugin."""
import os.path as osp

from setuptools import find_packages, setup


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
    packages=find_packages(exclude=('tests', 'options', 'benchmarks', 'experiments', 'results', 'tb_logger')),
    python_requires='>=3.9',
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
    },
    entry_points={
        'console_scripts': [
            'basicsr = odm_basicsr.cli:main',
            'odm-basicsr = odm_basicsr.cli:main',
        ],
    },
)

"""A pip user's first hour: the wheel, installed into a folder of its own on top of an environment that already has
torch and BasicSR, run from an empty folder that is not the checkout.

- ``basicsr options`` copies the shipped option files; the README's command then runs up to its data check;
- ``basicsr demo --quick`` runs for real (shipped option files and checkpoint) and writes only under its folder;
- nothing is ever written into the installed package.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

SOURCES = ('setup.py', 'MANIFEST.in', 'README.md', 'LICENSE', 'odm_basicsr_boot.py', 'odm_basicsr_boot.pth',
           'odm_basicsr', 'options')


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(site folder with the installed wheel, environment that puts it first on the path, wheel path)."""
    root = tmp_path_factory.mktemp('wheel')
    src = root / 'src'
    src.mkdir()
    for name in SOURCES:  # a copy: building writes build/ and *.egg-info next to setup.py
        path = osp.join(REPO, name)
        if osp.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copy(path, src / name)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w',
                    str(root / 'dist'), str(src)], check=True, capture_output=True, text=True, timeout=600)
    wheel = next((root / 'dist').glob('odm_basicsr-*.whl'))
    site = root / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONUNBUFFERED='1')
    return site, env, wheel


def run_installed(args, cwd, env, timeout=600):
    return subprocess.run([sys.executable, '-m', 'odm_basicsr'] + args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def tree(folder):
    return sorted(osp.relpath(osp.join(r, f), folder) for r, _, files in os.walk(folder) for f in files
                  if '__pycache__' not in r)


def test_wheel_ships_option_files_and_checkpoints_and_pins_no_torch(installed):
    _, _, wheel = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith('METADATA'))).decode()
    assert 'odm_basicsr/option_files/train_ODM_EDSR_x4_w4a4.yml' in names
    assert 'odm_basicsr/option_files/demo/train_ODM_EDSR_demo_x4_w4a4.yml' in names
    assert 'odm_basicsr/pretrained/EDSR_demo_x4_f32b8_FP.pth' in names
    assert 'odm_basicsr_boot.pth' in names
    requires = [line.split(':', 1)[1].strip() for line in metadata.splitlines() if line.startswith('Requires-Dist:')]
    torch = [r for r in requires if r.split(';')[0].strip().startswith('torch') and 'vision' not in r]
    assert torch == ['torch'], requires  # an existing environment keeps its own torch


@pytest.mark.slow
def test_pip_install_works_from_an_empty_folder(installed, tmp_path):
    site, env, _ = installed
    before = tree(site)
    work = tmp_path / 'work'
    work.mkdir()
    where = subprocess.run([sys.executable, '-c', 'import odm_basicsr, os; print(os.path.dirname(odm_basicsr.__file__))'],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip() == str(site / 'odm_basicsr'), where.stderr  # the wheel, not the checkout

    # the user's own command, before and after "basicsr options"
    command = ['train', '-opt', 'options/train_ODM_EDSR_x4_w4a4.yml']
    missing = run_installed(command, work, env)
    assert missing.returncode != 0 and 'basicsr options' in missing.stderr + missing.stdout
    copied = run_installed(['options'], work, env)
    assert copied.returncode == 0, copied.stderr
    assert (work / 'options' / 'train_ODM_EDSR_x4_w4a4.yml').is_file()
    assert (work / 'options' / 'demo' / 'compare_EDSR_demo_x4.yml').is_file()
    checked = run_installed(command, work, env)
    out = checked.stdout + checked.stderr
    assert checked.returncode == 1 and "Invalid options" in out, out
    assert 'Traceback' not in out and 'num_gpu' not in out  # num_gpu: auto on a CPU machine
    assert "datasets.train.dataroot_gt: 'datasets/DIV2K/DIV2K_train_HR_sub.lmdb' does not exist" in out
    assert not (work / 'experiments').exists()  # refused before anything is written

    # the demo, from another empty folder, writing only under --work-dir
    demo_dir = tmp_path / 'demo'
    demo = run_installed(['demo', '--quick', '--work-dir', str(demo_dir)], tmp_path / 'work', env, timeout=900)
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out[-4000:]
    assert 'repository root' not in out
    written = tree(demo_dir)
    assert 'results/demo/summary.md' in written
    assert any(f.startswith('experiments/demo_ODM_EDSR_x4_w4a4/models/') for f in written), written
    assert 'results/compare_EDSR_demo_x4/compare.md' in written
    assert out.count('| entry | bits | PSNR |') == 1  # one table
    assert '@ 3 iter' not in out  # no validation labelled past total_iter
    assert tree(site) == before  # nothing written into the installed package
    assert sorted(os.listdir(work)) == ['options']  # the demo wrote nothing where it was started

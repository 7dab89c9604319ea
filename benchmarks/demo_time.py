"""How long ``basicsr demo`` takes, start to end, as a new user runs it: each run in a fresh, empty work folder
(data preparation included), one after the other, nothing else on the machine.

Run:  .venv/bin/python benchmarks/demo_time.py [--runs 3] [--json PATH]
"""
import argparse
import os.path as osp
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import REPO, machine_description, markdown_table, write_json  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'demo_time.json'))
    args = parser.parse_args()
    import torch
    seconds = []
    for run in range(args.runs):
        work = tempfile.mkdtemp(prefix='demo_time_')
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, '-m', 'odm_basicsr', 'demo', '--work-dir', work], cwd=work,
                              capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0:
            raise SystemExit(f'run {run + 1} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
        print(f'run {run + 1}: {seconds[-1]:.0f} s', flush=True)
    rows = [[i + 1, f'{s:.0f}'] for i, s in enumerate(seconds)]
    rows.append(['median (min-max)', f'{statistics.median(seconds):.0f} ({min(seconds):.0f}-{max(seconds):.0f})'])
    print(markdown_table(['run', 'seconds'], rows))
    write_json(args.json, dict(seconds=seconds, median=statistics.median(seconds), min=min(seconds),
                               max=max(seconds), machine=machine_description(torch.device('cpu')),
                               command=' '.join(sys.argv)))


if __name__ == '__main__':
    main()

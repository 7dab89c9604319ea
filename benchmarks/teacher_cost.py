"""What the FP teacher (train.distill_opt) costs per training step: time and memory, with and without it.

The demo EDSR (32 features x 8 blocks, x4) at w4a4 through ODMModel, on the demo LMDB (batch 4, HR 128): plain QAT
(L1 to HR), the teacher alone, and L1 + teacher; each runs ``--warmup`` steps, then ``--steps`` timed ones, in its
own process (so the peak resident memory, ru_maxrss, is its own). A SMALL PROXY on the CPU; on a GPU the teacher's
share is the same kind (one extra forward without autograd).

Run:  .venv/bin/python benchmarks/teacher_cost.py [--steps 20] [--json PATH]
"""
import argparse
import json
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import REPO, demo_data, machine_description, markdown_table, write_json  # noqa: E402

VARIANTS = {'plain QAT (L1 to HR)': dict(pixel=True, teacher=False), 'teacher only': dict(pixel=False, teacher=True),
            'L1 + teacher': dict(pixel=True, teacher=True)}


def run_one(variant, steps, warmup):
    """In a child process: build ODMModel, time its steps, report (median step seconds, peak RSS MiB)."""
    import torch
    from basicsr.models import build_model
    from basicsr.utils.options import ordered_yaml  # noqa: F401  (BasicSR before the model)
    import yaml

    import odm_basicsr  # noqa: F401
    paths = demo_data()
    with open(osp.join(REPO, 'options', 'demo', 'train_QAT_EDSR_demo_x4_w4a4.yml')) as f:
        opt = yaml.safe_load(f)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=0)
    opt['path']['pretrain_network_g'] = osp.join(REPO, opt['path']['pretrain_network_g'])
    train = opt['datasets']['train']
    train.update(dataroot_gt=paths['train_gt'], dataroot_lq=paths['train_lq'], gt_size=128, batch_size_per_gpu=4,
                 phase='train', scale=4)
    opt['train']['calibration'] = dict(num_batches=2, refine=False)
    setting = VARIANTS[variant]
    if setting['teacher']:
        opt['train']['distill_opt'] = {'loss': 'l1'}
    if not setting['pixel']:
        del opt['train']['pixel_opt']
    torch.manual_seed(0)
    model = build_model(opt)
    g = torch.Generator().manual_seed(0)
    lq, gt = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 128, 128, generator=g)
    times = []
    for step in range(warmup + steps):
        model.feed_data({'lq': lq, 'gt': gt})
        started = time.perf_counter()
        model.optimize_parameters(step + 1)
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'teacher_cost.json'))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.steps, args.warmup)))
        return
    import torch
    rows, results = [], []
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, '--child', variant, '--steps', str(args.steps), '--warmup',
                              str(args.warmup)], capture_output=True, text=True, check=True, cwd=REPO).stdout
        seconds, rss = json.loads(out.strip().splitlines()[-1])
        results.append(dict(variant=variant, step_seconds=seconds, peak_rss_mib=rss))
    base = results[0]
    for r in results:
        rows.append([r['variant'], f'{r["step_seconds"] * 1000:.0f} ms', f'{r["step_seconds"] / base["step_seconds"]:.2f}x',
                     f'{r["peak_rss_mib"]:.0f} MiB'])
    print(markdown_table(['variant', 'step (median)', 'vs plain QAT', 'peak RSS'], rows))
    write_json(args.json, dict(machine=machine_description(torch.device('cpu')), steps=args.steps, results=results,
                               command=' '.join(sys.argv)))


if __name__ == '__main__':
    main()

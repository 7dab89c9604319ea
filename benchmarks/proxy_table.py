"""One multi-seed table from the JSON files of ``proxy_accuracy.py`` runs.

CPU training of the proxy is deterministic, so a variant, bit-width and seed found in several files is one run; the
files must agree on it (checked) and it is counted once. Spreads are half the range over seeds, as in
docs/RESULTS.md. Nothing is re-run.

    python benchmarks/proxy_table.py benchmarks/results/proxy_*.json [--iters 1000] [--arch EDSR] [--device cpu]

Only files of one proxy arch and device are read (``--arch``, ``--device``; files without an ``arch`` entry are
EDSR's, without a ``device`` entry CPU runs). GPU runs are not bit-deterministic, so a GPU file should not be read
together with another run of the same variant and seed.

Prints:
1. per bit-width, each variant's PSNR vs HR per seed, mean ± half-range, fidelity to the FP output;
2. paired differences (same seed: same calibration and data order) for the comparisons ODM's claims rest on, with
   the criterion: a difference counts when its mean exceeds twice the seed spread (the larger
   half-range of the two variants);
3. the regularizers' objectives on the held-out photos before and after fine-tuning, for runs that recorded them.

Two statistics of a run: its final PSNR (the last checkpoint, as BasicSR's validation reports it) and the mean of its
last three validation points (iterations 2/3, 5/6 and all of the run), which averages out part of the +-0.2 dB by
which validation PSNR moves from one checkpoint to the next at w4a4.
"""
import argparse
import json
import statistics

from common import markdown_table

PAIRS = [  # (variant, baseline, what the difference measures)
    ('WCC only', 'plain QAT', 'weight clipping correction'),
    ('plain QAT (P99 weights)', 'plain QAT', 'P99 instead of max weight clips'),
    ('WCC only', 'plain QAT (P99 weights)', 'WCC over P99 weight clips'),
    ('ODM v2 (no cooperation)', 'WCC only', 'the mismatch regularizer (counted in full)'),
    ('ODM v2', 'ODM v2 (no cooperation)', 'cosine cooperation'),
    ('ODM v2', 'WCC only', 'ODM v2 over WCC only (the issue\'s goal)'),
    ('ODM v1', 'plain QAT', 'ODM v1 over plain QAT (the issue\'s goal)'),
    ('ODM v1 (zero-preserving offsets)', 'ODM v1', 'zero-preserving offsets, half migration'),
    ('ODM v1 (P99 weights)', 'ODM v1', 'P99 instead of max weight clips, ODM v1'),
    ('ODM v1 (P99 weights)', 'plain QAT (P99 weights)', 'ODM v1 over plain QAT, both with P99 weight clips'),
    ('ODM v1 (zero-preserving offsets)', 'plain QAT', 'ODM v1 with zero-preserving offsets over plain QAT'),
    ('offsets only', 'plain QAT', 'offsets alone'),
    ('naive variance', 'plain QAT', 'variance regularizer, naive'),
    ('cooperative variance', 'naive variance', 'sign-mask cooperation'),
    ('naive mismatch', 'plain QAT', 'mismatch regularizer, naive, max clips'),
    ('WCC only (relative range lr)', 'WCC only', 'range learning in units of the range'),
    ('ODM v2 (relative range lr)', 'ODM v2', 'range learning in units of the range'),
    ('ODM v2 (weight clip every 16)', 'ODM v2', 'the weight clip statistic recomputed every 16 iterations'),
    ('ODM v1 (P99 weights, integer zero point)', 'ODM v1 (P99 weights)', 'integer zero points, ODM v1 (offset layers '
     'pad first)'),
    ('ODM v2 (mismatch x10)', 'WCC only', 'the mismatch regularizer at 10x the paper\'s weight, over WCC only'),
    ('ODM v2 (mismatch x30)', 'WCC only', 'the mismatch regularizer at 30x the paper\'s weight, over WCC only'),
]


ORDER = ['plain QAT', 'plain QAT (P99 weights)', 'WCC only', 'ODM v1', 'ODM v1 (P99 weights)',
         'ODM v1 (zero-preserving offsets)', 'ODM v2',
         'WCC only (relative range lr)', 'ODM v2 (relative range lr)', 'offsets only', 'naive variance',
         'cooperative variance', 'naive mismatch', 'ODM v2 (no cooperation)']  # rows first in this order


def load_runs(paths, iters, arch='EDSR', device='cpu'):
    """{(variant, bits, seed): result} over the files of ``arch`` run on ``device`` (files without a device entry are
    CPU runs); raises if two files disagree on a run."""
    runs, sources = {}, {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if ((iters is not None and data.get('iters') != iters) or data.get('arch', 'EDSR') != arch
                or data.get('device', 'cpu') != device):
            continue
        for run in data['runs']:
            if run.get('sweep'):
                continue
            key = (run['variant'], run['bits'], run['seed'])
            result = run['result']
            if key in runs:
                if abs(runs[key]['psnr'] - result['psnr']) > 1e-9:
                    raise SystemExit(f'{key}: {sources[key]} and {path} disagree ({runs[key]["psnr"]} vs '
                                     f'{result["psnr"]}); CPU runs should be deterministic')
                if 'objectives' in result and 'objectives' not in runs[key]:
                    runs[key] = result  # the rerun that also recorded the objectives
                continue
            runs[key], sources[key] = result, path
    return runs


def tail_mean(result, points=3):
    """Mean PSNR of the last ``points`` validation points of a run's curve."""
    return statistics.fmean(p for _, p in result['curve'][-points:])


STATS = {'final': lambda r: r['psnr'], 'tail-3': tail_mean}


def half_range(values):
    return (max(values) - min(values)) / 2 if len(values) > 1 else 0.0


def verdict(diffs, spread):
    """The criterion: the mean difference is more than twice the seed spread."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return 'one seed'
    if mean > 2 * spread:
        return 'yes'
    return 'no (worse)' if mean < -2 * spread else 'no'


def tables(runs):
    out = []
    for bits in sorted({k[1] for k in runs}, reverse=True):
        variants = sorted({k[0] for k in runs if k[1] == bits},
                          key=lambda v: (ORDER.index(v) if v in ORDER else len(ORDER), v))
        seeds = sorted({k[2] for k in runs if k[1] == bits})
        rows = []
        for variant in variants:
            per_seed = {s: runs[(variant, bits, s)] for s in seeds if (variant, bits, s) in runs}
            row = [variant, len(per_seed)] + [f'{per_seed[s]["psnr"]:.3f}' if s in per_seed else '-' for s in seeds]
            for stat in STATS.values():
                values = [stat(r) for r in per_seed.values()]
                row.append(f'{statistics.fmean(values):.2f} ± {half_range(values):.2f}')
            rows.append(row + [f'{statistics.fmean(r["fidelity"] for r in per_seed.values()):.2f}'])
        out.append(f'### w{bits}a{bits}: PSNR vs HR (dB), final per seed\n\n' + markdown_table(
            ['variant', 'seeds'] + [f'seed {s}' for s in seeds]
            + [f'{name}: mean ± half-range' for name in STATS] + ['fidelity to FP'], rows))
        rows = []
        for variant, baseline, meaning in PAIRS:
            common = sorted(s for s in seeds if (variant, bits, s) in runs and (baseline, bits, s) in runs)
            if not common:
                continue
            row = [f'{variant} - {baseline}', meaning]
            for name, stat in STATS.items():
                diffs = [stat(runs[(variant, bits, s)]) - stat(runs[(baseline, bits, s)]) for s in common]
                spread = max(half_range([stat(runs[(v, bits, s)]) for s in common]) for v in (variant, baseline))
                row += [' / '.join(f'{d:+.2f}' for d in diffs), f'{statistics.fmean(diffs):+.2f}', f'{spread:.2f}',
                        verdict(diffs, spread)]
            rows.append(row)
        out.append(f'### w{bits}a{bits}: paired by seed\n\n' + markdown_table(
            ['difference', 'measures'] + [f'{name} {col}' for name in STATS
                                          for col in ('per seed', 'mean', 'spread', '> 2x spread')], rows))
        rows = []
        for (variant, b, seed), r in sorted(runs.items()):
            if b != bits or 'objectives' not in r:
                continue
            start, end = r['at_calibration']['objectives'], r['objectives']
            rows.append([variant, seed] + [f'{start[k]:.4g} -> {end[k]:.4g} ({100 * (end[k] / start[k] - 1):+.1f}%)'
                                           for k in ('variance', 'mismatch')])
        if rows:
            out.append(f'### w{bits}a{bits}: the regularizers\' objectives on the held-out photos, after calibration -> '
                       'after fine-tuning\n\n' + markdown_table(
                           ['variant', 'seed', 'variance (v1): sum_i mean_c Var(X_i)',
                            'mismatch (v2): sum_i ||X_i - q(X_i)||'], rows))
    return '\n\n'.join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('json', nargs='+')
    parser.add_argument('--iters', type=int, default=1000, help='only files of runs this long (default 1000)')
    parser.add_argument('--arch', default='EDSR', help='only files of this proxy arch (default EDSR)')
    parser.add_argument('--device', default='cpu', help='only files of runs on this device (default cpu; '
                        'benchmarks/gpu_proxy.sh: cuda)')
    args = parser.parse_args()
    print(tables(load_runs(args.json, args.iters, args.arch, args.device)))


if __name__ == '__main__':
    main()

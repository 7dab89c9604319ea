"""Soak: a long ODM v1 fine-tune of the proxy model on CPU, checking that nothing drifts.

The demo's EDSR (32 features, 8 blocks, x4) at w4a4 from the shipped FP checkpoint, trained in this process through
BasicSR's build_model / optimize_parameters on the demo photos (as benchmarks/proxy_accuracy.py does). Checks:
    memory: resident memory after the warm-up grows by less than --max-growth-mib (no growth from collected features);
    no NaN: every logged loss and statistic is finite, and no step was skipped by the non-finite guard;
    PSNR: the held-out validation PSNR at the end is not below the first measurement minus 0.05 dB.

    python benchmarks/soak.py [--iters 2000] [--variant "ODM v1"] [--bits 4]
"""
import argparse
import math
import os.path as osp
import resource
import time


from common import REPO, markdown_table, write_json
from proxy_accuracy import VARIANTS, Evaluator, build_options, training_steps


def rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--variant', default='ODM v1', choices=list(VARIANTS))
    parser.add_argument('--bits', type=int, default=4)
    parser.add_argument('--every', type=int, default=250, help='memory / validation interval')
    parser.add_argument('--warmup', type=int, default=250, help='iterations before the memory baseline')
    parser.add_argument('--max-growth-mib', type=float, default=50.0)
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'soak.json'))
    args = parser.parse_args()
    import logging

    import odm_basicsr  # noqa: F401
    logging.getLogger('basicsr').setLevel(logging.ERROR)

    opt = build_options(args.variant, args.bits, args.iters, seed=10)
    opt['train']['scheduler']['milestones'] = [args.iters + 1]  # constant learning rate: drift shows, not decay
    evaluator = Evaluator(opt)
    model, steps = training_steps(opt)
    rows, nonfinite, baseline = [], [], None
    start = time.time()
    for it in steps:
        bad = [k for k, v in model.log_dict.items() if not math.isfinite(float(v))]
        if bad:
            nonfinite.append((it, bad))
        if it == args.warmup:
            baseline = rss_mib()
        if it % args.every == 0 or it == args.iters:
            psnr = evaluator(model, it)['psnr']
            row = {'iter': it, 'rss_mib': rss_mib(), 'psnr': psnr, 'elapsed_s': time.time() - start,
                   **{k: float(v) for k, v in model.log_dict.items()}}
            rows.append(row)
            print(f'iter {it:5d}  rss {row["rss_mib"]:7.1f} MiB  PSNR {psnr:.3f}  l_pix {row["l_pix"]:.4f}  '
                  f'{row["elapsed_s"]:.0f} s', flush=True)
    growth = rows[-1]['rss_mib'] - (baseline if baseline is not None else rows[0]['rss_mib'])
    checks = {
        'memory flat': (growth < args.max_growth_mib, f'RSS +{growth:.1f} MiB after iter {args.warmup} '
                                                      f'(limit {args.max_growth_mib:g})'),
        'no NaN / Inf': (not nonfinite and model.skipped_steps == 0, f'{len(nonfinite)} non-finite iterations'),
        'PSNR not degraded': (rows[-1]['psnr'] >= rows[0]['psnr'] - 0.05,
                              f'{rows[0]["psnr"]:.3f} dB at iter {rows[0]["iter"]} -> {rows[-1]["psnr"]:.3f} dB at '
                              f'iter {rows[-1]["iter"]}'),
    }
    table = markdown_table(['iter', 'RSS (MiB)', 'PSNR (dB)', 'l_pix', 'elapsed (s)'],
                           [[r['iter'], f'{r["rss_mib"]:.0f}', f'{r["psnr"]:.3f}', f'{r["l_pix"]:.4f}',
                             f'{r["elapsed_s"]:.0f}'] for r in rows])
    print(f'\n## Soak: {args.variant} w{args.bits}a{args.bits}, {args.iters} iterations (proxy EDSR 32x8, CPU)\n')
    print(table + '\n')
    for name, (ok, detail) in checks.items():
        print(f'- [{"x" if ok else " "}] {name}: {detail}')
    print(f'peak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')
    write_json(args.json, {'variant': args.variant, 'bits': args.bits, 'iters': args.iters, 'rows': rows,
                           'checks': {k: {'ok': ok, 'detail': d} for k, (ok, d) in checks.items()},
                           'table': table})
    if not all(ok for ok, _ in checks.values()):
        raise SystemExit('soak: a check failed')


if __name__ == '__main__':
    main()

"""Training-step cost of FP, plain QAT, ODM v1 and ODM v2, side by side in one process on the same batch.

Each variant is built by BasicSR's ``build_model`` from the project's preset option files (see common.py) and
timed on ``optimize_parameters`` (forward, losses, backward passes, cooperation, optimizer step): median of
--iters steps after --warmup steps. Settings:
    paper: EDSR-baseline (64 features, 16 blocks) x4, batch 8, HR patch 192 (the paper's recipe, docs/METHOD.md)
    proxy: the demo's EDSR (32 features, 8 blocks) x4, batch 8, HR patch 128
Memory: CUDA peak allocated; on CPU the sampled peak RSS increase of the process during the steps (approximate).

    python benchmarks/train_speed.py [--device cpu|cuda] [--settings paper proxy] [--iters 5] [--warmup 2]
    python benchmarks/train_speed.py --interleave [--rounds 10]   # all variants stepped in turn, see below

``--interleave``: every variant of a setting is built first, then the variants take one step each in turn, for
--rounds rounds (the order rotated each round), so that a change of load on a shared machine hits all of them alike.
It reports each variant's median step and, per round, its ratio to FP and to plain QAT (median, min and max over the
rounds). No memory column in this mode (the models live side by side).
"""
import argparse
import gc
import os.path as osp
import statistics
import time

import torch

from common import (REPO, PeakRSS, fixed_batch, machine_description, markdown_table, median_time, proxy_network,
                    sync, variant_options, write_json)

VARIANTS = ('FP', 'QAT', 'ODM v1', 'ODM v2')
SETTINGS = {
    'paper': dict(network=None, batch=8, gt_size=192),
    'proxy': dict(network='proxy', batch=8, gt_size=128),
}


def setting_options(variant, setting, device):
    """BasicSR options of ``variant`` (a preset) at ``setting``'s network, batch and patch."""
    cfg = SETTINGS[setting]
    network = proxy_network() if cfg['network'] == 'proxy' else None
    return variant_options(variant, network=network, batch=cfg['batch'], gt_size=cfg['gt_size'],
                           num_gpu=1 if device.type == 'cuda' else 0)


def measure(variant, setting, device, iters, warmup, profile=False):
    from basicsr.models import build_model
    opt = setting_options(variant, setting, device)
    torch.manual_seed(0)
    batch = fixed_batch(opt)
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    with PeakRSS() as rss:
        model = build_model(opt)
        model.feed_data(batch)
        step = {'i': 0}

        def one_step():
            step['i'] += 1
            model.optimize_parameters(step['i'])

        for _ in range(warmup):
            one_step()
        sync(device)
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        median, times = median_time(one_step, iters, 0, device)
        mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
        with torch_profile(activities=acts) as prof:
            for _ in range(2):
                one_step()
            sync(device)
        key = 'cuda_time_total' if device.type == 'cuda' else 'cpu_time_total'
        print(f'\n--- profile: {setting} / {variant} (2 steps) ---')
        print(prof.key_averages().table(sort_by=key, row_limit=15))
    result = {'setting': setting, 'variant': variant, 'median_s': median, 'times_s': times,
              'peak_mem_mib': mem if mem is not None else rss.mib,
              'memory_kind': 'cuda_max_allocated' if mem is not None else 'cpu_peak_rss_increase_sampled',
              'log': {k: float(v) for k, v in model.log_dict.items()}}
    del model
    return result


def measure_interleaved(setting, variants, device, rounds, warmup):
    """[result dict per variant] for ``setting``, the variants stepped in turn (see the module docstring)."""
    from basicsr.models import build_model
    models, steps = {}, {}
    for variant in variants:
        opt = setting_options(variant, setting, device)
        torch.manual_seed(0)
        models[variant] = build_model(opt)
        models[variant].feed_data(fixed_batch(opt))
        steps[variant] = 0

    def one_step(variant):
        steps[variant] += 1
        models[variant].optimize_parameters(steps[variant])

    for variant in variants:
        for _ in range(warmup):
            one_step(variant)
    times = {variant: [] for variant in variants}
    for r in range(rounds):
        for variant in variants[r % len(variants):] + variants[:r % len(variants)]:
            sync(device)
            t0 = time.perf_counter()
            one_step(variant)
            sync(device)
            times[variant].append(time.perf_counter() - t0)
    results = []
    for variant in variants:
        res = {'setting': setting, 'variant': variant, 'median_s': statistics.median(times[variant]),
               'times_s': times[variant], 'interleaved': True,
               'log': {k: float(v) for k, v in models[variant].log_dict.items()}}
        for base, key in (('FP', 'fp'), ('QAT', 'qat')):
            if base in times:
                per_round = [t / b for t, b in zip(times[variant], times[base])]
                res[f'round_ratio_to_{key}'] = {'median': statistics.median(per_round), 'min': min(per_round),
                                                'max': max(per_round)}
        results.append(res)
    models.clear()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--profile', action='store_true', help='print a torch.profiler table per variant')
    parser.add_argument('--json', default=None, help='default: benchmarks/results/train_speed_<device>.json')
    parser.add_argument('--interleave', action='store_true', help='step the variants in turn (see above)')
    parser.add_argument('--rounds', type=int, default=10, help='rounds of --interleave')
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.interleave:
        return main_interleaved(args, device)
    results = []
    for setting in args.settings:
        for variant in args.variants:
            res = measure(variant, setting, device, args.iters, args.warmup, args.profile)
            print(f'{setting:6s} {variant:7s} median {res["median_s"] * 1000:9.1f} ms/step   '
                  f'peak mem {res["peak_mem_mib"]:8.1f} MiB', flush=True)
            results.append(res)
    rows = []
    for res in results:
        same = {r['variant']: r['median_s'] for r in results if r['setting'] == res['setting']}
        ratio_fp = res['median_s'] / same['FP'] if 'FP' in same else float('nan')
        ratio_qat = res['median_s'] / same['QAT'] if 'QAT' in same else float('nan')
        res.update(ratio_to_fp=ratio_fp, ratio_to_qat=ratio_qat)
        rows.append([res['setting'], res['variant'], f'{res["median_s"] * 1000:.1f}', f'{ratio_fp:.2f}',
                     f'{ratio_qat:.2f}', f'{res["peak_mem_mib"]:.0f}'])
    machine = machine_description(device)
    mem_label = 'peak CUDA MiB' if device.type == 'cuda' else 'peak RSS +MiB (sampled)'
    print(f'\nTraining step, median of {args.iters} after {args.warmup} warm-up steps; {machine}\n')
    print(markdown_table(['setting', 'variant', 'ms/step', 'x FP', 'x QAT', mem_label], rows))
    out = args.json or osp.join(REPO, 'benchmarks', 'results', f'train_speed_{device.type}.json')
    write_json(out, {'machine': machine, 'device': str(device), 'iters': args.iters, 'warmup': args.warmup,
                     'settings': {k: SETTINGS[k] for k in args.settings}, 'results': results})
    print(f'\nwrote {out}')


def main_interleaved(args, device):
    results, rows = [], []
    for setting in args.settings:
        res = measure_interleaved(setting, list(args.variants), device, args.rounds, args.warmup)
        medians = {r['variant']: r['median_s'] for r in res}
        for r in res:
            r.update(ratio_to_fp=r['median_s'] / medians['FP'] if 'FP' in medians else float('nan'),
                     ratio_to_qat=r['median_s'] / medians['QAT'] if 'QAT' in medians else float('nan'))
            rr = r.get('round_ratio_to_qat')
            rows.append([setting, r['variant'], f'{r["median_s"] * 1000:.1f}', f'{r["ratio_to_fp"]:.2f}',
                         f'{r["ratio_to_qat"]:.2f}',
                         f'{rr["median"]:.2f} [{rr["min"]:.2f}, {rr["max"]:.2f}]' if rr else '-'])
            print(f'{setting:6s} {r["variant"]:7s} median {r["median_s"] * 1000:9.1f} ms/step', flush=True)
        results += res
    machine = machine_description(device)
    print(f'\nTraining step, interleaved: {args.rounds} rounds after {args.warmup} warm-up steps per variant; '
          f'{machine}\n')
    print(markdown_table(['setting', 'variant', 'ms/step (median)', 'x FP', 'x QAT',
                          'x QAT per round: median [min, max]'], rows))
    out = args.json or osp.join(REPO, 'benchmarks', 'results', f'train_speed_{device.type}_interleaved.json')
    write_json(out, {'machine': machine, 'device': str(device), 'rounds': args.rounds, 'warmup': args.warmup,
                     'interleaved': True, 'settings': {k: SETTINGS[k] for k in args.settings}, 'results': results})
    print(f'\nwrote {out}')


if __name__ == '__main__':
    main()

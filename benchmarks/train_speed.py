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

``--modes``: how the quantized variants (QAT, ODM v1, ODM v2) run their step; FP is BasicSR's SRModel in every mode.
    eager:       eager network, non-finite guard read on the host every step (train.compile false,
                 train.guard_on_device false: the step before the compiled, sync-free one)
    compiled:    the training forward and backward through torch.compile (train.compile true), ODMModel's default
                 guard (on the device on CUDA with Adam)
    compiled_wci: compiled, plus train.weight_clip_interval --weight-clip-interval (the clip statistic reused)
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
MODES = ('eager', 'compiled', 'compiled_wci')
SETTINGS = {
    'paper': dict(network=None, batch=8, gt_size=192),
    'proxy': dict(network='proxy', batch=8, gt_size=128),
}


def setting_options(variant, setting, device, mode='eager', weight_clip_interval=16):
    """BasicSR options of ``variant`` (a preset) at ``setting``'s network, batch and patch, its step run in ``mode``
    (see the module docstring)."""
    cfg = SETTINGS[setting]
    network = proxy_network() if cfg['network'] == 'proxy' else None
    opt = variant_options(variant, network=network, batch=cfg['batch'], gt_size=cfg['gt_size'],
                          num_gpu=1 if device.type == 'cuda' else 0)
    if variant != 'FP':
        opt['train']['compile'] = mode != 'eager'
        if mode == 'eager':
            opt['train']['guard_on_device'] = False
        if mode == 'compiled_wci':
            opt['train']['weight_clip_interval'] = weight_clip_interval
    return opt


def configs(variants, modes):
    """[(variant, mode)]: FP once (its own step in every mode), each quantized variant in each mode."""
    return [(v, 'eager') for v in variants if v == 'FP'] + [(v, m) for m in modes for v in variants if v != 'FP']


def label(variant, mode):
    return variant if variant == 'FP' else f'{variant} [{mode}]'


def ratios(result, results):
    """x FP and x plain QAT (same setting; plain QAT in the same mode) of one result."""
    same = {(r['variant'], r['mode']): r['median_s'] for r in results if r['setting'] == result['setting']}
    fp = same.get(('FP', 'eager'))
    qat = same.get(('QAT', result['mode'])) if result['variant'] != 'FP' else same.get(('QAT', 'eager'))
    return (result['median_s'] / fp if fp else float('nan'), result['median_s'] / qat if qat else float('nan'))


def step_settings(model):
    """What the built model's step actually ran with (a compile may have fallen back), and its last log."""
    return {'compiled': bool(getattr(model, 'compiled', False)),
            'guard_on_device': bool(getattr(model, 'guard_on_device', False)),
            'log': {k: float(v) for k, v in model.log_dict.items()}}


def host_sync_check(one_step, device):
    """CUDA only: one more step under ``torch.cuda.set_sync_debug_mode('error')``. Returns {'sync_free': bool,
    'first_sync': the error message of the first synchronizing call, or ''}; None on CPU."""
    if device.type != 'cuda':
        return None
    sync(device)
    torch.cuda.set_sync_debug_mode('error')
    try:
        one_step()
        result = {'sync_free': True, 'first_sync': ''}
    except RuntimeError as error:
        result = {'sync_free': False, 'first_sync': str(error).strip().splitlines()[0][:300]}
        import traceback
        frames = [f for f in traceback.extract_tb(error.__traceback__) if 'site-packages/torch' not in f.filename]
        if frames:
            result['where'] = f'{frames[-1].filename.split("/")[-1]}:{frames[-1].lineno} {frames[-1].line}'
    finally:
        torch.cuda.set_sync_debug_mode('default')
        sync(device)
    return result


def measure(variant, setting, device, iters, warmup, profile=False, mode='eager', weight_clip_interval=16):
    from basicsr.models import build_model
    opt = setting_options(variant, setting, device, mode, weight_clip_interval)
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
        sync_check = host_sync_check(one_step, device)
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
    result = {'setting': setting, 'variant': variant, 'mode': mode, 'median_s': median, 'times_s': times,
              'peak_mem_mib': mem if mem is not None else rss.mib,
              'memory_kind': 'cuda_max_allocated' if mem is not None else 'cpu_peak_rss_increase_sampled',
              'host_sync_check': sync_check, **step_settings(model)}
    del model
    return result


def measure_interleaved(setting, variants, device, rounds, warmup, modes=('eager',), weight_clip_interval=16):
    """[result dict per (variant, mode)] for ``setting``, stepped in turn (see the module docstring)."""
    from basicsr.models import build_model
    models, steps = {}, {}
    variants = configs(variants, modes)
    for variant in variants:
        opt = setting_options(variant[0], setting, device, variant[1], weight_clip_interval)
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
        res = {'setting': setting, 'variant': variant[0], 'mode': variant[1],
               'median_s': statistics.median(times[variant]), 'times_s': times[variant], 'interleaved': True,
               **step_settings(models[variant])}
        for base, key in ((('FP', 'eager'), 'fp'), (('QAT', variant[1]), 'qat')):
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
    parser.add_argument('--modes', nargs='+', default=['eager', 'compiled'], choices=MODES,
                        help='how the quantized variants step (see above)')
    parser.add_argument('--weight-clip-interval', type=int, default=16, help='for the compiled_wci mode')
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.interleave:
        return main_interleaved(args, device)
    results = []
    for setting in args.settings:
        for variant, mode in configs(args.variants, args.modes):
            res = measure(variant, setting, device, args.iters, args.warmup, args.profile, mode,
                          args.weight_clip_interval)
            check = res['host_sync_check']
            print(f'{setting:6s} {label(variant, mode):24s} median {res["median_s"] * 1000:9.1f} ms/step   '
                  f'peak mem {res["peak_mem_mib"]:8.1f} MiB'
                  + ('' if check is None else f'   host sync: {"none" if check["sync_free"] else check}'), flush=True)
            results.append(res)
    rows = []
    for res in results:
        ratio_fp, ratio_qat = ratios(res, results)
        res.update(ratio_to_fp=ratio_fp, ratio_to_qat=ratio_qat)
        rows.append([res['setting'], label(res['variant'], res['mode']), f'{res["median_s"] * 1000:.1f}',
                     f'{ratio_fp:.2f}', f'{ratio_qat:.2f}', f'{res["peak_mem_mib"]:.0f}'])
    machine = machine_description(device)
    mem_label = 'peak CUDA MiB' if device.type == 'cuda' else 'peak RSS +MiB (sampled)'
    print(f'\nTraining step, median of {args.iters} after {args.warmup} warm-up steps; {machine}\n')
    print(markdown_table(['setting', 'variant', 'ms/step', 'x FP', 'x QAT', mem_label], rows))
    out = args.json or osp.join(REPO, 'benchmarks', 'results', f'train_speed_{device.type}.json')
    write_json(out, {'machine': machine, 'device': str(device), 'iters': args.iters, 'warmup': args.warmup,
                     'modes': args.modes, 'weight_clip_interval': args.weight_clip_interval,
                     'settings': {k: SETTINGS[k] for k in args.settings}, 'results': results})
    print(f'\nwrote {out}')


def main_interleaved(args, device):
    results, rows = [], []
    for setting in args.settings:
        res = measure_interleaved(setting, list(args.variants), device, args.rounds, args.warmup, args.modes,
                                  args.weight_clip_interval)
        for r in res:
            ratio_fp, ratio_qat = ratios(r, res)
            r.update(ratio_to_fp=ratio_fp, ratio_to_qat=ratio_qat)
            rr = r.get('round_ratio_to_qat')
            rows.append([setting, label(r['variant'], r['mode']), f'{r["median_s"] * 1000:.1f}',
                         f'{r["ratio_to_fp"]:.2f}', f'{r["ratio_to_qat"]:.2f}',
                         f'{rr["median"]:.2f} [{rr["min"]:.2f}, {rr["max"]:.2f}]' if rr else '-'])
            print(f'{setting:6s} {label(r["variant"], r["mode"]):24s} median {r["median_s"] * 1000:9.1f} ms/step',
                  flush=True)
        results += res
    machine = machine_description(device)
    print(f'\nTraining step, interleaved: {args.rounds} rounds after {args.warmup} warm-up steps per variant; '
          f'{machine}\n')
    print(markdown_table(['setting', 'variant', 'ms/step (median)', 'x FP', 'x QAT',
                          'x QAT per round: median [min, max]'], rows))
    out = args.json or osp.join(REPO, 'benchmarks', 'results', f'train_speed_{device.type}_interleaved.json')
    write_json(out, {'machine': machine, 'device': str(device), 'rounds': args.rounds, 'warmup': args.warmup,
                     'interleaved': True, 'modes': args.modes, 'weight_clip_interval': args.weight_clip_interval,
                     'settings': {k: SETTINGS[k] for k in args.settings}, 'results': results})
    print(f'\nwrote {out}')


if __name__ == '__main__':
    main()

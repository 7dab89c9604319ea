"""An independent check of basicsr compare's fidelity column on the demo networks, and why equal fidelity can come
with different PSNR to HR.

For each entry of options/demo/compare_EDSR_demo_x4.yml that has a checkpoint under ``--work-dir`` (where
``basicsr demo`` ran), on the 3 held-out photos, in float64 numpy (not the compare code):
- fidelity: PSNR of the entry's output against the FP output (RGB on 0-1, border 4), the mean over images;
- PSNR-Y to HR (uint8 Y as BasicSR's calculate_psnr, border 4);
- the split of the error to HR: MSE(q, HR) = MSE(FP, HR) + MSE(q, FP) + 2 <q - FP, FP - HR> (RGB): the cross term
  says whether the quantization error points along FP's own error (PSNR drops) or against it (PSNR rises);
- the fidelity between entries of the same bit-width (they differ from each other as much as from FP?).

Run:  .venv/bin/python benchmarks/demo_fidelity_check.py --work-dir DIR [--json PATH]
"""
import argparse
import math
import os
import os.path as osp
import sys

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import REPO, markdown_table, write_json  # noqa: E402

from basicsr.archs import build_network  # noqa: E402
from basicsr.data import build_dataset  # noqa: E402
from basicsr.metrics import calculate_psnr  # noqa: E402
from basicsr.utils import tensor2img  # noqa: E402

from odm_basicsr.options_check import load_option_file  # noqa: E402
from odm_basicsr.utils.safe_load import load_network_state  # noqa: E402

BORDER = 4


def psnr(mse):
    return 10 * math.log10(1 / mse)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', required=True, help='where basicsr demo ran (its experiments/ and datasets/)')
    parser.add_argument('--json', default=osp.join(REPO, 'benchmarks', 'results', 'demo_fidelity_check.json'))
    args = parser.parse_args()
    args.json = osp.abspath(args.json)
    os.chdir(args.work_dir)  # first: the shipped FP checkpoint's path resolves from there
    opt = load_option_file(osp.join(REPO, 'options', 'demo', 'compare_EDSR_demo_x4.yml'))
    data = build_dataset(dict(opt['datasets']['test_1'], phase='val', scale=4))
    images = [(data[i]['lq'].unsqueeze(0), data[i]['gt'].unsqueeze(0)) for i in range(len(data))]
    outs = {}
    for entry in opt['compare']['entries']:
        if not osp.isfile(entry['checkpoint']):
            continue
        net = build_network(dict(entry['network_g'])).eval()
        net.load_state_dict(load_network_state(entry['checkpoint']), strict=True)
        with torch.no_grad():
            outs[entry['label']] = [net(lq).clamp(0, 1).double().numpy()[0] for lq, _ in images]
    crop = (slice(None), slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    hr = [gt.double().numpy()[0][crop] for _, gt in images]
    fp = [o[crop] for o in outs['FP']]
    rows, results = [], []
    for label, out in outs.items():
        if label == 'FP':
            continue
        q = [o[crop] for o in out]
        fidelity = np.mean([psnr(np.mean((a - b) ** 2)) for a, b in zip(q, fp)])
        psnr_y = np.mean([calculate_psnr(tensor2img(torch.from_numpy(o).unsqueeze(0).float()),
                                         tensor2img(gt), BORDER, test_y_channel=True)
                          for o, (_, gt) in zip(out, images)])
        split = [dict(fp_to_hr=np.mean((f - h) ** 2), q_to_fp=np.mean((a - f) ** 2),
                      cross=2 * np.mean((a - f) * (f - h)), q_to_hr=np.mean((a - h) ** 2))
                 for a, f, h in zip(q, fp, hr)]
        mean = {k: float(np.mean([s[k] for s in split])) for k in split[0]}
        results.append(dict(label=label, fidelity_db=float(fidelity), psnr_y=float(psnr_y), mse_split=mean,
                            per_image_fidelity=[psnr(np.mean((a - b) ** 2)) for a, b in zip(q, fp)]))
        rows.append([label, f'{fidelity:.3f}', f'{psnr_y:.2f}', f'{mean["q_to_fp"]:.3e}', f'{mean["cross"]:+.3e}',
                     f'{mean["fp_to_hr"]:.3e}'])
    print(markdown_table(['entry', 'fidelity dB (numpy)', 'PSNR-Y to HR', 'MSE(q, FP)', '2<q-FP, FP-HR>',
                          'MSE(FP, HR)'], rows))
    pairs = []
    for bits in ('w4a4', 'w2a2'):
        labels = [r['label'] for r in results if r['label'].endswith(bits)]
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                db = np.mean([psnr(np.mean((x[crop] - y[crop]) ** 2)) for x, y in zip(outs[a], outs[b])])
                pairs.append(dict(a=a, b=b, fidelity_db=float(db)))
                print(f'{a} vs {b}: {db:.2f} dB')
    write_json(args.json, dict(results=results, pairs=pairs, command=' '.join(sys.argv)))


if __name__ == '__main__':
    main()

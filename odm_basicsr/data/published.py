"""Published PSNR / SSIM (Y channel, border = scale) of FP and quantized SR networks, for the comparison tables of
``basicsr compare``. They are the papers' numbers, not measured here, and are always marked as published.

Sources: PAMS and ODM rows as quoted in the ODM v2 paper (Hong & Lee, ECCV 2024); DAQ and DDTB rows from those
projects' own READMEs; SwinIR-light rows from the 2DQuant (NeurIPS 2024) and CondiQuant (2025) papers. W and A share
one bit-width; None: not published in a source we could read.
"""

# (arch, scale): [(method, bits, {test set: (psnr, ssim or None)})]
PUBLISHED = {
    ('EDSR', 4): [
        ('FP32', 32, {'Set5': (32.10, 0.894), 'Set14': (28.58, 0.781), 'B100': (27.56, 0.736),
                      'Urban100': (26.04, 0.785)}),
        ('PAMS', 4, {'Set5': (31.59, 0.885), 'Set14': (28.20, None), 'Urban100': (25.32, 0.762)}),
        ('DAQ', 4, {'Set5': (31.85, 0.887), 'Set14': (28.38, None), 'B100': (27.42, 0.732), 'Urban100': (25.73, 0.772)}),
        ('DDTB', 4, {'Set5': (31.85, 0.889), 'Set14': (28.39, 0.777), 'B100': (27.44, 0.732),
                     'Urban100': (25.69, 0.774)}),
        ('ODM', 4, {'Set5': (32.00, 0.891), 'Set14': (28.47, None), 'Urban100': (25.80, 0.778)}),
        ('DAQ', 3, {'Set5': (31.66, 0.884), 'Set14': (28.19, 0.771), 'B100': (27.28, 0.728), 'Urban100': (25.40, 0.762)}),
        ('DDTB', 3, {'Set5': (31.52, 0.883), 'Set14': (28.18, 0.771), 'B100': (27.30, 0.727),
                     'Urban100': (25.33, 0.761)}),
        ('PAMS', 2, {'Set5': (29.51, 0.835), 'Set14': (26.79, None), 'Urban100': (23.72, 0.688)}),
        ('DAQ', 2, {'Set5': (31.01, 0.871), 'Set14': (27.89, None), 'B100': (27.09, 0.719), 'Urban100': (24.88, 0.740)}),
        ('DDTB', 2, {'Set5': (30.97, 0.876), 'Set14': (27.87, 0.764), 'B100': (27.09, 0.719),
                     'Urban100': (24.82, 0.742)}),
        ('ODM', 2, {'Set5': (31.50, 0.882), 'Set14': (28.14, None), 'Urban100': (25.17, 0.755)}),
    ],
    ('RDN', 4): [
        ('FP32', 32, {'Set5': (32.24, 0.896), 'Urban100': (26.29, 0.792)}),
        ('DAQ', 2, {'Set5': (30.71, 0.866)}),
        ('DDTB', 2, {'Set5': (30.57, 0.867)}),
    ],
    ('SRResNet', 4): [
        ('FP32', 32, {'Set5': (32.07, 0.893), 'Urban100': (25.86, 0.779)}),
        ('DAQ', 4, {'Set5': (31.85, None)}),
        ('DDTB', 4, {'Set5': (31.97, None)}),
        ('DAQ', 2, {'Set5': (31.57, None)}),
        ('DDTB', 2, {'Set5': (31.51, None)}),
    ],
    ('SwinIR', 4): [
        ('FP32 (as reported by 2DQuant)', 32, {'Set5': (32.45, None), 'Urban100': (26.48, None)}),
        ('PTQ4SR (re-run by 2DQuant)', 4, {'Set5': (30.74, None), 'Urban100': (24.94, None)}),
        ('2DQuant', 4, {'Set5': (31.77, None), 'Urban100': (25.71, None)}),
        ('CondiQuant', 4, {'Set5': (32.09, None), 'Urban100': (25.97, None)}),
        ('PTQ4SR (re-run by 2DQuant)', 2, {'Set5': (25.01, None), 'Urban100': (21.84, None)}),
        ('2DQuant', 2, {'Set5': (29.53, None), 'Urban100': (23.84, None)}),
        ('CondiQuant', 2, {'Set5': (30.64, None), 'Urban100': (24.54, None)}),
    ],
}


def published_rows(arch, scale, bits=None):
    """[(method, bits, {set: (psnr, ssim)})] published for ``arch`` at ``scale`` (and ``bits`` if given)."""
    rows = PUBLISHED.get((arch, scale), [])
    return [r for r in rows if bits is None or r[1] in bits]

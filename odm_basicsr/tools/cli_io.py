"""The commands' shared input and output: loading network_g from an option file, reading images, LR calibration
crops, running a network on whole images, and PSNR / fidelity. Every command imports from here; no command imports
another command."""
import argparse
import math
import os
import os.path as osp

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from basicsr.archs import build_network

from odm_basicsr.data.photos import DEMO_TRAIN, bicubic_downscale, load_photo
from odm_basicsr.quant import CheckpointMismatchError
from odm_basicsr.quant.export_integer import export_onnx_integer
from odm_basicsr.quant.export_openvino import OPENVINO_EXTRA, OpenVINOSession, require_openvino
from odm_basicsr.utils.safe_load import load_network_state

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))  # the source checkout (options/, experiments/)
CALIBRATION_COUNT = 8  # LR images (64x64 centre crops) whose outputs set export's requantization ranges
TRACE_SIZE = (64, 64)  # basicsr export's default LR size of the ONNX trace (--size)
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


class InferError(ValueError):
    """Bad input to a command that reads images (``basicsr infer``, ``export --calibration``): the message says what
    to change."""


def input_channels(network_opt):
    """Input channels of a network_g block: num_in_ch, SwinIR's in_chans, or ODMQuant's inner arch's; default 3."""
    merged = dict(network_opt.get('arch') or {}, **network_opt)
    return int(merged.get('num_in_ch', merged.get('in_chans', 3)))


def network_scale(network_opt, default=None):
    """Upscaling factor of a network_g block: upscale or scale (ODMQuant's inner arch's too), else ``default``, else 4."""
    merged = dict(network_opt.get('arch') or {}, **network_opt)
    return int(merged.get('upscale', merged.get('scale', default or 4)))


def pad_to_multiple(x, multiple):
    """x (N, C, H, W) padded at the bottom and right to multiples of ``multiple`` (reflect where the image is large
    enough, else replicate), and the (pad_h, pad_w) added."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), 'reflect' if pad_h < height and pad_w < width else 'replicate')
    return x, (pad_h, pad_w)


def forward_padded(net, lq, window, scale):
    """net(lq); with ``window`` (SwinIR's window_size), lq is first padded to a multiple of it and the output cropped
    back, as BasicSR's SwinIRModel does at test time."""
    if not window:
        return net(lq)
    height, width = lq.shape[-2:]
    padded, _ = pad_to_multiple(lq, window)
    return net(padded)[..., :height * scale, :width * scale]


def read_image(path, channels):
    """(1 x channels x H x W float tensor on 0-1, RGB; how to write the output back: grey, 16-bit; warning or None)."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InferError(f'{path}: not a readable image.')
    sixteen = img.dtype == np.uint16
    if img.dtype not in (np.uint8, np.uint16):
        raise InferError(f'{path}: {img.dtype} images are not supported (8- or 16-bit expected).')
    img = img.astype(np.float32) / (65535. if sixteen else 255.)
    warning = None
    grey = img.ndim == 2 or img.shape[2] == 1
    if grey:
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    elif img.shape[2] == 4:
        warning = f'{path}: the alpha channel is dropped.'
        img = img[:, :, :3]
    img = img[:, :, ::-1]  # BGR -> RGB, as BasicSR's img2tensor(bgr2rgb=True)
    if channels == 1:
        img = img.mean(axis=2, keepdims=True)
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).unsqueeze(0)
    return tensor, dict(grey=grey, sixteen=sixteen), warning



def calibration_images(folder, channels, scale, size=64, count=CALIBRATION_COUNT):
    """LR crops (1, channels, <= size, <= size) on 0-1: the centre of each of the first ``count`` images of
    ``folder`` (sorted), or, without a folder, of the photos scikit-image ships (bicubic x``scale`` downscaled)."""
    def centre(t):
        h, w = t.shape[-2:]
        y, x = max((h - size) // 2, 0), max((w - size) // 2, 0)
        return t[..., y:y + size, x:x + size]

    if folder:
        files = [folder] if osp.isfile(folder) else sorted(
            osp.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        return [centre(read_image(f, channels)[0]) for f in files[:count]]
    batches = []
    for name in DEMO_TRAIN[:count]:
        hr = load_photo(name)
        h, w = hr.shape[:2]
        side = min(size * scale, h - h % scale, w - w % scale)
        y, x = (h - side) // 2, (w - side) // 2
        lr = torch.from_numpy(bicubic_downscale(hr[y:y + side, x:x + side], scale)).permute(2, 0, 1).float() / 255
        batches.append((lr.mean(0, keepdim=True) if channels == 1 else lr)[None])
    return batches


def psnr(got, want):
    """PSNR (dB) of ``got`` against ``want`` (numpy arrays on 0-1, unclipped)."""
    mse = float(np.mean((got - want)**2))
    return 10 * np.log10(1.0 / mse) if mse > 0 else float('inf')


def load_network(opt, opt_path):
    """network_g of ``opt`` with path.pretrain_network_g loaded (safe unpickling; BasicSR's param_key rules)."""
    path_opt = opt.get('path') or {}
    ckpt_path = path_opt.get('pretrain_network_g')
    if not ckpt_path:
        raise SystemExit(f'error in {opt_path}: path.pretrain_network_g must name the trained quantized checkpoint.')
    net = build_network(dict(opt['network_g']))
    try:
        state = load_network_state(osp.expanduser(str(ckpt_path)), path_opt.get('param_key_g', 'params'))
    except ValueError as err:
        raise SystemExit(f'error: {err}')
    try:
        net.load_state_dict(state, strict=path_opt.get('strict_load_g', True))
    except (CheckpointMismatchError, RuntimeError) as err:
        raise SystemExit(f'error: {ckpt_path} does not fit network_g of {opt_path}:\n{err}')
    return net.eval()


def fidelity_psnr(output, reference, crop_border):
    """PSNR (dB) of ``output`` against ``reference``, both (N, C, H, W) in [0, 1], borders cropped."""
    if crop_border:
        output = output[..., crop_border:-crop_border, crop_border:-crop_border]
        reference = reference[..., crop_border:-crop_border, crop_border:-crop_border]
    mse = float(((output.clamp(0, 1) - reference.clamp(0, 1))**2).mean())
    return float('inf') if mse == 0 else 10 * math.log10(1 / mse)


def parse_size(text):
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f'size must look like 180x320 (H x W of the LR input, both >= 1), got '
                                         f'{text!r}')
    return h, w


def resolve_device(choice, opt=None):
    """torch.device of a --device choice: 'auto' is CUDA when torch sees it and the option file's num_gpu is not 0;
    'cuda' without a CUDA device is an InferError."""
    if choice == 'cuda' and not torch.cuda.is_available():
        raise InferError('--device cuda, but torch sees no CUDA device.')
    if choice == 'auto':
        choice = 'cuda' if torch.cuda.is_available() and (opt or {}).get('num_gpu', 'auto') != 0 else 'cpu'
    return torch.device(choice)


RUNTIME_EXTRAS = {'onnxruntime': 'pip install "odm-basicsr[export]"', 'openvino': OPENVINO_EXTRA}


def runtime_missing(runtime):
    """None if the ONNX runtime ``runtime`` (onnxruntime or openvino) imports, else the line that names its extra."""
    try:
        if runtime == 'openvino':
            require_openvino()
        else:
            import onnxruntime  # noqa: F401
    except ImportError:
        return f'--runtime {runtime} is not installed: {RUNTIME_EXTRAS[runtime]}'
    return None


def integer_onnx_session(net, network_opt, scale, folder):
    """The integer ONNX file that ``basicsr export -opt ...`` writes by default for ``net`` (integer mode, its
    default requantization images, a TRACE_SIZE trace), written in ``folder`` and opened in onnxruntime."""
    channels = input_channels(network_opt)
    example = torch.rand(1, channels, *TRACE_SIZE, generator=torch.Generator().manual_seed(0))
    path = osp.join(folder, 'integer.onnx')
    export_onnx_integer(net, example, path, calibration_images(None, channels, scale))
    return onnx_session(path)


def onnx_session(path, runtime='onnxruntime', threads=0):
    """A CPU session of the ONNX file ``path`` with onnxruntime's interface (``run(None, feed)``, ``get_inputs()``):
    onnxruntime, with its own log at errors only (its graph optimizer otherwise prints a warning per initializer it
    drops, unused weights, harmless), or OpenVINO's CPU plugin (``quant/export_openvino.py``). ``threads``: 0 for the
    runtime's default."""
    if runtime == 'openvino':
        return OpenVINOSession(path, threads)
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])

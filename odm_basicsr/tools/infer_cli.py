"""``basicsr infer``: upscale an image or a folder of images with a trained network, and write PNGs.

    basicsr infer -opt TEST_FILE --input LR_IMAGE_OR_FOLDER --out OUT_DIR [--tile 256] [--tile-overlap 16]
    basicsr infer --onnx NET.onnx --input LR_IMAGE_OR_FOLDER --out OUT_DIR [--tile 256] [--tile-overlap 16]
                  [--runtime onnxruntime|openvino]

``-opt`` takes a test option file: its network_g and path.pretrain_network_g, checked as ``basicsr test`` checks
them (a quantized network needs a trained or calibrated checkpoint); its datasets are not read. ``--onnx`` runs a
model written by ``basicsr export --format onnx`` through onnxruntime (CPU), or OpenVINO's CPU plugin with
``--runtime openvino`` (the ``openvino`` extra). A model exported at a fixed input size
(SwinIR) gets tiles that fit it, each padded to that size and its output cropped.

Images larger than ``--tile`` LR pixels on a side are cut into tiles of that size; each tile is run with
``--tile-overlap`` LR pixels of context on every side (cut at the image border), and only its own region of the
output is kept. For a conv net with an overlap at least its receptive-field radius the result equals the untiled
one (the static quantization ranges of an ODM network do not depend on the tile). With less (EDSR-baseline's radius
is about 34 LR pixels), pixels next to the seams differ slightly, and so do SwinIR's, whose windows start at each
tile's corner. ``--tile 0`` runs whole images. Networks with a window (SwinIR) get inputs padded to it.

Output: ``OUT_DIR/<image name>.png`` (8-bit, or 16-bit for 16-bit inputs), RGB in the input's channel count
(grey inputs are run as three equal channels and written grey; an alpha channel is dropped, with a warning).
Each file is written under a temporary name and renamed, so an interrupted run leaves no truncated PNG.
"""
import os
import os.path as osp
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from odm_basicsr.options_check import check_option_file

from .cli_io import (IMAGE_EXTENSIONS, InferError, forward_padded, input_channels, load_network, onnx_session,
                     read_image, resolve_device, runtime_missing)
from .cli_text import add_device, add_out, add_runtime, command_parser


def list_images(path):
    """The image files to upscale: ``path`` itself, or the images directly inside the folder ``path`` (sorted)."""
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise InferError(f'--input {path!r} does not exist (an image file or a folder of images is expected).')
    files = sorted(osp.join(path, f) for f in os.listdir(path)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and osp.isfile(osp.join(path, f)))
    if not files:
        raise InferError(f'--input {path!r} holds no image ({", ".join(IMAGE_EXTENSIONS)}).')
    return files


def tile_boxes(height, width, tile):
    """[(y0, y1, x0, x1)] covering a height x width image with tiles of at most ``tile`` pixels (all if tile <= 0)."""
    if tile <= 0 or (height <= tile and width <= tile):
        return [(0, height, 0, width)]
    return [(y, min(y + tile, height), x, min(x + tile, width))
            for y in range(0, height, tile) for x in range(0, width, tile)]


def upscale_tiled(run, image, tile, overlap, progress=None):
    """Upscale ``image`` (torch tensor, 1 x C x H x W) with ``run`` tile by tile.

    Each tile is run with ``overlap`` pixels of context on every side (less at the image border, where the network
    sees the image border as it would untiled), and only the tile's own region of the output is kept.
    Returns the 1 x C' x sH x sW output; the scale s is read off the first tile's output."""
    _, _, height, width = image.shape
    boxes = tile_boxes(height, width, tile)
    out = scale = None
    for y0, y1, x0, x1 in boxes:
        ya, yb, xa, xb = max(y0 - overlap, 0), min(y1 + overlap, height), max(x0 - overlap, 0), min(x1 + overlap, width)
        patch = run(image[:, :, ya:yb, xa:xb])
        if scale is None:
            scale = patch.shape[-1] // (xb - xa)
            if scale < 1 or patch.shape[-2:] != (scale * (yb - ya), scale * (xb - xa)):
                raise InferError(f'the network maps a {yb - ya}x{xb - xa} input to {tuple(patch.shape[-2:])}: '
                                 'not an integer upscaling.')
            out = torch.empty(1, patch.shape[1], scale * height, scale * width, dtype=patch.dtype)
        out[:, :, scale * y0:scale * y1, scale * x0:scale * x1] = patch[
            :, :, scale * (y0 - ya):scale * (y1 - ya), scale * (x0 - xa):scale * (x1 - xa)]
        if progress is not None:
            progress.update(1)
    return out


def write_image(path, tensor, grey, sixteen):
    """Write a 1 x C x H x W RGB tensor on 0-1 as a PNG (temporary name, then rename)."""
    img = tensor[0].detach().float().clamp_(0, 1).cpu().numpy().transpose(1, 2, 0)
    if img.shape[2] == 3:
        img = img[:, :, ::-1]
        if grey:
            img = img.mean(axis=2)
    img = np.rint(img * (65535. if sixteen else 255.)).astype(np.uint16 if sixteen else np.uint8)
    tmp = path + '.tmp.png'
    if not cv2.imwrite(tmp, img):
        raise InferError(f'could not write {path}.')
    os.replace(tmp, path)


class TorchRunner:
    """network_g of a test option file, loaded as ``basicsr test`` / ``basicsr export`` load it."""

    def __init__(self, opt_path, device):
        opt = check_option_file(opt_path, is_train=False, sections=('model_type', 'network_g', 'path'))
        if not isinstance(opt.get('network_g'), dict):
            raise InferError(f'{opt_path} has no network_g mapping.')
        self.device = resolve_device(device, opt)
        self.net = load_network(opt, opt_path).to(self.device)
        self.channels = input_channels(opt['network_g'])
        self.window = opt['network_g'].get('window_size')
        self.scale = int(opt.get('scale', 1))
        self.name = f'{opt["network_g"]["type"]} from {opt["path"]["pretrain_network_g"]} on {self.device}'

    def __call__(self, patch):
        with torch.no_grad():
            return forward_padded(self.net, patch.to(self.device), self.window, self.scale).cpu()


class OnnxRunner:
    """A model exported by ``basicsr export --format onnx`` (input 'lr', output 'sr'), through onnxruntime or
    OpenVINO (``runtime``)."""

    def __init__(self, model_path, runtime='onnxruntime'):
        if not osp.isfile(model_path):
            raise InferError(f'--onnx {model_path!r} does not exist (write one with "basicsr export -opt TEST_FILE '
                             '--format onnx").')
        missing = runtime_missing(runtime)
        if missing:
            raise InferError(f'--onnx: {missing}')
        try:
            self.session = onnx_session(model_path, runtime)
        except Exception as err:  # each runtime raises its own exception types
            raise InferError(f'--onnx {model_path!r} is not a loadable ONNX model: {err}')
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise InferError(f'--onnx {model_path!r}: one N x C x H x W input expected, got '
                             f'{[(i.name, i.shape) for i in inputs]}.')
        self.input_name = inputs[0].name
        channels, height, width = inputs[0].shape[1:]
        self.channels = channels if isinstance(channels, int) else 3
        # a model traced at one size (SwinIR): every patch is padded to it, and the output cropped back
        self.fixed_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        self.name = f'{osp.basename(model_path)} on {runtime} (CPU)' + (
            f', input fixed at {height}x{width}' if self.fixed_size else '')

    def __call__(self, patch):
        height, width = patch.shape[-2:]
        if self.fixed_size:
            pad_h, pad_w = self.fixed_size[0] - height, self.fixed_size[1] - width
            if pad_h < 0 or pad_w < 0:
                raise InferError(f'a {height}x{width} patch exceeds the ONNX model\'s fixed input '
                                 f'{self.fixed_size[0]}x{self.fixed_size[1]}.')
            mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'  # as ODMSwinIR pads
            patch = F.pad(patch, (0, pad_w, 0, pad_h), mode)
        out = torch.from_numpy(self.session.run(None, {self.input_name: patch.numpy()})[0])
        if self.fixed_size:
            scale = out.shape[-1] // self.fixed_size[1]
            out = out[..., :scale * height, :scale * width]
        return out


def main(argv):
    parser = command_parser('infer', __doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('-opt', help='test option file (network_g, path.pretrain_network_g)')
    source.add_argument('--onnx', help='ONNX model written by basicsr export --format onnx')
    add_runtime(parser, '--onnx: the CPU runtime that runs it (default onnxruntime; openvino needs the openvino extra)')
    parser.add_argument('--input', required=True, help='an LR image, or a folder of LR images')
    add_out(parser, 'folder for the upscaled PNGs (created if needed)', required=True)
    parser.add_argument('--tile', type=int, default=256,
                        help='tile side in LR pixels for large images; 0: whole images (default 256)')
    parser.add_argument('--tile-overlap', '--tile_overlap', dest='tile_overlap', type=int, default=16,
                        help='context in LR pixels around each tile (default 16)')
    add_device(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except InferError as err:
        raise SystemExit(f'error: {err}')


def run(args):
    # everything is checked before anything is written
    if args.tile < 0 or args.tile_overlap < 0:
        raise InferError(f'--tile and --tile-overlap must be >= 0 (got {args.tile}, {args.tile_overlap}).')
    if args.onnx and args.device == 'cuda':
        raise InferError(f'--device applies to -opt; --onnx runs on {args.runtime}\'s CPU device.')
    if args.opt and args.runtime != 'onnxruntime':
        raise InferError('--runtime applies to --onnx; -opt runs the PyTorch network (--device).')
    images = list_images(args.input)
    unreadable = [p for p in images if not cv2.haveImageReader(p)]
    if unreadable:
        raise InferError(f'{len(unreadable)} of {len(images)} input(s) are not images OpenCV can read (nothing was '
                         'loaded or written): ' + ', '.join(unreadable[:5]) + (', ...' if len(unreadable) > 5 else ''))
    in_dir = osp.realpath(args.input if osp.isdir(args.input) else osp.dirname(args.input) or '.')
    if osp.realpath(args.out) == in_dir:
        raise InferError(f'--out {args.out!r} is the input folder: the PNGs would overwrite the inputs.')
    if osp.exists(args.out) and not osp.isdir(args.out):
        raise InferError(f'--out {args.out!r} exists and is not a folder.')
    names = [osp.splitext(osp.basename(p))[0] for p in images]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise InferError(f'--input has several images named {clashes[0]!r} (different extensions); their PNGs would '
                         'overwrite each other.')
    runner = OnnxRunner(args.onnx, args.runtime) if args.onnx else TorchRunner(args.opt, args.device)
    if getattr(runner, 'fixed_size', None):
        # tiles plus their context must fit the fixed input
        tile = min(runner.fixed_size) - 2 * args.tile_overlap
        if tile < 1:
            raise InferError(f'--tile-overlap {args.tile_overlap} leaves no room in the ONNX model\'s fixed '
                             f'{runner.fixed_size[0]}x{runner.fixed_size[1]} input: lower it.')
        args.tile = tile if args.tile <= 0 else min(args.tile, tile)
    os.makedirs(args.out, exist_ok=True)
    print(f'{len(images)} image(s) with {runner.name}; tile {args.tile or "off"}, overlap {args.tile_overlap}',
          flush=True)
    failures = []
    with tqdm(total=len(images), unit='image', file=sys.stdout) as bar:
        for path, name in zip(images, names):
            try:
                image, how, warning = read_image(path, runner.channels)
            except InferError as err:
                failures.append(str(err))
                bar.update(1)
                continue
            if warning:
                tqdm.write(f'warning: {warning}', file=sys.stdout)
            tiles = len(tile_boxes(image.shape[2], image.shape[3], args.tile))
            tile_bar = tqdm(total=tiles, unit='tile', leave=False, file=sys.stdout) if tiles > 1 else None
            try:
                out = upscale_tiled(runner, image, args.tile, args.tile_overlap, tile_bar)
            finally:
                if tile_bar is not None:
                    tile_bar.close()
            write_image(osp.join(args.out, f'{name}.png'), out, **how)
            bar.update(1)
    written = len(images) - len(failures)
    print(f'wrote {written} PNG(s) to {args.out}', flush=True)
    if failures:
        raise InferError(f'{len(failures)} input(s) could not be read:\n  ' + '\n  '.join(failures))

"""Decoding and cropping photographs (ImageNet's JPEGs) into a model's square input.

One crop rule serves every decoder: a box in the original image's pixels, drawn by
`random_resized_box` for training (torchvision's `RandomResizedCrop.get_params` itself: area
8-100%, aspect 3/4-4/3, ten tries, then the centre) or set by `center_boxes` for evaluation (the region a
resize of the short side to size/0.875 and a centre crop would keep). The box is resampled to
`size` in one step, so no full-size resize is ever made.

- In loader workers (`decode_crop`): the header is read first; libjpeg-turbo then decodes only
  the box's rows and columns (`_jpeg_region`, an extension built at install: rows above the box
  are entropy-decoded and skipped, columns beside it cropped on the iMCU grid, rows below never
  read), at 1/2, 1/4 or 1/8 scale where the box is at least that many times the output on both
  sides (a DCT shortcut). Its pixels are those of a whole-image decode at that scale. Without the
  extension, or for an image it refuses (CMYK, PNG), the whole image is decoded (torchvision's
  libjpeg-turbo, PIL's draft mode for the reduced scales) and cropped. Only uint8 leaves.
- On the device (`crop_batch`): nvJPEG's decoded images are cropped, resized and flipped as one
  batch (`torchvision.ops.roi_align`, averaging ceil(box/size) samples per output pixel when
  shrinking), not per image in Python.
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

CROP_RATIO = 0.875  # evaluation: resize the short side to size / 0.875 (256 for 224), centre-crop size
DECODE_ENV = "GHOST_ABLATE_DECODE"
# auto: nvJPEG on CUDA, else the workers; workers: PIL/libjpeg-turbo in loader workers;
# device: nvJPEG (or the CPU) with batch crops; dali: NVIDIA DALI (GPU on CUDA, its CPU mode otherwise)
DECODERS = ("auto", "workers", "device", "dali")
MAX_PIXELS = 40_000_000  # ILSVRC-2012's largest images have ~12M pixels; a bigger one is skipped as unreadable
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # RandomResizedCrop's defaults, which the paper's recipes keep
PAD_BUDGET = 64 * 2 ** 20  # float32 elements per padded chunk in `crop_batch` (256 MB)
try:  # the optional extension (pyproject.toml's ext-modules); absent where libjpeg's headers were not at install
    from ._jpeg_region import decode_region as _decode_region
    from ._jpeg_region import image_size as _jpeg_size
except ImportError:
    _decode_region = _jpeg_size = None
JPEG_START = b"\xff\xd8"
_SIZE_ONLY = torch.empty(1, 1, 1)  # expanded to (1, H, W) without memory: an image's size for torchvision
_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def random_resized_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, width, height) of one image's training crop: torchvision's own
    `RandomResizedCrop.get_params` (area 8-100%, aspect 3/4-4/3, ten tries, then the centre), drawn
    from torch's global generator, so the same seed gives torchvision's box exactly. The image is a
    zero-size stand-in that only carries the size, so no pixel is touched."""
    from torchvision.transforms import RandomResizedCrop  # lazy: loaded only on the path that needs it

    top, left, h, w = RandomResizedCrop.get_params(_SIZE_ONLY.expand(1, height, width), list(SCALE), list(RATIO))
    return left, top, w, h


def center_boxes(widths: torch.Tensor, heights: torch.Tensor, size: int, crop_ratio: float) -> torch.Tensor:
    """(left, top, width, height), int64 (N, 4): the region of each image that resizing its short
    side to round(size / crop_ratio) and centre-cropping `size` would keep."""
    short = torch.minimum(widths, heights).double()
    side = (short * size / round(size / crop_ratio)).round().clamp_min(1)
    bw, bh = torch.minimum(side, widths.double()), torch.minimum(side, heights.double())
    return torch.stack([((widths - bw) / 2).round(), ((heights - bh) / 2).round(), bw, bh], 1).long()


def header(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header, or None if it is not an image PIL can open or has
    more than MAX_PIXELS pixels; nothing is decoded. A JPEG's is read by libjpeg where the
    extension was built (a tenth of PIL's time), other formats' by PIL."""
    if _jpeg_size is not None and data.startswith(JPEG_START):
        try:
            w, h = _jpeg_size(data)
        except ValueError:
            return None
        return (w, h) if 0 < w * h <= MAX_PIXELS else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's own, weaker bound: skip too
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
    except _PIL_ERRORS:
        return None
    return (w, h) if 0 < w * h <= MAX_PIXELS else None


def intact(data: bytes) -> bool:
    """Whether an image looks whole before a decoder that cannot skip it (DALI) sees it: its header
    passes `header` and, for JPEG, an end-of-image marker lies within its last KB (a cut-short file
    has none)."""
    if header(data) is None:
        return False
    return not data.startswith(JPEG_START) or _jpeg_ends(data)


def _jpeg_ends(data: bytes) -> bool:
    """Whether a JPEG's end-of-image marker lies within its last KB (a file cut short has none)."""
    return data.rfind(b"\xff\xd9") >= len(data) - 1024


def decode_crop(data: bytes, box: tuple[int, int, int, int], size: int, interpolation: str = "bilinear",
                flip: bool = False) -> torch.Tensor | None:
    """The `box` (left, top, width, height) of an encoded image whose `header` passed, resampled
    to uint8 RGB (3, size, size) and flipped if asked; None if it cannot be decoded. Decodes at a
    reduced scale where the box allows (at least 2 x size on both sides)."""
    left, top, bw, bh = box
    shrink = min(bw, bh) // size
    # a file cut short goes to the whole-image decoders, which refuse it: the box alone might lie
    # in the part that is there, and whether an image is readable must not depend on its crop
    boxed = _decode_region is not None and data.startswith(JPEG_START) and _jpeg_ends(data)
    found = _region(data, box, shrink) if boxed else None
    if found is None:
        try:  # `header` bounded the pixels already, below PIL's own decompression-bomb limit
            image, scale = _draft(data, shrink) if shrink >= 2 else (_full(data), 1.0)
        except (*_PIL_ERRORS, RuntimeError):
            return None
        found = image, (int(top * scale), int(left * scale), max(int(round(bh * scale)), 1),
                        max(int(round(bw * scale)), 1))
    image, (t, l, h, w) = found
    # torchvision's resized_crop, as one antialiased resample of the box; the box is made
    # channels-last first, the layout torch's uint8 resampler is vectorised for (a third faster)
    box_pixels = image[:, t:t + h, l:l + w].unsqueeze(0).contiguous(memory_format=torch.channels_last)
    out = torch.nn.functional.interpolate(box_pixels, size=(size, size), mode=interpolation, antialias=True,
                                          align_corners=False)[0]
    return out.flip(-1) if flip else out


def region_decoding() -> bool:
    """Whether JPEGs are decoded box only (the `_jpeg_region` extension was built at install)."""
    return _decode_region is not None


def _region(data: bytes, box: tuple[int, int, int, int],
            shrink: int) -> tuple[torch.Tensor, tuple[int, int, int, int]] | None:
    """The rows and columns of a JPEG around `box`, decoded by libjpeg-turbo at 1/k (k the largest
    of 1, 2, 4, 8 not above `shrink`), and the box within them (top, left, height, width); None
    where libjpeg refuses the image (CMYK, damaged, cut short), for the whole-image decoders."""
    left, top, bw, bh = box
    k = 1 << min(max(shrink, 1).bit_length() - 1, 3)
    try:
        pixels, width, height, x, y = _decode_region(data, left, top, bw, bh, k)
    except ValueError:
        return None
    image = torch.frombuffer(pixels, dtype=torch.uint8).view(height, width, 3).permute(2, 0, 1)
    return image, (top // k - y, left // k - x, max(round(bh / k), 1), max(round(bw / k), 1))


def _full(data: bytes) -> torch.Tensor:
    """The whole image, uint8 RGB CHW, by libjpeg-turbo (torchvision), or PIL for other formats."""
    from torchvision.io import ImageReadMode, decode_image  # lazy: loaded only on the path that needs it

    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def _draft(data: bytes, shrink: int) -> tuple[torch.Tensor, float]:
    """The image decoded at 1/k of its size, k the largest of 1, 2, 4, 8 not above `shrink`
    (JPEG only; other formats decode whole), and the scale it came out at."""
    from torchvision.transforms.v2.functional import pil_to_tensor  # lazy: loaded only on the path that needs it

    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        img.draft("RGB", (math.ceil(w / shrink), math.ceil(h / shrink)))
        rgb = img.convert("RGB")
    return pil_to_tensor(rgb), rgb.width / w


def crop_batch(images: list[torch.Tensor], boxes: torch.Tensor, size: int, flips: torch.Tensor) -> torch.Tensor:
    """Decoded uint8 CHW images of any sizes, on one device -> uint8 (N, 3, size, size): each
    image's box (left, top, width, height) resampled to `size` and flipped where `flips` says, as
    batched kernels over zero-padded chunks of at most PAD_BUDGET elements."""
    from torchvision.ops import roi_align  # lazy: loaded only on the path that needs it

    device = images[0].device if images else torch.device("cpu")
    out = torch.empty(len(images), 3, size, size, dtype=torch.uint8, device=device)
    start = 0
    while start < len(images):
        end, hmax, wmax = start, 0, 0
        while end < len(images):
            h, w = max(hmax, images[end].shape[1]), max(wmax, images[end].shape[2])
            if end > start and (end - start + 1) * 3 * h * w > PAD_BUDGET:
                break
            hmax, wmax, end = h, w, end + 1
        padded = torch.zeros(end - start, 3, hmax, wmax, device=device)
        for i, img in enumerate(images[start:end]):
            padded[i, :, :img.shape[1], :img.shape[2]] = img
        b = boxes[start:end].to(device=device, dtype=torch.float32)
        rois = torch.cat([torch.arange(end - start, device=device, dtype=torch.float32).view(-1, 1),
                          b[:, :2], b[:, :2] + b[:, 2:]], 1)
        crops = roi_align(padded, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        out[start:end] = crops.round_().clamp_(0, 255).to(torch.uint8)
        start = end
    flip = flips.to(device).view(-1, 1, 1, 1)
    return torch.where(flip, out.flip(-1), out)


def extras_transform(color_jitter: float = 0.0, randaugment: int | None = None,
                     random_erasing: float = 0.0) -> Callable | None:
    """The recipe's augmentation after the crop and flip, on one uint8 image (torchvision v2):
    colour jitter, RandAugment (2 ops at this magnitude), random erasing; None if it has none."""
    from torchvision.transforms import v2  # lazy: loaded only on the path that needs it

    steps = []
    if color_jitter:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    if randaugment is not None:
        steps.append(v2.RandAugment(num_ops=2, magnitude=randaugment))
    if random_erasing:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps) if steps else None


@dataclass(frozen=True)
class Crops:
    """How one split's images become the model's input: a random-resized crop and flip (training)
    or the evaluation centre crop, at `size`, then the recipe's extras (training only)."""
    size: int
    train: bool
    interpolation: str = "bilinear"
    extras: Callable | None = None

    def boxes(self, widths: torch.Tensor, heights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop boxes and flips for images of these sizes, drawn from torch's global generator image
        by image as `box` draws them, so a batch's crops are the worker path's for the same seed."""
        if not self.train:
            return center_boxes(widths, heights, self.size, CROP_RATIO), torch.zeros(len(widths), dtype=torch.bool)
        drawn = [self.box(w, h) for w, h in zip(widths.tolist(), heights.tolist())]
        return (torch.tensor([b for b, _ in drawn], dtype=torch.int64).view(-1, 4),
                torch.tensor([f for _, f in drawn], dtype=torch.bool))

    def box(self, width: int, height: int) -> tuple[tuple[int, int, int, int], bool]:
        """`boxes` for one image, without building tensors (a loader worker calls it per image)."""
        if not self.train:
            box = center_boxes(torch.tensor([width]), torch.tensor([height]), self.size, CROP_RATIO)[0]
            return tuple(box.tolist()), False
        return random_resized_box(width, height), bool(torch.rand(1) < 0.5)

    def finish(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return images if self.extras is None else [self.extras(x) for x in images]

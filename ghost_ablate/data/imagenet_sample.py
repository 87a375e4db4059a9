"""Sample data in the ILSVRC-2012 layout, for tests, benchmarks and trying the commands:
small class-tinted images that a network can learn from, or photograph-like ones (`natural`)
whose JPEGs have the size and content statistics of ImageNet's, for timing decoders."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .imagenet_layout import wnids

NATURAL_SIZE = (500, 375)  # width, height: ILSVRC-2012's most common image size
NATURAL_QUALITY = 90  # with 1/f amplitudes this gives ~110 KB per 500x375 JPEG, ImageNet's mean file size


def natural_image(height: int, width: int, g: torch.Generator) -> torch.Tensor:
    """uint8 RGB CHW with the second-order statistics of photographs: amplitude spectrum 1/f
    (power 1/f^2) with random phases, correlated colour channels, a random mean colour. Unlike
    white noise it compresses like a photograph, so decoders spend on it what they spend on
    ImageNet's JPEGs."""
    fy = torch.fft.fftfreq(height).view(-1, 1)
    fx = torch.fft.rfftfreq(width).view(1, -1)
    amplitude = (fx ** 2 + fy ** 2).sqrt().clamp_min(1.0 / max(height, width)).reciprocal()
    phase = torch.rand(3, height, width // 2 + 1, generator=g) * (2 * torch.pi)
    x = torch.fft.irfft2(amplitude * torch.polar(torch.ones_like(phase), phase), s=(height, width))
    mix = torch.tensor([[1.0, 0.9, 0.8], [0.0, 0.3, 0.4], [0.0, 0.0, 0.3]])  # luminance-dominated colour
    x = torch.einsum("ij,ihw->jhw", mix, x)
    x = (x - x.mean((1, 2), keepdim=True)) / x.std()
    base = torch.rand(3, 1, 1, generator=g) * 0.5 + 0.25
    return ((base + 0.18 * x).clamp(0, 1) * 255).to(torch.uint8)


def write_sample(root: str | Path, classes: int = 10, per_class: int = 12, val_per_class: int = 3, size: int = 64,
                 seed: int = 0, corrupt: int = 0, natural: bool = False) -> Path:
    """An ILSVRC-2012-layout folder of generated JPEGs: train/<wnid>/ sorted as users have it, and
    val/ flat as the official archive unpacks, with its ground truth beside the root
    (`<root>.val_ground_truth.txt`, rows of `file wnid`). Each class has its own colour cast over
    smooth noise, so a network can learn something; with `natural`, images are instead
    photograph-like 500x375 (`natural_image`, `size` ignored). `corrupt` training images are cut
    short. Returns the path of the ground-truth file."""
    from torchvision.io import encode_jpeg  # lazy: loaded only on the path that needs it

    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    names = wnids()[:classes]
    rows, index = [], 0

    def image(c: int) -> torch.Tensor:
        if natural:
            return natural_image(NATURAL_SIZE[1], NATURAL_SIZE[0], g)
        noise = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size, size), mode="bilinear")[0]
        tint = torch.tensor([(c * 37) % 255, (c * 91) % 255, (c * 53) % 255]).view(3, 1, 1) / 255.0
        return ((0.6 * noise + 0.4 * tint) * 255).clamp(0, 255).to(torch.uint8)

    def jpeg(c: int) -> bytes:
        return encode_jpeg(image(c), quality=NATURAL_QUALITY).numpy().tobytes()

    (root / "val").mkdir(parents=True, exist_ok=True)
    for c, wnid in enumerate(names):
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(jpeg(c))
        for _ in range(val_per_class):
            index += 1
            name = f"ILSVRC2012_val_{index:08d}.JPEG"
            (root / "val" / name).write_bytes(jpeg(c))
            rows.append(f"{name} {wnid}")
    for wnid in names[:corrupt]:
        victim = root / "train" / wnid / f"{wnid}_0.JPEG"
        victim.write_bytes(victim.read_bytes()[:200])
    truth = root.with_name(f"{root.name}.val_ground_truth.txt")
    truth.write_text("\n".join(rows) + "\n")
    return truth

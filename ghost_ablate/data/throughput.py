"""How many training images per second one CPU core turns out, for the peer (torchvision's
ImageFolder with PIL and the float transforms every ImageNet example uses) and for each of ours
(the folder or shards through the loader workers' `crop_one`, DALI's CPU mode), side by side in
one process; and whether, at that rate, the cores a run gets can feed its model.

Every reader runs in this process with no loader workers and one torch (and DALI) thread, so a
figure is per core; a run's loader multiplies it by its workers. Ours hands uint8 crops over and
normalises on the device; the peer's float conversion and normalisation are part of its cost,
as they are in the peer's own loop.
"""
from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..cache import JsonCache
from ..machine import cpu_model
from .common import DataError
from .dali import available
from .decode import region_decoding
from .imagenet import MEAN, STD, ImageNetDataModule, inventory
from .imagenet_sample import write_sample
from .imagenet_val import sort_val

PEER = "torchvision ImageFolder + PIL (peer)"
# the default CPU path, what a run's loader workers do: box-only decoding where the extension was built
OURS = "ours: folder, libjpeg-turbo box-only crops" if region_decoding() else "ours: folder, whole-image decode + crop"
# The version of our CPU input path in cached per-core rates: a change to it measures anew
# (2: torchvision's box draw per image, shards read without tarfile's per-member cost; 3: box-only decoding;
# 4: the shuffle buffer holds places in the shards, not their bytes)
PIPELINE = 4 if region_decoding() else 2


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for the block (a figure per core), as it was afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _peer(data_dir: Path, size: int, batch: int) -> Iterable:
    from torchvision import datasets  # lazy: loaded only on the path that needs it
    from torchvision import transforms as T  # lazy: loaded only on the path that needs it

    transform = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    images = datasets.ImageFolder(str(data_dir / "train"), transform=transform)
    return torch.utils.data.DataLoader(images, batch_size=batch, shuffle=True, num_workers=0)


def _ours(data_dir: Path, size: int, batch: int, decode: str) -> Iterable:
    return ImageNetDataModule(data_dir, batch, batch, image_size=size, workers=0, decode=decode).load().train_dataloader()


def readers(data_dir: Path, size: int, batch: int, shards_dir: Path | None = None,
            dali: bool = True) -> dict[str, Callable[[], Iterable]]:
    """Backend name -> a maker of a fresh iterable of training batches from `data_dir`'s train/."""
    out: dict[str, Callable[[], Iterable]] = {
        PEER: lambda: _peer(data_dir, size, batch),
        OURS: lambda: _ours(data_dir, size, batch, "workers"),
    }
    if shards_dir is not None:
        out["ours: WebDataset shards, same crops"] = lambda: _ours(shards_dir, size, batch, "workers")
    if dali:
        out["ours: folder, DALI CPU mode"] = lambda: _ours(data_dir, size, batch, "dali")
    return out


# The JPEG standard's luminance quantization table (ITU T.81, Annex K), the one libjpeg scales by
# its quality setting: its total, against an image's own table's, estimates that image's quality.
IJG_LUMINANCE_TOTAL = sum((16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57,
                           69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64,
                           81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99))
SAMPLE_DESCRIBED = 200  # training images read for `describe_sample`


def jpeg_quality(table: Iterable[int]) -> float:
    """libjpeg's quality setting (1-100) that would have made this luminance table, from its
    total against the standard table's (libjpeg scales the table by 5000/q below q=50, by 200-2q
    above); an estimate for tables of other encoders."""
    scale = 100 * sum(table) / IJG_LUMINANCE_TOTAL
    return max(1.0, min(100.0, 5000 / scale if scale > 100 else (200 - scale) / 2))


def describe_sample(data_dir: str | Path, limit: int = SAMPLE_DESCRIBED) -> str:
    """What a throughput figure was measured on: the median width x height, file size and JPEG
    quality of up to `limit` training images of `data_dir` (every k-th, in name order), and the
    share with 4:2:0 chroma; from headers alone."""
    from PIL import Image  # lazy: loaded only on the path that needs it

    files = sorted(p for p in (Path(data_dir) / "train").rglob("*") if p.is_file())
    files = files[::max(1, len(files) // limit)][:limit]
    sizes, kbytes, qualities, subsampled = [], [], [], 0
    for path in files:
        try:
            with Image.open(path) as img:
                sizes.append(img.size)
                kbytes.append(path.stat().st_size / 1000)
                tables = getattr(img, "quantization", None) or {}
                if 0 in tables:
                    qualities.append(jpeg_quality(tables[0]))
                layers = getattr(img, "layer", None) or []
                subsampled += len(layers) == 3 and layers[0][1:3] == (2, 2)
        except OSError:  # an unreadable image is the loader's to count, not the description's
            continue
    if not sizes:
        return f"{data_dir}: no readable training images"
    width, height = statistics.median(w for w, _ in sizes), statistics.median(h for _, h in sizes)
    quality = f"JPEG quality ~{statistics.median(qualities):.0f}" if qualities else "not JPEG"
    return (f"{len(sizes)} training images of {data_dir}: median {width:.0f}x{height:.0f} px, "
            f"{statistics.median(kbytes):.0f} KB, {quality}, {subsampled / len(sizes):.0%} with 4:2:0 chroma")


def _count(batch: Any) -> int:
    labels = batch[1]
    return len(labels) + (len(batch[3]) if len(batch) > 3 else 0)


def images_per_second(make: Callable[[], Iterable], images: int) -> float:
    """Images per second through one epoch-long pass of `make()`'s batches, timed from the end of
    its first batch (start-up excluded) until `images` more have come out (or the epoch ends)."""
    seen, start = 0, None
    for batch in make():
        if start is None:
            start = time.perf_counter()
            continue
        seen += _count(batch)
        if seen >= images:
            break
    if start is None or seen == 0:
        raise ValueError("too few images to time: give more than two batches' worth")
    return seen / (time.perf_counter() - start)


def compare(data_dir: str | Path, size: int = 224, batch: int = 32, images: int = 256, repeats: int = 3,
            shards_dir: str | Path | None = None, dali: bool | None = None) -> list[dict[str, Any]]:
    """One row per reader: its median images/s per core over `repeats` passes and its ratio to the
    peer's, all measured in this one process, reader after reader, pass after pass (so a burst
    of load elsewhere hits every reader alike). Pass k of every reader starts from the same torch
    seed, so our readers draw the same crop boxes in the same order: the decode's cost, which
    grows with the box, is the same work for each, and their ratio measures the reading alone."""

    with one_thread():
        makers = readers(Path(data_dir), size, batch, Path(shards_dir) if shards_dir else None,
                         available() if dali is None else dali)
        rates: dict[str, list[float]] = {name: [] for name in makers}
        for k in range(repeats):
            for name, make in makers.items():
                torch.manual_seed(k)
                rates[name].append(images_per_second(make, images))
    peer = statistics.median(rates[PEER])
    return [{"reader": name, "images_per_s_per_core": statistics.median(r), "vs_peer": statistics.median(r) / peer,
             "passes": len(r)} for name, r in rates.items()]


def input_rate_per_core(data_dir: str | Path | None, size: int) -> tuple[float, str]:
    """Our CPU pipeline's training images/s on one core, measured on `data_dir`'s images where it
    holds some, else on generated photograph-like JPEGs of ImageNet's size; cached per data set
    fingerprint, image size and CPU. Returns (rate, what it was measured on)."""

    source = None
    if data_dir is not None:
        try:
            inv = inventory(data_dir)
            source = (Path(data_dir), inv["fingerprint"]) if inv["train"] >= 64 else None
        except DataError:  # no usable data here: measure on generated images instead
            source = None
    cache = JsonCache("input-rate")
    key = cache.key(source[1] if source else "generated-natural-v1", size, cpu_model(), PIPELINE)
    hit = cache.get(key)
    if isinstance(hit, list) and len(hit) == 2:
        return float(hit[0]), str(hit[1])
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            truth = write_sample(Path(tmp) / "inet", classes=4, per_class=24, val_per_class=1, natural=True)
            sort_val(Path(tmp) / "inet" / "val", truth)
        root = source[0] if source else Path(tmp) / "inet"
        what = str(root) if source else "generated 500x375 photograph-like JPEGs"
        with one_thread():
            rate = images_per_second(lambda: _ours(root, size, 16, "workers"), 64)
    cache.put(key, [rate, what])
    return rate, what

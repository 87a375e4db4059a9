"""ILSVRC-2012 (ImageNet-1k) in the layout users keep it: `train/<wnid>/*.JPEG` and
`val/<wnid>/*.JPEG`, with the paper's augmentation (random-resized crop and flip for training,
resize to size/0.875 and centre crop for evaluation).

Images leave the loader workers as uint8 and are normalised on the device, as CIFAR-10's are.
Decoding runs in the workers with PIL by default, or, with `decode="device"` (the default when
training on CUDA), on the GPU with nvJPEG (`torchvision.io.decode_jpeg`): the workers then only
read bytes. An image that cannot be read or decoded is skipped, named in the log once, and
counted in the run's record (`unreadable_images`); it never stops training.

Class folders are the 1000 ILSVRC-2012 WordNet ids (timm ships the list), and a
folder's label is its wnid's index in that sorted list, so a folder with fewer classes (the
sample data `write_sample` makes) still trains the paper's 1000-way classifier with the right
labels. The official validation images come as one flat folder; `sort_val` moves them into
class folders once, from the ground-truth file.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch

from . import shards
from .common import DataError, normalize_with
from .decode import center_boxes, crop_batch, decode_crop, header, random_resized_boxes

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
CROP_RATIO = 0.875  # evaluation: resize the short side to 256, centre-crop 224
SPLITS = {"train": "train", "test": "val"}
EXTENSIONS = (".jpeg", ".jpg", ".png")
WNID = re.compile(r"^n\d{8}$")
LAYOUT = "expected train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (wnid: an ILSVRC-2012 class such as n01440764)"
T = TypeVar("T")
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class ids, sorted (the usual label order), from the list timm ships
    (read as a file: importing timm costs seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    path = Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synsets.txt"
    names = tuple(sorted(line.strip() for line in path.read_text().splitlines() if line.strip()))
    assert len(names) == 1000, f"{path}: expected 1000 ILSVRC-2012 classes, found {len(names)}"
    return names


def _is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def _class_dirs(split: Path) -> list[os.DirEntry]:
    """The class folders of one split, validated: present, all known wnids, none empty."""
    if not split.is_dir():
        raise DataError(f"{split}: no such folder; {LAYOUT}")
    entries = sorted(os.scandir(split), key=lambda e: e.name)
    dangling = [e for e in entries if e.is_symlink() and not os.path.exists(e.path)]
    if dangling:
        raise DataError(f"{split / dangling[0].name}: a link to nothing ({len(dangling)} such); remove it or restore "
                        f"its target; {LAYOUT}")
    dirs = [e for e in entries if e.is_dir()]
    if not dirs:
        flat = sum(_is_image(e.name) for e in entries)
        hint = (f" ({flat} images lie there unsorted: run `ghost-ablate imagenet sort-val {split} --ground-truth "
                f"FILE` once)" if flat else "")
        raise DataError(f"{split}: no class folders{hint}; {LAYOUT}")
    known = set(wnids())
    for e in dirs:
        if e.name not in known:
            raise DataError(f"{split / e.name}: not an ILSVRC-2012 class folder; {LAYOUT}")
        if not any(_is_image(f.name) for f in os.scandir(e.path)):
            raise DataError(f"{split / e.name}: class folder holds no images (*.JPEG, *.jpg, *.png); {LAYOUT}")
    return dirs


def find_folder(data_dir: Path) -> Path | None:
    """`data_dir` if it holds train/ or val/ (class folders, or shards), else None."""
    return data_dir if any((data_dir / s).is_dir() for s in SPLITS.values()) else None


def layout(root: Path) -> dict[str, list[os.DirEntry]]:
    """The class folders of both splits ("train", "val"), checked (no download exists: ImageNet
    needs a licence); DataError names the folder and what was expected."""
    if find_folder(root) is None:
        raise DataError(f"{root}: no ImageNet here (ILSVRC-2012 is not downloadable without a licence: get it "
                        f"from image-net.org); {LAYOUT}")
    dirs = {s: _class_dirs(root / s) for s in SPLITS.values()}
    missing = sorted({e.name for e in dirs["val"]} - {e.name for e in dirs["train"]})
    if missing:
        raise DataError(f"{root / 'val'}: classes with no training folder ({', '.join(missing[:3])}); {LAYOUT}")
    return dirs


def prepare(data_dir: str | Path, download: bool = True) -> Path:
    root = Path(data_dir)
    if shards.find_shards(root):
        shards.read_manifest(root)
    else:
        layout(root)
    return root


def samples(class_dirs: list[os.DirEntry]) -> list[tuple[str, int]]:
    """(path, label) of every image in these class folders, sorted by path."""
    index = {w: i for i, w in enumerate(wnids())}
    out = []
    for e in class_dirs:
        out += [(f.path, index[e.name]) for f in sorted(os.scandir(e.path), key=lambda f: f.name) if _is_image(f.name)]
    return out


def _inventory(data_dir: str | Path) -> dict[str, Any]:
    """Fingerprint and split sizes, from every image's name and size (not its bytes: 150 GB).
    Cached per folder and its class folders' modification times, which change when files are
    added, removed or renamed, so a full listing happens once."""
    from ..cache import JsonCache

    root = Path(data_dir)
    dirs = layout(root)
    stamps = [(s, e.name, e.stat().st_mtime_ns) for s, entries in dirs.items() for e in entries]
    cache = JsonCache("data")
    key = cache.key("imagenet-inventory", str(root.resolve()), stamps)
    hit = cache.get(key)
    if isinstance(hit, dict):
        return hit
    digest, counts = hashlib.sha256(), {}
    for s, entries in dirs.items():
        counts[s] = 0
        for e in entries:
            for f in sorted(os.scandir(e.path), key=lambda f: f.name):
                if _is_image(f.name):
                    digest.update(f"{s}/{e.name}/{f.name}:{f.stat().st_size}\n".encode())
                    counts[s] += 1
    value = {"fingerprint": digest.hexdigest()[:16], "train": counts["train"], "test": counts["val"]}
    cache.put(key, value)
    return value


def inventory(data_dir: str | Path) -> dict[str, Any]:
    """{"fingerprint", "train", "test"} of the folder layout or, where `shards.json` is, of the
    shards (the same images give the same fingerprint in both)."""
    return shards.inventory(data_dir) if shards.find_shards(data_dir) else _inventory(data_dir)


def fingerprint(data_dir: str | Path) -> str:
    return inventory(data_dir)["fingerprint"]


def split_sizes(data_dir: str | Path) -> tuple[int, int] | None:
    if find_folder(Path(data_dir)) is None:
        return None
    inv = inventory(data_dir)
    return inv["train"], inv["test"]


# ---- images -------------------------------------------------------------------------

def extras_transform(color_jitter: float = 0.0, randaugment: int | None = None,
                     random_erasing: float = 0.0) -> Callable | None:
    """The recipe's augmentation after the crop and flip, on one uint8 image (torchvision v2):
    colour jitter, RandAugment (2 ops at this magnitude), random erasing; None if it has none."""
    from torchvision.transforms import v2

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
        """Crop boxes and flips for images of these sizes, drawn from torch's global generator."""
        if not self.train:
            return center_boxes(widths, heights, self.size, CROP_RATIO), torch.zeros(len(widths), dtype=torch.bool)
        return random_resized_boxes(widths, heights), torch.rand(len(widths)) < 0.5

    def finish(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return images if self.extras is None else [self.extras(x) for x in images]


class ImageFiles(torch.utils.data.Dataset):
    """(image, label, path) per file, the image made from the file's bytes by `load` (`crop_one`),
    None where the file cannot be read or decoded."""

    def __init__(self, samples: list[tuple[str, int]], load: Callable[[bytes], torch.Tensor | None]) -> None:
        self.samples, self.load = samples, load

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str]:
        path, label = self.samples[i]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None, label, path
        return self.load(data), label, path


def crop_one(data: bytes, crops: Crops, raw: bool = False) -> torch.Tensor | None:
    """One encoded image -> its uint8 crop (or, with `raw`, its bytes as a uint8 tensor); None if
    its header or its data cannot be decoded."""
    if raw:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    size = header(data)
    if size is None:
        return None
    boxes, flips = crops.boxes(torch.tensor([size[0]]), torch.tensor([size[1]]))
    image = decode_crop(data, tuple(boxes[0].tolist()), crops.size, crops.interpolation, bool(flips[0]))
    return None if image is None else crops.finish([image])[0]


def decode_blobs(blobs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Raw image bytes -> uint8 RGB CHW images on `device` (nvJPEG on CUDA, in one batched call);
    None where the header is not an image's or exceeds MAX_PIXELS, and where decoding fails (a
    blob the batch decoder refuses is decoded alone: PNGs on the CPU)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    out: list[torch.Tensor | None] = [None] * len(blobs)
    good = [i for i, b in enumerate(blobs) if header(b.numpy().tobytes()) is not None]
    try:
        for i, image in zip(good, decode_jpeg([blobs[i] for i in good], mode=ImageReadMode.RGB, device=device)):
            out[i] = image
        return out
    except RuntimeError:
        pass
    for i in good:
        try:
            out[i] = decode_jpeg(blobs[i], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            try:
                out[i] = decode_image(blobs[i], mode=ImageReadMode.RGB).to(device)
            except RuntimeError:
                pass
    return out


def collate(items: list[tuple[torch.Tensor | None, int, str]]) -> tuple[Any, torch.Tensor, list[str], list[str]]:
    """(images: a stacked tensor, or a list of byte blobs; labels; their paths; unreadable paths)."""
    good = [(x, y, p) for x, y, p in items if x is not None]
    bad = [p for x, _, p in items if x is None]
    blobs = [x for x, _, _ in good]
    raw = bool(blobs) and blobs[0].dim() == 1
    images = blobs if raw else (torch.stack(blobs) if blobs else torch.empty(0, 3, 1, 1, dtype=torch.uint8))
    return images, torch.tensor([y for _, y, _ in good], dtype=torch.long), [p for *_, p in good], bad


def default_workers(devices: int) -> int:
    """Loader workers per training process: its share of the CPU cores allocated to it (SLURM's
    cpus-per-task or the affinity mask, not the host's count), one left for the process itself
    (GHOST_ABLATE_WORKERS overrides)."""
    from ..machine import allocated_cpus

    if os.environ.get("GHOST_ABLATE_WORKERS"):
        return max(int(os.environ["GHOST_ABLATE_WORKERS"]), 0)
    return max(allocated_cpus() // max(devices, 1) - 1, 1)


def eval_sampler(files: torch.utils.data.Dataset, trainer: L.Trainer | None) -> torch.utils.data.Sampler | None:
    """Under DDP, each rank evaluates every world-th image and no image twice (Lightning's default
    sampler pads the last ranks with repeats: 50,016 images counted on 24 GPUs); None otherwise."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    if trainer is None or trainer.world_size == 1:
        return None
    return UnrepeatedDistributedSampler(files, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                        shuffle=False)


DECODE_ENV = "GHOST_ABLATE_DECODE"
# auto: nvJPEG on CUDA, else the workers; workers: PIL/libjpeg-turbo in loader workers;
# device: nvJPEG (or the CPU) with batch crops; dali: NVIDIA DALI (GPU on CUDA, its CPU mode otherwise)
DECODERS = ("auto", "workers", "device", "dali")


class ImageNetDataModule(L.LightningDataModule):
    """ILSVRC-2012 train/val from `data_dir` (class folders, or shards from `imagenet shard`); val
    is the per-epoch evaluation set."""

    def __init__(self, data_dir: str | Path, batch_size: int = 256, eval_batch_size: int = 256, seed: int = 0,
                 download: bool = True, image_size: int | None = None, workers: int | None = None,
                 decode: str = "auto", augmentation: dict[str, Any] | None = None) -> None:
        super().__init__()
        if decode == "auto":
            decode = os.environ.get(DECODE_ENV) or "auto"
        if decode not in DECODERS:
            raise DataError(f"the decoder must be one of {', '.join(DECODERS)} (set by {DECODE_ENV}), got {decode!r}")
        self.data_dir, self.size = Path(data_dir), image_size or INPUT_SIZE
        extra = dict(augmentation or {})
        interpolation = extra.pop("interpolation", "bilinear")
        self.crops = {True: Crops(self.size, True, interpolation, extras_transform(**extra)),  # by training
                      False: Crops(self.size, False, interpolation)}
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.workers, self.decode = workers, decode
        self.train_set: list[tuple[str, int]] | None = None
        self.test_set: list[tuple[str, int]] | None = None
        self.counts: tuple[int, int] | None = None  # images per split, when reading shards
        self.unreadable: set[str] = set()
        self._draws: torch.Tensor | None = None  # this rank's generator state for device-side augmentation

    def load(self) -> ImageNetDataModule:
        if self.train_set is None and self.counts is None:
            if shards.find_shards(self.data_dir):
                manifest = shards.read_manifest(self.data_dir)
                inv = shards.inventory(self.data_dir)
                self.counts = inv["train"], inv["test"]
                self.unreadable |= {n for v in manifest["splits"].values() for n, _ in v["unreadable"]}
            else:
                dirs = layout(self.data_dir)
                self.train_set, self.test_set = samples(dirs["train"]), samples(dirs["val"])
        return self

    @property
    def sizes(self) -> tuple[int, int]:
        return self.counts or (len(self.train_set), len(self.test_set))

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def on_device(self) -> bool:
        """Whether JPEGs are decoded on the device (nvJPEG) rather than in the workers."""
        return self.decode == "device" or (self.decode == "auto" and self._device().type == "cuda")

    def _loader(self, train: bool) -> Any:
        world = self.trainer.world_size if self.trainer is not None else 1
        workers = self.workers if self.workers is not None else default_workers(
            self.trainer.num_devices if self.trainer is not None else 1)
        batch = self.batch_size if train else self.eval_batch_size
        if self.decode == "dali":
            from .dali import DaliBatches

            source = (shards.shard_paths(self.data_dir, "train" if train else "val") if self.counts
                      else self.train_set if train else self.test_set)
            rank = self.trainer.global_rank if self.trainer is not None else 0
            return DaliBatches(source, self.crops[train], batch, rank, world, self.seed, self._device(),
                               threads=max(workers, 1), per_rank=self.counts[0] // world if self.counts else 0)
        load = functools.partial(crop_one, crops=self.crops[train], raw=self.on_device())
        common = dict(batch_size=batch, drop_last=train, num_workers=workers, collate_fn=collate,
                      pin_memory=self._device().type == "cuda", persistent_workers=workers > 0)
        if self.counts is not None:
            split = "train" if train else "val"
            images = shards.ShardImages(shards.shard_paths(self.data_dir, split), load, train, self.counts[0] // world,
                                        batch, workers, self.seed)
            return torch.utils.data.DataLoader(images, **common)
        files = ImageFiles(self.train_set if train else self.test_set, load)
        return torch.utils.data.DataLoader(
            files, sampler=None if train else eval_sampler(files, self.trainer), shuffle=train,
            generator=torch.Generator().manual_seed(self.seed), **common)

    def train_dataloader(self) -> Any:
        return self._loader(train=True)

    def val_dataloader(self) -> Any:
        return self._loader(train=False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):  # noqa: ANN001, ANN201 - Lightning hook
        images, labels, paths, bad = batch
        if isinstance(images, list):  # nvJPEG reads its input from host memory
            return images, labels.to(device), paths, bad
        return images.to(device, non_blocking=True), labels.to(device), paths, bad

    def _per_rank_draws(self, augment: Callable[[], T]) -> T:
        """Run `augment` (torchvision transforms, which draw from torch's global generator) on this
        rank's own stream, seeded by (seed, rank): every rank seeded the global generator alike,
        so it would crop and flip alike. The global generator is left as it was."""
        if self._draws is None:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            self._draws = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_919 * rank).get_state()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._draws)
            out = augment()
            self._draws = torch.get_rng_state()
        return out

    def on_after_batch_transfer(self, batch, dataloader_idx: int):  # noqa: ANN001, ANN201 - Lightning hook
        images, labels, paths, bad = batch
        if isinstance(images, list):
            crops = self.crops[self.trainer is None or self.trainer.training]
            decoded = decode_blobs(images, labels.device)
            bad = bad + [p for p, x in zip(paths, decoded) if x is None]
            keep = [i for i, x in enumerate(decoded) if x is not None]
            kept = [decoded[i] for i in keep]
            sizes = torch.tensor([[x.shape[2], x.shape[1]] for x in kept]).view(-1, 2)
            boxes, flips = self._per_rank_draws(lambda: crops.boxes(sizes[:, 0], sizes[:, 1]))
            images = crop_batch(kept, boxes, self.size, flips)
            if crops.extras is not None:
                images = torch.stack(self._per_rank_draws(lambda: crops.finish(list(images)))) if keep else images
            labels = labels[torch.tensor(keep, dtype=torch.long, device=labels.device)]
        for path in bad:
            name = os.path.relpath(path, self.data_dir) if os.path.isabs(path) else path  # shards hold relative names
            if name not in self.unreadable:
                log.warning("warning: %s: unreadable image, skipped (counted in the run's record)", path)
                self.unreadable.add(name)
        return normalize_with(images, MEAN, STD), labels

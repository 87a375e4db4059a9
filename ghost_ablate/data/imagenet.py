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

import csv
import functools
import hashlib
import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from PIL import Image
from torchvision.io import read_file
from torchvision.transforms.v2.functional import pil_to_tensor

from .common import DataError, normalize_with

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
    """`data_dir` if it holds train/ or val/, else None."""
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


def fingerprint(data_dir: str | Path) -> str:
    return _inventory(data_dir)["fingerprint"]


def split_sizes(data_dir: str | Path) -> tuple[int, int] | None:
    if find_folder(Path(data_dir)) is None:
        return None
    inv = _inventory(data_dir)
    return inv["train"], inv["test"]


# ---- images -------------------------------------------------------------------------

def train_transform(size: int, interpolation: str = "bilinear", color_jitter: float = 0.0,
                    randaugment: int | None = None, random_erasing: float = 0.0) -> Callable:
    """Random-resized crop and flip on uint8 images, then the recipe's extras (torchvision v2):
    colour jitter, RandAugment (2 ops at this magnitude), random erasing."""
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(size, interpolation=_interpolation(interpolation), antialias=True),
             v2.RandomHorizontalFlip()]
    if color_jitter:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    if randaugment is not None:
        steps.append(v2.RandAugment(num_ops=2, magnitude=randaugment))
    if random_erasing:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)


def eval_transform(size: int, interpolation: str = "bilinear") -> Callable:
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(round(size / CROP_RATIO), interpolation=_interpolation(interpolation),
                                 antialias=True), v2.CenterCrop(size)])


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    return {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[name]


MAX_PIXELS = 40_000_000  # ILSVRC-2012's largest images have ~12M pixels; a bigger one is skipped as unreadable


def decode_file(path: str) -> torch.Tensor | None:
    """An image file as uint8 RGB CHW, or None if it cannot be read or decoded, or has more than
    MAX_PIXELS pixels (read from its header, before anything is decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's own, weaker bound: skip too
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    return None
                return pil_to_tensor(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None


def decode_blobs(blobs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Raw JPEG bytes -> uint8 RGB CHW images on `device` (nvJPEG on CUDA, in one batched call);
    a blob the batch decoder refuses is decoded alone (PNGs on the CPU), or None."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    try:
        return list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass
    out: list[torch.Tensor | None] = []
    for blob in blobs:
        try:
            out.append(decode_jpeg(blob, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            try:
                out.append(decode_image(blob, mode=ImageReadMode.RGB).to(device))
            except RuntimeError:
                out.append(None)
    return out


class ImageFiles(torch.utils.data.Dataset):
    """(image, label, path) per file: decoded and transformed, or (with `raw`) its bytes for
    decoding on the device; the image is None where the file cannot be read or decoded."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable, raw: bool = False) -> None:
        self.samples, self.transform, self.raw = samples, transform, raw

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str]:
        path, label = self.samples[i]
        if self.raw:
            try:
                return read_file(path), label, path
            except RuntimeError:
                return None, label, path
        image = decode_file(path)
        return (None if image is None else self.transform(image)), label, path


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


class ImageNetDataModule(L.LightningDataModule):
    """ILSVRC-2012 train/val from `data_dir`; val is the per-epoch evaluation set."""

    def __init__(self, data_dir: str | Path, batch_size: int = 256, eval_batch_size: int = 256, seed: int = 0,
                 download: bool = True, image_size: int | None = None, workers: int | None = None,
                 decode: str = "auto", augmentation: dict[str, Any] | None = None) -> None:
        super().__init__()
        if decode not in ("auto", "workers", "device"):
            raise DataError(f"decode must be auto, workers or device, got {decode!r}")
        self.data_dir, self.size = Path(data_dir), image_size or INPUT_SIZE
        extra = dict(augmentation or {})
        self.transforms = {True: train_transform(self.size, **extra),  # by training
                           False: eval_transform(self.size, extra.get("interpolation", "bilinear"))}
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.workers, self.decode = workers, decode
        self.train_set: list[tuple[str, int]] | None = None
        self.test_set: list[tuple[str, int]] | None = None
        self.unreadable: set[str] = set()
        self._draws: torch.Tensor | None = None  # this rank's generator state for device-side augmentation

    def load(self) -> ImageNetDataModule:
        if self.train_set is None:
            dirs = layout(self.data_dir)
            self.train_set, self.test_set = samples(dirs["train"]), samples(dirs["val"])
        return self

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.train_set), len(self.test_set)

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def on_device(self) -> bool:
        """Whether JPEGs are decoded on the device (nvJPEG) rather than in the workers."""
        return self.decode == "device" or (self.decode == "auto" and self._device().type == "cuda")

    def _loader(self, samples: list[tuple[str, int]], train: bool) -> torch.utils.data.DataLoader:
        transform = self.transforms[train]
        workers = self.workers if self.workers is not None else default_workers(
            self.trainer.num_devices if self.trainer is not None else 1)
        files = ImageFiles(samples, transform, raw=self.on_device())
        return torch.utils.data.DataLoader(
            files, self.batch_size if train else self.eval_batch_size, sampler=None if train else eval_sampler(
                files, self.trainer), shuffle=train, drop_last=train, num_workers=workers, collate_fn=collate,
            pin_memory=self._device().type == "cuda", persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.test_set, train=False)

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
            transform = self.transforms[self.trainer is None or self.trainer.training]
            decoded = decode_blobs(images, labels.device)
            bad = bad + [p for p, x in zip(paths, decoded) if x is None]
            keep = torch.tensor([x is not None for x in decoded], device=labels.device)
            images = self._per_rank_draws(lambda: [transform(x) for x in decoded if x is not None])
            images = torch.stack(images) if images else torch.empty(0, 3, self.size, self.size, dtype=torch.uint8,
                                                                      device=labels.device)
            labels = labels[keep]
        for path in bad:
            name = os.path.relpath(path, self.data_dir)
            if name not in self.unreadable:
                log.warning("warning: %s: unreadable image, skipped (counted in the run's record)", path)
                self.unreadable.add(name)
        return normalize_with(images, MEAN, STD), labels


# ---- the official validation folder, sorted once ------------------------------------

def read_ground_truth(path: str | Path, devkit: str | Path | None = None) -> dict[str, str]:
    """Image file name -> wnid, from one of the ground-truth files users have:
    - the devkit's ILSVRC2012_validation_ground_truth.txt (one class number per line, for
      ILSVRC2012_val_00000001.JPEG onwards), with `devkit` (its folder, or data/meta.mat) to
      map the numbers to wnids;
    - a table with one image and its wnid per row: Kaggle's LOC_val_solution.csv (ImageId,
      PredictionString starting with the wnid) or lines of `file wnid`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such ground-truth file")
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as text ({type(err).__name__})") from None
    if not lines:
        raise DataError(f"{path}: empty; a ground-truth file has one row per validation image")
    if all(ln.isdigit() for ln in lines):
        if devkit is None:
            raise DataError(f"{path}: holds class numbers; give the devkit (--devkit, its folder or meta.mat) to map "
                            f"them to wnids")
        numbers = _devkit_wnids(Path(devkit))
        try:
            return {f"ILSVRC2012_val_{i:08d}.JPEG": numbers[int(n)] for i, n in enumerate(lines, 1)}
        except KeyError as err:
            raise DataError(f"{path}: class number {err} is not in the devkit's meta.mat") from None
    table: dict[str, str] = {}
    for row in csv.reader(lines) if "," in lines[0] else (ln.split() for ln in lines):
        if len(row) < 2 or row[0] == "ImageId":
            continue
        name, wnid = row[0], row[1].split()[0]
        table[name if _is_image(name) else f"{name}.JPEG"] = wnid
    if not table or not all(WNID.match(w) for w in table.values()):
        raise DataError(f"{path}: not a ground-truth file (expected rows of `file wnid`, Kaggle's "
                        f"LOC_val_solution.csv, or the devkit's class numbers)")
    return table


def _devkit_wnids(devkit: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid from the devkit's meta.mat (read with scipy: data, never code)."""
    from scipy.io import loadmat

    meta = devkit if devkit.suffix == ".mat" else devkit / "data" / "meta.mat"
    if not meta.is_file():
        raise DataError(f"{meta}: no such file; give the ILSVRC2012 devkit folder or its data/meta.mat")
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    except NotImplementedError:  # scipy reads MATLAB files up to v7.2
        raise DataError(f"{meta}: a MATLAB v7.3 file, which scipy cannot read; the devkit's meta.mat is v5 "
                        f"(re-download the ILSVRC2012 devkit)") from None
    except Exception as err:  # noqa: BLE001 - scipy raises many kinds on a truncated or foreign file
        raise DataError(f"{meta}: not the devkit's meta.mat ({type(err).__name__})") from None


def plan_val_moves(val: Path, table: dict[str, str], source: str = "the ground truth"
                   ) -> tuple[list[tuple[Path, Path]], int]:
    """Every move `sort_val` would make, checked before any is made: (source, target) pairs of the
    flat images and how many are in place already. A DataError names the first problem: a name
    that is not a plain file name of `val/`, an image missing from the ground truth, a class
    folder that is a link or not a folder, or a target that exists already."""
    for name in table:
        if Path(name).name != name or name in (".", "..") or "/" in name or "\\" in name:
            raise DataError(f"ground truth names {name[:80]!r}, not a file name inside {val}; nothing was moved")
    flat = sorted(e.name for e in os.scandir(val) if e.is_file(follow_symlinks=False) and _is_image(e.name))
    strays = [n for n in flat if n not in table]
    if strays:
        raise DataError(f"{val / strays[0]}: not in {source} ({len(strays)} such images); nothing was moved")
    moves = []
    for name in flat:
        folder = val / table[name]
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise DataError(f"{folder}: a link or a file where a class folder goes; nothing was moved")
        target = folder / name
        if target.exists() or target.is_symlink():
            raise DataError(f"{target}: exists already beside {val / name}; nothing was moved")
        moves.append((val / name, target))
    placed = sum(1 for n, w in table.items() if not (val / w).is_symlink() and (val / w / n).is_file()
                 and not (val / w / n).is_symlink())
    return moves, placed


def sort_val(val_dir: str | Path, ground_truth: str | Path, devkit: str | Path | None = None) -> tuple[int, int]:
    """Move the flat official val/ images into val/<wnid>/ folders; return (moved, already in place).
    Every move is checked before the first is made (`plan_val_moves`), and running it again moves
    nothing."""
    val = Path(val_dir)
    if not val.is_dir():
        raise DataError(f"{val}: no such folder")
    table = read_ground_truth(ground_truth, devkit)
    known = set(wnids())
    unknown = sorted({w for w in table.values() if w not in known})
    if unknown:
        raise DataError(f"{ground_truth}: {unknown[0][:80]!r} is not an ILSVRC-2012 class")
    moves, placed = plan_val_moves(val, table, str(ground_truth))
    for folder in sorted({target.parent for _, target in moves}):
        folder.mkdir(exist_ok=True)
    for source, target in moves:
        os.replace(source, target)
    return len(moves), placed


# ---- sample data in the real layout, for tests, benchmarks and trying the commands -----

def write_sample(root: str | Path, classes: int = 10, per_class: int = 12, val_per_class: int = 3, size: int = 64,
                 seed: int = 0, corrupt: int = 0) -> Path:
    """An ILSVRC-2012-layout folder of generated JPEGs: train/<wnid>/ sorted as users have it, and
    val/ flat as the official archive unpacks, with its ground truth beside the root
    (`<root>.val_ground_truth.txt`, rows of `file wnid`). Each class has its own colour cast over
    smooth noise, so a network can learn something; `corrupt` training images are cut short.
    Returns the path of the ground-truth file."""
    import torch.nn.functional as F
    from torchvision.io import encode_jpeg

    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    names = wnids()[:classes]
    rows, index = [], 0

    def image(c: int) -> torch.Tensor:
        noise = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size, size), mode="bilinear")[0]
        tint = torch.tensor([(c * 37) % 255, (c * 91) % 255, (c * 53) % 255]).view(3, 1, 1) / 255.0
        return ((0.6 * noise + 0.4 * tint) * 255).clamp(0, 255).to(torch.uint8)

    (root / "val").mkdir(parents=True, exist_ok=True)
    for c, wnid in enumerate(names):
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(encode_jpeg(image(c), quality=90).numpy().tobytes())
        for _ in range(val_per_class):
            index += 1
            name = f"ILSVRC2012_val_{index:08d}.JPEG"
            (root / "val" / name).write_bytes(encode_jpeg(image(c), quality=90).numpy().tobytes())
            rows.append(f"{name} {wnid}")
    for wnid in names[:corrupt]:
        victim = root / "train" / wnid / f"{wnid}_0.JPEG"
        victim.write_bytes(victim.read_bytes()[:200])
    truth = root.with_name(f"{root.name}.val_ground_truth.txt")
    truth.write_text("\n".join(rows) + "\n")
    return truth

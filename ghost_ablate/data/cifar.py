"""CIFAR-format data sets (CIFAR-10, and any other in Krizhevsky's python layout: `CifarLayout`)
from the official pickles, as uint8 tensors with batch-wise augmentation.

The whole training set is one uint8 tensor (150 MB at full size), kept on the GPU when
training there. Each batch is gathered by index and augmented in one vectorised step
(4-pixel zero-pad random crop and horizontal flip, drawn per sample), so the hot path
has no per-sample Python and no PIL. Randomness comes from a generator seeded by
(seed, epoch): the same seed gives the same batches, also after a resume.
"""
from __future__ import annotations

import functools
import hashlib
import pickle
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from ..cache import JsonCache
from .common import DataError, DataSet, epoch_seed, normalize_with

try:  # numpy >= 2 (older pickles name numpy.core, which find_class maps to the same helpers)
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray


@dataclass(frozen=True)
class CifarLayout:
    """What a data set in the CIFAR python layout holds and where: 32x32 RGB images pickled as
    N x 3072 uint8 rows beside a list of labels, in named batch files under one folder."""
    title: str
    folder: str  # the archive's folder, e.g. cifar-10-batches-py
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    label_key: str = "labels"  # CIFAR-100 keeps "fine_labels" (and "coarse_labels")
    train_size: int = 50_000  # images of the full splits (a subset folder may hold fewer)
    test_size: int = 10_000
    archive_url: str | None = None
    archive_name: str | None = None
    archive_md5: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


CIFAR10 = CifarLayout(
    "CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "labels", 50_000, 10_000,
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a")
# CIFAR-10's own names, as this module always had them
FOLDER, TRAIN_FILES, TEST_FILES = CIFAR10.folder, CIFAR10.train_files, CIFAR10.test_files
ARCHIVE_URL, ARCHIVE_NAME, ARCHIVE_MD5 = CIFAR10.archive_url, CIFAR10.archive_name, CIFAR10.archive_md5
MEAN, STD, CLASSES, NUM_CLASSES = CIFAR10.mean, CIFAR10.std, CIFAR10.classes, CIFAR10.num_classes
PAD = 4


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocol 2, admitting only that use."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not bytes data")
    return text.encode("latin1")


class BatchUnpickler(pickle.Unpickler):
    """Admits only what an official CIFAR-10 batch holds: dicts, lists, bytes/str, numbers and
    numpy arrays (their reconstruction helpers). Any other global (`os.system`, a class of
    someone's) is refused before it is looked up, so a crafted file runs no code."""

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode,
        **{(module, name): getattr(_multiarray, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
           for name in ("_reconstruct", "scalar")}}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise UnsafeBatch(f"{module}.{name}") from None


class UnsafeBatch(pickle.UnpicklingError):
    """A batch file names a global outside BatchUnpickler.ALLOWED."""


MAX_BATCH_BYTES = 64 * 2 ** 20  # an official batch is 31 MB


def regular_batch(path: Path, layout: CifarLayout = CIFAR10) -> None:
    """A DataError unless `path` is a regular file of at most MAX_BATCH_BYTES (a FIFO or device
    named like a batch file would block or never end)."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        raise DataError(f"{path}: file missing from the {layout.title} folder") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BATCH_BYTES:
        raise DataError(f"{path}: not a {layout.title} batch file (a regular file of at most "
                        f"{MAX_BATCH_BYTES:,} bytes)")


def read_batch(path: Path, layout: CifarLayout = CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
    """One official batch file -> (N x 3 x 32 x 32 uint8 images, N int64 labels), validated.
    Read with `BatchUnpickler`: nothing in the file can run code."""
    regular_batch(path, layout)
    what = layout.title
    try:
        with open(path, "rb") as f:
            raw = BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file missing from the {what} folder") from None
    except UnsafeBatch as err:
        raise DataError(f"{path}: holds objects that are not {what} data ({err}); refused without running "
                        f"it. Replace it with the official file") from None
    except Exception as err:  # truncated pickles raise EOFError, UnpicklingError, ValueError...
        raise DataError(f"{path}: truncated or corrupt {what} batch file ({type(err).__name__})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: not a {what} batch (expected a pickled dict)")
    raw = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    if "data" not in raw or layout.label_key not in raw:
        raise DataError(f"{path}: not a {what} batch (keys 'data' and {layout.label_key!r} missing)")
    data = np.asarray(raw["data"])
    labels = np.asarray(raw[layout.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data must be N x 3072 uint8, got {data.shape} {data.dtype}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(f"{path}: labels must lie in 0..{layout.num_classes - 1}, found {labels.min()}..{labels.max()}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())  # rows are channel-major RGB
    return images, torch.from_numpy(labels.astype(np.int64))


def find_folder(data_dir: Path, layout: CifarLayout = CIFAR10) -> Path | None:
    """`data_dir` itself if it holds the batch files, else its subfolder of the archive's name
    (cifar-10-batches-py)."""
    for candidate in (data_dir, data_dir / layout.folder):
        if (candidate / layout.train_files[0]).exists() or (candidate / layout.test_files[0]).exists():
            return candidate
    return None


def prepare(data_dir: str | Path, download: bool = True, layout: CifarLayout = CIFAR10) -> Path:
    """Locate the extracted folder; else extract or download (md5-checked) the official archive."""
    from torchvision.datasets.utils import (  # lazy: loaded only on the path that needs it
        check_integrity,
        download_and_extract_archive,
        extract_archive,
    )

    data_dir = Path(data_dir)
    folder = find_folder(data_dir, layout)
    if folder is not None:
        return folder
    if layout.archive_name is None:
        raise DataError(f"{layout.title} is not in {data_dir}; put its extracted {layout.folder}/ there")
    archive = data_dir / layout.archive_name
    where = f"put {layout.archive_name} (md5 {layout.archive_md5}) or its extracted {layout.folder}/ into {data_dir}"
    if archive.exists():
        if not check_integrity(str(archive), layout.archive_md5):
            raise DataError(f"{archive}: md5 mismatch, the archive is corrupt; {where}")
        extract_archive(str(archive), str(data_dir))
    elif download:
        old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)
        try:
            download_and_extract_archive(layout.archive_url, str(data_dir), filename=layout.archive_name,
                                         md5=layout.archive_md5)
        except Exception as err:
            raise DataError(f"{layout.title} is not in {data_dir} and could not be downloaded "
                            f"({type(err).__name__}); {where}") from None
        finally:
            socket.setdefaulttimeout(old_timeout)
    else:
        raise DataError(f"{layout.title} is not in {data_dir}; {where}")
    folder = find_folder(data_dir, layout)
    if folder is None:
        raise DataError(f"{data_dir}: the archive did not contain {layout.folder}/; {where}")
    return folder


def split_sizes(data_dir: str | Path, layout: CifarLayout = CIFAR10) -> tuple[int, int] | None:
    """(training, test) image counts of the extracted data set in `data_dir`, None if it is not there."""
    folder = find_folder(Path(data_dir), layout)
    if folder is None:
        return None
    return len(load_split(folder, True, layout)[1]), len(load_split(folder, False, layout)[1])


def fingerprint(data_dir: str | Path, layout: CifarLayout = CIFAR10) -> str:
    """A short hash of the data set's contents (the names and bytes of its batch files, not their
    path): part of every run's identity, so a run is only ever "done" for the data it saw.

    Hashing full CIFAR-10 (178 MB) takes well under a second; the result is cached per folder,
    file sizes and modification times, so it is computed once."""

    folder = find_folder(Path(data_dir), layout)
    if folder is None:
        raise DataError(f"{layout.title} is not in {data_dir}; nothing to fingerprint")
    files = [folder / name for name in layout.train_files + layout.test_files]
    try:
        stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    except FileNotFoundError as err:
        raise DataError(f"{err.filename}: file missing from the {layout.title} folder") from None
    for f in files:
        regular_batch(f, layout)
    cache = JsonCache("data")
    key = cache.key("fingerprint", str(folder.resolve()), stats)
    hit = cache.get(key)
    if isinstance(hit, str):
        return hit
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()[:16]
    cache.put(key, value)
    return value


def load_split(folder: Path, train: bool, layout: CifarLayout = CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [read_batch(folder / name, layout) for name in (layout.train_files if train else layout.test_files)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def crop_flip_draws(b: int, generator: torch.Generator, pad: int = PAD
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random part of `random_crop_flip` for a batch of `b`: row and column offsets, flips."""
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    return dy, dx, torch.rand(b, generator=generator) < 0.5


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """Zero-pad by `pad`, crop back to size at a random offset and flip half, per sample.

    The offsets and flips are drawn on the CPU from `generator` (so results do not depend
    on the device) and applied with one gather on the images' device.
    """
    b, c, h, w = images.shape
    dy, dx, flip = crop_flip_draws(b, generator, pad)
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    dev = images.device
    index = torch.cat([rows, cols], 1)  # the draws cross to the device as one copy, without a wait on a GPU
    if dev.type == "cuda":
        index = index.pin_memory().to(dev, non_blocking=True)
    rows, cols = index[:, :h], index[:, h:]
    padded = F.pad(images, (pad, pad, pad, pad))
    return padded[
        torch.arange(b, device=dev)[:, None, None, None],
        torch.arange(c, device=dev)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def normalize(images: torch.Tensor, layout: CifarLayout = CIFAR10) -> torch.Tensor:
    """uint8 NCHW -> float32 normalised with the data set's channel mean and std."""
    return normalize_with(images, layout.mean, layout.std)


class TensorBatches:
    """Iterable of (uint8 images, labels) batches from in-memory tensors.

    Shuffling and augmentation draw from a generator seeded by (seed, epoch), with the
    epoch read from `epoch_fn` at the start of each pass. `rank`/`world_size` give each
    DDP process its own slice of the permutation.

    It is resumable mid-epoch (Lightning's `state_dict`/`load_state_dict` protocol): a run
    pre-empted after its k-th batch goes on with batch k+1 of the same order and the same
    crops, as if never stopped. Lightning fetches no batch ahead from a loader with a length,
    and `preemption` saves at a batch's end, so the batches yielded are the batches trained.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool = False, augment: bool = False, seed: int = 0,
                 epoch_fn: Callable[[], int] = lambda: 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.epoch_fn = seed, epoch_fn
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self._epoch, self._yielded = -1, 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained) from a checkpoint

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), max(int(state["batches"]), 0))

    def _per_rank(self) -> int:
        """Images this rank takes: an equal share when batches are dropped (training), else every
        `world_size`-th image from `rank`, so the ranks together see each image exactly once
        (evaluation: no padding duplicates, no image left out)."""
        n = len(self.labels)
        return n // self.world_size if self.drop_last else len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch_fn()
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n = len(self.labels)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order[self.rank::self.world_size][: self._per_rank()].to(self.images.device)
        # Rank 0 goes on drawing from the shuffling generator (a single device's stream, as it
        # always was); every other rank draws its crops and flips from its own.
        aug = g if self.rank == 0 else torch.Generator().manual_seed(epoch_seed(self.seed, epoch) * 4099 + self.rank)
        skip = self._resume[1] if self._resume and self._resume[0] == epoch else 0
        self._epoch, self._yielded, self._resume = epoch, skip, None
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if i < skip:  # trained before the pre-emption: keep the generator where it was
                if self.augment:
                    crop_flip_draws(len(idx), aug)
                continue
            x = self.images[idx]
            if self.augment:
                x = random_crop_flip(x, aug)
            self._yielded += 1
            yield x, self.labels[idx]


class CifarDataModule(L.LightningDataModule):
    """A CIFAR-format data set's train/test from `data_dir` (CIFAR-10 unless `layout` says other);
    the test set is the per-epoch evaluation set."""

    def __init__(self, data_dir: str | Path, batch_size: int = 128, eval_batch_size: int = 512,
                 seed: int = 0, download: bool = True, image_size: int | None = None,
                 augmentation: dict | None = None, layout: CifarLayout = CIFAR10) -> None:
        super().__init__()
        self.layout = layout
        if image_size not in (None, 32):
            raise DataError(f"{layout.title} images are 32x32; image_size {image_size} is for folder data sets "
                            f"(ImageNet)")
        if augmentation:
            raise DataError(f"{layout.title} trains with the paper's pad-4 crop and flip; {', '.join(augmentation)} "
                            f"are options of folder data sets (ImageNet)")
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.download = seed, download
        self.train_set: tuple[torch.Tensor, torch.Tensor] | None = None
        self.test_set: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare_data(self) -> None:
        prepare(self.data_dir, self.download, self.layout)

    def load(self) -> CIFAR10DataModule:
        """Read and validate both splits into CPU memory (idempotent); raises DataError."""
        if self.train_set is None:
            folder = prepare(self.data_dir, self.download, self.layout)
            self.train_set = load_split(folder, True, self.layout)
            self.test_set = load_split(folder, False, self.layout)
        return self

    @property
    def sizes(self) -> tuple[int, int]:
        """(training, test) images, once loaded."""
        return len(self.train_set[1]), len(self.test_set[1])

    def setup(self, stage: str | None = None) -> None:
        self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type == "cuda":  # keep the whole data set on the GPU: no host-to-device copies
            self.train_set = tuple(t.to(device) for t in self.train_set)
            self.test_set = tuple(t.to(device) for t in self.test_set)

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _dist(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def train_dataloader(self) -> TensorBatches:
        rank, world = self._dist()
        return TensorBatches(*self.train_set, self.batch_size, shuffle=True, augment=True, seed=self.seed,
                             epoch_fn=self._epoch, rank=rank, world_size=world, drop_last=world > 1)

    def val_dataloader(self) -> TensorBatches:
        rank, world = self._dist()
        return TensorBatches(*self.test_set, self.eval_batch_size, rank=rank, world_size=world)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):  # noqa: ANN001 - Lightning hook
        images, labels = batch
        return normalize(images, self.layout), labels


CIFAR10DataModule = CifarDataModule  # the name it always had


def write_folder(root: Path, layout: CifarLayout, n_train: int, n_test: int = 1000, seed: int = 0) -> Path:
    """A folder in `layout` of random images and labels under `root` (for speed and for tests), so
    the real loader path runs; returns `root`."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / layout.folder
    folder.mkdir(parents=True, exist_ok=True)
    per_file = [n_train // len(layout.train_files) + (i < n_train % len(layout.train_files))
                for i in range(len(layout.train_files))]
    for name, n in [*zip(layout.train_files, per_file), (layout.test_files[0], n_test)]:
        batch = {b"batch_label": b"synthetic", layout.label_key.encode(): rng.integers(0, layout.num_classes, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return Path(root)


def test_split(layout: CifarLayout, data_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split as uint8 images and labels, from an extracted folder (no download)."""
    return load_split(prepare(data_dir, False, layout), False, layout)


def declare(name: str, layout: CifarLayout, default_dir: str | None = None) -> DataSet:
    """The `DataSet` of a CIFAR-format data set: a new one is this call with its layout, and an
    entry in `data.DATASETS`."""
    bind = functools.partial
    return DataSet(name, layout.title, layout.classes, 32, layout.mean, layout.std, layout.train_size,
                   layout.test_size, bind(CifarDataModule, layout=layout), bind(prepare, layout=layout),
                   bind(fingerprint, layout=layout), bind(split_sizes, layout=layout),
                   test_images=bind(test_split, layout), default_dir=default_dir or f"data/{name}")


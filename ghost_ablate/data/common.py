"""What every data set shares: its declaration (`DataSet`) and its one error type."""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import lightning as L
import torch

from ..errors import UserError

T = TypeVar("T")


class DataError(UserError):
    """The data set is missing or broken; the message says which file and what to do."""


@dataclass(frozen=True)
class DataSet:
    """What training, costs, estimates and reports need to know of a data set; a run config's
    `dataset` names one of `DATASETS`."""
    name: str
    title: str  # as tables and report headers name it
    classes: tuple[str, ...]
    input_size: int  # square side of its images as the models see them
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int  # images of the full splits (a subset folder may hold fewer)
    test_size: int
    module: Callable[..., L.LightningDataModule]  # (data_dir, batch_size, eval_batch_size, seed, download, image_size)
    prepare: Callable[[str | Path, bool], Path]  # (data_dir, download) -> its folder, or DataError naming what is missing
    fingerprint: Callable[[str | Path], str]  # a hash of its contents: part of every run's identity
    split_sizes: Callable[[str | Path], "tuple[int, int] | None"]  # (train, test) images there; None if absent
    # (data_dir or None, image size) -> (training images/s one CPU core decodes and crops, measured on what);
    # None for data sets held decoded in memory, which never wait on their input
    input_rate: "Callable[[str | Path | None, int], tuple[float, str]] | None" = None
    # data_dir -> (uint8 test images, labels) held in memory, for feature maps and redundancy;
    # None for data sets too large to hold so
    test_images: "Callable[[str | Path], tuple[torch.Tensor, torch.Tensor]] | None" = None
    default_dir: str = ""  # where commands look when no --data-dir is given (default: data/<name>)

    def folder(self, data_dir: str | Path | None) -> Path:
        """`data_dir`, or the declared default folder where none is given."""
        return Path(data_dir) if data_dir else Path(self.default_dir or f"data/{self.name}")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> float32 normalised with this data set's channel mean and std."""
        return normalize_with(images, self.mean, self.std)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def normalize_with(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 NCHW -> float32 normalised with a data set's channel mean and std, on the images' device."""
    m, s = _channel_stats(tuple(mean), tuple(std), str(images.device))
    return (images.float() / 255.0 - m) / s


@functools.lru_cache(maxsize=32)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std as (1, C, 1, 1) tensors on `device`, made once: a new tensor each batch is a
    host-to-device copy (and a wait) each batch on a GPU."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of a run's shuffling in one epoch (the same on every rank, so ranks split one order)."""
    return seed * 1_000_003 + epoch


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one rank's own augmentation stream on the ImageNet paths (nvJPEG's batch crops, DALI)."""
    return seed * 1_000_003 + 7_919 * rank


class RankDraws:
    """One rank's own stream of random draws for augmentation that draws from torch's global
    generator (torchvision transforms): every rank seeded the global generator alike, so it would
    crop, flip and jitter alike. `run(fn)` calls `fn` on this rank's stream, seeded by
    (seed, rank), and leaves the global generator as it was."""

    def __init__(self, seed: int, rank: int) -> None:
        self.state = torch.Generator().manual_seed(rank_seed(seed, rank)).get_state()

    def run(self, fn: Callable[[], T]) -> T:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.state)
            out = fn()
            self.state = torch.get_rng_state()
        return out


def read_or_none(path: str) -> bytes | None:
    """A file's bytes, or None if it cannot be read (counted as unreadable by the caller)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


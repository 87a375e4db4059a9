"""Data sets, declared once (`DATASETS`): CIFAR-10 (`cifar.py`) and ILSVRC-2012 (`imagenet.py`).

A run config's `dataset` names one; training, costs, estimates, reports, features and bench read
its classes, input size, split sizes and data module from here. The CIFAR-10 names this module
always had (`fingerprint`, `prepare`, `CIFAR10DataModule`, ...) stay importable from it.
"""
from __future__ import annotations

from . import cifar, imagenet, imagenet_layout, throughput
from .cifar import (ARCHIVE_MD5, ARCHIVE_NAME, ARCHIVE_URL, CLASSES, FOLDER, MEAN, NUM_CLASSES, PAD, STD, TEST_FILES,
                    TRAIN_FILES, BatchUnpickler, CIFAR10DataModule, TensorBatches, UnsafeBatch, find_folder,
                    fingerprint, load_split, normalize, prepare, random_crop_flip, read_batch, split_sizes)
from .common import DataError, DataSet
from .imagenet import ImageNetDataModule

__all__ = ["ARCHIVE_MD5", "ARCHIVE_NAME", "ARCHIVE_URL", "CLASSES", "DATASETS", "FOLDER", "MEAN", "NUM_CLASSES", "PAD",
           "STD", "TEST_FILES", "TRAIN_FILES", "BatchUnpickler", "CIFAR10DataModule", "DataError", "DataSet",
           "ImageNetDataModule", "TensorBatches", "UnsafeBatch", "find_folder", "fingerprint", "get_dataset",
           "load_split", "normalize", "prepare", "random_crop_flip", "read_batch", "split_sizes"]

DATASETS: dict[str, DataSet] = {
    "cifar10": DataSet("cifar10", "CIFAR-10", CLASSES, 32, MEAN, STD, 50_000, 10_000, CIFAR10DataModule,
                       cifar.prepare, cifar.fingerprint, cifar.split_sizes),
    # Class names are the wnids; the split sizes are ILSVRC-2012's (1,281,167 / 50,000).
    "imagenet": DataSet("imagenet", "ImageNet", imagenet_layout.wnids(), imagenet.INPUT_SIZE, imagenet.MEAN, imagenet.STD,
                        1_281_167, 50_000, ImageNetDataModule, imagenet.prepare, imagenet.fingerprint,
                        imagenet.split_sizes, throughput.input_rate_per_core),
}


def get_dataset(name: str | None) -> DataSet:
    """The declared data set `name` (records from before the field default to CIFAR-10)."""
    name = name or "cifar10"
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]

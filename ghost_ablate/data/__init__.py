"""Data sets, declared once (`DATASETS`): CIFAR-10 (`cifar.py`) and ILSVRC-2012 (`imagenet.py`).

A run config's `dataset` names one; training, costs, estimates, reports, features and bench read
its classes, input size, normalisation, split sizes, default folder and data module from its
`DataSet`. Another data set in CIFAR's python layout is one `cifar.declare(name, CifarLayout(...))`
entry here; a data set's internals stay in its own module (`data.cifar`, `data.imagenet`).
"""
from __future__ import annotations

from pathlib import Path

from . import cifar, imagenet, imagenet_layout, throughput
from .common import DataError, DataSet

__all__ = ["DATASETS", "DEFAULT", "DataError", "DataSet", "data_fingerprint", "get_dataset"]

DATASETS: dict[str, DataSet] = {
    "cifar10": cifar.declare("cifar10", cifar.CIFAR10),
    # Class names are the wnids; the split sizes are ILSVRC-2012's (1,281,167 / 50,000).
    "imagenet": DataSet("imagenet", "ImageNet", imagenet_layout.wnids(), imagenet.INPUT_SIZE, imagenet.MEAN,
                        imagenet.STD, 1_281_167, 50_000, imagenet.ImageNetDataModule, imagenet.prepare,
                        imagenet.fingerprint, imagenet.split_sizes, throughput.input_rate_per_core,
                        default_dir="data/imagenet"),
}
DEFAULT = "cifar10"  # what a run config or a record without a `dataset` field trained on


def data_fingerprint(data_dir: str | Path) -> str | None:
    """The fingerprint of whichever declared data set `data_dir` holds; None if it holds none. The
    folder is read once (the fingerprint, cached); only a data set that is absent or broken is
    looked at again, and a broken one is a DataError, as its own fingerprint says."""
    for declared in DATASETS.values():
        try:
            return declared.fingerprint(data_dir)
        except DataError:
            if declared.split_sizes(data_dir) is not None:  # there, but not readable: say so
                raise
    return None


def get_dataset(name: str | None) -> DataSet:
    """The declared data set `name` (records from before the field default to CIFAR-10)."""
    name = name or DEFAULT
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]

"""The demo's data, cut from the official CIFAR-10 by anyone who has it (issue 42).

The committed demo, pilot and evidence trained on a 5,085-image subset: the first 1,017 images
of each of the five official training batch files and of the test batch file, pickled in the
official layout. `cut_subset` (`ghost-ablate demo-data`, `make demo-data`) makes that folder from
an extracted or downloaded `cifar-10-batches-py/` and checks every file against the checksums
below, so its data fingerprint is the committed records' and their runs count as done.
"""
from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np

from .cifar import CIFAR10, BatchUnpickler, find_folder, fingerprint, regular_batch
from .common import DataError

PER_FILE = 1017
SUFFIX = b" (first %d images)" % PER_FILE
# the subset's files, as the committed records trained on them (SHA-256); batches.meta is the official one
SHA256 = {
    "batches.meta": "f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb",
    "data_batch_1": "0ef81630c00c31f8a4390326d9c97990b34a37fbabd6d05d9f7ba588b20297a9",
    "data_batch_2": "68c57a8c2dcc17eea3df2c61cb063651d6f4ac47c0643d9bf219ca2707623d03",
    "data_batch_3": "8788f886ecfe2408990fc9958cc2568397928a1999fdb51b7b35ea85fa96f0ce",
    "data_batch_4": "f8b2212c0acc1bd7f12761941ed8595aede34c0470b209e1c34ad07006d918ec",
    "data_batch_5": "0286b5a878c782c9abeb7e74f954cd125d3701423f37cbc6c5f91a70b1b054ab",
    "test_batch": "30e76bed2e68905f1cf3fa7220c65fc399913ca05455bb0fd05b3dc5fd184def",
}
FINGERPRINT = "0ed6d2672e412419"  # data.fingerprint of that folder: the `data` of every committed subset record


def cut_batch(batch: dict[bytes, object]) -> bytes:
    """One official batch (as unpickled with bytes keys) -> the subset's file: its first PER_FILE
    images, labels and file names, the label saying so, pickled as the subset's files are
    (protocol 2, the official key order). A batch that is already cut is cut the same way."""
    label = bytes(batch[b"batch_label"])
    cut = {b"batch_label": label if label.endswith(SUFFIX) else label + SUFFIX,
           b"labels": list(batch[b"labels"][:PER_FILE]),
           b"data": np.ascontiguousarray(np.asarray(batch[b"data"], dtype=np.uint8)[:PER_FILE]),
           b"filenames": list(batch[b"filenames"][:PER_FILE])}
    return pickle.dumps(cut, protocol=2)


def cut_subset(source: str | Path, dest: str | Path) -> str:
    """The demo's subset of the CIFAR-10 folder `source` written to `dest`/cifar-10-batches-py,
    every file checked against SHA256; returns its data fingerprint. DataError, naming the files,
    where the source is not the official data set (or another numpy pickles arrays otherwise)."""
    folder = find_folder(Path(source))
    if folder is None:
        raise DataError(f"{source}: no {CIFAR10.folder}/ here; download CIFAR-10 first (`ghost-ablate demo-data` "
                        f"downloads it into --from unless --no-download)")
    out = Path(dest) / CIFAR10.folder
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not empty; the subset goes into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in CIFAR10.train_files + CIFAR10.test_files:
        regular_batch(folder / name)
        with open(folder / name, "rb") as f:
            try:
                batch = BatchUnpickler(f, encoding="bytes").load()
            except (pickle.UnpicklingError, EOFError, ValueError) as err:
                raise DataError(f"{folder / name}: not a CIFAR-10 batch ({err})") from None
        if not isinstance(batch, dict) or not {b"batch_label", b"labels", b"data", b"filenames"} <= set(batch):
            raise DataError(f"{folder / name}: not a CIFAR-10 batch (its keys are not the official ones)")
        (out / name).write_bytes(cut_batch(batch))
    shutil.copyfile(folder / "batches.meta", out / "batches.meta")
    wrong = [name for name, digest in SHA256.items()
             if hashlib.sha256((out / name).read_bytes()).hexdigest() != digest]
    if wrong:
        raise DataError(f"{out}: {', '.join(wrong)} differ from the demo's subset; is {folder} the official CIFAR-10 "
                        f"python version (cifar-10-python.tar.gz)? The folder is left for inspection")
    return fingerprint(dest)

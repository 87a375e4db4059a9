"""ILSVRC-2012 (ImageNet-1k) in the layout users keep it: `train/<wnid>/*.JPEG` and
`val/<wnid>/*.JPEG`, checked, listed and fingerprinted.

Class folders are the 1000 ILSVRC-2012 WordNet ids (timm ships the list), and a folder's label
is its wnid's index in that sorted list, so a folder with fewer classes (the sample data
`imagenet_sample.write_sample` makes) still trains the paper's 1000-way classifier with the
right labels.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from ..cache import JsonCache
from .common import DataError

SPLITS = {"train": "train", "test": "val"}
EXTENSIONS = (".jpeg", ".jpg", ".png")
WNID = re.compile(r"^n\d{8}$")
LAYOUT = "expected train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (wnid: an ILSVRC-2012 class such as n01440764)"


@functools.lru_cache(maxsize=1)
def wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class ids, sorted (the usual label order), from the list timm ships
    (read as a file: importing timm costs seconds)."""
    import importlib.util  # lazy: loaded only on the path that needs it

    spec = importlib.util.find_spec("timm")
    path = Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synsets.txt"
    names = tuple(sorted(line.strip() for line in path.read_text().splitlines() if line.strip()))
    assert len(names) == 1000, f"{path}: expected 1000 ILSVRC-2012 classes, found {len(names)}"
    return names


def is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def class_dirs(split: Path) -> list[os.DirEntry]:
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
        flat = sum(is_image(e.name) for e in entries)
        hint = (f" ({flat} images lie there unsorted: run `ghost-ablate imagenet sort-val {split} --ground-truth "
                f"FILE` once)" if flat else "")
        raise DataError(f"{split}: no class folders{hint}; {LAYOUT}")
    known = set(wnids())
    for e in dirs:
        if e.name not in known:
            raise DataError(f"{split / e.name}: not an ILSVRC-2012 class folder; {LAYOUT}")
        if not any(is_image(f.name) for f in os.scandir(e.path)):
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
    dirs = {s: class_dirs(root / s) for s in SPLITS.values()}
    missing = sorted({e.name for e in dirs["val"]} - {e.name for e in dirs["train"]})
    if missing:
        raise DataError(f"{root / 'val'}: classes with no training folder ({', '.join(missing[:3])}); {LAYOUT}")
    return dirs


def samples(class_dirs: list[os.DirEntry]) -> list[tuple[str, int]]:
    """(path, label) of every image in these class folders, sorted by path."""
    index = {w: i for i, w in enumerate(wnids())}
    out = []
    for e in class_dirs:
        out += [(f.path, index[e.name]) for f in sorted(os.scandir(e.path), key=lambda f: f.name) if is_image(f.name)]
    return out


def folder_inventory(data_dir: str | Path) -> dict[str, Any]:
    """Fingerprint and split sizes, from every image's name and size (not its bytes: 150 GB).
    Cached per folder and its class folders' modification times, which change when files are
    added, removed or renamed, so a full listing happens once."""

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
                if is_image(f.name):
                    digest.update(f"{s}/{e.name}/{f.name}:{f.stat().st_size}\n".encode())
                    counts[s] += 1
    value = {"fingerprint": digest.hexdigest()[:16], "train": counts["train"], "test": counts["val"]}
    cache.put(key, value)
    return value

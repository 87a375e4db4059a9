"""ImageNet as tar shards (WebDataset), for cluster file systems that serve a few large files far
better than 1.28M small ones.

Why WebDataset rather than LitData: a shard is a plain POSIX tar (listed with `tar t`, copied
with cp or rsync, checked by anyone), read front to back in one stream; DALI's own
`readers.webdataset` reads the same files; and nothing but the tar module is needed to get the
images back out. LitData's chunks need LitData to read.

`write_shards` (the `ghost-ablate imagenet shard` command) copies the image bytes as they are,
with no re-encoding: each sample is `<key>.<ext>` (the image), `<key>.cls` (its label) and
`<key>.txt` (its path in the folder layout). The training split is shuffled once, with a seed,
before it is cut into shards; reading then shuffles the shard order and a buffer of samples. A
file that cannot be read while sharding is left out and named in `shards.json`; one that cannot
be decoded is stored and, like in the folder, skipped and counted by the run that meets it.

The fingerprint is computed from the shards' contents (split, class, file name, size) exactly as
the folder's is, so the same images give the same fingerprint in both layouts and a run planned
on one resumes on the other.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import tarfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import torch

from ..cache import JsonCache
from ..formats import FormatError, parse_json, read_bounded
from .common import DataError, read_or_none
from .imagenet_layout import layout, samples

MANIFEST = "shards.json"
SPLITS = ("train", "val")
FORMAT = "ghost-ablate webdataset shards v1"
MAX_MANIFEST_BYTES = 16 * 2 ** 20
MAX_MEMBER_BYTES = 64 * 2 ** 20  # ILSVRC-2012's largest JPEG is ~15 MB; a member declared bigger is not an image
IMAGE_EXTS = ("jpeg", "jpg", "png")
DEFAULT_CLASSES = 1000  # ImageNet's; a sample whose .cls is outside 0..classes-1 is refused when read
# Lightning warns of any IterableDataset with a length under several workers; ShardImages splits
# its epoch over the workers itself (whole batches each), so the length is exact.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined", category=UserWarning)


def find_shards(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def write_shards(root: str | Path, dest: str | Path, per_shard: int = 1000, seed: int = 0,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The folder layout at `root` as shards in `dest`/{train,val}/shard-NNNNNN.tar and a manifest
    (`shards.json`); returns the manifest. `dest` must be new or empty."""
    import webdataset as wds  # lazy: an optional or rarely used dependency, loaded on use

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: exists and is not an empty folder; shards go into a new folder")
    if per_shard < 1:
        raise DataError(f"--per-shard must be >= 1, got {per_shard}")
    dirs = layout(Path(root))
    manifest: dict[str, Any] = {"format": FORMAT, "source": str(Path(root).resolve()), "splits": {}}
    for split in SPLITS:
        items = samples(dirs[split])
        if split == "train":
            random.Random(seed).shuffle(items)
        (dest / split).mkdir(parents=True)
        unreadable, count = [], 0
        # a whole-second mtime: a fractional one costs every member a pax header, one more header to
        # parse per member on every read
        with wds.ShardWriter(str(dest / split / "shard-%06d.tar"), maxcount=per_shard, verbose=0,
                             mtime=int(time.time())) as sink:
            for i, (path, label) in enumerate(items):
                name = os.path.relpath(path, root)
                data = read_or_none(path)
                if data is None:
                    unreadable.append([name, os.stat(path).st_size])
                    continue
                ext = Path(path).suffix.lower().lstrip(".")
                sink.write({"__key__": f"{i:08d}", ext: data, "cls": str(label).encode(), "txt": name.encode()})
                count += 1
                if progress is not None:
                    progress(1)
        shards = sorted(p.name for p in (dest / split).glob("shard-*.tar"))
        manifest["splits"][split] = {"shards": shards, "images": count, "unreadable": unreadable}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest, checked: every shard a plain file name present in its split's folder."""

    root = Path(root)
    raw = read_bounded(root / MANIFEST, root, MAX_MANIFEST_BYTES)
    try:
        manifest = None if raw is None else parse_json(raw, root / MANIFEST)
    except FormatError as err:
        raise DataError(str(err)) from None
    try:
        splits = {s: manifest["splits"][s] for s in SPLITS}
        ok = manifest.get("format") == FORMAT and all(
            isinstance(v["shards"], list) and isinstance(v["images"], int) and isinstance(v["unreadable"], list)
            for v in splits.values())
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise DataError(f"{root / MANIFEST}: not a shard manifest ({FORMAT}); write shards with "
                        f"`ghost-ablate imagenet shard FOLDER DEST`")
    for split, v in splits.items():
        for name in v["shards"]:
            where = root / split / str(name)
            if not isinstance(name, str) or Path(name).name != name or where.is_symlink() or not where.is_file():
                raise DataError(f"{root / MANIFEST}: names shard {str(name)[:80]!r}, not a regular file of {root / split} "
                                f"(links are refused)")
        for entry in v["unreadable"]:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                    and isinstance(entry[1], int)):
                raise DataError(f"{root / MANIFEST}: an unreadable entry {str(entry)[:80]!r} is not [name, size]")
    return manifest


def shard_paths(root: str | Path, split: str, manifest: dict[str, Any] | None = None) -> list[str]:
    """One split's shard files, from `manifest` (read and checked here if not given)."""
    root = Path(root)
    manifest = read_manifest(root) if manifest is None else manifest
    return [str(root / split / name) for name in manifest["splits"][split]["shards"]]


def inventory(root: str | Path) -> dict[str, Any]:
    """Fingerprint and split sizes from the shards themselves, computed as the folder layout's
    are (split/class/file:size, in the folder's order), so the two layouts agree. Cached per
    shard file's size and modification time."""

    root = Path(root)
    manifest = read_manifest(root)
    paths = {s: shard_paths(root, s, manifest) for s in SPLITS}
    stamps = [(s, p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for s in SPLITS for p in paths[s]]
    cache = JsonCache("data")
    key = cache.key("imagenet-shards-inventory", str(root.resolve()), stamps)
    hit = cache.get(key)
    if isinstance(hit, dict):
        return hit
    entries: list[tuple[int, str]] = []
    counts = {}
    for order, split in enumerate(SPLITS):
        counts[split] = 0
        for path in paths[split]:
            sizes, names = {}, {}
            try:
                # headers and names only: the image bytes are seeked over, never read
                with open(path, "rb") as f:
                    for m, sample, ext in checked_members(members(f, path), path):
                        if ext == "txt":
                            f.seek(m.offset)
                            names[sample] = f.read(min(m.size, 4096)).decode(errors="replace")
                        elif ext.lower() in IMAGE_EXTS:
                            sizes[sample] = m.size
            except (tarfile.ReadError, EOFError) as err:
                raise DataError(f"{path}: not a readable tar shard ({err or 'cut short'})") from None
            except OSError as err:
                raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
            for k, size in sizes.items():
                name = names.get(k, "")
                entries.append((order, f"{split}/{name.split('/', 1)[-1]}:{size}"))
                counts[split] += 1
        # a file that could not be read while sharding was in the folder: its name and size
        entries += [(order, f"{split}/{str(n).split('/', 1)[-1]}:{int(size)}")
                    for n, size in manifest["splits"][split]["unreadable"]]
    digest = hashlib.sha256()
    for _, line in sorted(entries, key=lambda e: (e[0], e[1].rsplit(":", 1)[0])):
        digest.update(f"{line}\n".encode())
    value = {"fingerprint": digest.hexdigest()[:16], "train": counts["train"], "test": counts["val"]}
    cache.put(key, value)
    return value


class Member(NamedTuple):
    """One member of a shard as its header declares it."""
    name: str
    size: int
    offset: int  # where its bytes start in the file
    regular: bool  # a regular file: not a link, folder, device, FIFO or GNU sparse member


BLOCK = 512
EXTENDED = (b"x", b"g", b"L", b"K")  # pax and GNU long-name headers: tarfile reads what follows them


def checksum_matches(block: bytes, stored: int) -> bool:
    """Whether a tar header's stored checksum is its byte sum with the checksum field read as
    spaces. The sum is taken modulo 65521 from zlib's Adler-32 (whose low half is 1 + the byte sum
    modulo 65521), in C: Python's sum() over 512 bytes took ~2 us, a third of a sample's read. A
    header off by a multiple of 65521 would pass; the checksum catches misreads, it does not
    guard anything (every member is bounded and checked from its header as well)."""
    low = (zlib.adler32(block) & 0xFFFF) - 1
    return (stored - 8 * 32 + sum(block[148:156]) - low) % 65521 == 0


def members(f: BinaryIO, path: str) -> Iterator[Member]:
    """The members of an open shard, front to back, from their headers alone (their bytes are seeked
    over). Plain ustar headers, the kind `write_shards` writes, are parsed here at a few
    microseconds each, about a tenth of tarfile's cost per member; from the first pax or GNU
    extended header on (other writers, or shards written before the writer set whole-second
    times), tarfile reads the rest. A header whose checksum fails, or a file that ends inside one,
    is a DataError."""
    at = f.tell()
    while True:
        block = f.read(BLOCK)
        if block.count(0) == len(block):  # the end-of-archive blocks, or the end of the file between members
            return
        if len(block) < BLOCK:
            raise DataError(f"{path}: cut short inside a member's header")
        if block[156:157] in EXTENDED:
            f.seek(at)
            with tarfile.open(fileobj=f, mode="r:") as tar:
                for m in tar:
                    yield Member(m.name, m.size, m.offset_data, m.type in (tarfile.REGTYPE, tarfile.AREGTYPE)
                                 and not m.issparse())
            return
        stored = block[148:156].split(b"\0", 1)[0].strip()
        if not stored.isdigit() or not checksum_matches(block, int(stored, 8)):
            raise DataError(f"{path}: not a readable tar shard (bad header checksum at byte {at:,})")
        name = block[:100].split(b"\0", 1)[0]
        if block[257:263] == b"ustar\0" and block[345]:  # POSIX ustar: a path prefix (GNU keeps times there)
            name = block[345:500].split(b"\0", 1)[0] + b"/" + name
        size_field = block[124:136]
        # a base-256 size (first byte's high bit set) only says more than 8 GiB: over any bound of ours
        size = MAX_MEMBER_BYTES + 1 if size_field[0] & 0x80 else int(size_field.split(b"\0", 1)[0].strip() or b"0", 8)
        yield Member(name.decode("utf-8", errors="replace"), size, at + BLOCK, block[156:157] in (b"0", b"\0"))
        at += BLOCK + -(-size // BLOCK) * BLOCK
        f.seek(at)


def checked_members(source: Iterator[Member], path: str) -> Iterator[tuple[Member, str, str]]:
    """(member, key, extension) of each member of a shard, checked from its header before anything
    reads its bytes: a regular file (no link, folder, device or GNU sparse member) of at most
    MAX_MEMBER_BYTES, named `<key>.<ext>`, not seen before in the shard."""
    seen: set[str] = set()
    for m in source:
        name = m.name
        if not m.regular:
            raise DataError(f"{path}: member {name[:80]!r} is not a regular file (links, folders, devices and "
                            f"sparse members are refused)")
        if m.size > MAX_MEMBER_BYTES:
            raise DataError(f"{path}: member {name[:80]!r} declares {m.size:,} bytes, over the "
                            f"{MAX_MEMBER_BYTES:,}-byte bound of one image")
        key, dot, ext = name.partition(".")
        if not dot or not key or "/" in name or "\\" in name or ".." in name:
            raise DataError(f"{path}: member {name[:80]!r} is not named <key>.<ext>")
        if name in seen:
            raise DataError(f"{path}: member {name[:80]!r} appears twice")
        seen.add(name)
        yield m, key, ext


class Place(NamedTuple):
    """Where one image's bytes lie in a shard, for reading them later (`ShardFiles.read`)."""
    path: str
    offset: int
    size: int
    name: str  # the member's name, for errors


def read_shard(path: str, classes: int = DEFAULT_CLASSES, lazy: bool = False) -> Iterator[dict[str, Any]]:
    """The samples of one shard, `{"__key__", "cls": int, "txt": str, "image": bytes}`, read
    front to back with every member checked from its header before its bytes are read: regular
    files only (no links, directories, devices or GNU sparse members), at most MAX_MEMBER_BYTES,
    plain `<key>.<ext>` names, no member twice; each sample has its image and a class in
    0..classes-1. Anything else, or a file that is not a tar or is cut short, is a DataError naming
    the shard (and the member). With `lazy`, "image" is the image's `Place` and its bytes are not
    read here; the kernel is asked to read the whole shard ahead, front to back."""
    sample: dict[str, Any] = {}

    def finish() -> dict[str, Any]:
        key = sample["__key__"]
        if "cls" not in sample:
            raise DataError(f"{path}: sample {key!r} has no .cls member (its class); rewrite the shards with "
                            f"`ghost-ablate imagenet shard`")
        if "image" not in sample:
            raise DataError(f"{path}: sample {key!r} has no image member ({', '.join('.' + e for e in IMAGE_EXTS)})")
        return sample

    try:
        with open(path, "rb") as f:
            if lazy and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
            for m, key, ext in checked_members(members(f, path), path):
                if sample and sample["__key__"] != key:
                    yield finish()
                    sample = {}
                sample.setdefault("__key__", key)
                if lazy and ext.lower() in IMAGE_EXTS:
                    sample["image"] = Place(path, m.offset, m.size, m.name)
                    continue
                f.seek(m.offset)
                data = f.read(m.size)
                if len(data) != m.size:
                    raise DataError(f"{path}: cut short inside member {m.name[:80]!r}")
                if ext == "cls":
                    text = data[:16].decode("ascii", errors="replace").strip()
                    if not text.isdigit() or not 0 <= int(text) < classes:
                        raise DataError(f"{path}: sample {key!r} has class {text[:16]!r}; valid: 0..{classes - 1}")
                    sample["cls"] = int(text)
                elif ext == "txt":
                    sample["txt"] = data[:4096].decode(errors="replace")
                elif ext.lower() in IMAGE_EXTS:
                    sample["image"] = data
            if sample:
                yield finish()
    except tarfile.ReadError as err:  # not a tar, or truncated past a header
        raise DataError(f"{path}: not a readable tar shard ({err})") from None
    except EOFError:
        raise DataError(f"{path}: cut short (unexpected end of the tar)") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


def read_shards(source: Iterator[dict[str, Any]], classes: int = DEFAULT_CLASSES,
                lazy: bool = False) -> Iterator[dict[str, Any]]:
    """A WebDataset pipeline stage: the samples of each shard {"url": path} its source yields."""
    for shard in source:
        yield from read_shard(shard["url"], classes, lazy)


class ShardFiles:
    """The image bytes at `Place`s, read with one positioned read each from shards kept open (the
    `most` last used), so a shard is opened once however its samples are interleaved."""

    def __init__(self, most: int = 16) -> None:
        self.most, self.open = most, {}  # path -> file descriptor, least recently used first

    def read(self, place: Place) -> bytes:
        fd = self.open.pop(place.path, None)
        try:
            if fd is None:
                fd = os.open(place.path, os.O_RDONLY)
                while len(self.open) >= self.most:
                    os.close(self.open.pop(next(iter(self.open))))
            self.open[place.path] = fd
            data = os.pread(fd, place.size, place.offset)
        except OSError as err:
            raise DataError(f"{place.path}: cannot read ({err.strerror or err})") from None
        if len(data) != place.size:
            raise DataError(f"{place.path}: cut short inside member {place.name[:80]!r}")
        return data

    def close(self) -> None:
        for fd in self.open.values():
            os.close(fd)
        self.open.clear()


class ShardImages(torch.utils.data.IterableDataset):
    """(image, label, name) from one split's shards, each image passed through `load` (bytes ->
    uint8 tensor or None). Training reads shards drawn with replacement (WebDataset's resampled
    mode), the same whole number of batches on every rank and worker (`len`, at most
    workers x batch - 1 images per rank short of `per_rank`), so every rank takes the same steps;
    evaluation gives each rank every world-th shard, once."""

    def __init__(self, shards: list[str], load: Callable[[bytes], Any], train: bool, per_rank: int = 0,
                 batch: int = 1, workers: int = 0, seed: int = 0, buffer: int = 1000,
                 classes: int = DEFAULT_CLASSES) -> None:
        super().__init__()
        self.shards, self.load, self.train, self.seed, self.buffer = shards, load, train, seed, buffer
        self.classes = classes
        self.workers = max(workers, 1)
        self.per_worker = per_rank // (self.workers * batch) * batch  # whole batches per worker

    def __len__(self) -> int:
        if not self.train:
            raise TypeError("evaluation shards are read to their end; their length per rank is not counted")
        return self.per_worker * self.workers

    def _pipeline(self) -> Any:
        import webdataset as wds  # lazy: an optional or rarely used dependency, loaded on use

        if self.train:  # seeded per (rank, worker, epoch) by WebDataset's deterministic mode
            # the buffer is filled whole before the first sample leaves (`initial`): a start-up of
            # `buffer` reads (tens of ms) after which each sample out costs one read in, and the first
            # samples are shuffled as well as the rest. WebDataset's default (yield from 100 on) reads
            # two samples in per sample out until the buffer is full, inside the epoch's time.
            # the buffer holds where each image lies, not its bytes: they are read as the sample
            # leaves, so the decoder meets them in cache rather than ~100 MB of buffered bytes later
            return wds.DataPipeline(wds.ResampledShards(self.shards, seed=self.seed, deterministic=True),
                                    self._read, wds.shuffle(self.buffer, initial=self.buffer, seed=self.seed)
                                    ).with_epoch(self.per_worker)
        return self._evaluation(*wds.utils.pytorch_worker_info())

    def _evaluation(self, rank: int, world: int, worker: int, workers: int) -> Iterator[dict[str, Any]]:
        """Every evaluation sample exactly once over the ranks: each rank reads every world-th shard
        where there are at least as many shards as ranks; with fewer, every rank reads every shard
        and keeps every world-th sample of it (a rank left without data would leave the others
        waiting in the evaluation's collectives for ever). The rank's shards are split over its
        loader workers."""
        indexed = list(enumerate(self.shards))
        whole = len(indexed) >= world
        mine = indexed[rank::world] if whole else indexed
        for k, path in mine[worker::workers]:
            for j, sample in enumerate(read_shard(path, self.classes)):
                if whole or (k + j) % world == rank:
                    yield sample

    def _read(self, source: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return read_shards(source, self.classes, lazy=True)

    def __iter__(self) -> Iterator[tuple[Any, int, str]]:
        files = ShardFiles()
        try:
            for sample in self._pipeline():
                data = sample["image"]
                yield self.load(files.read(data) if isinstance(data, Place) else data), sample["cls"], sample.get("txt", "")
        finally:
            files.close()

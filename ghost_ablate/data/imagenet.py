"""ILSVRC-2012 (ImageNet-1k) as a data set: its declaration's functions (prepare, fingerprint,
sizes) over the folder layout (`imagenet_layout`) or its shards (`shards`), and the data module,
with the paper's augmentation (random-resized crop and flip for training, the size/0.875 resize
and centre crop for evaluation; the rule is `decode`'s).

Images leave the loader as uint8 and are normalised on the device, as CIFAR-10's are. Where they
are decoded is `GHOST_ABLATE_DECODE`'s choice (`decode.DECODERS`): in the loader workers, on the
device (nvJPEG, crops on the batch), or by DALI (`dali`). An image that cannot be read or decoded
is skipped, named in the log once, and counted in the run's record (`unreadable_images`); it
never stops training.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import lightning as L
import torch

from ..machine import allocated_cpus
from . import shards
from .common import DataError, RankDraws, normalize_with, read_or_none
from .dali import DaliBatches
from .decode import (
    DECODE_ENV,
    DECODERS,
    Crops,
    crop_batch,
    decode_crop,
    extras_transform,
    header,
)
from .imagenet_layout import find_folder, folder_inventory, layout, samples

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
T = TypeVar("T")
log = logging.getLogger(__name__)


def prepare(data_dir: str | Path, download: bool = True) -> Path:
    root = Path(data_dir)
    if shards.find_shards(root):
        shards.read_manifest(root)
    else:
        layout(root)
    return root


def inventory(data_dir: str | Path) -> dict[str, Any]:
    """{"fingerprint", "train", "test"} of the folder layout or, where `shards.json` is, of the
    shards (the same images give the same fingerprint in both)."""
    return shards.inventory(data_dir) if shards.find_shards(data_dir) else folder_inventory(data_dir)


def fingerprint(data_dir: str | Path) -> str:
    return inventory(data_dir)["fingerprint"]


def split_sizes(data_dir: str | Path) -> tuple[int, int] | None:
    if find_folder(Path(data_dir)) is None:
        return None
    inv = inventory(data_dir)
    return inv["train"], inv["test"]


# ---- images -------------------------------------------------------------------------

class ImageFiles(torch.utils.data.Dataset):
    """(image, label, path) per file, the image made from the file's bytes by `load` (`crop_one`),
    None where the file cannot be read or decoded."""

    def __init__(self, samples: list[tuple[str, int]], load: Callable[[bytes], torch.Tensor | None]) -> None:
        self.samples, self.load = samples, load

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str]:
        path, label = self.samples[i]
        data = read_or_none(path)
        return (None if data is None else self.load(data)), label, path


def crop_one(data: bytes, crops: Crops, raw: bool = False) -> torch.Tensor | None:
    """One encoded image -> its uint8 crop (or, with `raw`, its bytes as a uint8 tensor); None if
    its header or its data cannot be decoded."""
    if raw:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    size = header(data)
    if size is None:
        return None
    box, flip = crops.box(*size)
    image = decode_crop(data, box, crops.size, crops.interpolation, flip)
    return None if image is None else crops.finish([image])[0]


def decode_blobs(blobs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Raw image bytes -> uint8 RGB CHW images on `device` (nvJPEG on CUDA, in one batched call);
    None where the header is not an image's or exceeds MAX_PIXELS, and where decoding fails (a
    blob the batch decoder refuses is decoded alone: PNGs on the CPU)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg  # lazy: loaded only on the path that needs it

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


class PackedBlobs(NamedTuple):
    """A batch of encoded images as two tensors: every image's bytes end to end, and where each
    starts (n + 1 offsets). A list of n byte tensors would cross the loader's worker queue as n
    shared-memory files, one descriptor each: at batch 512 under `ulimit -n 1024` the loader runs
    out of descriptors and hangs. Two tensors cost two, whatever the batch."""
    data: torch.Tensor  # uint8, 1-D
    offsets: torch.Tensor  # int64, n + 1

    @classmethod
    def pack(cls, blobs: list[torch.Tensor]) -> PackedBlobs:
        lengths = torch.tensor([0] + [len(b) for b in blobs], dtype=torch.int64)
        data = torch.cat(blobs) if blobs else torch.empty(0, dtype=torch.uint8)
        return cls(data, torch.cumsum(lengths, 0))

    def unpack(self) -> list[torch.Tensor]:
        """The blobs again, as views of the one buffer."""
        ends = self.offsets.tolist()
        return [self.data[a:b] for a, b in zip(ends, ends[1:])]

    def __len__(self) -> int:  # type: ignore[override] - the images, not the tuple's two fields
        return len(self.offsets) - 1


def collate(items: list[tuple[torch.Tensor | None, int, str]]) -> tuple[Any, torch.Tensor, list[str], list[str]]:
    """(images: a stacked tensor, or the encoded bytes packed in one buffer (`PackedBlobs`); labels;
    their paths; unreadable paths)."""
    good = [(x, y, p) for x, y, p in items if x is not None]
    bad = [p for x, _, p in items if x is None]
    blobs = [x for x, _, _ in good]
    raw = bool(blobs) and blobs[0].dim() == 1
    images = PackedBlobs.pack(blobs) if raw else (stack_crops(blobs) if blobs else
                                                  torch.empty(0, 3, 1, 1, dtype=torch.uint8))
    return images, torch.tensor([y for _, y, _ in good], dtype=torch.long), [p for *_, p in good], bad


def stack_crops(crops: list[torch.Tensor]) -> torch.Tensor:
    """uint8 CHW crops -> an NCHW batch laid out channels-last, the layout `decode_crop`'s resampler
    writes: each crop is copied as it lies, where a contiguous NCHW stack would transpose every one
    (a tenth of a worker's time per image)."""
    return torch.stack([x.permute(1, 2, 0) for x in crops]).permute(0, 3, 1, 2)


# A worker that sends no batch for this long is stuck (a hung decode, a full /dev/shm, too few
# file descriptors); the loader raises instead of waiting forever (`training.loader_timeout_error`).
LOADER_TIMEOUT_S = 600


def slurm_tasks_per_node() -> int:
    """Tasks SLURM starts per node (SLURM_NTASKS_PER_NODE, else the first count of
    SLURM_TASKS_PER_NODE such as "8(x2)"); 0 outside a SLURM allocation."""
    given = os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE", "")
    first = given.split(",")[0].split("(")[0]
    return int(first) if first.isdigit() else 0


def default_workers(devices: int) -> int:
    """Loader workers per training process: its share of the CPU cores allocated to it (SLURM's
    cpus-per-task or the affinity mask, not the host's count), one left for the process itself
    (GHOST_ABLATE_WORKERS overrides). Under srun each device is its own task and cpus-per-task is
    already that task's share; only one process that drives several devices divides it."""

    if os.environ.get("GHOST_ABLATE_WORKERS"):
        return max(int(os.environ["GHOST_ABLATE_WORKERS"]), 0)
    per_task = bool(os.environ.get("SLURM_CPUS_PER_TASK")) and slurm_tasks_per_node() >= devices
    return max(allocated_cpus() // (1 if per_task else max(devices, 1)) - 1, 1)


def eval_sampler(files: torch.utils.data.Dataset, trainer: L.Trainer | None) -> torch.utils.data.Sampler | None:
    """Under DDP, each rank evaluates every world-th image and no image twice (Lightning's default
    sampler pads the last ranks with repeats: 50,016 images counted on 24 GPUs); None otherwise."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler  # lazy: loaded only on the path that needs it

    if trainer is None or trainer.world_size == 1:
        return None
    return UnrepeatedDistributedSampler(files, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                        shuffle=False)


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
        self.shard_files: dict[str, list[str]] = {}  # the shards of "train" and "val", when reading shards
        self.unreadable: set[str] = set()
        self._draws: RankDraws | None = None  # this rank's draws for device-side augmentation

    def load(self) -> ImageNetDataModule:
        if self.train_set is None and self.counts is None:
            if shards.find_shards(self.data_dir):
                manifest = shards.read_manifest(self.data_dir)
                self.shard_files = {s: shards.shard_paths(self.data_dir, s, manifest) for s in shards.SPLITS}
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

            source = (self.shard_files["train" if train else "val"] if self.counts
                      else self.train_set if train else self.test_set)
            rank = self.trainer.global_rank if self.trainer is not None else 0
            return DaliBatches(source, self.crops[train], batch, rank, world, self.seed, self._device(),
                               threads=max(workers, 1), per_rank=self.counts[0] // world if self.counts else 0)
        load = functools.partial(crop_one, crops=self.crops[train], raw=self.on_device())
        # the loader's own generator seeds its workers in both layouts (not torch's global stream)
        common = dict(batch_size=batch, drop_last=train, num_workers=workers, collate_fn=collate,
                      pin_memory=self._device().type == "cuda", persistent_workers=workers > 0,
                      timeout=LOADER_TIMEOUT_S if workers > 0 else 0,
                      generator=torch.Generator().manual_seed(self.seed))
        if self.counts is not None:
            images = shards.ShardImages(self.shard_files["train" if train else "val"], load, train,
                                        self.counts[0] // world, batch, workers, self.seed)
            return torch.utils.data.DataLoader(images, **common)
        files = ImageFiles(self.train_set if train else self.test_set, load)
        return torch.utils.data.DataLoader(
            files, sampler=None if train else eval_sampler(files, self.trainer), shuffle=train, **common)

    def train_dataloader(self) -> Any:
        return self._loader(train=True)

    def val_dataloader(self) -> Any:
        return self._loader(train=False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):  # noqa: ANN001, ANN201 - Lightning hook
        images, labels, paths, bad = batch
        if isinstance(images, PackedBlobs):  # nvJPEG reads its input from host memory
            return images, labels.to(device), paths, bad
        return images.to(device, non_blocking=True), labels.to(device), paths, bad

    def _per_rank_draws(self, augment: Callable[[], T]) -> T:
        """Run `augment` on this rank's own stream of draws (`RankDraws`)."""
        if self._draws is None:
            self._draws = RankDraws(self.seed, self.trainer.global_rank if self.trainer is not None else 0)
        return self._draws.run(augment)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):  # noqa: ANN001, ANN201 - Lightning hook
        images, labels, paths, bad = batch
        if isinstance(images, PackedBlobs):
            crops = self.crops[self.trainer is None or self.trainer.training]
            decoded = decode_blobs(images.unpack(), labels.device)
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

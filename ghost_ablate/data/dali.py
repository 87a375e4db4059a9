"""ImageNet batches decoded and augmented by NVIDIA DALI (the optional `dali` extra):
nvJPEG decoding, crops and resizes on the GPU when training on CUDA, DALI's CPU operators
otherwise (which is how the tests exercise it, with no GPU).

Python reads the bytes (a folder's files or the shards' samples) and feeds them to the pipeline
(`external_source`), so this rank's share, the epoch's order and the unreadable-image accounting
are ours, as on the other paths: DALI stops a whole pipeline on one undecodable image, so each
image's header and, for JPEG, its end-of-image marker are checked first (`decode.intact`) and a
failing one is skipped and counted like the loader workers do. The crops follow the same rules
(random-resized area 8-100 % and aspect 3/4-4/3 with ten tries; short side to size/0.875 then
the centre), drawn by DALI's generator seeded per (seed, rank).
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .common import DataError, RankDraws, epoch_seed, rank_seed, read_or_none
from .decode import CROP_RATIO, DECODE_ENV, RATIO, SCALE, Crops, intact
from .shards import ShardImages


def available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _pipeline(crops: Crops, batch: int, threads: int, device: torch.device, seed: int) -> Any:
    from nvidia.dali import fn, pipeline_def, types  # lazy: an optional or rarely used dependency, loaded on use

    gpu = device.type == "cuda"
    interp = types.INTERP_CUBIC if crops.interpolation == "bicubic" else types.INTERP_LINEAR

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=(device.index or 0) if gpu else None, seed=seed,
                  exec_dynamic=True, prefetch_queue_depth=1)
    def images() -> Any:
        blobs = fn.external_source(name="blobs", dtype=types.UINT8, ndim=1)
        where = "mixed" if gpu else "cpu"
        if crops.train:
            out = fn.decoders.image_random_crop(blobs, device=where, output_type=types.RGB, random_area=list(SCALE),
                                                random_aspect_ratio=list(RATIO), num_attempts=10)
            out = fn.resize(out, resize_x=crops.size, resize_y=crops.size, interp_type=interp, antialias=True)
            out = fn.flip(out, horizontal=fn.random.coin_flip())
        else:
            out = fn.decoders.image(blobs, device=where, output_type=types.RGB)
            out = fn.resize(out, resize_shorter=round(crops.size / CROP_RATIO), interp_type=interp, antialias=True)
            out = fn.crop(out, crop=(crops.size, crops.size))
        return fn.transpose(out, perm=[2, 0, 1])

    pipe = images()
    pipe.build()
    return pipe


class DaliBatches:
    """This rank's batches of one split, as the loader workers' collate gives them: (uint8
    NCHW images on the device, labels, names, unreadable names). `source` is a list of (path,
    label) or of shard paths. Training draws a new order each epoch and gives every rank
    len // world images; evaluation gives rank r every world-th image, once."""

    def __init__(self, source: list[Any], crops: Crops, batch: int, rank: int, world: int, seed: int,
                 device: torch.device, threads: int = 1, per_rank: int = 0) -> None:
        if not available():
            raise DataError(f"{DECODE_ENV}=dali needs NVIDIA DALI: pip install -e '.[dali]' (nvidia-dali-cuda130)")
        self.source, self.crops, self.batch, self.rank, self.world = source, crops, batch, rank, world
        self.seed, self.device, self.threads = seed, device, threads
        self.epoch, self.pipe, self.per_rank = 0, None, per_rank  # per_rank: training images per rank, from shards
        self.sharded = bool(source) and isinstance(source[0], str)
        self.draws = RankDraws(seed, rank)

    def _items(self) -> Iterator[tuple[bytes | None, int, str]]:
        if self.sharded:

            yield from ShardImages(self.source, _as_bytes, self.crops.train, self.per_rank, self.batch, 1, self.seed)
            return
        order = list(self.source)
        if self.crops.train:
            random.Random(epoch_seed(self.seed, self.epoch)).shuffle(order)
            order = order[self.rank::self.world][:len(self.source) // self.world]
        else:
            order = order[self.rank::self.world]
        for path, label in order:
            yield read_or_none(path), label, path

    def __len__(self) -> int:
        if self.crops.train:
            return (self.per_rank if self.sharded else len(self.source) // self.world) // self.batch
        if self.sharded:
            raise TypeError("the number of evaluation batches from shards is known after reading them")
        return -(-len(range(self.rank, len(self.source), self.world)) // self.batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str], list[str]]]:
        if self.pipe is None:
            self.pipe = _pipeline(self.crops, self.batch, self.threads, self.device,
                                  rank_seed(self.seed, self.rank))
        chunk: list[tuple[bytes | None, int, str]] = []
        for item in self._items():
            chunk.append(item)
            if len(chunk) == self.batch:
                yield self._run(chunk)
                chunk = []
        if chunk and not self.crops.train:
            yield self._run(chunk)
        self.epoch += 1

    def _run(self, chunk: list[tuple[bytes | None, int, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str],
                                                                          list[str]]:
        from nvidia.dali.plugin.pytorch import feed_ndarray  # lazy: an optional or rarely used dependency, loaded on use

        whole = [b is not None and intact(b) for b, _, _ in chunk]  # one header parse per image
        good = [item for item, ok in zip(chunk, whole) if ok]
        bad = [p for (_, _, p), ok in zip(chunk, whole) if not ok]
        size = self.crops.size
        images = torch.empty(len(good), 3, size, size, dtype=torch.uint8, device=self.device)
        if good:
            self.pipe.feed_input("blobs", [np.frombuffer(b, dtype=np.uint8) for b, _, _ in good])
            try:
                (out,) = self.pipe.run()
            except RuntimeError:
                self.pipe = None  # DALI leaves a failed pipeline unusable
                names = [p for _, _, p in good]
                raise DataError(f"DALI could not decode an image among {len(names)} (first {names[0]}); train with "
                                f"{DECODE_ENV}=workers, which skips and counts such images, or remove it") from None
            feed_ndarray(out.as_tensor(), images, cuda_stream=torch.cuda.current_stream(self.device)
                         if self.device.type == "cuda" else None)
            if self.crops.extras is not None:  # torchvision's transforms, on this rank's own draws
                images = torch.stack(self.draws.run(lambda: self.crops.finish(list(images))))
        labels = torch.tensor([y for _, y, _ in good], dtype=torch.long)
        return images, labels, [p for _, _, p in good], bad


def _as_bytes(data: bytes) -> bytes:
    return data


"""`ghost-ablate imagenet ...`: ILSVRC-2012 chores: sort the official val/ folder, write sample
data in the real layout, and measure whether decoding or the model bounds training here."""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError


def add_imagenet_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("imagenet", help="ImageNet chores: sort-val, sample, shard, throughput")
    cmds = p.add_subparsers(dest="imagenet_command", required=True, parser_class=type(p))
    q = cmds.add_parser("sort-val", help="move the flat official val/ images into val/<wnid>/ (once)")
    q.add_argument("val_dir", help="the val/ folder the official archive unpacks to")
    q.add_argument("--ground-truth", required=True,
                   help="rows of `file wnid`, Kaggle's LOC_val_solution.csv, or the devkit's "
                        "ILSVRC2012_validation_ground_truth.txt (with --devkit)")
    q.add_argument("--devkit", help="the ILSVRC2012 devkit folder (or its data/meta.mat), for class numbers")
    q = cmds.add_parser("sample", help="write generated JPEGs in the ILSVRC-2012 layout (val/ flat, as shipped)")
    q.add_argument("root", help="folder to create (train/, val/; the val ground truth goes beside it)")
    q.add_argument("--classes", type=int, default=10)
    q.add_argument("--per-class", type=int, default=12, help="training images per class")
    q.add_argument("--val-per-class", type=int, default=3)
    q.add_argument("--size", type=int, default=64, help="image side in pixels")
    q.add_argument("--corrupt", type=int, default=0, help="training images to cut short (unreadable)")
    q.add_argument("--natural", action="store_true",
                   help="photograph-like 500x375 JPEGs of ImageNet's size (~110 KB) instead, for timing decoders")
    q = cmds.add_parser("shard", help="copy the folder layout into WebDataset tar shards (for cluster file systems)")
    q.add_argument("data_dir", help="train/ and val/ in the ILSVRC-2012 layout")
    q.add_argument("dest", help="a new folder for the shards and shards.json; train on it with --data-dir DEST")
    q.add_argument("--per-shard", type=int, default=1000, help="images per shard (1000 ImageNet JPEGs: ~110 MB)")
    q.add_argument("--seed", type=int, default=0, help="the training split's one-time shuffle before sharding")
    q = cmds.add_parser("throughput", help="training images/s per CPU core of the peer's loader and each of ours, "
                                           "side by side, and whether the cores can feed each model here")
    q.add_argument("data_dir", help="train/ in the ILSVRC-2012 layout (for ImageNet-like JPEGs: imagenet sample "
                                    "--natural)")
    q.add_argument("--image-size", type=int, default=224)
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--images", type=int, default=256, help="images timed per pass (after one warm-up batch)")
    q.add_argument("--repeats", type=int, default=3, help="passes per reader, interleaved; the median is shown")
    q.add_argument("--shards", help="shards of the same folder (default: written to a temporary folder)")
    q.add_argument("--no-dali", action="store_true", help="leave DALI's CPU mode out")
    q.add_argument("--models", nargs="*", default=["ghostnet", "resnet50"], help="registry names to time")
    q.add_argument("--threads", type=int, help="torch threads for the models (default: all cores)")

def cmd_imagenet(args: argparse.Namespace) -> int:
    from ..data import imagenet, imagenet_sample, imagenet_val  # lazy: the command line answers --help without torch

    if args.imagenet_command == "sort-val":
        moved, placed = imagenet_val.sort_val(args.val_dir, args.ground_truth, args.devkit)
        print(f"{args.val_dir}: {moved} image(s) moved into class folders, {placed} already in place")
        return 0
    if args.imagenet_command == "sample":
        if min(args.classes, args.per_class, args.val_per_class) < 1 or not 16 <= args.size <= 1024:
            raise UserError("--classes, --per-class and --val-per-class must be >= 1 and --size in 16..1024")
        truth = imagenet_sample.write_sample(args.root, args.classes, args.per_class, args.val_per_class, args.size,
                                             corrupt=args.corrupt, natural=args.natural)
        val = args.classes * args.val_per_class
        print(f"{args.root}: {args.classes} classes x {args.per_class} training images, {val} flat val images; "
              f"sort them with: ghost-ablate imagenet sort-val "
              f"{Path(args.root) / 'val'} --ground-truth {truth}")
        return 0
    if args.imagenet_command == "shard":

        from ..data import shards  # lazy: the command line answers --help without torch

        total = sum(imagenet.split_sizes(args.data_dir) or (0, 0))
        with tqdm(total=total, desc="sharding", unit="image", disable=not sys.stderr.isatty(), leave=False) as bar:
            manifest = shards.write_shards(args.data_dir, args.dest, args.per_shard, args.seed, progress=bar.update)
        for split, v in manifest["splits"].items():
            skipped = f"; {len(v['unreadable'])} unreadable file(s) left out" if v["unreadable"] else ""
            print(f"{args.dest}/{split}: {v['images']} images in {len(v['shards'])} shard(s){skipped}")
        return 0
    return throughput(args)


def throughput(args: argparse.Namespace) -> int:
    """The readers side by side (`data.throughput.compare`), then each model's training images/s
    (forward, backward, SGD step, fp32, all threads) against what the loader's default workers
    can feed it at our per-core rate."""

    import torch  # lazy: the command line answers --help without torch
    from tabulate import tabulate  # lazy: the command line answers --help without torch

    from ..data import shards  # lazy: the command line answers --help without torch
    from ..data.imagenet import default_workers  # lazy: the command line answers --help without torch
    from ..data.throughput import OURS, compare, describe_sample  # lazy: the command line answers --help without torch
    from ..estimate import RunEstimate, input_side  # lazy: the command line answers --help without torch
    from ..machine import cpu_model  # lazy: the command line answers --help without torch
    from ..models import build_model  # lazy: the command line answers --help without torch
    from ..timing import seconds, sgd_step  # lazy: the command line answers --help without torch

    if min(args.images, args.repeats, args.batch_size) < 1 or args.images < args.batch_size:
        raise UserError("--images must be >= --batch-size >= 1 and --repeats >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = args.shards
        if shard_dir is None:
            shard_dir = Path(tmp) / "shards"
            shards.write_shards(args.data_dir, shard_dir, per_shard=500)
        rows = compare(args.data_dir, args.image_size, args.batch_size, args.images, args.repeats, shard_dir,
                       dali=False if args.no_dali else None)
    when = datetime.date.today().isoformat()
    print(f"training images/s per CPU core at {args.image_size} px, batch {args.batch_size}, median of "
          f"{args.repeats} interleaved passes of {args.images} images, on {cpu_model()}, {when}; read from "
          f"{describe_sample(args.data_dir)}:")
    print(tabulate([[r["reader"], f"{r['images_per_s_per_core']:,.0f}", f"{r['vs_peer']:.2f}x"] for r in rows],
                   headers=["reader", "images/s per core", "vs peer"], tablefmt="github"))
    ours = next(r["images_per_s_per_core"] for r in rows if r["reader"] == OURS)
    workers = default_workers(1)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 1000, (args.batch_size,))
    for name in args.models:
        model = build_model(name, num_classes=1000).train()
        step = min(seconds(sgd_step(model, x, y), 2, warmup=1))
        _, factor = input_side([RunEstimate(name, 0.0, 1, step_s=step, batch_size=args.batch_size)], ours, workers)
        bound = "the input pipeline" if factor > 1 else "the model"
        print(f"{name}: {args.batch_size / step:,.1f} training images/s (fp32, {torch.get_num_threads()} threads); "
              f"{workers} loader worker(s) feed {ours * workers:,.0f}/s: {bound} bounds training here")
    return 0

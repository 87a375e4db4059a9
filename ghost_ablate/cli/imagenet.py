"""`ghost-ablate imagenet ...`: ILSVRC-2012 chores: sort the official val/ folder, write sample
data in the real layout, and measure whether decoding or the model bounds training here."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import UserError


def add_imagenet_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("imagenet", help="ImageNet chores: sort-val, sample, throughput")
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
    q = cmds.add_parser("throughput", help="images/s of the input pipeline (decode + augment) beside the "
                                           "model's training images/s, on this machine's CPU")
    q.add_argument("data_dir", help="train/ and val/ in the ILSVRC-2012 layout")
    q.add_argument("--image-size", type=int, default=224)
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--batches", type=int, default=8, help="timed batches (after one warm-up batch)")
    q.add_argument("--workers", type=int, help="loader workers (default: the training default)")
    q.add_argument("--models", nargs="+", default=["ghostnet", "resnet50"], help="registry names to time")
    q.add_argument("--threads", type=int, help="torch threads for the model (default: all cores)")


def cmd_imagenet(args: argparse.Namespace) -> int:
    from ..data import imagenet

    if args.imagenet_command == "sort-val":
        moved, placed = imagenet.sort_val(args.val_dir, args.ground_truth, args.devkit)
        print(f"{args.val_dir}: {moved} image(s) moved into class folders, {placed} already in place")
        return 0
    if args.imagenet_command == "sample":
        if min(args.classes, args.per_class, args.val_per_class) < 1 or not 16 <= args.size <= 1024:
            raise UserError("--classes, --per-class and --val-per-class must be >= 1 and --size in 16..1024")
        truth = imagenet.write_sample(args.root, args.classes, args.per_class, args.val_per_class, args.size,
                                      corrupt=args.corrupt)
        val = args.classes * args.val_per_class
        print(f"{args.root}: {args.classes} classes x {args.per_class} training images, {val} flat val images; "
              f"sort them with: ghost-ablate imagenet sort-val "
              f"{Path(args.root) / 'val'} --ground-truth {truth}")
        return 0
    return throughput(args)


def throughput(args: argparse.Namespace) -> int:
    """Decoded-and-augmented images per second through the training loader, and training images
    per second (forward, backward, SGD step, fp32) of each model at the same batch and size."""
    import os

    import torch
    import torch.nn.functional as F

    from ..data import ImageNetDataModule
    from ..data.imagenet import default_workers
    from ..models import build_model
    from ..machine import cpu_model

    workers = args.workers if args.workers is not None else default_workers(1)
    data = ImageNetDataModule(args.data_dir, args.batch_size, args.batch_size, image_size=args.image_size,
                              workers=workers, decode="workers").load()
    loader = data.train_dataloader()
    batches = iter(loader)
    seen, start = 0, None
    for i in range(args.batches + 1):
        try:
            images, labels, _, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, labels, _, _ = next(batches)
        if i == 0:
            start = time.perf_counter()  # workers started and warm
        else:
            seen += len(labels)
    pipeline = seen / (time.perf_counter() - start)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    cpu = f"{cpu_model()}, {torch.get_num_threads()} threads"
    print(f"input pipeline: {pipeline:,.0f} images/s decoded and augmented ({workers} worker(s), "
          f"{args.image_size} px, batch {args.batch_size}) on {cpu}")
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 1000, (args.batch_size,))
    for name in args.models:
        model = build_model(name, num_classes=1000).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        rate = args.batch_size / sorted(times[1:])[0]
        bound = "the input pipeline" if pipeline < rate else "the model"
        print(f"{name}: {rate:,.1f} training images/s (fp32) on {cpu}; {bound} bounds training")
    return 0


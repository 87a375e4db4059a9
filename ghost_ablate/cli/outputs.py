"""Commands that measure or draw: report, features, bench, demo-data, gpu-check."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import UserError
from .args import model_knobs


def cmd_report(args: argparse.Namespace) -> int:
    from ..experiment import load_experiment  # lazy: the command line answers --help without torch

    if args.section != "paper":
        return _report_section(args.section, args.results_dir, args.out)
    from ..report import build_report  # lazy: the command line answers --help without torch

    for path in args.experiment or []:
        load_experiment(path)  # a bad file is one line before anything is written
    written = build_report(args.results_dir, args.out, args.profile,
                           [Path(p) for p in args.experiment] if args.experiment else None,
                           data_dir=args.data_dir, data=args.data, evidence=not args.no_evidence,
                           epochs=args.epochs, tables=args.tables, stack=args.stack)
    print(f"wrote {len(written)} files to {args.out}/: " + ", ".join(p.name for p in written))
    if args.readme:
        from ..report import HEADLINE, splice_readme  # lazy: the command line answers --help without torch

        report = os.path.relpath(Path(args.out).resolve(), Path(args.readme).resolve().parent)
        splice_readme(Path(args.readme), (Path(args.out) / HEADLINE).read_text(), args.readme_block, report)
        print(f"updated the {args.readme_block} block of {args.readme}")
    return 0


def _report_section(section: str, results_dir: str, out: str) -> int:
    """`report --section pilot|precision`: the one section's files (pilot.md and pilot_curves.csv;
    precision.md and precision.csv) from the runs in `results_dir`."""
    from ..report.pilot import write_pilot_report  # lazy: the command line answers --help without torch
    from ..report.precision import write_precision_report  # lazy: the command line answers --help without torch

    written = {"pilot": write_pilot_report, "precision": write_precision_report}[section](results_dir, out)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from ..data.cifar import find_folder, prepare  # lazy: the command line answers --help without torch
    from ..data.cifar_subset import FINGERPRINT, cut_subset  # lazy: the command line answers --help without torch

    if find_folder(Path(args.source)) is None:
        prepare(args.source, not args.no_download)  # the official archive, md5-checked
    seen = cut_subset(args.source, args.out)
    print(f"wrote the demo's subset to {args.out}: 5,085 training and 1,017 test images, every file as the "
          f"committed records trained on it (data fingerprint {seen}{'' if seen != FINGERPRINT else ', the same'})")
    return 0


def cmd_gpu_check(args: argparse.Namespace) -> int:
    import torch  # lazy: the command line answers --help without torch

    from ..gpu_check import run_check  # lazy: the command line answers --help without torch

    cuda = torch.cuda.is_available()
    out = Path(args.out) if args.out else (Path("reports/gpu-check.md") if cuda else None)
    failed, _ = run_check(out, cuda)
    if out is not None:
        print(f"wrote {out}")
    return 1 if failed else 0


# ---- featuremaps and redundancy -------------------------------------------------------

def _networks(args: argparse.Namespace) -> list:
    from ..features import load_trained  # lazy: the command line answers --help without torch

    if args.weights:
        return [load_trained(weights=args.weights, model=args.model, ratio=args.ratio, dw_size=args.dw_size,
                             width=args.width, knobs=model_knobs(args))]
    if not args.sources:
        raise UserError("name run folders or checkpoints, or give --weights FILE --model NAME")
    if args.model:
        raise UserError("--model goes with --weights; a run folder or checkpoint names its own model")
    return [load_trained(source) for source in args.sources]


def cmd_features(args: argparse.Namespace) -> int:
    """The networks' feature maps drawn, and the redundancy table (`--only` one of the two)."""
    networks = _networks(args)
    written = [] if args.only == "redundancy" else _draw_maps(args, networks)
    written += [] if args.only == "maps" else _redundancy(args, networks)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _draw_maps(args: argparse.Namespace, networks: list) -> list[Path]:
    from ..features import resolve_layer, test_images  # lazy: the command line answers --help without torch
    from ..report.evidence import plot_feature_maps  # lazy: the command line answers --help without torch
    from ..report.plots import headless  # lazy: the command line answers --help without torch

    for net in networks:  # check every layer before anything is written
        resolve_layer(net.model, args.layer)
    image = test_images(args.data_dir, 1, args.image)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    headless()
    written = []
    for net in networks:
        stem = f"feature_maps_{net.label.lower().replace(' ', '_').replace('=', '').replace('-', '')}"
        written += plot_feature_maps(net, args.layer, image, out, stem)
    return written


def _redundancy(args: argparse.Namespace, networks: list) -> list[Path]:
    from ..data import get_dataset  # lazy: the command line answers --help without torch
    from ..features import test_images  # lazy: the command line answers --help without torch
    from ..records import write_atomic  # lazy: the command line answers --help without torch
    from ..report.evidence import redundancy_outputs  # lazy: the command line answers --help without torch
    from ..report.plots import headless  # lazy: the command line answers --help without torch

    folder = get_dataset(None).folder(args.data_dir)
    images = test_images(folder, args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    headless()
    paths, md = redundancy_outputs(networks, images, out, threshold=args.threshold)
    sources = "; ".join(f"{n.label} ({Path(n.source).parent.name or n.source})" for n in networks)
    write_atomic(out / "redundancy.md", f"# Feature-map redundancy\n\nNetworks: {sources}. Images: the first "
                                        f"{len(images)} test images of `{folder.name}`.\n\n{md}")
    return [*paths, out / "redundancy.md"]


def cmd_bench(args: argparse.Namespace) -> int:
    """`bench`: the machine's matrix-product peak, the training pipeline, the Ghost variants, or
    the models' latency and memory (the default)."""
    import torch  # lazy: the command line answers --help without torch

    from ..models import MODELS  # lazy: the command line answers --help without torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible here; use --device cpu")
    for name in args.models or []:
        if name not in MODELS:
            raise UserError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    if args.peak:
        return _bench_peak(args)
    if args.pipeline:
        return _bench_pipeline(args)
    return _bench_models(args)


def _bench_peak(args: argparse.Namespace) -> int:
    from ..bench import bench_peak  # lazy: the command line answers --help without torch

    out = Path(args.out or "results/peak.csv")
    frame = bench_peak(args.device, out)
    for row in frame[frame["device"] == frame["device"].iloc[-1]].itertuples():
        print(f"{row.device}: {row.precision} matrix product {row.gflop_s:g} GFLOP/s")
    print(f"wrote {out}")
    return 0


def _bench_pipeline(args: argparse.Namespace) -> int:
    from ..bench import pipeline_comparison  # lazy: the command line answers --help without torch
    from ..records import write_atomic  # lazy: the command line answers --help without torch

    frame = pipeline_comparison(args.models or ["resnet56", "vgg16"], args.device, args.train_images,
                                args.train_batch_size or 128, args.epochs, args.workers)
    out = Path(args.out or "results/bench_pipeline.csv")
    write_atomic(out, frame.to_csv(index=False))
    print(f"wrote {out}")
    return 0


def _bench_models(args: argparse.Namespace) -> int:
    """Latency and memory of the paper's configurations (or of --models), or of the Ghost
    variants with --variants."""
    from ..bench import bench_models, bench_variants, settings_from, variant_keys  # lazy: --help without torch
    from ..costs import paper_configs  # lazy: the command line answers --help without torch
    from ..models import MODELS, resolve_knobs  # lazy: the command line answers --help without torch

    settings = settings_from(device=args.device, repeats=args.repeats, warmup=args.warmup,
                             batch_size=args.batch_size, train_batch_size=args.train_batch_size,
                             train_steps=args.train_steps, throughput_batches=args.throughput_batches,
                             threads=args.threads, precision=args.precision)
    if args.variants:
        keys = variant_keys(args.models or ["ghost_vgg16", "ghost_resnet56"])
        out = Path(args.out or "results/bench_variants.csv")
        bench_variants(keys, settings, out)
        print(f"wrote {out} ({len(keys)} configurations on {args.device}, {settings.threads} threads)")
        return 0
    keys = [k for k in paper_configs() if not args.models or k[0] in args.models]
    for name in args.models or []:  # a model outside the paper's rows: its default configuration
        if not any(k[0] == name for k in keys):
            default = resolve_knobs(name)
            keys.append((name, default["ratio"], default["dw_size"], default["width"]))
    if args.cifar_only:
        from ..data import get_dataset  # lazy: the command line answers --help without torch

        keys = [k for k in keys if MODELS[k[0]].input_size == get_dataset("cifar10").input_size]
    if not keys:
        raise UserError("--cifar-only leaves none of the models named; drop one of the two")
    out = Path(args.out or "results/bench.csv")
    bench_models(keys, settings, out)
    print(f"wrote {out} ({len(keys)} models on {args.device}, {settings.threads} threads)")
    return 0



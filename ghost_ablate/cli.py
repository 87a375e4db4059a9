"""`ghost-ablate` command line: count, knobs, train, sweep, report, bench, export, doctor, featuremaps, redundancy.

User mistakes end in one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from .config import PRECISIONS
from .errors import UserError

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is a single line (no usage dump) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _ratio(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be an integer >= 1, got {text!r}") from None


def _dw_size(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dw-size must be an odd integer >= 1, got {text!r}") from None


def _width(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"width must be a number > 0, got {text!r}") from None


def add_model_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--model", required=required, help="registry name (see `ghost-ablate count`)")
    p.add_argument("--ratio", type=_ratio, help="Ghost ratio s (integer >= 1)")
    p.add_argument("--dw-size", type=_dw_size, help="cheap-op kernel d (odd integer)")
    p.add_argument("--width", type=_width, help="width multiplier (GhostNet family)")
    p.add_argument("--set", dest="knobs", action="append", default=[], metavar="KNOB=VALUE",
                   help="any other knob the model declares, e.g. --set cheap_op=rep (repeatable; "
                        "`ghost-ablate knobs` lists them)")


def model_knobs(args: argparse.Namespace) -> dict[str, str]:
    """The --set KNOB=VALUE assignments (checked against the model's declarations when it is built)."""
    from .models import LEGACY, parse_assignments

    knobs = parse_assignments(args.knobs)
    for name in LEGACY:
        if name in knobs:
            raise UserError(f"--set {name}=...: use --{name.replace('_', '-')} for {name}")
    return knobs


# ---- count -------------------------------------------------------------------------

def cmd_count(args: argparse.Namespace) -> int:
    from .costs import breakdown, cost_record, paper_cost_records
    from .models import MODELS, build_model

    if args.model is None:
        if any(v is not None for v in (args.ratio, args.dw_size, args.width)) or args.knobs or args.breakdown:
            raise UserError("--ratio, --dw-size, --width, --set and --breakdown need --model")
        records = paper_cost_records()
    else:
        records = [cost_record(args.model, args.ratio, args.dw_size, args.width, model_knobs(args))]
    if args.format == "json":
        keys = ("model", "ratio", "dw_size", "width", "knobs", "input_size", "params", "flops", "paper_params",
                "paper_flops")
        print(json.dumps([{k: r[k] for k in keys} for r in records], indent=2))
        return 0
    print(format_count_table(records))
    if args.breakdown:
        model = build_model(args.model, args.ratio, args.dw_size, args.width, **model_knobs(args))
        print()
        print(breakdown(model, MODELS[args.model].input_size, args.depth))
    return 0


def format_count_table(records: list[dict]) -> str:
    import pandas as pd

    def millions(v: float | None, digits: int) -> str:
        return "-" if v is None or pd.isna(v) else f"{v / 1e6:.{digits}f}"

    def pct(v: float | None) -> str:
        return "-" if v is None or pd.isna(v) else f"{100 * v:+.1f}%"

    df = pd.DataFrame(records)
    table = pd.DataFrame({
        "model": df["model"],
        "s": df["ratio"].map(lambda v: "-" if pd.isna(v) else int(v)),
        "d": df["dw_size"].map(lambda v: "-" if pd.isna(v) else int(v)),
        "width": df["width"].map(lambda v: "-" if pd.isna(v) else f"{v:g}"),
        **({"knobs": df["knobs"].map(lambda k: " ".join(f"{n}={v}" for n, v in k.items()) or "-")}
           if "knobs" in df and df["knobs"].map(bool).any() else {}),
        "input": df["input_size"],
        "params (M)": df["params"].map(lambda v: millions(v, 3)),
        "paper": df["paper_params"].map(lambda v: millions(v, 2)),
        "diff": df["params_diff"].map(pct),
        "FLOPs (M)": df["flops"].map(lambda v: millions(v, 1)),
        "paper ": df["paper_flops"].map(lambda v: millions(v, 0)),
        "diff ": df["flops_diff"].map(pct),
    })
    return table.to_string(index=False)


def cmd_knobs(args: argparse.Namespace) -> int:
    """Every model's declared knobs: type, default, valid values, meaning."""
    import pandas as pd

    from .models import MODELS, get_spec

    names = [get_spec(args.model).name] if args.model else sorted(MODELS)
    rows = [{"model": name, "knob": k.name, "type": k.type.__name__, "default": k.default,
             "valid": k.describe_valid(), "meaning": k.meaning}
            for name in names for k in get_spec(name).declared()]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{args.model} takes no knobs")
        return 0
    frame = pd.DataFrame(rows).astype(str)
    widths = {c: max(len(c), *frame[c].str.len()) for c in frame.columns}
    for line in [dict(zip(frame.columns, frame.columns)), *frame.to_dict("records")]:
        print("  ".join(str(line[c]).ljust(widths[c]) for c in frame.columns).rstrip())
    return 0


# ---- train -------------------------------------------------------------------------

def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """One --flag per Recipe field, so every profile field can be overridden."""
    from .config import RECIPE_FIELDS

    group = p.add_argument_group("recipe overrides (default: the profile's value)")
    for name, f in RECIPE_FIELDS.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"recipe_{name}", metavar=f.type.upper()
                           .replace(" | NONE", "").replace("TUPLE[INT, ...]", "E1,E2,..."))


def recipe_overrides(args: argparse.Namespace) -> dict:
    return {k[len("recipe_"):]: v for k, v in vars(args).items() if k.startswith("recipe_") and v is not None}


def cmd_train(args: argparse.Namespace) -> int:
    from .config import RunConfig
    from .training import Diverged, is_rank_zero, train_run

    config = RunConfig.create(args.model, args.ratio, args.dw_size, args.width, args.profile, args.seed,
                              knobs=model_knobs(args), **recipe_overrides(args))
    out = args.out or f"{args.results_dir}/runs/{config.run_id}"
    try:
        record = train_run(config, args.data_dir, out, devices=args.devices, accelerator=args.accelerator,
                           download=not args.no_download)
    except Diverged as err:
        print(f"ghost-ablate train: diverged: {err}; record kept in {out}", file=sys.stderr)
        return 1
    acc = record.get("final_test_acc")
    if not is_rank_zero():
        return 0 if record["status"] == "finished" else 1
    print(f"{config.run_id}: {record['status']}, {record['epochs_done']} epochs, "
          f"final test acc {acc if acc is None else f'{100 * acc:.2f}%'} -> {out}")
    return 0 if record["status"] == "finished" else 1


# ---- sweep -------------------------------------------------------------------------

YES_ENV = "GHOST_ABLATE_YES"


def cmd_sweep(args: argparse.Namespace) -> int:
    import logging
    import os
    from pathlib import Path

    from .data import prepare, split_sizes
    from .estimate import FULL_CIFAR, format_hours, plan_hours
    from .sweep import (dry_run_table, estimate_runs, load_experiment, parse_seeds, parse_shard, plan_runs,
                        run_sweep, table_hours)
    from .training import is_rank_zero, resolve_device

    experiment = load_experiment(args.experiment)
    seeds, shard = parse_seeds(args.seeds), parse_shard(args.shard)
    runs = plan_runs(experiment, seeds, args.profile, recipe_overrides(args), shard)
    results = Path(args.results_dir)
    device = resolve_device(args.accelerator)
    if not args.dry_run:  # a missing data set is a one-line error before any calibration
        prepare(args.data_dir, download=not args.no_download)
    sizes = split_sizes(args.data_dir)
    estimate = not args.no_estimate and is_rank_zero()
    estimates = estimate_runs(runs, results / "runs", device, sizes or FULL_CIFAR) if estimate else None
    if args.dry_run:
        import pandas as pd

        table = dry_run_table(runs, results / "runs", estimates)
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        counts = table["status"].value_counts().to_dict() if len(table) else {}
        print(f"{len(runs)} runs (shard {args.shard}): " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        if estimates is not None:
            everything = plan_runs(experiment, seeds, args.profile, recipe_overrides(args))
            all_estimates = estimate_runs(everything, results / "runs", device, sizes or FULL_CIFAR)
            data = (f"{sizes[0]:,} / {sizes[1]:,} images in {args.data_dir}" if sizes else
                    f"{args.data_dir} not found: full CIFAR-10 sizes assumed")
            print(f"time left on {device} ({data}): this shard {format_hours(plan_hours(estimates))}; whole plan "
                  f"{format_hours(plan_hours(all_estimates))}, {format_hours(plan_hours(all_estimates, shard[1]))} "
                  f"per shard with {shard[1]} shard(s)")
            for name, hours in table_hours(experiment, everything, all_estimates).items():
                print(f"  {name}: {format_hours(hours)}")
        return 0
    if estimates is not None and device == "cpu" and not (args.yes or os.environ.get(YES_ENV)):
        left = plan_hours(estimates)
        if left > args.max_hours:
            raise UserError(f"this plan needs about {left:.0f} hours on this CPU ({len(runs)} runs, shard "
                            f"{args.shard}), over the {args.max_hours:g} h guard; choose a shorter --profile "
                            f"(e.g. quick or subset), a GPU, --shard I/N over several machines, or --yes "
                            f"({YES_ENV}=1) to go on")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    outcome = run_sweep(runs, args.data_dir, results, devices=args.devices, accelerator=args.accelerator,
                        download=not args.no_download, retry_failed=args.retry_failed, estimates=estimates)
    if not is_rank_zero():  # a DDP helper process re-launched by Lightning
        return 0
    print(f"sweep {args.experiment} shard {args.shard}: {len(outcome.done)} done, {len(outcome.skipped)} skipped "
          f"(already done), {len(outcome.failed)} failed, {len(outcome.busy)} held by another process; "
          f"summary in {results / 'summary.csv'}")
    for run_id in outcome.failed:
        print(f"  failed: {run_id} (see {results / 'runs' / run_id / 'result.json'})")
    return 1 if outcome.failed else 0


# ---- report ------------------------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    from pathlib import Path

    from .sweep import load_experiment

    for path in args.experiment or []:
        load_experiment(path)  # a bad file is one line before anything is written
    written = build_report(args.results_dir, args.out, args.profile,
                           [Path(p) for p in args.experiment] if args.experiment else None)
    print(f"wrote {len(written)} files to {args.out}/: " + ", ".join(p.name for p in written))
    return 0


# ---- featuremaps and redundancy -------------------------------------------------------

def _networks(args: argparse.Namespace) -> list:
    from .features import load_trained

    if args.weights:
        return [load_trained(weights=args.weights, model=args.model, ratio=args.ratio, dw_size=args.dw_size,
                             width=args.width, knobs=model_knobs(args))]
    if not args.sources:
        raise UserError("name run folders or checkpoints, or give --weights FILE --model NAME")
    if args.model:
        raise UserError("--model goes with --weights; a run folder or checkpoint names its own model")
    return [load_trained(source) for source in args.sources]


def cmd_featuremaps(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .features import resolve_layer, test_images
    from .report.evidence import plot_feature_maps
    from .report.plots import headless

    networks = _networks(args)
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
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_redundancy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .features import test_images
    from .records import write_atomic
    from .report.evidence import redundancy_outputs
    from .report.plots import headless

    networks = _networks(args)
    images = test_images(args.data_dir, args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    headless()
    paths, md = redundancy_outputs(networks, images, out, threshold=args.threshold)
    sources = "; ".join(f"{n.label} ({Path(n.source).parent.name or n.source})" for n in networks)
    write_atomic(out / "redundancy.md", f"# Feature-map redundancy\n\nNetworks: {sources}. Images: the first "
                                        f"{len(images)} test images of `{Path(args.data_dir).name}`.\n\n{md}")
    print(f"wrote {', '.join(str(p) for p in [*paths, out / 'redundancy.md'])}")
    return 0


# ---- doctor ------------------------------------------------------------------------

def cmd_doctor(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .doctor import examine, fix

    results = Path(args.results_dir)
    if not (results / "runs").is_dir():
        raise UserError(f"{results}: no runs/ folder here; name a results folder (the sweep's --results-dir)")
    findings = examine(results)
    for f in findings:
        print(f"{f.kind:9s} {f.path}: {f.reason}")
    moved = fix(findings) if args.fix else []
    for f, new in moved:
        print(f"moved     {f.path} -> {new.name}")
    left = [f for f in findings if f.movable] if not args.fix else []
    print(f"{len(findings)} finding(s) in {results}" + (f", {len(moved)} file(s) moved aside" if args.fix else "")
          + ("; run with --fix to move the damaged and orphaned files aside" if left else ""))
    return 1 if left else 0


# ---- bench and export ----------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .bench import bench_models, bench_variants, pipeline_comparison, settings_from, variant_keys
    from .costs import paper_configs
    from .models import MODELS

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible here; use --device cpu")
    for name in args.models or []:
        if name not in MODELS:
            raise UserError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    if args.pipeline:
        models = args.models or ["resnet56", "vgg16"]
        frame = pipeline_comparison(models, args.device, args.train_images, args.train_batch_size or 128,
                                    args.epochs, args.workers)
        out = Path(args.out or "results/bench_pipeline.csv")
        from .records import write_atomic

        write_atomic(out, frame.to_csv(index=False))
        print(f"wrote {out}")
        return 0
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
    if args.cifar_only:
        keys = [k for k in keys if MODELS[k[0]].input_size == 32]
    out = Path(args.out or "results/bench.csv")
    bench_models(keys, settings, out)
    print(f"wrote {out} ({len(keys)} models on {args.device}, {settings.threads} threads)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .deploy import check_onnx, export_onnx, fold_bn
    from .models import MODELS, build_model, fuse_rep

    model = build_model(args.model, args.ratio, args.dw_size, args.width, **model_knobs(args)).eval()
    if args.fold_bn:
        model = fold_bn(fuse_rep(model))
    size = MODELS[args.model].input_size
    out = Path(args.out or f"{args.model}.onnx")
    export_onnx(model, out, size, args.opset)
    try:
        diff = check_onnx(model, out, size)
    except ImportError:
        print(f"wrote {out}; onnxruntime not installed, output not checked (pip install 'ghost-ablate[onnx]')")
        return 0
    ok = diff < 1e-3
    print(f"wrote {out}; onnxruntime vs PyTorch max |diff| = {diff:.2e} ({'ok' if ok else 'MISMATCH'})")
    return 0 if ok else 1


# ---- entry point -------------------------------------------------------------------

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"count": cmd_count, "knobs": cmd_knobs,
                                                            "train": cmd_train,
                                                            "sweep": cmd_sweep, "report": cmd_report,
                                                            "bench": cmd_bench, "export": cmd_export,
                                                            "doctor": cmd_doctor, "featuremaps": cmd_featuremaps,
                                                            "redundancy": cmd_redundancy}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="ghost-ablate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("count", help="params and FLOPs (paper convention) beside the paper's")
    add_model_args(p, required=False)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--breakdown", action="store_true", help="per-module table (needs --model)")
    p.add_argument("--depth", type=int, default=3, help="breakdown depth")

    p = sub.add_parser("knobs", help="the knobs each model declares: type, default, valid values, meaning")
    p.add_argument("--model", help="one registry name (default: every model)")
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = sub.add_parser("train", help="train one model on CIFAR-10 into a folder (resumable)")
    add_model_args(p, required=True)
    p.add_argument("--profile", default="standard", help="experiments/profiles/NAME.yaml or a YAML path")
    p.add_argument("--data-dir", default="data/cifar10", help="holds cifar-10-batches-py (or the archive)")
    p.add_argument("--out", help="run folder (default: RESULTS_DIR/runs/<run id>)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int, default=1, help="GPUs for one run (DDP when > 1)")
    p.add_argument("--accelerator", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-download", action="store_true", help="never try to download CIFAR-10")
    add_recipe_args(p)

    p = sub.add_parser("sweep", help="run an experiment grid: resumable, shardable, several seeds")
    p.add_argument("experiment", help="experiment YAML, e.g. experiments/cifar10_ablation.yaml")
    p.add_argument("--profile", help="override the experiment's profile")
    p.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    p.add_argument("--data-dir", default="data/cifar10")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--shard", default="0/1", help="I/N: this process runs every N-th run from I")
    p.add_argument("--dry-run", action="store_true", help="list the runs with costs and status; train nothing")
    p.add_argument("--retry-failed", action="store_true", help="run diverged runs again")
    p.add_argument("--no-estimate", action="store_true",
                   help="skip the time estimate (calibration), the ETA lines and the CPU guard")
    p.add_argument("--max-hours", type=float, default=24.0,
                   help="on a CPU, refuse a plan estimated to take longer (default 24)")
    p.add_argument("--yes", action="store_true", help=f"go on past the --max-hours guard (or set {YES_ENV}=1)")
    p.add_argument("--devices", type=int, default=1, help="GPUs per run (DDP when > 1)")
    p.add_argument("--accelerator", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-download", action="store_true")
    add_recipe_args(p)

    p = sub.add_parser("report", help="paper tables (CSV, markdown) and plots from the run records")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--out", default="reports")
    p.add_argument("--profile", help="which profile's runs (needed when results hold several)")
    p.add_argument("--experiment", action="append", metavar="FILE",
                   help="give this experiment file a table and plot of its own (repeatable; default: each "
                        "file of experiments/ once a run outside the paper's tables has finished)")

    p = sub.add_parser("bench", help="measured latency, throughput, training speed and memory per model")
    p.add_argument("--models", nargs="+", help="registry names (default: every paper row)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out", help="CSV (default results/bench.csv, bench_variants.csv or bench_pipeline.csv)")
    p.add_argument("--cifar-only", action="store_true", help="skip the 224x224 ImageNet models")
    p.add_argument("--repeats", type=int, default=20, help="timed batch-1 forwards (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128, help="eval throughput batch")
    p.add_argument("--throughput-batches", type=int, default=3)
    p.add_argument("--train-batch-size", type=int, help="training batch (default 64; 128 with --pipeline)")
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="as a recipe's precision; fp32 is measured beside it where it differs")
    p.add_argument("--variants", action="store_true",
                   help="every cheap op of the Ghost models (default ghost_vgg16 ghost_resnet56) and their "
                        "baselines, as built and in deploy form (results/bench_variants.csv)")
    p.add_argument("--pipeline", action="store_true",
                   help="compare the training path with a plain DataLoader loop instead")
    p.add_argument("--train-images", type=int, default=5120, help="--pipeline: synthetic training images")
    p.add_argument("--epochs", type=int, default=4,
                   help="--pipeline: epochs (the median of all but the first is reported)")
    p.add_argument("--workers", type=int, default=2, help="--pipeline: DataLoader workers of the plain loop")

    for name, about in (("featuremaps", "draw a trained network's feature maps, intrinsic and ghost apart"),
                        ("redundancy", "how many feature maps another map reconstructs, layer by layer")):
        p = sub.add_parser(name, help=about)
        p.add_argument("sources", nargs="*", help="run folders (with last.ckpt) or Lightning checkpoints")
        p.add_argument("--weights", help="a plain state_dict file (keys as our models name them); needs --model")
        add_model_args(p, required=False)
        p.add_argument("--data-dir", default="data/cifar10", help="CIFAR-10 folder the test images come from")
        p.add_argument("--out", default="reports", help="folder for the figures and tables")
    sub.choices["featuremaps"].add_argument("--layer", default="2",
                                            help="conv unit by position (default 2: the second) or module name")
    sub.choices["featuremaps"].add_argument("--image", type=int, default=0, help="index of the test image")
    sub.choices["redundancy"].add_argument("--images", type=int, default=32, help="test images to measure on")
    sub.choices["redundancy"].add_argument("--threshold", type=float, default=0.1,
                                           help="normalised MSE under which a map counts as a ghost")

    p = sub.add_parser("doctor", help="list damaged, stale and orphaned runs; --fix moves broken files aside")
    p.add_argument("results_dir", nargs="?", default="results", help="a results folder (default: results)")
    p.add_argument("--fix", action="store_true", help="move damaged and orphaned files aside (never deletes)")

    p = sub.add_parser("export", help="ONNX export of a registry model, checked with onnxruntime")
    add_model_args(p, required=True)
    p.add_argument("--out", help="file (default MODEL.onnx)")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convs first")
    p.add_argument("--opset", type=int, default=17)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UserError, ValueError) as err:
        print(f"ghost-ablate {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

"""`ghost-ablate` command line: the GhostNet ablations, from counting to the report (commands below).

User mistakes end in one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

from ..config import PRECISIONS
from ..errors import UserError
from .args import add_model_args, add_recipe_args, add_scale_args, add_seed_plan_args, add_set_arg, retired_flag
from .imagenet import add_imagenet_parser, cmd_imagenet
from .models import cmd_count, cmd_export, cmd_knobs
from .outputs import (
    cmd_bench,
    cmd_demo_data,
    cmd_features,
    cmd_gpu_check,
    cmd_report,
)
from .runs import cmd_doctor, cmd_stack_probe, cmd_sweep, cmd_train

EXIT_USAGE = 2


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that ends each option with its default, where it has one worth saying (not None, not
    an off switch) and the text does not already say it; an epilog keeps its lines (the recipe keys)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is a single line (no usage dump) and exit 2, and every option's help
    shows its default."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's own signature
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {retired_flag(message) or message}\n")


# ---- entry point -------------------------------------------------------------------

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "count": cmd_count, "knobs": cmd_knobs, "train": cmd_train, "sweep": cmd_sweep, "report": cmd_report,
    "bench": cmd_bench, "export": cmd_export, "doctor": cmd_doctor, "features": cmd_features,
    "imagenet": cmd_imagenet, "gpu-check": cmd_gpu_check,
    "demo-data": cmd_demo_data, "stack-probe": cmd_stack_probe,
}


def build_parser() -> OneLineParser:
    from .. import __version__  # lazy: the command line answers --help without torch
    from ..config import available_profiles  # lazy: the command line answers --help without torch

    parser = OneLineParser(prog="ghost-ablate", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ghost-ablate {__version__}")
    profiles = ", ".join(available_profiles())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("count", help="params and FLOPs (paper convention) beside the paper's")
    add_model_args(p, required=False)
    p.add_argument("--all", action="store_true", help="also every registered model outside the paper's rows "
                                                      "(at its declared defaults)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--breakdown", action="store_true", help="per-module table (needs --model)")
    p.add_argument("--depth", type=int, default=3, help="breakdown depth")

    p = sub.add_parser("knobs", help="the knobs each model declares: type, default, valid values, meaning")
    p.add_argument("--model", help="one registry name (default: every model)")
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = sub.add_parser("train", help="train one model on CIFAR-10 or ImageNet into a folder (resumable)")
    add_model_args(p, required=True, recipe=True)
    p.add_argument("--profile", default="standard", help=f"a recipe: one of {profiles}, or a YAML path")
    p.add_argument("--dataset", help="a data set of data.DATASETS (cifar10, imagenet; default: data.DEFAULT, "
                                     "CIFAR-10)")
    p.add_argument("--data-dir", help="the data set's folder (default: its declared one, data/<name>): for CIFAR-10, "
                                      "cifar-10-batches-py (or the archive); for ImageNet, train/ and val/")
    p.add_argument("--out", help="run folder (default: RESULTS_DIR/runs/<run id>)")
    p.add_argument("--results-dir", default="results", help="where runs/<run id>/ go")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of the batch order")
    add_scale_args(p, "the run")
    p.add_argument("--no-download", action="store_true", help="never try to download CIFAR-10")
    add_recipe_args(p)

    p = sub.add_parser("sweep", help="run an experiment grid: resumable, shardable, several seeds")
    # `sweep --slurm` rebuilds the tasks' command line from its options and runs it through `main`
    p.set_defaults(parser=p, entry=main)
    p.add_argument("experiment", help="experiment YAML, e.g. experiments/cifar10_ablation.yaml")
    p.add_argument("--profile", help=f"override the experiment's profile: one of {profiles}, or a YAML path "
                                     f"(default: the experiment file's)")
    p.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2; or auto: as many as --detect needs, "
                                                "from the pilot's variance (--pilot)")
    add_seed_plan_args(p)
    p.add_argument("--data-dir", help="the experiment's data set (default: its declared folder, data/<name>)")
    p.add_argument("--results-dir", default="results", help="where runs/<run id>/ and summary.csv go")
    p.add_argument("--shard", default="0/1", help="I/N: this process runs every N-th run from I")
    p.add_argument("--dry-run", action="store_true", help="list the runs with costs and status; train nothing")
    p.add_argument("--retry-failed", action="store_true", help="run diverged runs again")
    p.add_argument("--no-estimate", action="store_true",
                   help="skip the time estimate (calibration), the ETA lines and the CPU guard")
    p.add_argument("--recalibrate", action="store_true",
                   help="measure every configuration's step time again instead of using the cached calibration")
    p.add_argument("--max-hours", type=float,
                   help="on a CPU, refuse a plan estimated to take longer (default 24); with --seeds auto --dry-run, "
                        "also cap the seed plan at this many hours")
    p.add_argument("--yes", action="store_true", help="go on past the --max-hours guard (or set GHOST_ABLATE_YES=1)")
    p.add_argument("--priced-from", nargs="+", metavar="DIR", default=[],
                   help="--seeds auto --dry-run: results folders whose finished runs on this device price a seed "
                        "(median wall time per epoch; default: the pilot's); the rest are calibrated")
    add_scale_args(p, "each run")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--step-time", type=float, metavar="SECONDS",
                   help="--dry-run: price the plan with this training step time (one global batch, on the "
                        "hardware you will use) instead of calibrating on this machine")
    p.add_argument("--slurm", nargs="*", metavar="KEY=VALUE",
                   help="submit the plan to SLURM as a job array with submitit, one shard per task, and return; "
                        "KEY=VALUE are submitit's parameters (slurm_partition=gpu timeout_min=2880 "
                        "slurm_account=...; cluster=local runs the tasks on this machine)")
    p.add_argument("--shards", type=int, default=1, help="--slurm: array tasks (shards of the plan)")
    add_set_arg(p)
    add_recipe_args(p)

    p = sub.add_parser("report", help="paper tables (CSV, markdown) and plots from the run records")
    p.add_argument("--epochs", type=int, help="the schedule length to report, where the results hold several")
    p.add_argument("--readme", help="also fill a generated block of this README with the report's headline table "
                                    "(make report does for the committed demo, make evidence-report for the evidence)")
    p.add_argument("--readme-block", default="headline", metavar="NAME",
                   help="which block: the one between <!-- NAME: generated by ... --> and <!-- /NAME --> "
                        "(default: headline)")
    p.add_argument("--results-dir", default="results", help="the folder the runs are in")
    p.add_argument("--out", default="reports", help="the report folder (written whole, README.md last)")
    p.add_argument("--profile", help="which profile's runs (needed when results hold several)")
    p.add_argument("--data-dir", help="the data the runs were trained on: selects their runs (by fingerprint) "
                                      "and gives the evidence section its test images (default: none)")
    p.add_argument("--data", metavar="FINGERPRINT",
                   help="which data set's runs, by fingerprint (needed when results hold several)")
    p.add_argument("--tables", nargs="+", metavar="TABLE",
                   help="only these paper tables (e.g. table2_ratio; default: every table of the runs' data set)")
    p.add_argument("--no-evidence", action="store_true",
                   help="do not compute the feature-map and redundancy section (the previous one is kept)")
    p.add_argument("--stack", metavar="TEXT",
                   help="only runs whose machine and torch (\"DEVICE / torch VERSION\" in their records) contain "
                        "TEXT, e.g. 'family 26 model 2' or 'torch 2.14.1': one comparison group")
    p.add_argument("--section", choices=("paper", "pilot", "precision"), default="paper",
                   help="paper: the tables, plots and README of the runs (default); pilot: the learning curves "
                        "across schedule lengths and the seed spread (pilot.md); precision: fp32 against bf16, "
                        "paired by seed (precision.md)")
    p.add_argument("--experiment", action="append", metavar="FILE",
                   help="give this experiment file a table and plot of its own (repeatable; default: each "
                        "file of experiments/ once a run outside the paper's tables has finished)")

    p = sub.add_parser("stack-probe", help="retrain a recorded run on this machine; where the outcome matches bit "
                                           "for bit, the two machines pair runs as one comparison group")
    p.add_argument("run", help="a finished run's folder, e.g. results/precision/runs/<run id>")
    p.add_argument("--data-dir", required=True, help="the data the run trained on (its fingerprint is checked)")
    p.add_argument("--groups", help="the groups file (default: results/stack_groups.json)")

    p = sub.add_parser("demo-data", help="the demo's 5,085-image CIFAR-10 subset, cut from the official data set "
                                         "and checked against the committed records' checksums")
    p.add_argument("--from", dest="source", default="data/cifar10",
                   help="the official CIFAR-10 (cifar-10-batches-py/ inside; downloaded there if absent)")
    p.add_argument("--out", default="data/cifar10-subset", help="where the subset goes (a new folder)")
    p.add_argument("--no-download", action="store_true")

    p = sub.add_parser("gpu-check", help="the GPU path checked in one command (training, DDP, input, memory); "
                                         "on a machine without CUDA, the parts that need none")
    p.add_argument("--out", help="the report (default: reports/gpu-check.md where CUDA is present; without CUDA "
                                 "the parts are printed and no file is written)")

    p = sub.add_parser("bench", help="measured latency, throughput, training speed and memory per model")
    p.add_argument("--models", nargs="+", help="registry names (default: every paper row)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out", help="CSV (default results/bench.csv, bench_variants.csv, bench_pipeline.csv "
                                        "or peak.csv)")
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
    p.add_argument("--peak", action="store_true",
                   help="the CPU's (or GPU's) peak: GFLOP/s of a large matrix product in fp32 and bf16 "
                        "(results/peak.csv; the pilot's recipe-options table reads it)")
    p.add_argument("--train-images", type=int, default=5120, help="--pipeline: synthetic training images")
    p.add_argument("--epochs", type=int, default=4,
                   help="--pipeline: epochs (the median of all but the first is reported)")
    p.add_argument("--workers", type=int, default=2, help="--pipeline: DataLoader workers of the plain loop")

    p = sub.add_parser("features", help="a trained network's feature maps drawn (intrinsic and ghost apart), and how "
                                        "many maps another map reconstructs, layer by layer")
    p.add_argument("sources", nargs="*", help="run folders (with last.ckpt) or Lightning checkpoints")
    p.add_argument("--weights", help="a plain state_dict file (keys as our models name them); needs --model")
    add_model_args(p, required=False)
    p.add_argument("--data-dir", help="the folder the test images come from (default: CIFAR-10's declared one)")
    p.add_argument("--out", default="reports", help="folder for the figures and tables")
    p.add_argument("--only", choices=("maps", "redundancy"), help="only the drawn maps, or only the redundancy "
                                                                 "table (default: both)")
    p.add_argument("--layer", default="2", help="maps: conv unit by position (default 2: the second) or module name")
    p.add_argument("--image", type=int, default=0, help="maps: index of the test image")
    p.add_argument("--images", type=int, default=32, help="redundancy: test images to measure on")
    p.add_argument("--threshold", type=float, default=0.1,
                   help="redundancy: normalised MSE under which a map counts as a ghost")

    p = sub.add_parser("doctor", help="list damaged, stale and orphaned runs; --fix moves broken files aside")
    p.add_argument("results", nargs="?", help="a results folder, as --results-dir")
    p.add_argument("--results-dir", default="results", help="a results folder")
    p.add_argument("--fix", action="store_true",
                   help="move damaged, unsafe and orphaned files aside, each under its run's lock (never deletes)")
    p.add_argument("--assign-data", metavar="DATA_DIR",
                   help="migrate records from before runs named their data: stamp DATA_DIR's fingerprint on "
                        "those whose image counts match it, and rename their folders to the new run ids")
    p.add_argument("--retrain", nargs="+", metavar="RUN_ID",
                   help="set these finished runs aside (record and checkpoints renamed beside themselves, never "
                        "deleted) so the next sweep trains them again, e.g. a pair's run made on another machine")

    p = sub.add_parser("export", help="ONNX export of a registry model, checked with onnxruntime")
    add_model_args(p, required=True)
    p.add_argument("--out", help="file (default MODEL.onnx)")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convs first")
    p.add_argument("--opset", type=int, default=17)
    add_imagenet_parser(sub)
    return parser


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
AFTER_INTERRUPT = {
    "train": "its finished epochs are in its last checkpoint; run the same command to resume",
    "sweep": "finished runs are recorded and the interrupted one keeps its last checkpoint; run the same "
             "command to resume",
    "report": "the report folder holds the previous report, untouched",
}


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: the same clean-up (a report's staging folder removed) and the same one line."""
    raise KeyboardInterrupt


def one_line(err: BaseException) -> str:
    """The error's own message: a loader worker's error comes back to the main process wrapped
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."), its message last."""
    text = str(err)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        kind, sep, message = last.partition(": ")
        return message if sep and kind.rsplit(".", 1)[-1] == type(err).__name__ else last
    return text


# Commands that became another command's options, kept for one release (0.2; docs/migration.md):
# the old name, and what it is now.
ALIASES = {"plan-seeds": ("sweep", "--seeds", "auto", "--dry-run"),
           "pilot-table": ("report", "--section", "pilot", "--results-dir", "results/pilot"),
           "precision-table": ("report", "--section", "precision", "--results-dir", "results/precision"),
           "featuremaps": ("features", "--only", "maps"),
           "redundancy": ("features", "--only", "redundancy")}


def expand_alias(argv: list[str]) -> list[str]:
    """An old command's arguments as the command that replaced it takes them (the old name said on
    stderr); any other command line as it is."""
    for i, word in enumerate(argv):
        if not word.startswith("-"):  # the first word that is no option is the command
            if word in ALIASES:
                print(f"ghost-ablate: `{word}` is now `{' '.join(ALIASES[word])}`; the old name goes in 0.3",
                      file=sys.stderr)
                return [*argv[:i], *ALIASES[word], *argv[i + 1:]]
            return argv
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(expand_alias(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as done:  # --help, --version, or a bad option (its one line already printed)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    before = signal.getsignal(signal.SIGTERM)
    if args.command not in ("train", "sweep"):  # training: Lightning's own signal handling (SLURM requeue)
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return COMMANDS[args.command](args)
    except (UserError, ValueError) as err:
        print(f"ghost-ablate {args.command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ghost-ablate {args.command}: interrupted; "
              f"{AFTER_INTERRUPT.get(args.command, 'nothing was left half-written')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())

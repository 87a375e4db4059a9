"""Arguments several commands share: the model and its knobs, recipe overrides, scale, and the
sweep's request (every sweep flag read once, into `plan.SweepRequest`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..plan import SweepRequest


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


SET_RECIPE = "a recipe field, --set recipe.KEY=VALUE (the keys are listed below)"
SET_KNOB = "a knob the model declares, --set KNOB=VALUE (e.g. cheap_op=rep; `ghost-ablate knobs` lists them)"
# The recipe fields with a flag of their own (the ones short profiles and quick checks change most);
# every other field is `--set recipe.KEY=VALUE`. Flags of the other fields before 0.2 are refused
# with the spelling that replaced them (`retired_flag`).
RECIPE_ALIASES = ("epochs", "batch_size", "eval_batch_size", "precision", "limit_train_batches", "limit_test_batches")
RECIPE_PREFIX = "recipe."


def add_model_args(p: argparse.ArgumentParser, required: bool, recipe: bool = False) -> None:
    """--model and its knobs; `recipe`: --set takes recipe fields too (`add_recipe_args`)."""
    p.add_argument("--model", required=required, help="registry name (see `ghost-ablate count`)")
    p.add_argument("--ratio", type=_ratio, help="Ghost ratio s (integer >= 1)")
    p.add_argument("--dw-size", type=_dw_size, help="cheap-op kernel d (odd integer)")
    p.add_argument("--width", type=_width, help="width multiplier (GhostNet family)")
    add_set_arg(p, f"{SET_RECIPE}, or {SET_KNOB}" if recipe else SET_KNOB)


def add_set_arg(p: argparse.ArgumentParser, about: str = SET_RECIPE) -> None:
    p.add_argument("--set", dest="knobs", action="append", default=[], metavar="KEY=VALUE",
                   help=f"{about}; repeatable")


def _assignments(args: argparse.Namespace, recipe: bool) -> dict[str, str]:
    from ..models import parse_assignments  # lazy: the command line answers --help without torch

    items = [item for item in getattr(args, "knobs", None) or [] if item.startswith(RECIPE_PREFIX) == recipe]
    return parse_assignments(item[len(RECIPE_PREFIX):] if recipe else item for item in items)


def model_knobs(args: argparse.Namespace) -> dict[str, str]:
    """The --set KNOB=VALUE assignments (checked against the model's declarations when it is built)."""
    from ..models import LEGACY  # lazy: the command line answers --help without torch

    knobs = _assignments(args, recipe=False)
    for name in LEGACY:
        if name in knobs:
            raise UserError(f"--set {name}=...: use --{name.replace('_', '-')} for {name}")
    return knobs


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """The recipe: its most used fields as flags of their own, every field as --set recipe.KEY=VALUE,
    and the keys listed once, from the declaration (`config.Recipe`), at the end of --help."""
    from ..config import CHOICES, RECIPE_TYPES, recipe_help  # lazy: the command line answers --help without torch

    group = p.add_argument_group("recipe (default: the profile's value; any field: --set recipe.KEY=VALUE)")
    for name in RECIPE_ALIASES:
        flag, kind = f"--{name.replace('_', '-')}", RECIPE_TYPES[name].replace(" | None", "").upper()
        extra = {"choices": CHOICES[name]} if name in CHOICES else {"metavar": kind}
        group.add_argument(flag, dest=f"recipe_{name}", default=argparse.SUPPRESS,
                           help=f"= --set recipe.{name}=VALUE", **extra)
    width = max(len(name) for name, *_ in recipe_help())
    p.epilog = (f"recipe keys (--set recipe.KEY=VALUE; 'none' unsets an optional one):\n  {'key':{width}}  {'type':16} "
                f"{'default':8} meaning\n") + "\n".join(
        f"  {name:{width}}  {kind:16} {str(default):8} {about}" for name, kind, default, about in recipe_help()) + "\n"


def recipe_overrides(args: argparse.Namespace) -> dict:
    """The recipe fields this command line sets: the alias flags and every --set recipe.KEY=VALUE
    (an unknown key is refused with the valid ones when the recipe is made)."""
    given = {k[len("recipe_"):]: v for k, v in vars(args).items() if k.startswith("recipe_") and v is not None}
    for name, value in _assignments(args, recipe=True).items():
        if name in given and given[name] != value:
            raise UserError(f"recipe.{name} given twice ({given[name]!r} and {value!r})")
        given[name] = value
    return given


def retired_flag(message: str) -> str | None:
    """For argparse's "unrecognized arguments: --lr-reference-batch 512", the one line that names the
    spelling replacing a recipe flag of before 0.2; None for any other message."""
    from ..config import RECIPE_FIELDS  # lazy: the command line answers --help without torch

    if "unrecognized arguments" not in message:
        return None
    for word in message.split(":", 1)[1].split():
        name = word.lstrip("-").split("=", 1)[0].replace("-", "_")
        if word.startswith("--") and name in RECIPE_FIELDS and name not in RECIPE_ALIASES:
            return f"{word.split('=', 1)[0]} is now --set recipe.{name}=VALUE (the recipe keys are listed at the end " \
                   f"of --help)"
    return None


def add_scale_args(p: argparse.ArgumentParser, what: str) -> None:
    """Where a run trains: devices and nodes (Lightning DDP), accelerator, and the tracker it logs to."""
    from ..config import LOGGERS  # lazy: the command line answers --help without torch

    p.add_argument("--devices", type=int, default=1, help=f"GPUs (or CPU processes) per node for {what} (DDP when "
                                                          f"devices x nodes > 1)")
    p.add_argument("--nodes", type=int, default=1, help="nodes for each run (DDP across nodes: under srun, or "
                                                        "with torchrun's MASTER_ADDR/NODE_RANK set)")
    p.add_argument("--accumulate", type=int, default=1, help="gradient-accumulation steps: the recipe's global "
                                                              "batch = per-device batch x devices x nodes x this")
    p.add_argument("--accelerator", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--logger", choices=LOGGERS, default="csv",
                   help="where metrics go besides the CSV logs the records come from (mlflow and wandb: "
                        "pip install 'ghost-ablate[tracking]')")


def check_scale(args: argparse.Namespace) -> None:
    if args.devices < 1 or args.nodes < 1 or args.accumulate < 1:
        raise UserError(f"--devices, --nodes and --accumulate must be >= 1, got {args.devices}, {args.nodes} and "
                        f"{args.accumulate}")


def add_seed_plan_args(p: argparse.ArgumentParser) -> None:
    """How `--seeds auto` (and `plan-seeds`) choose n from a pilot's variance (`seeds.plan_seeds`)."""
    p.add_argument("--pilot", help="results folder of the pilot whose paired spread sets n (e.g. results/pilot)")
    p.add_argument("--detect", type=float, default=2.0, help="gap in top-1 points each comparison should detect "
                                                             "with 80%% power (default 2)")
    p.add_argument("--max-seeds", type=int, default=20, help="never plan more seeds than this (default 20)")


def parse_shard(spec: str) -> tuple[int, int]:
    """'I/N' with 0 <= I < N."""
    try:
        index, count = (int(p) for p in spec.split("/"))
    except ValueError:
        raise UserError(f"bad shard {spec!r}: expected I/N with integers 0 <= I < N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"bad shard {spec!r}: expected I/N with integers 0 <= I < N, e.g. 0/4")
    return index, count


def parse_seeds(spec: str) -> list[int]:
    """'0,1,2' as distinct seeds in the order given."""
    from ..record_schema import MAX_SEED  # lazy: the command line answers --help without pydantic

    try:
        seeds = [int(s) for s in str(spec).split(",") if s.strip() != ""]
    except ValueError:
        raise UserError(f"bad seeds {spec!r}: expected comma-separated integers >= 0, e.g. 0,1,2") from None
    if not seeds or any(s < 0 or s > MAX_SEED for s in seeds):
        raise UserError(f"bad seeds {spec[:80]!r}: expected comma-separated integers 0..{MAX_SEED}, e.g. 0,1,2")
    return list(dict.fromkeys(seeds))


def sweep_request(args: argparse.Namespace) -> SweepRequest:
    """The sweep's flags, each read and checked once; a bad one is a one-line error before any
    file is read or process started."""
    from ..plan import Scale, SeedRequest, SweepRequest  # lazy: the command line answers --help without torch

    check_scale(args)
    if knobs := model_knobs(args):
        raise UserError(f"sweep --set {next(iter(knobs))}=...: a model's knobs are declared per run in the experiment "
                        f"file; the sweep's --set takes recipe.KEY=VALUE")
    if Path(args.results_dir).exists() and not Path(args.results_dir).is_dir():
        raise UserError(f"--results-dir {args.results_dir}: not a folder (runs go into its runs/ folder)")
    if args.step_time is not None and (args.step_time <= 0 or not args.dry_run):
        raise UserError(f"--step-time prices a --dry-run and must be > 0 seconds, got {args.step_time}")
    if args.slurm is not None and (args.shard != "0/1" or args.dry_run):
        raise UserError("--slurm submits every shard itself (see --shards) and trains; drop --shard and --dry-run")
    seeds = (SeedRequest(args.pilot, args.detect, args.max_seeds, args.max_hours, tuple(args.priced_from))
             if args.seeds == "auto" else parse_seeds(args.seeds))
    return SweepRequest(Path(args.experiment), args.profile, recipe_overrides(args), seeds, parse_shard(args.shard),
                        Path(args.results_dir), args.data_dir, args.accelerator,
                        Scale(args.devices, args.nodes, args.accumulate), dry_run=args.dry_run,
                        download=not args.no_download, cluster=args.slurm is not None, estimate=not args.no_estimate,
                        recalibrate=args.recalibrate, step_time=args.step_time, max_hours=args.max_hours,
                        yes=args.yes)

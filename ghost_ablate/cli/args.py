"""Arguments several commands share: the model and its knobs, and recipe overrides."""
from __future__ import annotations

import argparse

from ..errors import UserError


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
    from ..models import LEGACY, parse_assignments  # lazy: the command line answers --help without torch

    knobs = parse_assignments(args.knobs)
    for name in LEGACY:
        if name in knobs:
            raise UserError(f"--set {name}=...: use --{name.replace('_', '-')} for {name}")
    return knobs


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """One --flag per Recipe field, so every profile field can be overridden."""
    from ..config import PRECISIONS, RECIPE_FIELDS, SCHEDULES  # lazy: the command line answers --help without torch

    group = p.add_argument_group("recipe overrides (default: the profile's value)")
    choices = {"precision": PRECISIONS, "schedule": SCHEDULES}
    for name, f in RECIPE_FIELDS.items():
        flag = f"--{name.replace('_', '-')}"
        if name in choices:
            group.add_argument(flag, dest=f"recipe_{name}", choices=choices[name], default=argparse.SUPPRESS,
                               help=f"one of {', '.join(choices[name])}")
        else:
            group.add_argument(flag, dest=f"recipe_{name}", default=argparse.SUPPRESS, metavar=f.type.upper()
                               .replace(" | NONE", "").replace("TUPLE[INT, ...]", "E1,E2,..."))


def recipe_overrides(args: argparse.Namespace) -> dict:
    return {k[len("recipe_"):]: v for k, v in vars(args).items() if k.startswith("recipe_") and v is not None}


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

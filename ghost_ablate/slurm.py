"""A sweep as a SLURM job array, through submitit: task I of N runs shard I/N of the same
`ghost-ablate sweep` command. The sweep resumes and locks per run, and rank 0 of each task
decides for all its ranks (`distributed`), so a task that SLURM pre-empts or times out goes on
where it stopped, and a plan submitted twice never trains a run twice.

Pre-emption: SLURM sends SIGUSR2 `signal_delay_s` before it pre-empts a task or its time runs
out. `preemption` takes that signal over from submitit's handler: the run is saved at the end
of the step in progress, the task requeued (`scontrol requeue`) and resumed from that step.
Submitit's own count of timeouts (`max_num_timeout`) is not used, so a long run is requeued as
often as it needs; each requeue makes progress, since it resumes where it was saved.

submitit keeps each task's call and result as pickles in its job folder, written by your own
submit and read by your own tasks; the project itself never reads that folder.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit
import yaml

from .errors import UserError
from .preemption import EXIT_DIVERGED

REQUEUE_SIGNAL = "USR2"  # submitit's --signal; `preemption` handles it
CLUSTERS = ("slurm", "local", "debug")
CPUS_PER_GPU_TASK = 8  # loader workers + the training process, per GPU; --slurm cpus_per_task=N overrides


class ShardTask:
    """One array task: `ghost-ablate sweep ARGV --shard I/N`, run in-process through `entry` (the
    command line's `main`, which the submitting command hands over: submitit pickles it by name).
    A requeued task runs the same call, which resumes."""

    def __init__(self, argv: list[str], entry: Callable[[Sequence[str]], int]) -> None:
        self.argv, self.entry = list(argv), entry

    def __call__(self, shard: str) -> int:
        os.environ.setdefault("GHOST_ABLATE_REQUEUE_SIGNAL", f"SIG{REQUEUE_SIGNAL}")
        code = self.entry(["sweep", *self.argv, "--shard", shard, "--yes"])
        if code == EXIT_DIVERGED:  # nothing lost: the task ends with this status, which sacct shows as 4:0
            raise SystemExit(code)
        if code:
            raise RuntimeError(f"ghost-ablate sweep {' '.join(self.argv)} --shard {shard} exited with {code}")
        return code


def parse_params(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE words -> submitit parameters (values read as YAML scalars: 60 -> int)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--slurm {item!r}: expected KEY=VALUE, e.g. slurm_partition=gpu timeout_min=2880")
        params[key] = yaml.safe_load(value)
    return params


NOT_FORWARDED = ("slurm", "shards", "shard", "dry_run", "seeds", "parser", "entry", "command")  # the submit's own
PATHS = ("data_dir", "results_dir", "pilot")  # made absolute: a task may start elsewhere


def sweep_argv(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    """The sweep command each task runs: every option of this one, by the sweep parser's own
    declarations (so a new option is forwarded without a line here), less --slurm, --shards,
    --shard and --dry-run; the seeds as planned here (`--seeds auto` is resolved once)."""
    argv = [args.experiment, "--seeds", ",".join(map(str, seeds))]
    for action in args.parser._actions:
        if not action.option_strings or action.dest in NOT_FORWARDED or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value is None or value == action.default or value is argparse.SUPPRESS:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:  # store_true
            argv.append(flag)
            continue
        if action.dest in PATHS:
            value = Path(value).resolve()
        for item in value if isinstance(value, list) else [value]:  # an appended option: once per value
            argv += [flag, ",".join(map(str, item)) if isinstance(item, tuple) else str(item)]
    return argv


def submit(argv: list[str], entry: Callable[[Sequence[str]], int], shards: int, params: dict[str, Any],
           folder: Path, nodes: int = 1, devices: int = 1, gpus: bool = True) -> list[submitit.Job]:
    """Submit `shards` array tasks of the sweep `argv`, each run through `entry`; each task gets
    `nodes` nodes with `devices` tasks (one per GPU) on each, as Lightning's DDP under srun expects."""
    if shards < 1:
        raise UserError(f"--shards must be >= 1, got {shards}")
    cluster = params.pop("cluster", None)
    if cluster is not None and cluster not in CLUSTERS:
        raise UserError(f"--slurm cluster={cluster}: valid: {', '.join(CLUSTERS)}")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    defaults: dict[str, Any] = {"name": "ghost-ablate", "nodes": nodes, "tasks_per_node": devices,
                                "timeout_min": 60 * 24, "cpus_per_task": CPUS_PER_GPU_TASK if gpus else 1}
    if executor.cluster == "slurm":
        defaults["slurm_signal_delay_s"] = 90
        if gpus:
            defaults["gpus_per_node"] = devices
    try:
        executor.update_parameters(**{**defaults, **params})
    except (ValueError, TypeError) as err:
        raise UserError(f"--slurm: {err}") from None
    return executor.map_array(ShardTask(argv, entry), [f"{i}/{shards}" for i in range(shards)])

"""A sweep as a SLURM job array, through submitit: task I of N runs shard I/N of the same
`ghost-ablate sweep` command. The sweep resumes and locks per run, so a task that SLURM
pre-empts or times out is requeued (`Checkpointable`) and goes on where it stopped, and a
plan submitted twice never trains a run twice.

submitit keeps each task's call and result as pickles in its job folder, written by your own
submit and read by your own tasks; the project itself never reads that folder.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import submitit
import yaml

from .errors import UserError

# Lightning saves a mid-epoch checkpoint (our last.ckpt) and requeues on this signal; submitit
# asks SLURM to send it 90 s before a pre-emption or the time limit.
REQUEUE_SIGNAL = "USR2"
CLUSTERS = ("slurm", "local", "debug")


class ShardTask(submitit.helpers.Checkpointable):
    """One array task: `ghost-ablate sweep ARGV --shard I/N`. On pre-emption or timeout submitit
    requeues the same call, which resumes."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = list(argv)

    def __call__(self, shard: str) -> int:
        from .cli import main

        os.environ.setdefault("GHOST_ABLATE_REQUEUE_SIGNAL", f"SIG{REQUEUE_SIGNAL}")
        code = main(["sweep", *self.argv, "--shard", shard, "--yes"])
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


def sweep_argv(args: argparse.Namespace, overrides: dict[str, Any]) -> list[str]:
    """The sweep command a task runs: this one's arguments, without --slurm, --shards and --shard."""
    argv = [args.experiment, "--seeds", args.seeds, "--data-dir", str(Path(args.data_dir).resolve()),
            "--results-dir", str(Path(args.results_dir).resolve()), "--devices", str(args.devices),
            "--nodes", str(args.nodes), "--accelerator", args.accelerator, "--logger", args.logger]
    if args.profile:
        argv += ["--profile", args.profile]
    for flag in ("no_download", "retry_failed", "no_estimate"):
        if getattr(args, flag):
            argv.append(f"--{flag.replace('_', '-')}")
    for name, value in overrides.items():
        argv += [f"--{name.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return argv


def submit(argv: list[str], shards: int, params: dict[str, Any], folder: Path, nodes: int = 1, devices: int = 1,
           gpus: bool = True) -> list[submitit.Job]:
    """Submit `shards` array tasks of the sweep `argv`; each task gets `nodes` nodes with `devices`
    tasks (one per GPU) on each, as Lightning's DDP under srun expects."""
    if shards < 1:
        raise UserError(f"--shards must be >= 1, got {shards}")
    cluster = params.pop("cluster", None)
    if cluster is not None and cluster not in CLUSTERS:
        raise UserError(f"--slurm cluster={cluster}: valid: {', '.join(CLUSTERS)}")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    defaults: dict[str, Any] = {"name": "ghost-ablate", "nodes": nodes, "tasks_per_node": devices,
                                "timeout_min": 60 * 24}
    if gpus and executor.cluster == "slurm":
        defaults.update(gpus_per_node=devices, slurm_signal_delay_s=90)
    try:
        executor.update_parameters(**{**defaults, **params})
    except (ValueError, TypeError) as err:
        raise UserError(f"--slurm: {err}") from None
    return executor.map_array(ShardTask(argv), [f"{i}/{shards}" for i in range(shards)])

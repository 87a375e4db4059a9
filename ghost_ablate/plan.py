"""One sweep's plan, resolved once: experiment, recipe overrides, seeds, device, data set and its
fingerprint, this shard's runs in order and what they cost.

The command line parses, builds a `Plan` (`Plan.resolve`), then either prints `plan.dry_run()`
or hands it to `sweep.run_sweep`; nothing below the plan re-derives what it holds.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Recipe, load_profile, make_recipe
from .data import DataSet
from .errors import UserError
from .estimate import RunEstimate, format_hours, plan_hours, recorded_epoch_seconds
from .records import write_atomic
from .sweep import Experiment, dry_run_table, estimate_runs, plan_runs, table_hours

YES_ENV = "GHOST_ABLATE_YES"
CPU_GUARD_HOURS = 24.0  # a CPU plan estimated longer than this is refused unless --yes (or --max-hours)


@dataclass(frozen=True)
class Scale:
    """Where each run trains: devices per node, nodes, gradient-accumulation steps."""

    devices: int = 1
    nodes: int = 1
    accumulate: int = 1

    @property
    def world(self) -> int:
        return self.devices * self.nodes


@dataclass(frozen=True)
class SeedRequest:
    """How `--seeds auto` picks n from a pilot's paired spread (`seeds.plan_seeds`)."""

    pilot: str | None
    detect: float = 2.0
    max_seeds: int = 20
    max_hours: float | None = None
    priced_from: tuple[str, ...] = ()


@dataclass
class Plan:
    """Every decision of one sweep, made once."""

    experiment: Experiment
    recipe: Recipe  # the profile with the command line's overrides: what every run from scratch trains
    overrides: dict[str, Any]
    profile: str | None
    seeds: list[int]
    shard: tuple[int, int]
    results: Path
    dataset: DataSet
    data_dir: str
    device: str
    scale: Scale
    sizes: tuple[int, int] | None  # (train, test) images found in data_dir; None: no data there
    data: str | None  # the data set's fingerprint, part of every run id
    runs: list = field(default_factory=list)  # this shard's RunConfigs, in training order
    everything: list = field(default_factory=list)  # every shard's
    estimates: list[RunEstimate] | None = None  # this shard's, None without an estimate
    all_estimates: list[RunEstimate] | None = None
    step_time: float | None = None
    notes: list[str] = field(default_factory=list)  # what resolving decided, printed before the runs

    @classmethod
    def resolve(cls, experiment: Experiment, *, profile: str | None, overrides: dict[str, Any], seeds: list[int],
                shard: tuple[int, int], results: Path, dataset: DataSet, data_dir: str, device: str, scale: Scale,
                ranks: Any, sequential_write: bool) -> Plan:
        """The plan's runs on the data in `data_dir` (its fingerprint decided by rank 0), less what
        a sequential design has already decided."""
        recipe = make_recipe(load_profile(profile or experiment.profile), **overrides)
        sizes = dataset.split_sizes(data_dir)
        data = ranks.decide(lambda: dataset.fingerprint(data_dir) if sizes else None)
        plan = cls(experiment, recipe, overrides, profile, seeds, shard, results, dataset, data_dir, device, scale,
                   sizes, data)
        plan.runs = plan_runs(experiment, seeds, profile, overrides, shard, data)
        plan.everything = plan.runs if shard == (0, 1) else plan_runs(experiment, seeds, profile, overrides, data=data)
        if experiment.sequential:
            plan.runs = plan.sequential_block(write=sequential_write)
        return plan

    @property
    def data_sizes(self) -> tuple[int, int]:
        """The images an epoch goes through: those found, else the data set's full sizes."""
        return self.sizes or (self.dataset.train_size, self.dataset.test_size)

    def estimate(self, recalibrate: bool = False, step_time: float | None = None) -> None:
        """Price this shard's runs and the whole plan's (calibrated once per configuration, or at
        `step_time` seconds per global batch)."""
        self.step_time = step_time
        at = dict(world=self.scale.world, step_time=step_time, accumulate=self.scale.accumulate)
        self.estimates = estimate_runs(self.runs, self.results / "runs", self.device, self.data_sizes,
                                       recalibrate=recalibrate, **at)
        self.all_estimates = self.estimates if self.shard == (0, 1) else estimate_runs(
            self.everything, self.results / "runs", self.device, self.data_sizes, **at)

    def hours_left(self) -> float:
        return plan_hours(self.estimates or [])

    def guard(self, max_hours: float | None, yes: bool) -> None:
        """Refuse, on a CPU, a plan estimated past `max_hours` (default `CPU_GUARD_HOURS`)."""
        limit = CPU_GUARD_HOURS if max_hours is None else max_hours
        if self.estimates is None or self.device != "cpu" or yes or os.environ.get(YES_ENV):
            return
        if (left := self.hours_left()) > limit:
            raise UserError(f"this plan needs about {left:.0f} hours on this CPU ({len(self.runs)} runs, shard "
                            f"{self.shard[0]}/{self.shard[1]}), over the {limit:g} h guard; choose a shorter "
                            f"--profile (e.g. quick or subset), a GPU, --shard I/N over several machines, or --yes "
                            f"({YES_ENV}=1) to go on")

    def dry_run(self) -> str:
        """The runs with their costs and status, and the time left per shard and per table."""
        table = dry_run_table(self.runs, self.results / "runs", self.estimates)
        with pd.option_context("display.max_rows", None, "display.width", 200):
            lines = [*self.notes, table.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
        counts = table["status"].value_counts().to_dict() if len(table) else {}
        lines.append(f"{len(self.runs)} runs (shard {self.shard[0]}/{self.shard[1]}): "
                     + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        if self.data is None:
            lines.append(f"note: no data set in {self.data_dir}; a run's id names its data, so these ids are "
                         f"provisional and none of them counts as done")
        if self.estimates is not None:
            lines += self.cost_lines()
        return "\n".join(lines)

    def cost_lines(self) -> list[str]:
        everything, estimates, shards = self.everything, self.all_estimates or [], self.shard[1]
        where = (f"{self.sizes[0]:,} / {self.sizes[1]:,} images in {self.data_dir}" if self.sizes else
                 f"{self.data_dir} not found: full {self.dataset.title} sizes assumed")
        on = f"{self.step_time:g} s per step (given)" if self.step_time else self.device
        lines = [f"time left on {on} ({where}): this shard {format_hours(self.hours_left())}; whole plan "
                 f"{format_hours(plan_hours(estimates))}, {format_hours(plan_hours(estimates, shards))} per shard "
                 f"with {shards} shard(s)"]
        if peaks := [(e.peak_bytes, e.run_id) for e in estimates if e.peak_bytes]:
            most, run = max(peaks)
            lines.append(f"GPU memory per device (calibrated, one warm step of the micro-batch): up to "
                         f"{most / 2**30:.2f} GiB ({run})")
        if self.scale.world > 1:
            lines.append(f"each run on {self.scale.world} devices ({self.scale.nodes} node(s) x {self.scale.devices}): "
                         f"{sum(e.device_hours_left for e in estimates):,.1f} device-hours for the whole plan")
        lines += [f"  {name}: {format_hours(hours)}" for name, hours in
                  table_hours(self.experiment, everything, estimates).items()]
        if self.dataset.input_rate is not None:
            lines.append(self.input_line())
        return lines

    def input_line(self) -> str:
        """Whether the CPU input pipeline (its rate per core on this CPU, times the loader workers
        each device gets) can feed the plan's hungriest run."""
        from .data.imagenet import default_workers  # lazy: the ImageNet pipeline only where it is asked for
        from .estimate import input_side
        from .machine import cpu_model

        sizes = {rc.recipe.image_size or self.dataset.input_size for rc in self.everything}
        rate, what = self.dataset.input_rate(self.data_dir, max(sizes))
        workers = default_workers(self.scale.devices)
        run, factor = input_side(self.all_estimates or [], rate, workers)
        if not run:
            return "input side: nothing left to train"
        head = (f"input side: our CPU pipeline crops {rate:,.0f} images/s per core on {cpu_model()} (measured on "
                f"{what}); {workers} loader worker(s) per device")
        if factor > 1:
            return (f"{head} feed {run} {factor:.1f}x too slowly: it is input-bound, each epoch about {factor:.1f}x "
                    f"the time priced; decode on the GPU (GHOST_ABLATE_DECODE=device or dali) or give each task more "
                    f"CPUs")
        return f"{head} keep up with every run (the hungriest, {run}, needs {factor:.0%} of what they feed)"

    def sequential_block(self, write: bool) -> list:
        """The runs of a sequential experiment's next block: none past the cap, none of a row the
        finished records already decide (report/sequential.py); the design is written beside the
        runs for the report."""
        from .report.sequential import DESIGN_FILE, design_for, keys_to_train, table_decisions  # lazy: scipy
        from .report.tables import ReportError, load_runs

        first, cap = self.experiment.sequential
        designs = design_for(self.experiment)
        if past := sorted({rc.seed for rc in self.runs if rc.seed >= cap}):
            self.notes.append(f"sequential design: seed(s) {', '.join(map(str, past))} past the cap of {cap} seeds "
                              f"(seeds 0-{cap - 1}) are not planned")
        runs = [rc for rc in self.runs if rc.seed < cap]
        if write:
            write_atomic(self.results / DESIGN_FILE, json.dumps({
                "experiment": str(self.experiment.path), "first": first, "cap": cap,
                "margins": {t: d.margin for t, d in designs.items()}}))
        if not runs:
            return runs
        try:
            done = load_runs(self.results, profile=runs[0].profile, data=self.data, epochs=runs[0].recipe.epochs)
        except ReportError:  # nothing finished yet: every row is open
            return runs
        outcomes = table_decisions(done, self.experiment.tables, designs)
        needed, decided = keys_to_train(outcomes)
        self.notes += [f"sequential design: {o.row.label} decided at n={o.decision.n}: {o.decision.decision} "
                       f"(vs {o.reference.label}); no more seeds" for o in outcomes if o.decision.decided]
        left = [rc for rc in runs if rc.key not in decided]
        if not needed and len(left) < len(runs):
            self.notes.append("sequential design: every row is decided")
        return left


def seed_plan(experiment: Experiment, recipe: Recipe, profile: str, request: SeedRequest,
              hours_per_seed: float | None = None):  # noqa: ANN201 - seeds.SeedPlan
    """The `seeds.SeedPlan` for `experiment` from the records in the pilot folder that share the
    plan's profile and epochs."""
    from .report.tables import aggregate, load_runs  # lazy: the report's readers
    from .seeds import plan_seeds

    if not request.pilot:
        raise UserError("--seeds auto needs --pilot DIR: the results folder whose seeds give the paired spread "
                        "(e.g. results/pilot from `make pilot`)")
    runs = load_runs(request.pilot, Path(profile).stem, mixed_epochs=True)
    runs = runs[runs["epochs"] == recipe.epochs]
    if runs.empty:
        raise UserError(f"{request.pilot} holds no {Path(profile).stem} runs of {recipe.epochs} epochs: the pilot "
                        f"must train the recipe it plans for")
    return plan_seeds(experiment.tables, aggregate(runs), request.detect, request.max_seeds,
                      hours_per_seed=hours_per_seed, max_hours=request.max_hours)


def seed_cost(plan: Plan, request: SeedRequest) -> tuple[float, str]:
    """Hours per seed on this device: runs priced by finished records of their configuration here
    (median wall time per epoch; `request.priced_from`, default the pilot's), the rest calibrated."""
    from .machine import describe_device
    from .record_schema import read_records

    one_seed = plan_runs(plan.experiment, [0], plan.profile, plan.overrides, data=plan.data)
    folders = request.priced_from or ((request.pilot,) if request.pilot else ())
    records = [r for folder in folders for r in read_records(Path(folder) / "runs")]
    recorded = recorded_epoch_seconds(one_seed, records, describe_device(plan.device))
    # the rest priced as if none of them had run: a folder that holds no runs
    calibrated = estimate_runs([rc for rc in one_seed if rc.run_id not in recorded], Path("/nonexistent/runs"),
                               plan.device, plan.data_sizes)
    hours = plan_hours(calibrated + [RunEstimate(rc.run_id, recorded[rc.run_id], rc.recipe.epochs)
                                     for rc in one_seed if rc.run_id in recorded])
    return hours, (f"priced: {len(recorded)} of {len(one_seed)} runs from the median wall time per epoch of finished "
                   f"runs of their configuration on this device, {len(calibrated)} calibrated; {len(one_seed)} runs "
                   f"per seed, {hours:.2f} h per seed on {describe_device(plan.device)}")


def seed_table(seeds: Any) -> str:
    """The seed plan's comparisons, one row each: spread, alpha and the n each needs."""
    table = pd.DataFrame([{"table": c.table, "row": c.row, "vs": c.reference, "pilot pairs": c.pilot_pairs,
                           "sd of diffs": round(c.std_diff, 2), "spread from": c.spread_from,
                           "alpha": round(c.alpha, 4), f"n for {seeds.detect:g} pts": c.needed or f"> {10_000}"}
                          for c in seeds.comparisons])
    with pd.option_context("display.max_rows", None, "display.width", 200):
        return table.to_string(index=False)


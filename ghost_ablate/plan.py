"""One sweep's plan, resolved once, in three steps: the command line's `SweepRequest` (every flag
read once), its `Setting` (experiment, data set and folder, the recipe made once, the device;
before any process starts) and the `Plan` (seeds, the data's fingerprint, this shard's runs in
order and what they cost).

The command line builds the request, the setting and the plan, then either prints
`plan.dry_run()` or hands the plan's runs to `sweep.run_sweep`; nothing below the plan re-derives
what it holds.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import estimate, paper
from .config import Recipe, RunConfig, load_profile, make_recipe
from .costs import config_cost
from .data import DataSet
from .errors import UserError
from .estimate import (
    RunEstimate,
    estimate_run,
    estimate_runs,
    format_hours,
    plan_hours,
    train_batches,
)
from .experiment import Experiment, load_experiment, plan_runs, shard_of
from .models import KNOBS, LEGACY, knob_values, varying
from .record_schema import epochs_done, run_state
from .records import write_atomic

YES_ENV = "GHOST_ABLATE_YES"
CPU_GUARD_HOURS = 24.0  # a CPU plan estimated longer than this is refused unless --yes (or --max-hours)
SAY_COST_STEPS = 500  # `train` prices a run of more optimizer steps than this before it starts (one calibration)


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


@dataclass(frozen=True)
class SweepRequest:
    """What one sweep command asks for, parsed and checked (`cli.args.sweep_request`); the plan is
    resolved from this alone."""

    experiment: Path
    profile: str | None  # None: the experiment file's
    overrides: dict[str, Any]  # recipe fields set on the command line
    seeds: list[int] | SeedRequest  # a SeedRequest: `--seeds auto`
    shard: tuple[int, int]
    results: Path
    data_dir: str | None  # None: the data set's declared folder
    accelerator: str = "auto"
    scale: Scale = Scale()
    dry_run: bool = False
    download: bool = True
    cluster: bool = False  # --slurm: the runs train on the cluster's nodes, not here
    estimate: bool = True
    recalibrate: bool = False
    step_time: float | None = None
    max_hours: float | None = None
    yes: bool = False

    @property
    def priced_from(self) -> tuple[str, ...]:
        """The results folders whose finished runs price their configurations on this device
        (`--seeds auto`: `--priced-from`, else the pilot's); none otherwise."""
        ask = self.seeds
        if not isinstance(ask, SeedRequest):
            return ()
        return ask.priced_from or ((ask.pilot,) if ask.pilot else ())


@dataclass(frozen=True)
class Setting:
    """What a request resolves to before any process starts or any data is read: the experiment,
    its data set and folder, the recipe (made once) and the device."""

    request: SweepRequest
    experiment: Experiment
    dataset: DataSet
    data_dir: str
    recipe: Recipe  # the profile with the command line's overrides: what every run from scratch trains
    device: str

    @classmethod
    def of(cls, request: SweepRequest) -> Setting:
        from .config import check_processes
        from .data import get_dataset
        from .training import resolve_device

        experiment = load_experiment(request.experiment)
        dataset = get_dataset(experiment.dataset)
        recipe = make_recipe(load_profile(request.profile or experiment.profile), **request.overrides)
        # a submission runs on the cluster's nodes: this machine (a login node) needs no GPU of its own
        device = (("cuda" if request.accelerator != "cpu" else "cpu") if request.cluster
                  else resolve_device(request.accelerator))
        check_processes(recipe, request.scale.world, request.scale.accumulate, device)
        return cls(request, experiment, dataset, str(dataset.folder(request.data_dir)), recipe, device)

    @property
    def profile(self) -> str:
        return self.request.profile or self.experiment.profile

    def runs(self, seeds: list[int], data: str | None = None) -> list:
        """The experiment's runs (`experiment.plan_runs`) under this recipe, every shard's."""
        return plan_runs(self.experiment, seeds, self.request.profile, self.request.overrides, data=data)


@dataclass
class Plan:
    """Every decision of one sweep, made once."""

    setting: Setting
    seeds: list[int]
    shard: tuple[int, int]
    sizes: tuple[int, int] | None  # (train, test) images found in data_dir; None: no data there
    data: str | None  # the data set's fingerprint, part of every run id
    runs: list = field(default_factory=list)  # this shard's RunConfigs, in training order
    everything: list = field(default_factory=list)  # every shard's
    estimates: list[RunEstimate] | None = None  # this shard's, None without an estimate
    all_estimates: list[RunEstimate] | None = None
    notes: list[str] = field(default_factory=list)  # what resolving decided, printed before the runs

    @classmethod
    def resolve(cls, setting: Setting, ranks: Any, seeds: list[int] | None = None,  # noqa: ANN401 - Ranks
                shard: tuple[int, int] | None = None) -> Plan:
        """The plan's seeds (the request's, or `choose_seeds`'), and its runs on the data in the
        setting's folder (fetched unless a dry run; its fingerprint decided by rank 0), less what a
        sequential design has already decided."""
        request, dataset, folder = setting.request, setting.dataset, setting.data_dir
        said: list[str] = []
        if seeds is None:
            seeds, said = choose_seeds(setting, ranks)
        if not request.dry_run:  # a missing data set is a one-line error before any calibration
            ranks.decide(lambda: dataset.prepare(folder, request.download))
        sizes = dataset.split_sizes(folder)
        data = ranks.decide(lambda: dataset.fingerprint(folder) if sizes else None)
        shard = request.shard if shard is None else shard
        everything = setting.runs(seeds, data)
        plan = cls(setting, seeds, shard, sizes, data, shard_of(everything, shard), everything, notes=said)
        if setting.experiment.sequential:
            plan.runs = plan.sequential_block(write=not request.dry_run and ranks.is_zero)
        return plan

    @property
    def results(self) -> Path:
        return self.setting.request.results

    @property
    def data_dir(self) -> str:
        return self.setting.data_dir

    def context(self, logger: str = "csv") -> Any:  # noqa: ANN401 - training.RunContext (torch, loaded lazily)
        """Where every run of the plan trains: its data set and folder, device and scale."""
        from .training import RunContext

        setting, scale = self.setting, self.setting.request.scale
        return RunContext(setting.dataset, setting.data_dir, setting.device, scale.devices, scale.nodes,
                          scale.accumulate, setting.request.download, logger)

    @property
    def data_sizes(self) -> tuple[int, int]:
        """The images an epoch goes through: those found, else the data set's full sizes."""
        return self.sizes or (self.setting.dataset.train_size, self.setting.dataset.test_size)

    def estimate(self, fresh: bool = False) -> None:
        """Price this shard's runs and the whole plan's: from the finished runs of their
        configuration here in the request's `priced_from` folders, else calibrated once per
        configuration, or at the request's seconds per global batch. `fresh`: as if none had
        trained yet (what a seed costs)."""
        request, device = self.setting.request, self.setting.device
        runs_dir = None if fresh else self.results / "runs"
        at = dict(world=request.scale.world, step_time=request.step_time, accumulate=request.scale.accumulate,
                  priced_from=request.priced_from)
        self.estimates = estimate_runs(self.runs, runs_dir, device, self.data_sizes,
                                       recalibrate=request.recalibrate, **at)
        self.all_estimates = self.estimates if self.shard == (0, 1) else estimate_runs(
            self.everything, runs_dir, device, self.data_sizes, **at)

    def hours_left(self) -> float:
        return plan_hours(self.estimates or [])

    def guard(self) -> None:
        """Refuse, on a CPU, a plan estimated past the request's --max-hours (default `CPU_GUARD_HOURS`)."""
        request = self.setting.request
        limit = CPU_GUARD_HOURS if request.max_hours is None else request.max_hours
        if self.estimates is None or self.setting.device != "cpu" or request.yes or os.environ.get(YES_ENV):
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
        setting, scale, step_time = self.setting, self.setting.request.scale, self.setting.request.step_time
        where = (f"{self.sizes[0]:,} / {self.sizes[1]:,} images in {self.data_dir}" if self.sizes else
                 f"{self.data_dir} not found: full {setting.dataset.title} sizes assumed")
        on = f"{step_time:g} s per step (given)" if step_time else setting.device
        lines = [f"time left on {on} ({where}): this shard {format_hours(self.hours_left())}; whole plan "
                 f"{format_hours(plan_hours(estimates))}, {format_hours(plan_hours(estimates, shards))} per shard "
                 f"with {shards} shard(s)"]
        if peaks := [(e.peak_bytes, e.run_id) for e in estimates if e.peak_bytes]:
            most, run = max(peaks)
            lines.append(f"GPU memory per device (calibrated, one warm step of the micro-batch): up to "
                         f"{most / 2**30:.2f} GiB ({run})")
        if scale.world > 1:
            lines.append(f"each run on {scale.world} devices ({scale.nodes} node(s) x {scale.devices}): "
                         f"{sum(e.device_hours_left for e in estimates):,.1f} device-hours for the whole plan")
        lines += [f"  {name}: {format_hours(hours)}" for name, hours in
                  table_hours(setting.experiment, everything, estimates).items()]
        if setting.dataset.input_rate is not None:
            lines.append(self.input_line())
        return lines

    def input_line(self) -> str:
        """Whether the CPU input pipeline (its rate per core on this CPU, times the loader workers
        each device gets) can feed the plan's hungriest run."""
        from .data.imagenet import default_workers  # lazy: the ImageNet pipeline only where it is asked for
        from .estimate import input_side
        from .machine import cpu_model

        dataset = self.setting.dataset
        sizes = {rc.recipe.image_size or dataset.input_size for rc in self.everything}
        rate, what = dataset.input_rate(self.data_dir, max(sizes))
        workers = default_workers(self.setting.request.scale.devices)
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

        experiment = self.setting.experiment
        first, cap = experiment.sequential
        designs = design_for(experiment)
        if past := sorted({rc.seed for rc in self.runs if rc.seed >= cap}):
            self.notes.append(f"sequential design: seed(s) {', '.join(map(str, past))} past the cap of {cap} seeds "
                              f"(seeds 0-{cap - 1}) are not planned")
        runs = [rc for rc in self.runs if rc.seed < cap]
        if write:
            write_atomic(self.results / DESIGN_FILE, json.dumps({
                "experiment": str(experiment.path), "first": first, "cap": cap,
                "margins": {t: d.margin for t, d in designs.items()}}))
        if not runs:
            return runs
        try:
            done = load_runs(self.results, profile=runs[0].profile, data=self.data, epochs=runs[0].recipe.epochs)
        except ReportError:  # nothing finished yet: every row is open
            return runs
        outcomes = table_decisions(done, experiment.tables, designs)
        needed, decided = keys_to_train(outcomes)
        self.notes += [f"sequential design: {o.row.label} decided at n={o.decision.n}: {o.decision.decision} "
                       f"(vs {o.reference.label}); no more seeds" for o in outcomes if o.decision.decided]
        left = [rc for rc in runs if rc.key not in decided]
        if not needed and len(left) < len(runs):
            self.notes.append("sequential design: every row is decided")
        return left


def run_cost_line(rc: RunConfig, where: Any, out: Path) -> str | None:  # noqa: ANN401 - training.RunContext
    """What one `train` run has left to cost on this device, said before it starts: its epochs and
    the calibrated time (as a sweep prices its runs). None for a short run (at most SAY_COST_STEPS
    optimizer steps, such as the smoke profile's), which starts without calibrating."""
    from .machine import describe_device

    dataset = where.dataset
    sizes = dataset.split_sizes(where.data_dir) or (dataset.train_size, dataset.test_size)
    if rc.recipe.epochs * train_batches(rc, sizes[0]) <= SAY_COST_STEPS:
        return None
    left = rc.recipe.epochs - epochs_done(Path(out), rc.recipe.epochs)
    if left <= 0:
        return None
    cal, _ = estimate.calibrate(rc, where.device, world=where.world, accumulate=where.accumulate)
    run = estimate_run(rc, cal, rc.recipe.epochs - left, sizes, where.world)
    return (f"{rc.run_id}: {left} epoch(s) of {sizes[0]:,} images left, about {format_hours(run.hours_left)} on "
            f"{describe_device(where.device)} (calibrated); Ctrl-C stops it and the same command resumes it")


# ---- what the plan costs, and its dry run's table ----------------------------------

def table_hours(experiment: Experiment, runs: list[RunConfig], estimates: list[RunEstimate]) -> dict[str, float]:
    """Hours left per paper table of the experiment (a run shared by tables counts in each)."""
    totals = {}
    for table in experiment.tables:
        keys = {r.run_key for r in paper.rows(table, buildable=True)}
        totals[table] = sum(e.hours_left for rc, e in zip(runs, estimates) if rc.key in keys)
    return totals


def dry_run_table(runs: list[RunConfig], runs_dir: Path, estimates: list[RunEstimate] | None = None) -> pd.DataFrame:

    rows = []
    values = [knob_values(rc.model, rc.to_dict()) for rc in runs]
    shown = [k for k in varying(values) if k not in LEGACY]  # other knobs, where the plan varies them
    for i, rc in enumerate(runs):
        cost = config_cost(*rc.key, dataset=rc.dataset)
        rows.append({"run_id": rc.run_id, "model": rc.model, "s": rc.ratio, "d": rc.dw_size, "width": rc.width,
                     **{k: values[i][k] for k in shown}, "seed": rc.seed, "epochs": rc.recipe.epochs,
                     "params (M)": cost.params / 1e6, "FLOPs (M)": cost.flops / 1e6,
                     "status": run_state(runs_dir / rc.run_id)})
        if any(r.source for r in runs):  # pruned runs: which run they start from
            rows[-1]["from"] = rc.source or ""
        if estimates is not None:
            rows[-1].update({"epoch (s)": estimates[i].epoch_s, "hours left": estimates[i].hours_left})
            if estimates[i].devices > 1:
                rows[-1]["device-hours left"] = estimates[i].device_hours_left
    table = pd.DataFrame(rows)
    for col in ("s", "d", *(k for k in shown if KNOBS[k].type is int)):
        if col in table:
            table[col] = table[col].astype("Int64")  # integers with blanks, not floats
    for col in (k for k in shown if KNOBS[k].type is str):
        table[col] = table[col].fillna("")
    if "width" in table:
        table["width"] = table["width"].map(lambda w: "" if w is None or w != w else f"{w:g}")
    return table


def choose_seeds(setting: Setting, ranks: Any) -> tuple[list[int], list[str]]:  # noqa: ANN401 - distributed.Ranks
    """The seeds to run and what to say of them: as given, or (`--seeds auto`) as many as the
    pilot's paired spread says each comparison needs. A dry run adds the seed plan's table and,
    unless --no-estimate, what a seed costs here (and caps n by --max-hours); a training run writes
    the seed plan beside its runs."""
    ask, request = setting.request.seeds, setting.request
    if not isinstance(ask, SeedRequest):
        return ask, []
    hours, priced = None, ""
    if request.dry_run and request.estimate:
        seed_plan(setting, ask)  # a pilot that cannot plan fails before any calibration
        hours, priced = seed_cost(Plan.resolve(setting, ranks, [0], shard=(0, 1)))
    plan = seed_plan(setting, ask, hours)
    if not request.dry_run:
        if ranks.is_zero:
            from .seeds import write_plan

            write_plan(plan, request.results, ask.pilot)
        return plan.seeds(), [plan.summary()]
    cost = ([f"{priced}; {plan.n} seeds = {plan.n * hours:.1f} h; the uncapped plan needs {plan.wanted} seeds = "
             f"{plan.wanted * hours:.0f} h"] if hours is not None else [])
    return plan.seeds(), [seed_table(plan), plan.summary(), *cost]


def seed_plan(setting: Setting, ask: SeedRequest, hours_per_seed: float | None = None):  # noqa: ANN201 - seeds.SeedPlan
    """The `seeds.SeedPlan` for the setting's experiment from the records in the pilot folder that
    share its profile and epochs."""
    from .report.tables import aggregate, load_runs  # lazy: the report's readers
    from .seeds import plan_seeds

    if not ask.pilot:
        raise UserError("--seeds auto needs --pilot DIR: the results folder whose seeds give the paired spread "
                        "(e.g. results/pilot from `make pilot`)")
    profile, epochs = Path(setting.profile).stem, setting.recipe.epochs
    runs = load_runs(ask.pilot, profile, mixed_epochs=True)
    runs = runs[runs["epochs"] == epochs]
    if runs.empty:
        raise UserError(f"{ask.pilot} holds no {profile} runs of {epochs} epochs: the pilot must train the recipe "
                        f"it plans for")
    return plan_seeds(setting.experiment.tables, aggregate(runs), ask.detect, ask.max_seeds,
                      hours_per_seed=hours_per_seed, max_hours=ask.max_hours)


def seed_cost(one_seed: Plan) -> tuple[float, str]:
    """Hours per seed on this device for the plan of seed 0, priced as the plan prices its runs
    (`Plan.estimate`), and how."""
    from .machine import describe_device

    one_seed.estimate(fresh=True)
    estimates = one_seed.all_estimates or []
    hours, recorded = plan_hours(estimates), sum(e.recorded for e in estimates)
    return hours, (f"priced: {recorded} of {len(estimates)} runs from the median wall time per epoch of finished "
                   f"runs of their configuration on this device, {len(estimates) - recorded} calibrated; "
                   f"{len(estimates)} runs per seed, {hours:.2f} h per seed on {describe_device(one_seed.setting.device)}")


def seed_table(seeds: Any) -> str:
    """The seed plan's comparisons, one row each: spread, alpha and the n each needs."""
    table = pd.DataFrame([{"table": c.table, "row": c.row, "vs": c.reference, "pilot pairs": c.pilot_pairs,
                           "sd of diffs": round(c.std_diff, 2), "spread from": c.spread_from,
                           "alpha": round(c.alpha, 4), f"n for {seeds.detect:g} pts": c.needed or f"> {10_000}"}
                          for c in seeds.comparisons])
    with pd.option_context("display.max_rows", None, "display.width", 200):
        return table.to_string(index=False)


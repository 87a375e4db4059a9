"""Experiment files -> grid of runs -> resumable, shardable execution.

An experiment file (YAML) names a profile and its runs: the rows of paper tables
(`paper_tables`, taken from `paper.py`) and/or `runs` entries whose list-valued fields
expand to their cross product. Seeds and recipe overrides come from the command line.
A run can start from another run of the plan: its row's `from:` names the source's configuration
(a model name, or a mapping of model, knobs and a `from:` of its own, so chains are declared as
nested sources). The model's spec says how it is made from that source
(`models.registry.derivation`: pruned from its baseline, or fine-tuned from its own model); a
pruned network with `init: pruned` starts from its baseline when no `from:` is given. Sources are
trained first, with the same seed: the root of a chain under the experiment's profile, every run
made from another under `finetune_profile` (default: the same profile).

Every run lives in `results/runs/<run_id>/`. The run id hashes the resolved config, so
a run shared by several tables runs once, and re-running a sweep skips what is done and
resumes what was interrupted. A per-run file lock lets any number of processes (shards,
GPUs, SLURM array tasks, or a restarted job) share one results folder safely.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from . import distributed, estimate, paper, preemption
from .config import ConfigError, RunConfig, load_profile
from .costs import config_cost
from .data import DataError, get_dataset
from .errors import UserError
from .formats import FormatError, load_yaml
from .estimate import Calibration, RunEstimate, calibration_key, estimate_run, format_hours, outliers
from .models import KNOBS, LEGACY, MODELS, knob_values, varying
from .models.registry import derivation, starts_from_baseline
from .progress import track
from .record_schema import MAX_SEED, read_record, read_records
from .records import (
    RESULT_FILE,
    DamagedRecord,
    StorageError,
    flatten_record,
    set_aside,
    storage_error,
    storage_guard,
    write_atomic,
)
from .training import Diverged, train_run

EXPERIMENT_KEYS = ("description", "dataset", "profile", "finetune_profile", "paper_tables", "margins", "sequential",
                   "runs")
# any declared knob can be a field, and a list, of a runs entry; `epochs_of: MODEL` makes a run from random
# weights train as many epochs in all as MODEL's chain (its source's and its own): the equal-epochs control
RUN_KEYS = ("model", "from", "epochs_of", *KNOBS)
OTHER_KNOBS = tuple(k for k in KNOBS if k not in LEGACY)
SUMMARY_COLUMNS = ("run_id", "model", *LEGACY, *OTHER_KNOBS, "profile", "seed", "status", "epochs_done",
                   "epochs", "params", "flops", "final_test_acc", "best_test_acc", "best_epoch",
                   "train_images_per_s", "wall_time_s", "device", "precision", "error")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    path: Path
    profile: str
    # distinct {model, ratio, dw_size, width, knobs}, in declared order; with `source` (the config it is
    # made from) or `epochs_of` (the config whose chain's epochs an equal-epochs control trains)
    configs: tuple[dict[str, Any], ...]
    description: str = ""
    tables: tuple[str, ...] = ()  # the paper tables it declares
    finetune_profile: str | None = None  # the recipe of runs that start from another (`from:`)
    dataset: str = "cifar10"  # a name from `data.DATASETS`
    # per paper table, the non-inferiority margin (top-1 points) its verdicts test; default stats.MARGIN_PP
    margins: dict[str, float] = dataclasses.field(default_factory=dict)
    # `sequential: {first: N, cap: M}`: its paper tables' rows are tested as seeds come (report/sequential.py),
    # looks at n = first..cap pairs; a decided row gets no more seeds and no seed is planned past the cap
    sequential: tuple[int, int] | None = None


def _fail(path: Path, where: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {message}")


MAX_RUNS = 10_000  # configurations x seeds in one plan: far past any grid here, short of a typo's memory bill


def grid_size(entry: dict[str, Any]) -> int:
    """How many combinations `_expand` would make, counted from the axes without making them."""
    return math.prod(len(v) if isinstance(v, list) else 1 for v in entry.values())


def _expand(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """{model: [a, b], ratio: [2, 3]} -> the 4 combinations; scalars stay fixed."""
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in entry.items()}
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


class ExperimentFile(BaseModel):
    """An experiment file's fields, declared once as the recipe's are (`config.Recipe`); the rows it
    names are checked against the model registry afterwards (`_configs`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = Field(description="the recipe: a name from experiments/profiles or a .yaml path")
    description: str = ""
    dataset: str = "cifar10"
    finetune_profile: str | None = None
    paper_tables: list[str] = []
    margins: dict[str, float] = {}
    sequential: tuple[int, int] | None = None
    runs: list[dict[str, Any]] = []

    @field_validator("profile", "finetune_profile", "dataset", "description", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return value if value is None or isinstance(value, (dict, list)) else str(value)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, name: str) -> str:
        try:
            get_dataset(name)
        except DataError as err:
            raise ValueError(str(err)) from None
        return name

    @field_validator("profile", "finetune_profile")
    @classmethod
    def _profile(cls, name: str | None) -> str | None:
        if name is not None:
            load_profile(name)  # ConfigError is a ValueError: its message is the field's
        return name

    @field_validator("paper_tables", "runs", mode="before")
    @classmethod
    def _list(cls, given: Any, info: ValidationInfo) -> Any:
        if given is None:
            return []
        if not isinstance(given, list):
            raise ValueError("must be a list of table names" if info.field_name == "paper_tables" else
                             "must be a list of {model, KNOB: value or [values], ...} entries")
        for i, item in enumerate(given):
            if info.field_name == "paper_tables" and item not in paper.TABLES:
                raise ValueError(f"unknown table {item!r}; valid: {', '.join(paper.TABLES)}")
            if info.field_name == "runs" and (not isinstance(item, dict) or "model" not in item):
                raise ValueError(f"@runs[{i}]: each entry is a mapping with at least a model")
        return given

    @field_validator("margins", mode="before")
    @classmethod
    def _margins(cls, given: Any) -> Any:
        """`margins: {TABLE: points}`: each a paper table and a number of points in (0, 100]."""
        if given is None:
            return {}
        if not isinstance(given, dict):
            raise ValueError("must be a mapping of paper table to margin in top-1 points, e.g. {table2_ratio: 1.0}")
        for table, value in given.items():
            if table not in paper.TABLES:
                raise ValueError(f"@{table}: unknown table; valid: {', '.join(paper.TABLES)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
                raise ValueError(f"@{table}: must be a number of points in (0, 100], got {value!r}")
        return {str(t): float(v) for t, v in given.items()}

    @field_validator("sequential", mode="before")
    @classmethod
    def _sequential(cls, given: Any) -> Any:
        """`sequential: {first: N, cap: M}` (2 <= N <= M <= 1000): the looks of the sequential design."""
        if given is None:
            return None
        ok = isinstance(given, dict) and set(given) <= {"first", "cap"} and "cap" in given and all(
            isinstance(v, int) and not isinstance(v, bool) for v in given.values())
        first, cap = (given.get("first", 3), given.get("cap")) if ok else (None, None)
        if not ok or not 2 <= first <= cap <= 1000:
            raise ValueError(f"must be {{first: N, cap: M}} with 2 <= N <= M <= 1000 seeds, got {given!r}"[:200])
        return first, cap

    @model_validator(mode="after")
    def _sequential_needs_tables(self) -> ExperimentFile:
        if self.sequential is not None and not self.paper_tables:
            raise ValueError("sequential: tests the rows of paper_tables; this file declares none")
        return self


def _file_error(path: Path, err: ValidationError) -> ConfigError:
    """The first problem pydantic found, as `FILE: FIELD: what is wrong; what is valid`."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return _fail(path, where, f"unknown field; valid: {', '.join(EXPERIMENT_KEYS)}")
    if first["type"] == "missing":
        return _fail(path, where, "missing; name one of experiments/profiles")
    message = str(first["msg"]).removeprefix("Value error, ")
    if not where:  # a model-level check names its field itself
        where, _, message = message.partition(": ")
    elif message.startswith("@"):  # a check inside a list or mapping names its item: "@ITEM: message"
        inner, _, message = message[1:].partition(": ")
        where = inner if inner.startswith(f"{where}[") else f"{where}.{inner}"
    return _fail(path, where, message)


def load_experiment(path: str | Path) -> Experiment:
    """Parse and validate an experiment file; ConfigError names the file, field and valid choices."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such experiment file")
    try:
        doc = load_yaml(path)
    except FormatError as err:
        raise ConfigError(str(err)) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: an experiment file is a mapping with keys {', '.join(EXPERIMENT_KEYS)}")
    try:
        declared = ExperimentFile(**{str(k): v for k, v in doc.items()})
    except ValidationError as err:
        raise _file_error(path, err) from None
    return Experiment(path, declared.profile, _configs(path, _entries(path, declared), declared.profile),
                      declared.description, tuple(declared.paper_tables), declared.finetune_profile,
                      declared.dataset, declared.margins, declared.sequential)


def _entries(path: Path, declared: ExperimentFile) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for every paper-table row and every combination of the `runs` entries."""
    entries: list[tuple[str, dict[str, Any]]] = []
    for table in declared.paper_tables:
        for row in paper.rows(table, buildable=True):
            entries.append((f"paper_tables.{table}", {"model": row.model, "ratio": row.ratio,
                                                      "dw_size": row.dw_size, "width": row.width, **dict(row.knobs)}))
    total = 0
    for i, entry in enumerate(declared.runs):
        total += grid_size(entry)
        if total > MAX_RUNS:
            raise _fail(path, f"runs[{i}]", f"the grid would make {total:,} configurations by this entry (its axes: "
                                            f"{' x '.join(str(len(v)) for v in entry.values() if isinstance(v, list))}"
                                            f"); a plan holds at most {MAX_RUNS:,} runs")
        for key in entry:
            if key not in RUN_KEYS:
                raise _fail(path, f"runs[{i}].{key}", f"unknown field; valid: {', '.join(RUN_KEYS)}")
        entries += [(f"runs[{i}]", combo) for combo in _expand(entry)]
    return entries


def _configs(path: Path, entries: list[tuple[str, dict[str, Any]]], profile: str) -> tuple[dict[str, Any], ...]:
    """The distinct configurations of `entries`, each resolved through RunConfig, with its source
    chain and, for an equal-epochs control, the configuration whose epochs it matches."""
    configs: dict[tuple, dict[str, Any]] = {}
    for where, combo in entries:
        source = combo.pop("from", None)
        epochs_of = combo.pop("epochs_of", None)
        rc = _resolve(path, where, combo, profile)
        cfg = {"model": rc.model, "ratio": rc.ratio, "dw_size": rc.dw_size, "width": rc.width,
               "knobs": dict(rc.knobs)}
        source = _source(path, where, rc, source, profile)
        if source is not None:
            cfg["source"] = source
        if epochs_of is not None:
            if not isinstance(epochs_of, str):
                raise _fail(path, f"{where}.epochs_of", f"must name a model made from another run in this file, "
                                                        f"got {epochs_of!r}"[:200])
            if source is not None:
                raise _fail(path, f"{where}.epochs_of", f"{rc.model} starts from another run; an equal-epochs "
                                                        f"control trains from random weights")
            cfg["epochs_of"] = (where, epochs_of)
        # a model made from two sources is two configurations, and a control another than the plain run
        configs.setdefault((rc.key, repr(source), epochs_of), cfg)
    if not configs:
        raise _fail(path, "runs", "the experiment declares no runs")
    made = [c for c in configs.values() if c.get("source")]
    for cfg in configs.values():
        if "epochs_of" in cfg:
            where, name = cfg["epochs_of"]
            cfg["epochs_of"] = next((c for c in made if c["model"] == name), None)
            if cfg["epochs_of"] is None:
                raise _fail(path, f"{where}.epochs_of", f"{name!r} is not made from another run in this experiment; "
                                                        f"valid: {', '.join(sorted({c['model'] for c in made})) or 'none'}")
    return tuple(configs.values())


def _resolve(path: Path, where: str, combo: dict[str, Any], profile: str) -> RunConfig:
    """An entry through RunConfig, so that bad models and knobs fail before anything runs."""
    try:
        return RunConfig.create(combo["model"], combo.get("ratio"), combo.get("dw_size"), combo.get("width"),
                                profile, knobs={k: v for k, v in combo.items() if k not in ("model", *LEGACY)})
    except ConfigError as err:
        raise _fail(path, where, str(err)) from None
    except ValueError as err:
        raise _fail(path, f"{where}.model" if "model" in str(err) else where, str(err)) from None


MAX_CHAIN = 8  # runs made one from another in a row, at most (a nested `from:` deeper is a mistake)


def _source(path: Path, where: str, rc: RunConfig, given: Any, profile: str, depth: int = 1) -> dict[str, Any] | None:
    """The configuration a row starts from: its `from:` (a model name, or a mapping of model,
    knobs and its own `from:`), by default the baseline of a network derived from it (`init:
    pruned`); None for a run from random weights. Each link is checked against the model's
    declared derivation."""

    spec = MODELS[rc.model]
    if given is None:
        if not starts_from_baseline(rc.model, dict(rc.knobs)):
            return None
        given = spec.baseline
    elif dict(rc.knobs).get("init") == "scratch":
        raise _fail(path, f"{where}.from", f"{rc.model} with init: scratch trains from random weights; drop `from:`")
    if depth > MAX_CHAIN:
        raise _fail(path, f"{where}.from", f"a chain of more than {MAX_CHAIN} runs made one from another")
    entry = dict(given) if isinstance(given, dict) else {"model": given}
    nested = entry.pop("from", None)
    try:
        derivation(rc.model, entry.get("model"))
    except ValueError as err:
        raise _fail(path, f"{where}.from", str(err)) from None
    src = _resolve(path, f"{where}.from", entry, profile)
    cfg = {"model": src.model, "ratio": src.ratio, "dw_size": src.dw_size, "width": src.width, "knobs": dict(src.knobs)}
    if (deeper := _source(path, f"{where}.from", src, nested, profile, depth + 1)) is not None:
        cfg["source"] = deeper
    return cfg


def parse_shard(spec: str) -> tuple[int, int]:
    """'I/N' with 0 <= I < N."""
    try:
        index, count = (int(p) for p in spec.split("/"))
    except ValueError:
        raise ConfigError(f"bad shard {spec!r}: expected I/N with integers 0 <= I < N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"bad shard {spec!r}: expected I/N with integers 0 <= I < N, e.g. 0/4")
    return index, count


def parse_seeds(spec: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(spec).split(",") if s.strip() != ""]
    except ValueError:
        raise ConfigError(f"bad seeds {spec!r}: expected comma-separated integers >= 0, e.g. 0,1,2") from None
    if not seeds or any(s < 0 or s > MAX_SEED for s in seeds):
        raise ConfigError(f"bad seeds {spec[:80]!r}: expected comma-separated integers 0..{MAX_SEED}, e.g. 0,1,2")
    return list(dict.fromkeys(seeds))


def plan_runs(experiment: Experiment, seeds: list[int], profile: str | None = None,
              overrides: dict[str, Any] | None = None, shard: tuple[int, int] = (0, 1),
              data: str | None = None) -> list[RunConfig]:
    """The experiment's runs for these seeds on the data set with fingerprint `data`
    (`data.fingerprint`), deduplicated by run id, then this shard's share.

    Runs are ordered by configuration then seed, and shard I of N takes every N-th run from
    position I, so N processes with the same arguments cover the grid without overlap.
    """
    chosen = profile or experiment.profile
    if len(experiment.configs) * len(seeds) > MAX_RUNS:
        raise ConfigError(f"{len(experiment.configs)} configurations x {len(seeds)} seeds would make "
                          f"{len(experiment.configs) * len(seeds):,} runs; a plan holds at most {MAX_RUNS:,}")
    planned: dict[str, RunConfig] = {}

    def make(cfg: dict[str, Any], seed: int, recipe: str, source: str | None = None, **more: Any) -> RunConfig:
        return RunConfig.create(cfg["model"], cfg["ratio"], cfg["dw_size"], cfg["width"], recipe, seed,
                                knobs=cfg.get("knobs"), data=data, source=source, dataset=experiment.dataset,
                                **{**(overrides or {}), **more})

    def chain(cfg: dict[str, Any], seed: int) -> list[RunConfig]:
        """The runs of `cfg` and of its sources, the root first: the root under the plan's recipe,
        each run made from another under the fine-tuning recipe; an equal-epochs control under the
        plan's recipe for as many epochs as its model's chain trains in all."""
        if cfg.get("epochs_of"):
            return [make(cfg, seed, chosen, epochs=sum(rc.recipe.epochs for rc in chain(cfg["epochs_of"], seed)))]
        if not cfg.get("source"):
            return [make(cfg, seed, chosen)]
        sources = chain(cfg["source"], seed)
        return [*sources, make(cfg, seed, experiment.finetune_profile or chosen, sources[-1].run_id)]

    # every run after its source: by depth (runs from scratch first), then configuration and seed
    runs = [(depth, rc) for cfg in experiment.configs for seed in seeds for depth, rc in enumerate(chain(cfg, seed))]
    for _, rc in sorted(runs, key=lambda pair: pair[0]):
        planned.setdefault(rc.run_id, rc)
    index, count = shard
    return [rc for i, rc in enumerate(planned.values()) if i % count == index]


def run_state(run_dir: Path) -> str:
    """new (nothing yet), partial (started, not finished), done, diverged or damaged (unreadable record)."""
    try:
        record = read_record(run_dir)
    except DamagedRecord:
        return "damaged"
    if record is None:
        return "partial" if (run_dir / "last.ckpt").exists() else "new"
    status = record.get("status")
    if status == "finished":
        return "done"
    if status == "diverged":
        return "diverged"
    return "partial"


def source_ready(run_dir: Path) -> bool:
    """Whether a pruned run can start from this run: finished, with its final checkpoint."""
    return run_state(run_dir) == "done" and (run_dir / "last.ckpt").is_file()


def epochs_done(run_dir: Path) -> int:
    """Finished epochs of a run by its record (0 without a readable one)."""
    try:
        record = read_record(run_dir) or {}
    except DamagedRecord:
        return 0
    done = record.get("epochs_done", 0)
    return done if isinstance(done, int) else 0


def estimate_runs(runs: list[RunConfig], runs_dir: Path, device: str, data_sizes: tuple[int, int],
                  progress: bool | None = None, recalibrate: bool = False, world: int = 1,
                  step_time: float | None = None, accumulate: int = 1) -> list[RunEstimate]:
    """Per run: calibrated epoch seconds and the epochs it has left (none once done), on `world`
    devices; `step_time` (seconds per global batch, the user's) replaces the calibration.

    Each distinct configuration is calibrated once (`recalibrate`: measured again, not taken
    from the cache), with progress shown when anything is measured; a calibration far off its
    model's other configurations (`estimate.outliers`) is measured once more."""

    def done(rc: RunConfig) -> int:
        return rc.recipe.epochs if run_state(runs_dir / rc.run_id) == "done" else epochs_done(runs_dir / rc.run_id)

    if step_time is not None:
        return [estimate_run(rc, Calibration.given(step_time, rc.recipe.batch_size), done(rc), data_sizes, world)
                for rc in runs]
    keys = [json.dumps(calibration_key(rc, device, world, accumulate), default=str) for rc in runs]
    distinct = list(dict(zip(keys, runs)).items())
    at = {"world": world, "accumulate": accumulate}
    pending = recalibrate or any(estimate.calibrate(rc, device, measure=False, **at)[0] is None
                                 for _, rc in distinct)
    cals = {key: estimate.calibrate(rc, device, force=recalibrate, **at)[0] for key, rc in
            track(distinct, "calibrating", "config", show=pending if progress is None else progress,
                  label=lambda item: item[1].run_id)}
    suspects = outliers([(rc, cals[key], config_cost(*rc.key).flops) for key, rc in distinct])
    for key, rc in distinct:
        if rc in suspects:
            log.warning("calibration of %s is far off its neighbours (%.2f s per step); measuring it again",
                        rc.run_id, cals[key].step_s)
            cals[key] = estimate.calibrate(rc, device, force=True, **at)[0]
    return [estimate_run(rc, cals[key], done(rc), data_sizes, world) for rc, key in zip(runs, keys)]


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


def summary_frame(runs_dir: Path) -> pd.DataFrame:
    """One row per run record, flattened: the table view of results/runs. A damaged record is
    listed with status `damaged` and the file and reason in `error`."""
    damaged: list[DamagedRecord] = []
    rows = [flatten_record(rec) for rec in read_records(runs_dir, damaged)]
    rows += [{"run_id": err.path.parent.name, "status": "damaged", "error": str(err)} for err in damaged]
    rows.sort(key=lambda r: r["run_id"])
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    ints = [k for k in OTHER_KNOBS if KNOBS[k].type is int]
    for col in ("ratio", "dw_size", *ints, "seed", "epochs_done", "epochs", "params", "flops", "best_epoch"):
        frame[col] = frame[col].astype("Int64")
    return frame


def write_summary(results_dir: Path) -> Path:
    """Rebuild results/summary.csv from the run records (atomically: shards may race)."""
    path = Path(results_dir) / "summary.csv"
    with storage_guard(path):
        write_atomic(path, summary_frame(Path(results_dir) / "runs").to_csv(index=False))
    return path


@dataclass
class SweepOutcome:
    done: list[str]
    skipped: list[str]
    failed: list[str]
    busy: list[str]  # held by another process right now
    waiting: list[str] = dataclasses.field(default_factory=list)  # their source run is not finished yet
    diverged: list[str] = dataclasses.field(default_factory=list)  # recorded as diverged (now or before)


class EtaLogger(L.Callback):
    """One log line per finished epoch: the run's progress, and the run's and the sweep's ETA.

    The ETA starts from the calibrated estimates and is refined by the epoch times measured
    so far: later runs' estimates are scaled by measured / calibrated of this run.
    """

    def __init__(self, label: str, estimate: RunEstimate | None, later: list[RunEstimate]) -> None:
        self.label, self.estimate, self.later = label, estimate, later
        self.epochs_at_start, self.clock = 0, time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epochs_at_start = trainer.current_epoch  # > 0 when resuming
        self.clock = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info(self.line(trainer.current_epoch + 1, trainer.max_epochs, time.perf_counter()))

    def line(self, epoch: int, epochs: int, now: float) -> str:
        ran = max(epoch - self.epochs_at_start, 1)
        per_epoch = (now - self.clock) / ran
        run_left = per_epoch * (epochs - epoch) / 3600
        scale = per_epoch / self.estimate.epoch_s if self.estimate and self.estimate.epoch_s > 0 else 1.0
        sweep_left = run_left + scale * sum(e.hours_left for e in self.later)
        run = (f"run finished in {format_hours((now - self.clock) / 3600)}" if epoch >= epochs else
               f"run done in {format_hours(run_left)}")
        return (f"{self.label}: epoch {epoch}/{epochs} ({per_epoch:.0f} s/epoch); {run}, "
                f"sweep in {format_hours(sweep_left)}")


def claim_run(rc: RunConfig, runs_dir: Path, lock: FileLock, retry_failed: bool) -> str:
    """What this process does with `rc` (rank 0 decides it for every rank): `done`, `diverged`,
    `waiting` (its source run is not ready), `busy` (another process holds it), or, with its
    lock taken, `resume` (partial) or `start` (new, or a damaged record set aside)."""
    run_dir = runs_dir / rc.run_id
    state = run_state(run_dir)
    if state == "done" or (state == "diverged" and not retry_failed):
        return state
    if rc.source and not source_ready(runs_dir / rc.source):
        return "waiting"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        return "busy"
    except OSError as err:
        raise (storage_error(run_dir, err) or err) from None
    state = run_state(run_dir)  # again, under the lock
    if state == "done":  # finished by another process since we looked
        lock.release()
        return "done"
    if state == "damaged":
        aside = set_aside(run_dir / RESULT_FILE)
        log.warning("%s: damaged record moved to %s; training the run again", rc.run_id, aside.name)
    return "resume" if state == "partial" else "start"


def run_sweep(runs: list[RunConfig], data_dir: str | Path, results_dir: str | Path, *, devices: int = 1,
              accelerator: str = "auto", download: bool = True, retry_failed: bool = False,
              progress: bool | None = None, estimates: list[RunEstimate] | None = None, nodes: int = 1,
              logger: str = "csv", accumulate: int = 1) -> SweepOutcome:
    """Run each planned run unless done; record failures and go on.

    Under DDP, rank 0 decides each run's fate (`claim_run`, under the run's lock) and every
    rank follows it, so all ranks train the same run or skip it together. A damaged record is
    set aside and its run trained again (from its checkpoint where one loads). A full disk or
    read-only folder (StorageError) or bad data stops the sweep at once: every later run would
    fail the same way.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException  # lazy: loaded only on the path that needs it

    ranks = distributed.current()
    runs_dir = Path(results_dir) / "runs"
    outcome = SweepOutcome([], [], [], [])
    preemption.install()
    for i, rc in enumerate(runs, 1):
        if ranks.any(preemption.requested()):  # signalled between runs: nothing to save
            stop_for_requeue(ranks, saved=False)
        run_dir = runs_dir / rc.run_id
        lock = FileLock(str(run_dir / ".lock"))
        verdict = ranks.decide(lambda: claim_run(rc, runs_dir, lock, retry_failed))
        if verdict in ("done", "diverged", "waiting", "busy"):
            {"done": outcome.skipped, "diverged": outcome.diverged, "waiting": outcome.waiting,
             "busy": outcome.busy}[verdict].append(rc.run_id)
            if ranks.is_zero:
                log_skipped(f"[{i}/{len(runs)}] {rc.run_id}", rc, verdict, runs_dir)
            continue
        try:
            if ranks.is_zero:
                log.info("[%d/%d] %s: %s", i, len(runs), rc.run_id, "resuming" if verdict == "resume" else "starting")
            eta = EtaLogger(f"[{i}/{len(runs)}] {rc.run_id}", estimates[i - 1] if estimates else None,
                            estimates[i:] if estimates else [])
            record = train_run(rc, data_dir, run_dir, devices=devices, accelerator=accelerator,
                               download=download, progress=progress, callbacks=[eta], nodes=nodes, logger=logger,
                               accumulate=accumulate)
            (outcome.done if record["status"] == "finished" else outcome.failed).append(rc.run_id)
        except Diverged as err:
            outcome.diverged.append(rc.run_id)
            log.warning("[%d/%d] %s: diverged (%s)", i, len(runs), rc.run_id, err)
        except preemption.Preempted as err:
            log.warning("[%d/%d] %s: %s, %s", i, len(runs), rc.run_id,
                        "pre-empted" if err.requeue else "stopped by SIGTERM", err)
            stop_for_requeue(ranks, saved=True)
        except UserError:  # bad data, config or storage: the same for every run, so stop here
            raise
        except SIGTERMException:
            log.warning("[%d/%d] %s: stopped by SIGTERM; its last checkpoint is kept, run the same command "
                        "to resume", i, len(runs), rc.run_id)
            raise SystemExit(128 + signal.SIGTERM) from None
        except Exception as err:  # the record says failed; the sweep goes on
            outcome.failed.append(rc.run_id)
            log.error("[%d/%d] %s failed: %s\n%s", i, len(runs), rc.run_id, err, traceback.format_exc())
        finally:
            if lock.is_locked:
                lock.release()
                _refresh_summary(results_dir)
    if ranks.is_zero and not (outcome.done or outcome.failed or outcome.diverged):  # still rebuild a lost summary
        _refresh_summary(results_dir)
    if ranks.any(preemption.requested()) and ranks.is_zero:  # e.g. during the last run's last validation
        log.warning("a signal came after the plan's last run had finished: nothing to save or requeue")
    return outcome


def log_skipped(where: str, rc: RunConfig, verdict: str, runs_dir: Path) -> None:
    """Why a planned run is not trained now: done, diverged, held by another process, or waiting for
    its source run (and what to do about that)."""
    if verdict != "waiting":
        log.info("%s: %s, skipped", where, "another process holds it" if verdict == "busy" else verdict)
        return
    ready = run_state(runs_dir / rc.source) == "done"
    why = ("finished, but its checkpoint is not on this machine (checkpoints are not committed): train "
           "it again in another --results-dir, or put its last.ckpt back" if ready else
           "not finished (another shard's, or failed); run the sweep again once it is")
    log.warning("%s: waits for its source run %s: %s", where, rc.source, why)


def stop_for_requeue(ranks: Any, saved: bool) -> None:
    """After a pre-emption warning: rank 0 requeues the job, every rank exits (the requeued job
    resumes the plan). After SIGTERM (scancel, a time limit): every rank exits, nothing requeued;
    the same command resumes the plan (from the saved step, where a run was in progress)."""

    if not ranks.any(preemption.wants_requeue()):
        if ranks.is_zero:
            log.warning("stopped by SIGTERM%s; run the same command to resume",
                        ", the run saved at its last step" if saved else " between runs, nothing to save")
        raise SystemExit(preemption.EXIT_TERMINATED)
    if ranks.is_zero:
        preemption.requeue(saved)
    raise SystemExit(preemption.EXIT_REQUEUED)


def _refresh_summary(results_dir: str | Path) -> None:
    try:
        write_summary(Path(results_dir))
    except StorageError as err:
        log.warning("warning: %s", err)

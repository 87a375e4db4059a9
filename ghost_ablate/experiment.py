"""Experiment file -> grid of runs.

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

`load_experiment` reads and checks a file; `plan_runs` expands it into the runs of some seeds
(one shard's share), which `sweep.run_sweep` trains.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from . import paper
from .config import ConfigError, RunConfig, load_profile
from .data import DataError, get_dataset
from .formats import FormatError, load_yaml
from .models import KNOBS, LEGACY, MODELS
from .models.registry import derivation, starts_from_baseline

EXPERIMENT_KEYS = ("description", "dataset", "profile", "finetune_profile", "paper_tables", "margins", "sequential",
                   "runs")
# any declared knob can be a field, and a list, of a runs entry; `epochs_of: MODEL` makes a run from random
# weights train as many epochs in all as MODEL's chain (its source's and its own): the equal-epochs control
RUN_KEYS = ("model", "from", "epochs_of", *KNOBS)


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
    return shard_of(list(planned.values()), shard)


def shard_of(runs: list[RunConfig], shard: tuple[int, int]) -> list[RunConfig]:
    """Shard I of N's runs: every N-th from position I."""
    index, count = shard
    return [rc for i, rc in enumerate(runs) if i % count == index]

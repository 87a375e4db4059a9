"""The run record's schema, declared once (pydantic, strict): every field a reader uses, with its
type and range, and the readers of records. `read_record` validates every record through it
(and checks that its folder, run id and config agree), so a record from
someone else's results folder is either a well-formed run or "damaged: <field>: <why>", never
a traceback and never a row. Fields not declared here are kept as they are (older and newer
records carry extra detail) but nothing reads them for a table. A run's state (`run_state`) and
the results folder's `summary.csv` (`write_summary`) are read from the records here too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from .config import ConfigError, RunConfig
from .data import DATASETS
from .models import KNOBS, LEGACY, MODELS
from .formats import FormatError, UnsafeFile, parse_json, read_bounded
from .records import RESULT_FILE, DamagedRecord, flatten_record, storage_guard, unpack_outcomes, write_atomic

STATUSES = ("running", "finished", "interrupted", "failed", "diverged")
MAX_SEED = 2 ** 32 - 1  # what numpy/torch seeding takes
MAX_EPOCHS = 100_000
MAX_CLASSES = 10_000

OTHER_KNOBS = tuple(k for k in KNOBS if k not in LEGACY)
SUMMARY_COLUMNS = ("run_id", "model", *LEGACY, *OTHER_KNOBS, "profile", "seed", "status", "epochs_done",
                   "epochs", "params", "flops", "final_test_acc", "best_test_acc", "best_epoch",
                   "train_images_per_s", "wall_time_s", "device", "precision", "error")  # summary.csv's columns

Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
# a name that becomes part of a folder or file name: no separator, no "..", no leading dot
PlainName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)]
Text = Annotated[str, StringConstraints(max_length=500)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class EpochEntry(_Strict):
    epoch: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
    test_acc: Fraction | None = None
    test_acc5: Fraction | None = None
    test_loss: NonNegative | None = None
    train_acc: Fraction | None = None
    train_loss: NonNegative | None = None
    lr: NonNegative | None = None
    train_images: Count | None = None
    train_time_s: NonNegative | None = None
    load_1m: NonNegative | None = None  # the machine's load average when the epoch ended
    threads: Annotated[int, Field(ge=1)] | None = None  # the threads training used


class DataEntry(_Strict):
    dir: Text | None = None
    fingerprint: PlainName | None = None
    train_size: Count | None = None
    test_size: Count | None = None


class ConfigEntry(_Strict):
    model: PlainName
    profile: PlainName
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]
    dataset: PlainName = "cifar10"
    ratio: int | None = None  # ranges: the knob declarations (models.KNOBS), checked by RunConfig.from_dict
    dw_size: int | None = None
    width: Finite | None = None
    recipe: dict[str, Any]
    knobs: dict[str, Any] | None = None
    data: PlainName | None = None
    source: PlainName | None = None

    @field_validator("model", "dataset")
    @classmethod
    def _declared(cls, name: str, info: Any) -> str:
        """A registered model, a declared data set: anything else is not one of our runs."""

        known = MODELS if info.field_name == "model" else DATASETS
        if name not in known:
            raise ValueError(f"unknown {info.field_name.replace('dataset', 'data set')} {name[:60]!r} "
                             f"(not declared here)")
        return name


class RunRecord(_Strict):
    run_id: PlainName
    config: ConfigEntry
    status: Literal[STATUSES]  # type: ignore[valid-type]
    params: Count | None = None
    flops: Count | None = None
    final_test_acc: Fraction | None = None
    final_test_acc5: Fraction | None = None
    best_test_acc: Fraction | None = None
    best_epoch: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] | None = None
    epochs_done: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] | None = None
    train_images_per_s: NonNegative | None = None
    train_time_s: NonNegative | None = None
    wall_time_s: NonNegative | None = None
    device: Annotated[str, StringConstraints(max_length=200)] | None = None
    error: Annotated[str, StringConstraints(max_length=20_000)] | None = None
    history: Annotated[list[EpochEntry], Field(max_length=MAX_EPOCHS)] = []
    test_confusion: list[list[Count]] | None = None
    data: DataEntry | None = None
    versions: dict[str, Annotated[str, StringConstraints(max_length=100)]] | None = None
    precision: dict[str, Any] | None = None
    source: dict[str, Any] | None = None
    # the last test pass image by image (records.pack_outcomes); records before it have none
    test_correct: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,7}:[0-9a-f]*$", max_length=300_000)] | None = None

    @field_validator("test_correct")
    @classmethod
    def _outcomes(cls, packed: str | None) -> str | None:
        if packed is not None:
            unpack_outcomes(packed)  # ValueError: the count and the digits disagree
        return packed

    @field_validator("test_confusion")
    @classmethod
    def _square(cls, matrix: list[list[int]] | None) -> list[list[int]] | None:
        if matrix is not None and (len(matrix) > MAX_CLASSES or any(len(row) != len(matrix) for row in matrix)):
            raise ValueError(f"must be a square matrix of at most {MAX_CLASSES} classes")
        return matrix


def record_problem(record: Any) -> str | None:
    """"<field>: <why>" for the first thing wrong with a parsed record, or None if it is a run record."""
    if not isinstance(record, dict):
        return "not a JSON object"
    try:
        RunRecord.model_validate(record)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        if first["type"] == "string_pattern_mismatch":
            return f"{where}: {str(first['input'])[:80]!r} is not a plain name (letters, digits, '_', '.', '-')"
        return f"{where}: {first['msg'].splitlines()[0]}"
    return None


def identity_problem(record: dict[str, Any], folder: str | None) -> str | None:
    """"mislabelled: ..." unless the folder name (None: a folder the user named, not checked), the
    record's run id and the id recomputed from its config all agree (a copied or edited record
    otherwise counts as another run)."""

    try:
        recomputed = RunConfig.from_dict(record["config"]).run_id
    except ConfigError as err:
        return f"config: {err}"
    if not (folder or record["run_id"]) == record["run_id"] == recomputed:
        return (f"mislabelled: folder {folder!r}, run_id {record['run_id']!r} and the id of its config "
                f"{recomputed!r} disagree")
    return None


def read_record(run_dir: Path, root: Path | None = None, named_by_id: bool = True) -> dict[str, Any] | None:
    """The run's record, or None if it has none (never started, or killed before the first write).
    `root`: the folder it must lie in (default: the run folder's parent); `named_by_id`: the folder
    is a results folder's `runs/<run id>` (False for a folder `train --out` was given).

    Raises DamagedRecord, naming the file, if it is not a regular file inside `root`, cannot be
    parsed, breaks the schema, or is mislabelled.
    """
    run_dir = Path(run_dir)
    path = run_dir / RESULT_FILE
    if run_dir.is_symlink():
        raise DamagedRecord(path, "refused: the run folder is a symbolic link")
    try:
        data = read_bounded(path, root or run_dir.parent)
        if data is None:
            return None
        record = parse_json(data, path)
    except (UnsafeFile, FormatError) as err:
        raise DamagedRecord(path, str(err).split(": ", 1)[1]) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DamagedRecord(path, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    problem = record_problem(record) or identity_problem(record, run_dir.name if named_by_id else None)
    if problem:
        raise DamagedRecord(path, problem)
    return record


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


def epochs_done(run_dir: Path, planned: int) -> int:
    """Finished epochs of a run by its record: all `planned` once it is finished, 0 without a
    readable record."""
    try:
        record = read_record(run_dir) or {}
    except DamagedRecord:
        return 0
    if record.get("status") == "finished":
        return planned
    done = record.get("epochs_done", 0)
    return done if isinstance(done, int) else 0


def read_records(runs_dir: Path, damaged: list[DamagedRecord] | None = None) -> list[dict[str, Any]]:
    """All readable records under `runs_dir/<run_id>/result.json`, sorted by run id. Damaged,
    mislabelled and copied ones (the same training outcome under another seed's id) are left
    out, and appended to `damaged` when a list is given."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    records, seen = [], {}
    for d in sorted(runs_dir.iterdir()):
        if not d.is_dir() and not d.is_symlink():
            continue
        try:
            record = read_record(d, runs_dir)
        except DamagedRecord as err:
            if damaged is not None:
                damaged.append(err)
            continue
        if record is not None:
            outcome = _outcome(record)
            if outcome is not None and outcome in seen:
                if damaged is not None:
                    damaged.append(DamagedRecord(d / RESULT_FILE, f"a copy of {seen[outcome]}'s outcome under "
                                                                  f"another id"))
                continue
            if outcome is not None:
                seen[outcome] = record["run_id"]
            records.append(record)
    return records


def _outcome(record: dict[str, Any]) -> str | None:
    """What a finished run measured, per epoch: two runs that differ in seed never match it exactly."""
    if record.get("status") != "finished" or not record.get("history"):
        return None
    return json.dumps([record.get("history"), record.get("test_confusion")], sort_keys=True)


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
    path, text = Path(results_dir) / "summary.csv", summary_frame(Path(results_dir) / "runs").to_csv(index=False)
    with storage_guard(path):
        write_atomic(path, text)
    return path

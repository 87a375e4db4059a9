"""The run record's schema, declared once (pydantic, strict): every field a reader uses, with its
type and range. `records.read_record` validates every record through it, so a record from
someone else's results folder is either a well-formed run or "damaged: <field>: <why>", never
a traceback and never a row. Fields not declared here are kept as they are (older and newer
records carry extra detail) but nothing reads them for a table.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

STATUSES = ("running", "finished", "interrupted", "failed", "diverged")
MAX_SEED = 2 ** 32 - 1  # what numpy/torch seeding takes
MAX_EPOCHS = 100_000
MAX_CLASSES = 10_000

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

    @field_validator("model")
    @classmethod
    def _registered(cls, model: str) -> str:
        from .models import MODELS

        if model not in MODELS:
            raise ValueError(f"unknown model {model[:60]!r} (not in the registry)")
        return model

    @field_validator("dataset")
    @classmethod
    def _declared(cls, dataset: str) -> str:
        from .data import DATASETS

        if dataset not in DATASETS:
            raise ValueError(f"unknown data set {dataset[:60]!r}; valid: {', '.join(DATASETS)}")
        return dataset


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

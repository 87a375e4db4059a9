"""Result records: one `result.json` per run, written atomically, read back for reports.

A record is the source of truth for a run; anything tabular (summary.csv, reports) is
rebuilt from the records.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import UserError

RESULT_FILE = "result.json"
PLAN_FILE = "seed_plan.json"  # written beside a sweep's runs by `sweep --seeds auto`; the report cites it
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# A failed write for one of these reasons would fail the same way for every later run.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM}


class DamagedRecord(UserError):
    """A result.json that cannot be read or misses required fields."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: damaged record ({reason})")
        self.path, self.reason = path, reason


class StorageError(UserError):
    """A write failed because the disk is full or the folder is not writable."""


def storage_error(path: Path, err: OSError) -> StorageError | None:
    """The one-line StorageError for a full disk or a read-only folder; None for other OS errors."""
    if err.errno not in STORAGE_ERRNOS:
        return None
    return StorageError(f"cannot write {path}: {err.strerror or err} "
                        f"(free space, or make the results folder writable, then run the same command again)")


@contextmanager
def storage_guard(path: Path, cleanup: Path | None = None) -> Iterator[None]:
    """Turn a full-disk or read-only OSError raised inside into the one-line StorageError for
    `path` (other OS errors pass unchanged); `cleanup` is a temp file removed on any OSError."""
    try:
        yield
    except OSError as err:
        if cleanup is not None:
            cleanup.unlink(missing_ok=True)
        raise (storage_error(path, err) or err) from None


def set_aside(path: Path, why: str = "damaged") -> Path:
    """Rename `path` to `<name>.<why>-<UTC time>` beside it (never deleted) and return the new path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    os.replace(path, target)
    return target


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write the run's record atomically; a full disk or read-only folder raises StorageError."""
    path = Path(run_dir) / RESULT_FILE
    with storage_guard(path):
        write_json_atomic(path, record)


def pack_outcomes(correct: Iterable[bool]) -> str:
    """A test pass image by image, as a record keeps it: "<count>:<hex of the bits, first image in
    the highest bit>" (1,017 images: 257 characters)."""
    bits = [bool(c) for c in correct]
    value = int("".join("1" if b else "0" for b in bits) or "0", 2)
    return f"{len(bits)}:{value:0{(len(bits) + 3) // 4}x}"


def unpack_outcomes(packed: str) -> list[bool]:
    """The per-image outcomes `pack_outcomes` wrote; ValueError if `packed` is not such a string."""
    count, _, digits = packed.partition(":")
    n = int(count)
    if n < 0 or len(digits) != (n + 3) // 4:
        raise ValueError(f"{n} outcomes do not fit {len(digits)} hex digits")
    value = int(digits, 16) if digits else 0
    if value >> n:
        raise ValueError("more bits than outcomes")
    return [bool(value >> (n - 1 - i) & 1) for i in range(n)]


def plain_name(text: str, longest: int = 200) -> bool:
    """Letters, digits, '_', '.', '-' (no '..', no separator): safe as one folder name, never a path."""
    return len(text) <= longest and bool(NAME.fullmatch(text)) and ".." not in text


def flatten_record(rec: dict[str, Any]) -> dict[str, Any]:
    """One table row of a record: its top-level fields plus model knobs, profile, seed,
    epochs and data-set figures lifted out of the nested config and data entries."""
    from .models import LEGACY, knob_values  # lazy: read by the command line's start-up, which loads no torch

    cfg, data = rec.get("config", {}), rec.get("data", {})
    knobs = knob_values(cfg.get("model"), cfg)
    return {**{k: v for k, v in rec.items() if k not in ("config", "data")},
            "model": cfg.get("model"), **{k: cfg.get(k) for k in LEGACY},
            **{k: v for k, v in knobs.items() if k not in LEGACY},
            "knobs": cfg.get("knobs") or {}, **{k: cfg.get(k) for k in ("profile", "seed")},
            "dataset": cfg.get("dataset", "cifar10"),
            "epochs": cfg.get("recipe", {}).get("epochs"),
            "image_size": cfg.get("recipe", {}).get("image_size"),  # None: the data set's own input size
            "limit_train_batches": cfg.get("recipe", {}).get("limit_train_batches"), "train_size": data.get("train_size"),
            "test_size": data.get("test_size"), "data_dir": data.get("dir"), "data_fingerprint": cfg.get("data"),
            "precision": (rec.get("precision") or {}).get("resolved"), "stack": stack_label(rec)}


def stack_label(rec: dict[str, Any]) -> str:
    """The machine and software a record was trained on, "DEVICE / torch VERSION": two runs are
    one comparison's pair only where this matches (another CPU or torch changes the numbers)."""
    torch_version = (rec.get("versions") or {}).get("torch") or "unrecorded"
    return f"{rec.get('device') or 'unrecorded device'} / torch {torch_version}"


def missing(v: Any) -> bool:
    """None, NaN or pandas' NA: a value a table left blank."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ == "NAType"


def config_key(model: str, ratio: Any, dw_size: Any, width: Any, knobs: Any = None) -> tuple:
    """(model, s, d, width, other knobs) with blanks as None and numbers normalised, however a table
    stored them; `knobs` is a record's `knobs` mapping (non-default knobs), normalised to `RunConfig.knobs`."""
    from .models import extras  # lazy: read by the command line's start-up, which loads no torch

    def num(v: Any, kind: type) -> Any:
        return None if missing(v) else kind(v)

    other = extras(dict(knobs)) if isinstance(knobs, (dict, tuple, list)) and knobs else ()
    return (model, num(ratio, int), num(dw_size, int), num(width, float), other)


def row_key(row: Any) -> tuple:
    """`config_key` of a flattened record (a summary or report row)."""
    return config_key(row["model"], row["ratio"], row["dw_size"], row["width"], row.get("knobs"))

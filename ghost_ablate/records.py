"""Result records: one `result.json` per run, written atomically, read back for reports.

A record is the source of truth for a run; anything tabular (summary.csv, reports) is
rebuilt from the records.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


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
    write_json_atomic(Path(run_dir) / RESULT_FILE, record)


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's record, or None if it has none (never started, or killed before the first write)."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def read_records(runs_dir: Path) -> list[dict[str, Any]]:
    """All records under `runs_dir/<run_id>/result.json`, sorted by run id."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = (read_record(d) for d in sorted(runs_dir.iterdir()) if d.is_dir())
    return [r for r in found if r is not None]


def flatten_record(rec: dict[str, Any]) -> dict[str, Any]:
    """One table row of a record: its top-level fields plus model knobs, profile, seed,
    epochs and data-set figures lifted out of the nested config and data entries."""
    cfg, data = rec.get("config", {}), rec.get("data", {})
    return {**{k: v for k, v in rec.items() if k not in ("config", "data")},
            **{k: cfg.get(k) for k in ("model", "ratio", "dw_size", "width", "profile", "seed")},
            "epochs": cfg.get("recipe", {}).get("epochs"), "train_size": data.get("train_size"),
            "test_size": data.get("test_size"), "data_dir": data.get("dir")}


def missing(v: Any) -> bool:
    """None, NaN or pandas' NA: a value a table left blank."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ == "NAType"


def config_key(model: str, ratio: Any, dw_size: Any, width: Any) -> tuple:
    """(model, s, d, width) with blanks as None and numbers normalised, however a table stored them."""
    def num(v: Any, kind: type) -> Any:
        return None if missing(v) else kind(v)

    return (model, num(ratio, int), num(dw_size, int), num(width, float))

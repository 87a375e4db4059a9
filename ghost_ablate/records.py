"""Result records: one `result.json` per run, written atomically, read back for reports.

A record is the source of truth for a run; anything tabular (summary.csv, reports) is
rebuilt from the records.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
STATUSES = ("running", "finished", "diverged", "failed", "interrupted")


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

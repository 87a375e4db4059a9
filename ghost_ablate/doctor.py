"""`ghost-ablate doctor`: what in a results folder is damaged, stale or orphaned, and with
`--fix` the broken files moved aside (renamed beside themselves, never deleted).

- damaged: a result.json that cannot be read or misses required fields; a checkpoint
  whose zip archive fails its CRC check (truncated, zero bytes, overwritten).
- stale: a run recorded as `running` (or with a checkpoint but no record) whose lock no
  live process holds: it was killed. A sweep resumes it; nothing to move.
- orphaned: temporary files a killed write left behind.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from .records import DamagedRecord, read_record, set_aside

CHECKPOINTS = ("last.ckpt", "previous.ckpt")


@dataclass(frozen=True)
class Finding:
    kind: str  # damaged, stale or orphaned
    path: Path
    reason: str

    @property
    def movable(self) -> bool:
        return self.kind in ("damaged", "orphaned")


def checkpoint_is_intact(path: Path) -> str | None:
    """None if the checkpoint's zip archive reads back with correct CRCs, else why not."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"not a readable checkpoint ({type(err).__name__})"
    return None if bad is None else f"CRC error in {bad}"


def lock_is_held(run_dir: Path) -> bool:
    lock = FileLock(str(run_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def examine_run(run_dir: Path) -> list[Finding]:
    findings = []
    record = None
    try:
        record = read_record(run_dir)
    except DamagedRecord as err:
        findings.append(Finding("damaged", err.path, err.reason))
    for name in CHECKPOINTS:
        path = run_dir / name
        if path.exists():
            problem = checkpoint_is_intact(path)
            if problem:
                findings.append(Finding("damaged", path, problem))
    for tmp in sorted(run_dir.glob(".*.tmp")):
        findings.append(Finding("orphaned", tmp, "left by an interrupted write"))
    unfinished = (record is not None and record.get("status") == "running") or (
        record is None and not findings and (run_dir / CHECKPOINTS[0]).exists())
    if unfinished and not lock_is_held(run_dir):
        findings.append(Finding("stale", run_dir, "recorded as running but no live process holds it; "
                                                  "a sweep resumes it"))
    return findings


def examine(results_dir: Path) -> list[Finding]:
    """Every finding under results_dir/runs/*/ (read only)."""
    runs_dir = Path(results_dir) / "runs"
    if not runs_dir.is_dir():
        return []
    return [f for d in sorted(runs_dir.iterdir()) if d.is_dir() for f in examine_run(d)]


def fix(findings: list[Finding]) -> list[tuple[Finding, Path]]:
    """Move every damaged or orphaned file aside; return (finding, new path) pairs."""
    return [(f, set_aside(f.path, f.kind)) for f in findings if f.movable and f.path.exists()]

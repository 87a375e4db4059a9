"""`ghost-ablate doctor`: what in a results folder is damaged, unsafe, stale or orphaned, and
with `--fix` the broken files moved aside (renamed beside themselves, never deleted).

- damaged: a result.json that cannot be read or misses required fields; a checkpoint
  whose archive is broken (truncated, zero bytes, CRC error).
- unsafe: a checkpoint that holds more than tensors and plain values, so it would not load
  under `weights_only=True` (`checkpoints.safe_load`); it is never unpickled to find out.
- unreadable: a checkpoint this environment cannot read (I/O error, a torch too old); not
  the file's fault, so never moved.
- stale: a run recorded as `running` (or with a checkpoint but no record) whose lock no
  live process holds: it was killed. A sweep resumes it; nothing to move.
- orphaned: temporary files a killed write left behind.
- no data: a record from before runs were identified by their data; `--assign-data DIR`
  names the data set they were trained on (see `assign_data`).

`--retrain RUN_ID ...` sets a finished run aside on purpose (its record and checkpoints,
renamed beside themselves), so the next sweep trains it again: for a run whose pair ran on
another machine, say. Nothing is deleted; the old record stays readable under its new name.

`--fix` takes each run's lock before touching its files, so the in-flight temp checkpoint of
a live run is left alone.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from .checkpoints import (
    CheckpointUnreadable,
    DamagedCheckpoint,
    UnsafeCheckpoint,
    safe_load,
)
from .config import RunConfig
from .data import DEFAULT, DataError, get_dataset
from .errors import UserError
from .record_schema import read_record
from .records import RESULT_FILE, DamagedRecord, plain_name, set_aside, write_record

CHECKPOINTS = ("last.ckpt", "previous.ckpt")
MOVABLE = ("damaged", "unsafe", "orphaned")


@dataclass(frozen=True)
class Finding:
    kind: str  # damaged, unsafe, unreadable, stale, orphaned or no data
    path: Path
    reason: str

    @property
    def movable(self) -> bool:
        return self.kind in MOVABLE


@contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """Hold the run's lock (the one a sweep holds while training it) for the block; yields False,
    holding nothing, when a live process has it."""
    lock = FileLock(str(run_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def lock_is_held(run_dir: Path) -> bool:
    with run_lock(run_dir) as free:
        return not free


def checkpoint_finding(path: Path) -> Finding | None:
    """Loads the checkpoint the safe way; a Finding if that fails."""
    try:
        safe_load(path, inside=path.parent)
    except UnsafeCheckpoint as err:
        return Finding("unsafe", path, str(err).removeprefix(f"{path}: "))
    except DamagedCheckpoint as err:
        return Finding("damaged", path, str(err).removeprefix(f"{path}: "))
    except CheckpointUnreadable as err:
        return Finding("unreadable", path, str(err).removeprefix(f"{path}: "))
    return None


def examine_run(run_dir: Path) -> list[Finding]:
    findings = []
    record = None
    try:
        record = read_record(run_dir)
    except DamagedRecord as err:
        findings.append(Finding("damaged", err.path, err.reason))
    for name in CHECKPOINTS:
        path = run_dir / name
        if path.exists() or path.is_symlink():
            found = checkpoint_finding(path)
            if found:
                findings.append(found)
    for tmp in sorted(run_dir.glob(".*.tmp")):
        findings.append(Finding("orphaned", tmp, "left by an interrupted write"))
    if record is not None and "data" not in record.get("config", {}):
        findings.append(Finding("no data", run_dir / RESULT_FILE, "written before runs were identified by their "
                                "data; `doctor --assign-data DIR` names the data set it was trained on"))
    unfinished = (record is not None and record.get("status") == "running") or (
        record is None and not findings and (run_dir / CHECKPOINTS[0]).exists())
    if unfinished and not lock_is_held(run_dir):
        findings.append(Finding("stale", run_dir, "recorded as running but no live process holds it; "
                                                  "a sweep resumes it"))
    return findings


def run_dirs(results_dir: Path) -> list[Path]:
    """The run folders of a results folder; a symbolic link is never one (it may point anywhere)."""
    runs_dir = Path(results_dir) / "runs"
    return sorted(d for d in runs_dir.iterdir() if d.is_dir() and not d.is_symlink()) if runs_dir.is_dir() else []


def examine(results_dir: Path) -> list[Finding]:
    """Every finding under results_dir/runs/*/ (read only); a linked run folder is reported, never followed."""
    runs_dir = Path(results_dir) / "runs"
    links = [Finding("unsafe", d, "a symbolic link, not a run folder: not followed")
             for d in (sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []) if d.is_symlink()]
    return links + [f for d in run_dirs(results_dir) for f in examine_run(d)]


def fix(findings: list[Finding]) -> tuple[list[tuple[Finding, Path]], list[Finding]]:
    """Move every damaged, unsafe or orphaned file aside, each under its run's lock. Returns the
    (finding, new path) pairs moved and the findings left because a live process holds the run."""
    moved, busy = [], []
    by_run: dict[Path, list[Finding]] = {}
    for f in findings:
        if f.movable and (f.path.exists() or f.path.is_symlink()):
            by_run.setdefault(f.path.parent, []).append(f)
    for run_dir, found in by_run.items():
        with run_lock(run_dir) as free:
            if not free:
                busy += found
                continue
            moved += [(f, set_aside(f.path, f.kind)) for f in found if f.path.exists() or f.path.is_symlink()]
    return moved, busy


def retrain(results_dir: Path, run_ids: list[str], why: str = "retrain") -> list[tuple[str, list[Path], str]]:
    """Set each named run's record and checkpoints aside (`<name>.<why>-<time>`, under the run's
    lock) so that the next sweep trains it from scratch. Returns (run id, moved paths, what
    happened) per id; an unknown id or a run a live process holds is left as it is and said so."""
    done = []
    runs_dir = Path(results_dir) / "runs"
    for run_id in run_ids:
        run_dir = runs_dir / run_id
        if not plain_name(run_id) or not run_dir.is_dir() or run_dir.is_symlink():
            done.append((run_id, [], f"no run folder {run_id!r} under {runs_dir}"))
            continue
        with run_lock(run_dir) as free:
            if not free:
                done.append((run_id, [], "a live process holds the run: left as it is"))
                continue
            files = [run_dir / name for name in (RESULT_FILE, *CHECKPOINTS) if (run_dir / name).exists()]
            done.append((run_id, [set_aside(f, why) for f in files],
                         "set aside; the next sweep trains it again" if files else "no record or checkpoint to set aside"))
    return done


def restamp_checkpoint(path: Path, old: dict, new: dict) -> None:
    """Rewrite the run config a checkpoint carries from `old` to `new` (atomically); a checkpoint
    that is missing, does not load safely or holds another config is left alone."""

    if not path.exists():
        return
    try:
        ckpt = safe_load(path)
    except UserError:
        return
    if not isinstance(ckpt, dict) or ckpt.get("run_config") != old:
        return
    ckpt["run_config"] = new
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def assign_data(results_dir: Path, data_dir: Path) -> list[tuple[str, str | None, str]]:
    """Migrate records written before a run's identity named its data: each record without a
    data fingerprint whose training and test set sizes match `data_dir`'s is stamped with that
    folder's fingerprint, gets the run id that follows, and its folder is renamed to it (under
    the run's lock). Returns (old id, new id or None, what happened) per such record."""

    cifar10 = get_dataset(DEFAULT)  # records from before the data fingerprint are all CIFAR-10 runs
    sizes = cifar10.split_sizes(data_dir)
    if sizes is None:
        raise DataError(f"{cifar10.title} is not in {data_dir}; name the folder the runs were trained on")
    data = cifar10.fingerprint(data_dir)
    done = []
    for run_dir in run_dirs(results_dir):
        try:
            record = read_record(run_dir)
        except DamagedRecord:
            continue
        if record is None or "data" in record["config"]:
            continue
        old = record["run_id"]
        seen = (record.get("data") or {}).get("train_size"), (record.get("data") or {}).get("test_size")
        if seen != sizes:
            done.append((old, None, f"trained on {seen[0]} / {seen[1]} images, {data_dir} has "
                                    f"{sizes[0]} / {sizes[1]}: left as it is"))
            continue
        config = RunConfig.from_dict(record["config"]).with_data(data)
        target = run_dir.parent / config.run_id
        if target.parent != run_dir.parent or not plain_name(config.run_id):  # ids are plain names; never a path
            done.append((old, None, f"its new id {config.run_id[:80]!r} is not a plain name: left as it is"))
            continue
        if target.exists():
            done.append((old, None, f"{target.name} exists already: left as it is"))
            continue
        with run_lock(run_dir) as free:
            if not free:
                done.append((old, None, "a live process holds the run: left as it is"))
                continue
            for name in CHECKPOINTS:  # a partial run's checkpoints name the new identity, so it resumes
                restamp_checkpoint(run_dir / name, record["config"], config.to_dict())
            record.update(run_id=config.run_id, config=config.to_dict())
            record["data"] = {**(record.get("data") or {}), "fingerprint": data}
            write_record(run_dir, record)
        run_dir.rename(target)
        done.append((old, config.run_id, "renamed"))
    return done

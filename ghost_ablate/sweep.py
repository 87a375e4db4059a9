"""A grid of runs (`experiment.plan_runs`) -> resumable, shardable execution; the summary of
its records is rewritten after each run (`record_schema.write_summary`).

Every run lives in `results/runs/<run_id>/`. The run id hashes the resolved config, so
a run shared by several tables runs once, and re-running a sweep skips what is done and
resumes what was interrupted. A per-run file lock lets any number of processes (shards,
GPUs, SLURM array tasks, or a restarted job) share one results folder safely.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from filelock import FileLock, Timeout

from . import distributed, preemption
from .checkpoints import CHECKPOINT, PREVIOUS_CHECKPOINT
from .config import RunConfig
from .errors import UserError
from .estimate import RunEstimate, format_hours
from .record_schema import run_state, source_ready, write_summary
from .records import RESULT_FILE, StorageError, set_aside, storage_error
from .training import Diverged, RunContext, train_run

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    done: list[str]
    skipped: list[str]
    failed: list[str]
    busy: list[str]  # held by another process right now
    waiting: list[str] = dataclasses.field(default_factory=list)  # their source run is not finished yet
    diverged: list[str] = dataclasses.field(default_factory=list)  # recorded as diverged (now or before)


RECENT_EPOCHS = 5  # the ETA's epoch time is the median of this many last epochs


class EtaLogger(L.Callback):
    """One log line per finished epoch: the run's progress, and the run's and the sweep's ETA.

    The ETA starts from the calibrated estimates and is refined by the epoch times measured
    so far: later runs' estimates are scaled by measured / calibrated of this run. The epoch time
    is the median of the last RECENT_EPOCHS epochs, so one epoch stretched by a pause (a suspended
    job, a test suite run beside it) does not inflate the ETA for the rest of the run.
    """

    def __init__(self, label: str, estimate: RunEstimate | None, later: list[RunEstimate]) -> None:
        self.label, self.estimate, self.later = label, estimate, later
        self.epochs_at_start, self.clock = 0, time.perf_counter()
        self.stamps: list[tuple[int, float]] = []  # (epochs done, clock) at the start and at each line

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epochs_at_start = trainer.current_epoch  # > 0 when resuming
        self.clock = time.perf_counter()
        self.stamps = [(self.epochs_at_start, self.clock)]

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info(self.line(trainer.current_epoch + 1, trainer.max_epochs, time.perf_counter()))

    def line(self, epoch: int, epochs: int, now: float) -> str:
        self.stamps = (self.stamps or [(self.epochs_at_start, self.clock)]) + [(epoch, now)]
        per = [(t1 - t0) / (e1 - e0) for (e0, t0), (e1, t1) in zip(self.stamps, self.stamps[1:]) if e1 > e0]
        per_epoch = statistics.median(per[-RECENT_EPOCHS:]) if per else now - self.clock
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


def start_words(verdict: str, run_dir: Path) -> str:
    """How a run claimed with `verdict` starts, in words. A partial record without a checkpoint
    beside it (checkpoints are not committed, so a clone or another machine has none) starts over
    from epoch 1, and says so rather than "resuming"."""
    if verdict != "resume":
        return "starting"
    if any((run_dir / name).exists() for name in (CHECKPOINT, PREVIOUS_CHECKPOINT)):
        return "resuming from its checkpoint"
    return "starting over from epoch 1: its record is here but no checkpoint (checkpoints stay where they were written)"


def run_sweep(runs: list[RunConfig], where: RunContext, results_dir: str | Path, *, retry_failed: bool = False,
              progress: bool | None = None, estimates: list[RunEstimate] | None = None) -> SweepOutcome:
    """Run each planned run unless done, each in the context `where`; record failures and go on.

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
                log.info("[%d/%d] %s: %s", i, len(runs), rc.run_id, start_words(verdict, run_dir))
            eta = EtaLogger(f"[{i}/{len(runs)}] {rc.run_id}", estimates[i - 1] if estimates else None,
                            estimates[i:] if estimates else [])
            record = train_run(rc, where, run_dir, progress=progress, callbacks=[eta])
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

"""Pre-emption and time limits under SLURM: save at the next step, requeue, resume at that step.

SLURM warns a job before it pre-empts it or its time runs out by sending a signal
(`--signal=USR1@90`; `sweep --slurm` asks for USR2, submitit's). One handler serves every way
a sweep runs under SLURM (a hand-written sbatch, or submitit's job array, whose own handler
it replaces): the signal only raises a flag. At the end of the step in progress every rank
learns of it (one reduced flag, so a signal that reached one rank stops them all at the same
step), the run's checkpoint is written there, rank 0 requeues the job with `scontrol requeue`,
and the processes exit. The requeued job runs the same command, which resumes the run from
that step (`TensorBatches` is resumable mid-epoch) and goes on with the rest of the plan.

Why not Lightning's own requeue handler: it writes the checkpoint inside the signal handler,
mid-step, and is not installed where another handler exists (submitit installs one first).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import lightning as L

from .errors import UserError

log = logging.getLogger(__name__)
SIGNAL_ENV = "GHOST_ABLATE_REQUEUE_SIGNAL"  # the signal's name; `sweep --slurm` sets SIGUSR2
DEFAULT_SIGNAL = "SIGUSR1"
EXIT_REQUEUED = 3  # exit status of a process whose job was requeued (its run is saved)
EXIT_DIVERGED = 4  # a sweep whose only unfinished runs diverged and are recorded: nothing lost
EXIT_TERMINATED = 128 + signal.SIGTERM  # stopped by SIGTERM (scancel, a time limit): saved, not requeued
_requested: str | None = None  # "requeue" (the pre-emption warning) or "stop" (SIGTERM), once signalled


class Preempted(Exception):
    """Raised on every rank at the step where the run was saved; `requeue`: whether the job goes
    back in the queue (the pre-emption warning) or just ends (SIGTERM)."""

    def __init__(self, message: str, requeue: bool = True) -> None:
        super().__init__(message)
        self.requeue = requeue


def requested() -> bool:
    return _requested is not None


def wants_requeue() -> bool:
    return _requested == "requeue"


def _raise_flag(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
    global _requested
    stop = signum == signal.SIGTERM
    _requested = "stop" if stop else "requeue"
    log.warning("received %s: the run is saved at the end of this step%s", signal.Signals(signum).name,
                "" if stop else " and the job requeued")


def requeue_signal() -> signal.Signals:
    name = os.environ.get(SIGNAL_ENV, DEFAULT_SIGNAL)
    sig = getattr(signal, name, None)
    if not isinstance(sig, signal.Signals):
        raise UserError(f"{SIGNAL_ENV}={name}: not a signal name (e.g. SIGUSR1)")
    return sig


def on_slurm() -> bool:
    """Inside a SLURM job (batch jobs can be requeued)."""
    return "SLURM_JOB_ID" in os.environ


def install() -> bool:
    """Catch the requeue signal (replacing any handler, submitit's included) and SIGTERM (scancel, a
    time limit; SLURM kills KillWait seconds later, 30 by default, so the save at the step's end
    fits) when running under SLURM; return whether they were installed. Lightning chains its own
    SIGTERM handler in front of this one as fit starts; `SaveOnPreemption` takes SIGTERM back."""
    if not on_slurm():
        return False
    signal.signal(requeue_signal(), _raise_flag)
    signal.signal(signal.SIGTERM, _raise_flag)
    return True


def job_id() -> str:
    """The id `scontrol requeue` takes: ARRAYJOB_TASK for an array task, else the job id."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]


def requeue(saved: bool = True) -> None:
    """Put this job back in the queue (rank 0 only); SLURM then ends the running one. `saved`: a
    run was saved mid-way (else the signal came between runs, and the job goes on with its plan)."""
    jid = job_id()
    result = subprocess.run(["scontrol", "requeue", jid], capture_output=True, text=True, timeout=60)
    if result.returncode:
        log.error("scontrol requeue %s failed: %s; resubmit the same command to resume", jid,
                  result.stderr.strip() or result.returncode)
    else:
        log.warning("job %s requeued; %s", jid, "it resumes from the saved step" if saved else
                    "no run was in progress, so nothing was saved: it goes on with the plan's next run")


DDP_CHECK_EVERY = 10  # steps between the ranks' (gloo) agreement on the flag under DDP; every step alone


class SaveOnPreemption(L.Callback):
    """At a step's end, if any rank got the requeue signal: save the run there and raise Preempted
    on every rank. A single process looks at its flag every step; under DDP the ranks agree every
    DDP_CHECK_EVERY steps (one small all-reduce, not one per step; at most seconds of the warning's
    90)."""

    def __init__(self, checkpoint: Path, any_rank: Any, world: int = 1) -> None:
        self.checkpoint, self.any_rank = Path(checkpoint), any_rank  # any_rank: distributed.Ranks.any
        self.every = 1 if world == 1 else DDP_CHECK_EVERY

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # As fit starts, Lightning puts its own SIGTERM handler in front of ours; its flag ends fit at
        # the next validation batch or epoch end, before any save (a SIGTERM during a validation was
        # then recorded as an interruption by the user). Ours alone: the save comes at the step's end.
        # Lightning restores the handler it found (ours) when fit ends.
        signal.signal(signal.SIGTERM, _raise_flag)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every == 0 and self.any_rank(requested()):
            trainer.save_checkpoint(self.checkpoint)
            raise Preempted(f"saved at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
                            f"{batch_idx + 1})", requeue=self.any_rank(wants_requeue()))

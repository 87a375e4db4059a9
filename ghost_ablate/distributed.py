"""The processes of a multi-device command, started once and agreeing on every decision.

With `--devices N` (or `--nodes`), one run trains on N processes. Lightning's launcher
re-runs the command line for ranks 1..N-1; under SLURM, `srun` starts every rank. Left
alone, each rank would read the results folder and decide for itself which run to train,
whether it is done, damaged or held by another process, and which checkpoint resumes it,
and ranks that decide differently join different runs (a crash, or two seeds' gradients
averaged together in silence). So the process group is made before the first decision,
rank 0 decides everything that depends on the file system (under the run's lock), and
`Ranks.decide` hands its answer to the others.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from .errors import UserError

T = TypeVar("T")
log = logging.getLogger(__name__)
TIMEOUT = timedelta(minutes=30)  # torch's default; a rank that never comes fails the others after this


class RankFailed(UserError):
    """Rank 0 failed a decision: every other rank stops with its message."""


@dataclass
class Ranks:
    """This process's place among the ranks of one command (a single process: rank 0 of 1)."""
    rank: int = 0
    world: int = 1
    group: Any = None  # a gloo group for decisions (the default group may be NCCL)

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What a record says of the processes a run trained on (world > 1: the group exists)."""
        return {"processes": self.world, "backend": str(dist.get_backend())}

    def decide(self, choose: Callable[[], T]) -> T:
        """`choose()` run on rank 0 only; every rank returns its result. When it raises, rank 0
        raises the error itself and the other ranks raise RankFailed with its message, so no
        rank waits for a decision that never comes."""
        if self.world == 1:
            return choose()
        box: list[Any] = [None]
        error: BaseException | None = None
        if self.rank == 0:
            try:
                box[0] = ("ok", choose())
            except BaseException as err:  # noqa: BLE001 - re-raised below, after the others are told
                error, box[0] = err, ("error", str(err) or type(err).__name__)
        dist.broadcast_object_list(box, src=0, group=self.group)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise RankFailed(f"rank 0 stopped: {value}")
        return value

    def agree(self, value: Any, what: str) -> None:
        """Check that every rank holds the same `value` (e.g. the run id it is about to train);
        raise on every rank if not. A guard behind `decide`, which makes them agree."""
        if self.world == 1:
            return
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, value, group=self.group)
        if any(v != everyone[0] for v in everyone):
            raise RuntimeError(f"ranks disagree on {what}: " + ", ".join(f"rank {r}: {v}" for r, v in
                                                                         enumerate(everyone)))
        log.info("rank %d of %d: %s %s", self.rank, self.world, what, value)

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return bool(t.item())


_current = Ranks()


def current() -> Ranks:
    """The ranks `start` made for this command (rank 0 of 1 when it made none)."""
    return _current


def finish() -> None:
    """Leave the process group `start` made (at the end of the command), so every rank exits
    cleanly instead of leaving it to the interpreter's teardown."""
    global _current
    if _current.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    _current = Ranks()


def cluster_environment() -> Any:
    """Lightning's view of how this process was started: srun (SLURM), torchrun, or itself."""
    from lightning.fabric.plugins.environments import (  # lazy: loaded only on the path that needs it
        LightningEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    if SLURMEnvironment.detect():
        return SLURMEnvironment(auto_requeue=False)
    if TorchElasticEnvironment.detect():
        return TorchElasticEnvironment()
    return LightningEnvironment()


def start(devices: int, nodes: int = 1, device: str = "cpu") -> Ranks:
    """Start the other ranks of a `devices` x `nodes` command (where nothing else starts them)
    and join the process group Lightning's DDP will use; rank 0 of 1 for a single device.

    Lightning's launcher re-runs this command line for local ranks 1..devices-1, which reach
    this call and join; srun and torchrun start every rank themselves."""
    global _current
    world = devices * nodes
    if world == 1 or dist.is_initialized():
        return _current
    from lightning.pytorch.strategies.launchers.subprocess_script import (  # lazy: loaded only on the path that needs it
        _SubprocessScriptLauncher,
    )

    env = cluster_environment()
    try:
        _SubprocessScriptLauncher(env, devices, nodes).launch(lambda: None)
    except ValueError as err:  # e.g. srun's task count is not devices x nodes
        raise UserError(f"--devices {devices} --nodes {nodes}: {err}") from None
    from lightning.fabric.plugins.environments import LightningEnvironment  # lazy: loaded only on the path that needs it

    local = env.local_rank()
    own = isinstance(env, LightningEnvironment)  # ranks this command started: numbered by node and device
    rank = env.node_rank() * devices + local if own else env.global_rank()
    if not own and env.world_size() != world:
        raise UserError(f"--devices {devices} x --nodes {nodes} = {world} processes, but the launcher started "
                        f"{env.world_size()} (srun --ntasks / torchrun --nproc-per-node must match)")
    os.environ["MASTER_ADDR"] = env.main_address
    os.environ["MASTER_PORT"] = str(env.main_port)
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
    group = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else None
    _current = Ranks(rank, world, group)
    log.info("rank %d of %d joined (%s)", rank, world, type(env).__name__)
    return _current

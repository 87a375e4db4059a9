"""Timing, once for every measured figure: the training-step calibration of the estimates, the
bench's latency, throughput and training speed, the precision probe and the throughput command
all call `seconds` around the same `sgd_step`, and read a rate over epochs with `steady_rate`."""
from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

import torch
import torch.nn.functional as F


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """What waits for `device`'s queued work: CUDA's synchronize, nothing on a CPU."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def seconds(fn: Callable[[], Any], repeats: int, warmup: int = 0, sync: Callable[[], None] | None = None
            ) -> list[float]:
    """Wall seconds of each of `repeats` calls of `fn`, after `warmup` untimed calls; `sync` (see
    `synchronizer`) is called before and after each timed call, so a GPU's queued work is counted
    in the call that queued it."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = perf_counter()
        fn()
        sync()
        times.append(perf_counter() - t0)
    return times


def sgd_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
             autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
             ) -> Callable[[], None]:
    """One training step as every measurement times it: forward under `autocast`, cross-entropy,
    backward, and the optimizer's update (SGD with momentum where none is given)."""
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with autocast():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def steady_rate(rates: Sequence[float], warmup: int = 1) -> float:
    """The median of per-epoch rates after the first `warmup` (which pay for start-up); all of them
    where there are no more."""
    return statistics.median(rates[warmup:] if len(rates) > warmup else rates)


def cuda_peak_bytes(step: Callable[[], Any]) -> int:
    """Peak GPU memory of one call of `step` once warm: one untimed call first, so cuDNN's
    autotuner (and its trial workspaces) and the optimizer's first allocations are behind it, then
    the peak statistics reset and one measured call."""
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def matmul_peak(dtype: torch.dtype, device: str = "cpu", size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a size x size matrix product in `dtype` on `device` with every thread torch uses,
    the fastest of `repeats` after one warm-up: the ceiling that a training step's convolutions,
    lowered to the same kind of products, can approach on this machine."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return 2 * size ** 3 / min(seconds(lambda: a @ b, repeats, warmup=1, sync=synchronizer(device)))

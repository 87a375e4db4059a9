"""Which numeric precision and memory format a run uses on this machine.

A recipe asks for `auto`, `32` or `bf16`. `auto` means bf16 mixed precision on a CUDA
device that supports it, and on a CPU only where bf16 is native (AVX512-BF16 or AMX), *and*
measured faster, *and* the committed fp32-vs-bf16 table (`reports/precision.csv`, from
`make precision-check`) shows that accuracy holds: for every model, at least
`MIN_PAIRS` paired seeds and a 95% interval of bf16 - fp32 top-1 whose lower end is above
-`MARGIN_PP` points. Without that evidence `auto` stays fp32 on CPUs and bf16 is opt-in
(`--precision bf16`). Native support alone is not enough for speed either: on a 2-core Xeon with AVX512-BF16 but
no AMX, oneDNN's bf16 convolutions ran at 0.7x the speed of fp32, while an AMD EPYC with
the same flag ran them about 2x faster. So the first `auto` on a CPU times one small
conv training step both ways (about a second) and caches the verdict per CPU model,
thread count and code version. Everywhere else `auto` falls back to 32 and says why.
Models and batches use channels_last on CUDA and on the CPU in bf16, where oneDNN's
blocked kernels want it; fp32 on the CPU stays NCHW.
"""
from __future__ import annotations

import csv
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .cache import JsonCache
from .machine import cpu_model
from .timing import seconds

LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}
MIN_SPEEDUP = 1.15  # bf16 must beat fp32 by this much on the probe for `auto` to choose it
MIN_PAIRS = 5  # paired seeds per model the accuracy evidence needs
MARGIN_PP = 1.0  # the most top-1 (points) bf16 may cost, at the low end of the paired 95% interval
EVIDENCE = Path(__file__).resolve().parents[1] / "reports" / "precision.csv"


@dataclass(frozen=True)
class Precision:
    requested: str  # the recipe's value: auto, 32 or bf16
    resolved: str  # 32 or bf16
    reason: str  # why `resolved`, in words, for the record
    channels_last: bool

    @property
    def lightning(self) -> str:
        return LIGHTNING_PRECISION[self.resolved]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self, device: str) -> torch.autocast:
        """The autocast context of this precision on `device` (a no-op for 32)."""
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.resolved == "bf16")

    def to_record(self) -> dict[str, str]:
        d = asdict(self)
        d["memory_format"] = "channels_last" if d.pop("channels_last") else "contiguous"
        return d


def cpu_has_native_bf16() -> bool:
    """True where the CPU executes bf16 dot products natively (x86 AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def _probe_step_time(bf16: bool, repeats: int = 3) -> float:
    """Median seconds of one fwd+bwd of two 3x3 convs at a CIFAR-like width and batch."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(128, 128, 3, padding=1), torch.nn.BatchNorm2d(128), torch.nn.ReLU(),
                              torch.nn.Conv2d(128, 128, 3, padding=1)).to(memory_format=torch.channels_last)
    x = torch.randn(64, 128, 16, 16).contiguous(memory_format=torch.channels_last)

    def probe() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.mse_loss(net(x).float(), x)
        loss.backward()

    times = seconds(probe, repeats, warmup=1)  # the untimed pass sets up oneDNN's primitives
    return sorted(times)[len(times) // 2]


def cpu_bf16_speedup(cache: JsonCache | None = None) -> float:
    """fp32 time / bf16 time of the probe step on this CPU (cached)."""
    cache = cache or JsonCache("precision")
    key = cache.key("cpu-bf16-speedup", platform.processor() or platform.machine(), cpu_model(),
                    torch.__version__, torch.get_num_threads())
    speedup = cache.get(key)
    if speedup is None:
        speedup = _probe_step_time(False) / _probe_step_time(True)
        cache.put(key, speedup)
    return float(speedup)


def bf16_accuracy_holds(path: Path | None = None) -> tuple[bool, str]:
    """Whether the fp32-vs-bf16 table at `path` (default: the committed `reports/precision.csv`)
    shows bf16 costs at most MARGIN_PP points of top-1 for every model it holds (the lower end
    of each paired 95% interval), over at least MIN_PAIRS seeds; and the evidence in words."""
    path = path or EVIDENCE
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return False, f"no fp32-vs-bf16 accuracy table at {path} (`make precision-check` writes one)"
    try:
        found = [(r["model"], int(r["pairs"]), float(r["diff_mean"]), float(r["diff_ci95"] or "nan")) for r in rows]
    except (KeyError, ValueError):
        return False, f"{path} is not a precision table (`make precision-check` writes one)"
    if not found:
        return False, f"{path} holds no model"
    words = "; ".join(f"{m}: bf16 - fp32 {d:+.2f} points (95% CI {d - c:+.2f} to {d + c:+.2f}, {n} pairs)"
                      for m, n, d, c in found)
    holds = all(n >= MIN_PAIRS and d - c >= -MARGIN_PP for _, n, d, c in found)  # a NaN interval never holds
    return holds, words


NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere: bf16 tensor cores; a T4 (7.5) or V100 (7.0) only emulates bf16


def cuda_has_bf16() -> bool:
    """Native bf16 on this GPU. `torch.cuda.is_bf16_supported()` also says True where bf16 is
    emulated (and slow), so the compute capability decides."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= NATIVE_BF16_CAPABILITY


def resolve_precision(requested: str, device: str, *,
                      cpu_bf16: Callable[[], bool] | None = None,
                      gpu_bf16: Callable[[], bool] | None = None,
                      cpu_speedup: Callable[[], float] | None = None,
                      cpu_accuracy: Callable[[], tuple[bool, str]] | None = None) -> Precision:
    """Resolve a recipe's precision for `device` ("cpu" or "cuda"). The detections (and the
    accuracy evidence) default to this module's probes, looked up at call time, and are
    parameters so that tests can simulate any machine."""
    cpu_bf16 = cpu_bf16 or cpu_has_native_bf16
    gpu_bf16 = gpu_bf16 or cuda_has_bf16
    cpu_speedup = cpu_speedup or cpu_bf16_speedup
    cpu_accuracy = cpu_accuracy or bf16_accuracy_holds
    cuda = device == "cuda"
    native = gpu_bf16() if cuda else cpu_bf16()
    where = "this GPU" if cuda else "this CPU"
    if requested == "32":
        resolved, reason = "32", "requested"
    elif requested == "bf16":
        resolved = "bf16"
        reason = "requested" if native else f"requested; {where} has no native bf16, so it is emulated (slow)"
    elif not native:
        resolved = "32"
        reason = f"auto: {where} has no native bf16" + ("" if cuda else " (no AVX512-BF16 or AMX)")
    elif cuda:
        resolved, reason = "bf16", "auto: this GPU has native bf16"
    elif not (accuracy := cpu_accuracy())[0]:  # asked before the probe: it costs nothing
        resolved = "32"
        reason = (f"auto: this CPU has native bf16, but no table shows that bf16 keeps top-1 within {MARGIN_PP:g} "
                  f"point of fp32 over >= {MIN_PAIRS} paired seeds ({accuracy[1]}); --precision bf16 opts in")
    else:
        speedup = cpu_speedup()
        resolved = "bf16" if speedup >= MIN_SPEEDUP else "32"
        reason = (f"auto: this CPU has native bf16, a conv step measured {speedup:.2f}x the speed of fp32 "
                  f"({'>=' if resolved == 'bf16' else '<'} {MIN_SPEEDUP}x), and bf16 kept top-1 ({accuracy[1]})")
    return precision_on(device, requested, resolved, reason)


def backend_settings(device: str, deterministic: bool = False) -> dict[str, bool]:
    """Set, and return, the kernel choices a run on `device` trains with: on CUDA, TF32 matmuls and
    cuDNN's autotuner (off for deterministic runs). Training and the dry-run's calibration both
    call this, so a calibration times the kernels the run will use."""
    cuda = device == "cuda"
    settings = {"tf32": cuda, "cudnn_benchmark": cuda and not deterministic}
    if cuda:
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = settings["cudnn_benchmark"]
    return settings


def precision_on(device: str, requested: str, resolved: str, reason: str) -> Precision:
    """A Precision with the memory format that goes with it on `device`: channels_last on CUDA,
    and on the CPU in bf16, where oneDNN's blocked kernels want it."""
    return Precision(requested, resolved, reason, channels_last=device == "cuda" or resolved == "bf16")

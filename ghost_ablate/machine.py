"""What a number was measured on: one description of the device, used by records, the dry-run's
calibration, benchmarks and the throughput tables, so that two machines never share a name."""
from __future__ import annotations

import os
import platform

import torch

# The instruction-set tier that changes CPU kernels most, best first (flag in /proc/cpuinfo, name).
ISA_TIERS = (("amx_tile", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model(info: dict[str, str] | None = None) -> str:
    """The CPU named so two kinds never read alike: "AMD EPYC (family 25 model 1, AVX2)". A bare
    "AMD EPYC" covers Zen 3 and Zen 5, whose kernels (and so timings and fp32 numerics) differ."""
    info = _cpuinfo() if info is None else info
    name = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    tier = next((label for flag, label in ISA_TIERS if flag in flags), None)
    detail = [f"family {info['cpu family']} model {info['model']}"] if "cpu family" in info and "model" in info else []
    detail += [tier] if tier else []
    return f"{name} ({', '.join(detail)})" if detail else name


def describe_device(kind: str = "cpu") -> str:
    """"cuda: NVIDIA H100 80GB HBM3" or "cpu: AMD EPYC (family 25 model 1, AVX2) (2 threads)"."""
    if kind == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {cpu_model()} ({torch.get_num_threads()} threads)"


def allocated_cpus() -> int:
    """The CPU cores this process may use: SLURM's allocation (SLURM_CPUS_PER_TASK) or the
    affinity mask it (or taskset, or a container) set, not the host's core count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(int(given), cores) if given.isdigit() and int(given) > 0 else cores


def machine_load() -> dict[str, float]:
    """The machine's 1-minute load average and the threads this process trains with, so a timing
    taken beside other work reads as such (load well above threads: the cores were shared)."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not every platform keeps one
        return {}
    return {"load_1m": round(load, 2), "threads": torch.get_num_threads()}

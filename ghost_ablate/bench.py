"""Measured costs that FLOPs hide, and the speed of the training input pipeline.

`bench_models`: per model, batch-1 latency (median after warm-up; also with BatchNorm
folded), eval throughput at a large batch, training images/s and the peak memory of a
training step. Each model runs in a fresh process, so that on the CPU the growth of
the process's peak RSS during the training step belongs to that model alone; on CUDA
the figure is `torch.cuda.max_memory_allocated`.

`bench_variants`: the cheap-op variants of the Ghost module side by side, each also in its
deploy form (RepGhost branches fused, BatchNorm folded): training speed and memory, and
batch-1 latency, throughput and the peak memory of an eval batch, as built and deployed.
Each form's eval memory is measured in a process of its own, first thing.

`bench_peak`: the FLOP/s of a large matrix product in fp32 and bf16, the ceiling beside which a
recipe's training images/s are read (`report --section pilot`).

`pipeline_comparison`: images/s of the project's training path (Lightning, uint8
tensors, batch-wise augmentation) against a plain PyTorch loop over torchvision's
DataLoader with per-sample PIL transforms, same model, batch and data.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from .config import RunConfig
from .data.cifar import CIFAR10, PAD, load_split, prepare, write_folder
from .deploy import fold_bn
from .flops import measure
from .machine import describe_device
from .models import KNOBS, MODELS, build_model, format_assignments, fuse_rep
from .precision import Precision, resolve_precision
from .records import config_key, write_atomic
from .timing import cuda_peak_bytes, matmul_peak, seconds, sgd_step, steady_rate, synchronizer
from .training import RunContext, train_run, versions


@dataclass(frozen=True)
class BenchSettings:
    device: str = "cpu"
    repeats: int = 20  # timed batch-1 forwards
    warmup: int = 3
    batch_size: int = 128  # eval throughput batch
    throughput_batches: int = 3
    train_batch_size: int = 64
    train_steps: int = 3
    threads: int = os.cpu_count() or 1
    precision: str = "auto"  # resolved as training resolves it; fp32 is measured beside it if different


def _median_ms(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> float:
    return 1000 * statistics.median(seconds(fn, repeats, warmup, synchronizer(device)))


def _rate(fn: Callable[[], Any], device: str, images_per_call: int, warmup: int, calls: int) -> float:
    return images_per_call * calls / sum(seconds(fn, calls, warmup, synchronizer(device)))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _cpu_peak_growth_mb(fn: Callable[[], Any]) -> float:
    """How far the resident set rises above its current size while `fn` runs. Linux lets a
    process reset its peak (VmHWM) through /proc/self/clear_refs; elsewhere the growth of
    the lifetime peak is all there is, and reads 0 when `fn` stays under an earlier peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = _status_mb("VmRSS")
        fn()
        return _status_mb("VmHWM") - start
    except OSError:
        before = _peak_rss_mb()
        fn()
        return _peak_rss_mb() - before


def _measure_path(model: torch.nn.Module, name: str, s: BenchSettings, precision: Precision) -> dict[str, Any]:
    """Training speed and peak memory, batch-1 latency (also in deploy form: BN folded, RepGhost
    branches fused) and eval throughput of `model` in one precision and memory format, as
    training runs it."""
    size = MODELS[name].input_size
    fmt = precision.memory_format
    model = model.to(memory_format=fmt)

    def autocast() -> torch.autocast:
        return precision.autocast(s.device)

    # training step first, so the RSS baseline is not raised by earlier work
    x = torch.randn(s.train_batch_size, 3, size, size, device=s.device).contiguous(memory_format=fmt)
    y = torch.randint(0, MODELS[name].num_classes, (s.train_batch_size,), device=s.device)
    model.train()
    train_step = sgd_step(model, x, y, autocast=autocast)
    if s.device == "cuda":
        peak_mb, method = cuda_peak_bytes(train_step) / 2**20, "cuda max_memory_allocated, after one warm-up step"
    else:
        peak_mb, method = _cpu_peak_growth_mb(train_step), "cpu peak RSS rise during first training step"
    train_img_s = _rate(train_step, s.device, s.train_batch_size, 1, s.train_steps)

    model.eval()
    x1 = torch.randn(1, 3, size, size, device=s.device).contiguous(memory_format=fmt)
    xb = torch.randn(s.batch_size, 3, size, size, device=s.device).contiguous(memory_format=fmt)
    with torch.inference_mode(), autocast():
        latency = _median_ms(lambda: model(x1), s.device, s.warmup, s.repeats)
        throughput = _rate(lambda: model(xb), s.device, s.batch_size, 1, s.throughput_batches)
        folded = deploy_form(model)
        latency_folded = _median_ms(lambda: folded(x1), s.device, s.warmup, s.repeats)
    return {"latency_bs1_ms": latency, "latency_bs1_bn_folded_ms": latency_folded,
            "eval_img_s": throughput, "eval_batch_size": s.batch_size,
            "train_img_s": train_img_s, "train_peak_mem_mb": peak_mb, "mem_method": method}


def measure_model(key: tuple, s: BenchSettings) -> dict[str, Any]:
    """All measurements of one (model, s, d, width) in the precision training resolves to here,
    and in fp32 beside it where that differs; meant to run in a fresh process."""
    torch.set_num_threads(s.threads)
    torch.manual_seed(0)
    name, ratio, dw_size, width, knobs = _unpack(key)
    model = build_model(name, ratio, dw_size, width, **knobs)
    cost = measure(model, MODELS[name].input_size)
    if s.device == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = resolve_precision(s.precision, s.device)
    row = {"model": name, "ratio": ratio, "dw_size": dw_size, "width": width,
           **({"knobs": format_assignments(knobs)} if knobs else {}), "input_size": MODELS[name].input_size,
           "params": cost.params, "flops": cost.flops, "precision": precision.resolved,
           "memory_format": precision.to_record()["memory_format"],
           **_measure_path(model.to(s.device), name, s, precision)}
    if precision.resolved != "32":
        fp32 = _measure_path(model, name, s, resolve_precision("32", s.device))
        row.update({f"{k}_fp32": fp32[k] for k in ("latency_bs1_ms", "eval_img_s", "train_img_s")})
    return row


def _unpack(key: tuple) -> tuple[str, Any, Any, Any, dict[str, Any]]:
    """(model, s, d, width[, other knobs]) -> the five parts, other knobs as a dict."""
    name, ratio, dw_size, width, *rest = key
    return name, ratio, dw_size, width, dict(rest[0]) if rest else {}


def deploy_form(model: torch.nn.Module) -> torch.nn.Module:
    """What would ship: a copy with RepGhost branches fused and BatchNorm folded (eval mode)."""

    return fold_bn(fuse_rep(copy.deepcopy(model).eval()))


def measure_inference(key: tuple, s: BenchSettings, deploy: bool) -> dict[str, Any]:
    """Peak memory of one eval batch (measured first), batch-1 latency and eval throughput of a
    configuration as built or in its deploy form, in fp32; meant to run in a fresh process."""
    torch.set_num_threads(s.threads)
    torch.manual_seed(0)
    name, ratio, dw_size, width, knobs = _unpack(key)
    model = build_model(name, ratio, dw_size, width, **knobs).eval()
    model = (deploy_form(model) if deploy else model).to(s.device)
    size = MODELS[name].input_size
    x1 = torch.randn(1, 3, size, size, device=s.device)
    xb = torch.randn(s.batch_size, 3, size, size, device=s.device)
    with torch.inference_mode():
        if s.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            model(xb)
            torch.cuda.synchronize()
            peak_mb = (torch.cuda.max_memory_allocated() - start) / 2**20
        else:
            peak_mb = _cpu_peak_growth_mb(lambda: model(xb))
        latency = _median_ms(lambda: model(x1), s.device, s.warmup, s.repeats)
        throughput = _rate(lambda: model(xb), s.device, s.batch_size, 1, s.throughput_batches)
    form = "deploy" if deploy else "eval"
    return {f"{form}_latency_bs1_ms": latency, f"{form}_img_s": throughput, f"{form}_peak_mem_mb": peak_mb,
            f"{form}_params": sum(p.numel() for p in model.parameters())}


VARIANT_COLUMNS = ("model", "ratio", "dw_size", "cheap_op", "params", "flops", "train_img_s", "train_peak_mem_mb",
                   "eval_latency_bs1_ms", "eval_img_s", "eval_peak_mem_mb", "deploy_latency_bs1_ms", "deploy_img_s",
                   "deploy_peak_mem_mb", "deploy_params")


def variant_keys(models: list[str], ratio: int = 2, dw_size: int = 3) -> list[tuple]:
    """Each Ghost model with every cheap op (others at their defaults), after its plain baseline."""
    keys: list[tuple] = []
    for name in models:
        spec = MODELS[name]
        if "cheap_op" not in spec.knobs:
            keys.append((name, None, None, None, ()))
            continue
        if spec.baseline and (spec.baseline, None, None, None, ()) not in keys:
            keys.append((spec.baseline, None, None, None, ()))
        for op in KNOBS["cheap_op"].choices:
            keys.append((name, ratio, None if op == "copy" else dw_size, None,
                         () if op == "dw" else (("cheap_op", op),)))
    return keys


def bench_variants(keys: list[tuple], s: BenchSettings, out: Path | None = None,
                   log: Callable[[str], None] = print) -> pd.DataFrame:
    """Training, eval and deploy measurements per configuration, each in a fresh process, fp32."""
    s = dataclasses.replace(s, precision="32")
    env = bench_environment(s)
    rows = []
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        for key in keys:
            row = pool.submit(measure_model, key, s).result()
            for deploy in (False, True):
                row.update(pool.submit(measure_inference, key, s, deploy).result())
            row["cheap_op"] = _unpack(key)[4].get("cheap_op", "dw" if "cheap_op" in MODELS[key[0]].knobs else "-")
            log(f"{row['model']:16s} {row['cheap_op']:5s}: train {row['train_img_s']:.0f} img/s "
                f"{row['train_peak_mem_mb']:.0f} MB; eval bs1 {row['eval_latency_bs1_ms']:.2f} ms, "
                f"deploy bs1 {row['deploy_latency_bs1_ms']:.2f} ms, eval batch {row['eval_peak_mem_mb']:.0f} MB, "
                f"deploy batch {row['deploy_peak_mem_mb']:.0f} MB")
            rows.append({**{c: row.get(c) for c in VARIANT_COLUMNS}, **env})
    frame = pd.DataFrame(rows)
    for col in ("ratio", "dw_size"):
        frame[col] = pd.to_numeric(frame[col]).astype("Int64")
    if out is not None:
        header = (f"# ghost-ablate bench --variants, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
                  f"{env['device_kind']}: {env['device']}, {env['threads']} threads, torch {env['torch']}, fp32\n")
        write_atomic(out, header + frame.to_csv(index=False, float_format="%.4g"))
    return frame


def bench_environment(s: BenchSettings) -> dict[str, Any]:

    v = versions()
    return {"device_kind": s.device, "device": describe_device(s.device).split(": ", 1)[1], "threads": s.threads,
            "torch": v["torch"],
            "torchvision": v["torchvision"],
            "train_batch_size": s.train_batch_size, "repeats": s.repeats}


def bench_models(keys: list[tuple], s: BenchSettings, out: Path | None = None,
                 log: Callable[[str], None] = print) -> pd.DataFrame:
    """Measure every key, each in a fresh process; merge into `out` (rows of other devices are kept)."""
    env = bench_environment(s)
    rows = []
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        for key in keys:
            row = {**pool.submit(measure_model, key, s).result(), **env}
            log(f"{row['model']:24s} s={row['ratio']} d={row['dw_size']} w={row['width']}: "
                f"{row['latency_bs1_ms']:.2f} ms bs1 ({row['latency_bs1_bn_folded_ms']:.2f} BN folded), "
                f"{row['train_img_s']:.0f} train img/s, {row['train_peak_mem_mb']:.0f} MB")
            rows.append(row)
    frame = pd.DataFrame(rows)
    if out is not None:
        frame = merge_into(out, frame, env)
    return frame


def merge_into(out: Path, frame: pd.DataFrame, env: dict[str, Any]) -> pd.DataFrame:
    """Replace rows of the same device kind and model config in `out`, keep the rest; write atomically."""
    def keys(table: pd.DataFrame) -> list[tuple]:
        return [(r.device_kind, *config_key(r.model, r.ratio, r.dw_size, r.width)) for r in table.itertuples()]

    if out.exists():
        old = pd.read_csv(out, comment="#")
        replaced = set(keys(frame))
        frame = pd.concat([old[[k not in replaced for k in keys(old)]], frame], ignore_index=True)
    for col in ("ratio", "dw_size"):
        frame[col] = pd.to_numeric(frame[col]).astype("Int64")
    header = (f"# ghost-ablate bench, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"last run on {env['device_kind']}: {env['device']}, {env['threads']} threads, "
              f"torch {env['torch']}, {platform.python_version()}\n")
    write_atomic(out, header + frame.to_csv(index=False))
    return frame


PEAK_PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16}  # as records name a resolved precision


def bench_peak(device: str, out: Path, repeats: int = 5) -> pd.DataFrame:
    """GFLOP/s of a 2048 x 2048 matrix product per precision on `device`, written to `out` (CSV):
    rows of the same device and precision are replaced, others kept, so one file can hold
    several machines. The device is named as run records name it (`machine.describe_device`)."""
    where = describe_device(device)
    frame = pd.DataFrame([{"device": where, "precision": name, "gflop_s": round(matmul_peak(dtype, device,
                                                                                           repeats=repeats) / 1e9, 1),
                           "torch": versions()["torch"], "measured": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}"}
                          for name, dtype in PEAK_PRECISIONS.items()])
    if out.exists():
        old = pd.read_csv(out)
        frame = pd.concat([old[old["device"] != where], frame], ignore_index=True)
    write_atomic(out, frame.to_csv(index=False))
    return frame


# ---- training pipeline: ours vs a plain PyTorch loop ---------------------------------------------

def plain_loop_rate(model_name: str, data_dir: Path, batch_size: int, epochs: int, device: str,
                    num_workers: int) -> float:
    """Steady images/s of a textbook loop: DataLoader + PIL transforms, fp32, loss.item() per step."""
    import torchvision.transforms as T  # lazy: loaded only on the path that needs it
    from PIL import Image  # lazy: loaded only on the path that needs it

    images, labels = load_split(prepare(data_dir, download=False), train=True)
    pixels = images.permute(0, 2, 3, 1).numpy()  # HWC, as torchvision's CIFAR10 keeps them
    transform = T.Compose([T.RandomCrop(images.shape[-1], padding=PAD), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR10.mean, CIFAR10.std)])

    class Dataset(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):  # noqa: ANN204
            return transform(Image.fromarray(pixels[i])), int(labels[i])

    loader = torch.utils.data.DataLoader(Dataset(), batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         pin_memory=device == "cuda", drop_last=True,
                                         persistent_workers=num_workers > 0)
    torch.manual_seed(0)
    model = build_model(model_name).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rates, sync = [], synchronizer(device)
    for _ in range(epochs):
        seen, running = 0, 0.0
        sync()
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
            seen += len(y)
        sync()
        rates.append(seen / (time.perf_counter() - t0))
    return steady_rate(rates)


def ours_rate(model_name: str, data_dir: Path, batch_size: int, epochs: int, device: str,
              compile_model: bool = False, precision: str = "auto") -> tuple[float, str]:
    """Steady images/s through the project's own training path (`train_run`), and the precision it ran in."""

    config = RunConfig.create(model_name, profile="standard", epochs=epochs, batch_size=batch_size,
                              limit_test_batches=1, compile=compile_model, precision=precision)
    with tempfile.TemporaryDirectory() as out:
        record = train_run(config, RunContext.resolve(data_dir, accelerator=device), out, progress=False)
    rates = [h["train_images"] / h["train_time_s"] for h in record["history"]]
    return steady_rate(rates), record["precision"]["resolved"]


def pipeline_comparison(models: list[str], device: str, n_train: int, batch_size: int = 128, epochs: int = 4,
                        num_workers: int = 2, data_dir: Path | None = None,
                        log: Callable[[str], None] = print) -> pd.DataFrame:
    """Ours (in the precision `auto` resolves to, and in fp32 where that differs) vs the plain loop,
    side by side in one process, per model; median images/s of the epochs after the first."""

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = data_dir or write_folder(Path(tmp), CIFAR10, n_train)
        for name in models:
            plain = plain_loop_rate(name, data, batch_size, epochs, device, num_workers)
            ours, precision = ours_rate(name, data, batch_size, epochs, device)
            ours_fp32 = ours if precision == "32" else ours_rate(name, data, batch_size, epochs, device,
                                                                 precision="32")[0]
            rows.append({"model": name, "device": device, "batch_size": batch_size, "train_images": n_train,
                         "epochs": epochs, "plain_img_s": plain, "ours_img_s": ours, "ours_precision": precision,
                         "ours_fp32_img_s": ours_fp32, "speedup": ours / plain, "speedup_fp32": ours_fp32 / plain,
                         "plain_workers": num_workers, "threads": torch.get_num_threads()})
            log(f"{name}: ours ({precision}) {ours:.0f} img/s, ours fp32 {ours_fp32:.0f} img/s, "
                f"plain loop {plain:.0f} img/s -> {ours / plain:.2f}x")
    return pd.DataFrame(rows)


def settings_from(**kwargs: Any) -> BenchSettings:
    fields = {f.name for f in dataclasses.fields(BenchSettings)}
    return BenchSettings(**{k: v for k, v in kwargs.items() if k in fields and v is not None})

"""What a plan of runs will cost in time, before paying it.

`calibrate` times a few training steps and one evaluation pass of a model configuration on
synthetic data of the right shape, on this device, in the precision and memory format
training resolves to. Results are cached per (device, precision, model config, batch
sizes, threads) and code version in the user's cache folder, so a second dry-run is
instant. `plan_hours` turns calibrations into per-run epoch times and hours left:

    hours left = sum over unfinished runs of (epochs left x epoch seconds) / 3600 / shards
    epoch seconds = train batches x step seconds + test images / eval images per second

where train batches = ceil(train images / batch size) (or the recipe's limit). With
`--devices G --nodes N` each device runs batch size / (G x N) images a step, so the calibration
times that batch and the device-hours are the hours times G x N. Without the hardware at hand,
`sweep --dry-run --step-time S` prices a plan from your own step time S (one global batch).

On a CPU, a large batch of large images (ImageNet at 224 px) is timed on as many images as
a CIFAR-10 batch holds pixels and scaled linearly: a CPU's step time grows with the batch.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import torch

from .cache import JsonCache
from .config import RunConfig
from .costs import config_cost
from .data import DATASETS, get_dataset
from .machine import describe_device
from .models import build_model
from .precision import Precision, backend_settings, resolve_precision
from .progress import track
from .record_schema import epochs_done, read_records
from .timing import cuda_peak_bytes, seconds, sgd_step, synchronizer

FULL_CIFAR = (DATASETS["cifar10"].train_size, DATASETS["cifar10"].test_size)  # when the data folder is not at hand
TRAIN_STEPS = 4  # timed steps after one warm-up step
EVAL_BATCHES = 2
NOISY = 1.5  # a round whose slowest step exceeds its median step by this factor is measured again
ROUNDS = 3
CPU_PIXELS = 128 * 32 * 32  # the most input pixels a CPU calibration step processes (see the module doc)
OUTLIER = 3.0  # a config this many times slower per FLOP than the median of its model's configs is re-measured

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    step_s: float  # one training step at the recipe's batch size
    eval_img_s: float  # evaluation images per second at the recipe's eval batch size
    peak_bytes: float | None = None  # GPU memory of one warm training step (micro-batch); None on a CPU

    def epoch_seconds(self, train_batches: int, test_images: int) -> float:
        return train_batches * self.step_s + test_images / self.eval_img_s

    @classmethod
    def given(cls, step_s: float, batch_size: int) -> Calibration:
        """A user's step time; evaluation taken as a third of a training step per image (forward only)."""
        return cls(step_s, 3 * batch_size / step_s)


def device_name(device: str) -> str:
    return describe_device(device)


def steady(times: list[float]) -> bool:
    """Whether repeated step times agree: the slowest within NOISY x the median."""
    times = sorted(times)
    return times[-1] <= NOISY * times[len(times) // 2]


def measured_batch(batch: int, size: int, device: str) -> int:
    """The batch a calibration step times (the rest is scaled linearly; CPUs only)."""
    return batch if device == "cuda" else max(1, min(batch, CPU_PIXELS // (size * size)))


def measure_calibration(rc: RunConfig, device: str, precision: Precision, world: int = 1,
                        accumulate: int = 1) -> Calibration:
    """Time TRAIN_STEPS training steps (each on its own; the round is repeated, up to ROUNDS
    times, while they disagree by more than NOISY x, as they do when another process
    competes for the cores) and EVAL_BATCHES eval batches of `rc`'s model here, each step on the
    micro-batch the run will hold (batch / (world x accumulate)), under the run's kernel settings."""
    backend_settings(device, rc.recipe.deterministic)
    torch.manual_seed(0)
    dataset = get_dataset(rc.dataset)  # its input size and classes, whatever the model was designed for
    model = build_model(rc.model, **rc.model_args, num_classes=dataset.num_classes)
    model = model.to(device).to(memory_format=precision.memory_format)
    size = rc.recipe.image_size or dataset.input_size
    per_device = max(rc.recipe.batch_size // world, 1)  # images per device per optimizer step
    micro = max(per_device // max(accumulate, 1), 1)  # what one forward-backward holds in memory
    bs, ebs = measured_batch(micro, size, device), measured_batch(rc.recipe.eval_batch_size, size, device)
    x = torch.randn(bs, 3, size, size, device=device).contiguous(memory_format=precision.memory_format)
    y = torch.randint(0, dataset.num_classes, (bs,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=rc.recipe.weight_decay)
    sync = synchronizer(device)
    step = sgd_step(model, x, y, opt, autocast=lambda: precision.autocast(device))
    model.train()
    peak = cuda_peak_bytes(step) if device == "cuda" else None
    rounds = []
    for i in range(ROUNDS):
        times = seconds(step, TRAIN_STEPS, warmup=1 if i == 0 else 0, sync=sync)
        rounds.append(sorted(times)[len(times) // 2])
        if steady(times):
            break
    step_s = min(rounds) * per_device / bs  # the least disturbed round
    model.eval()
    xe = torch.randn(ebs, 3, size, size, device=device).contiguous(memory_format=precision.memory_format)
    with torch.inference_mode(), precision.autocast(device):
        eval_img_s = EVAL_BATCHES * ebs / sum(seconds(lambda: model(xe), EVAL_BATCHES, warmup=1, sync=sync))
    return Calibration(step_s, eval_img_s, peak)


def calibration_key(rc: RunConfig, device: str, precision: Precision, world: int = 1, accumulate: int = 1
                    ) -> list[Any]:
    extra = [] if rc.dataset == "cifar10" and world == 1 else [rc.dataset, rc.recipe.image_size, world]
    extra += [] if accumulate == 1 else [f"accumulate={accumulate}"]
    return ["calibration", device_name(device), precision.resolved, rc.model, rc.ratio, rc.dw_size, rc.width,
            rc.recipe.batch_size, rc.recipe.eval_batch_size, *JsonCache.knob_parts(rc.knobs), *extra]


def calibrate(rc: RunConfig, device: str, cache: JsonCache | None = None, *, force: bool = False,
              measure: bool = True, world: int = 1, accumulate: int = 1) -> tuple[Calibration | None, bool]:
    """The calibration of `rc`'s model and batch sizes on `device`, and whether it came from the
    cache. `force` measures again and replaces the cached one; `measure=False` only looks in the
    cache (None where nothing is cached)."""
    cache = cache or JsonCache("calibration")
    precision = resolve_precision(rc.recipe.precision, device)  # once: the key and the measurement share it
    key = cache.key(*calibration_key(rc, device, precision, world, accumulate))
    hit = cache.get(key)
    if isinstance(hit, dict) and not force:
        return Calibration(**hit), True
    if not measure:
        return None, False
    cal = measure_calibration(rc, device, precision, world, accumulate)
    cache.put(key, {"step_s": cal.step_s, "eval_img_s": cal.eval_img_s, "peak_bytes": cal.peak_bytes})
    return cal, False


def outliers(configs: list[tuple[RunConfig, Calibration, int]]) -> list[RunConfig]:
    """The configs whose step time per FLOP is over OUTLIER x the median of the other configs of
    the same model (at least two others): a calibration that a busy machine inflated, like an
    s=4 measured at ten times its s=5 neighbour. Models differ too much per FLOP to compare across."""
    by_model: dict[str, list[tuple[RunConfig, float]]] = {}
    for rc, cal, flops in configs:
        by_model.setdefault(rc.model, []).append((rc, cal.step_s / max(flops, 1)))
    found = []
    for members in by_model.values():
        for rc, cost in members:
            others = sorted(c for r, c in members if r is not rc)
            if len(others) >= 2 and cost > OUTLIER * others[len(others) // 2]:
                found.append(rc)
    return found


def train_batches(rc: RunConfig, train_images: int) -> int:
    n = math.ceil(train_images / rc.recipe.batch_size)
    return min(n, rc.recipe.limit_train_batches) if rc.recipe.limit_train_batches else n


def test_images(rc: RunConfig, test_size: int) -> int:
    limit = rc.recipe.limit_test_batches
    return min(test_size, limit * rc.recipe.eval_batch_size) if limit else test_size


@dataclass(frozen=True)
class RunEstimate:
    run_id: str
    epoch_s: float
    epochs_left: int
    devices: int = 1  # devices x nodes the run trains on
    step_s: float = 0.0  # one global batch
    batch_size: int = 0  # the global batch
    peak_bytes: float | None = None  # calibrated GPU memory per device (Calibration.peak_bytes)
    recorded: bool = False  # priced from finished runs' wall time (`recorded_epoch_seconds`), not calibrated

    @property
    def hours_left(self) -> float:
        return self.epoch_s * self.epochs_left / 3600

    @property
    def device_hours_left(self) -> float:
        return self.hours_left * self.devices


def estimate_run(rc: RunConfig, cal: Calibration, epochs_done: int, data_sizes: tuple[int, int],
                 world: int = 1) -> RunEstimate:
    """Epoch time and epochs left; each of `world` devices runs 1/world of the batches and test images."""
    epoch_s = cal.epoch_seconds(train_batches(rc, data_sizes[0]), math.ceil(test_images(rc, data_sizes[1]) / world))
    return RunEstimate(rc.run_id, epoch_s, max(rc.recipe.epochs - epochs_done, 0), world, cal.step_s,
                       rc.recipe.batch_size, cal.peak_bytes)


def input_side(estimates: list[RunEstimate], rate_per_core: float, workers: int) -> tuple[str, float]:
    """The input pipeline against the hungriest run of the plan: each device's model wants
    batch / world / step_s images per second, and `workers` loader workers at `rate_per_core`
    feed it. Returns (the run, wanted / fed): above 1 the run is input-bound by that factor."""
    wanted = {e.run_id: e.batch_size / e.devices / e.step_s for e in estimates if e.step_s > 0 and e.epochs_left}
    if not wanted:
        return "", 0.0
    run = max(wanted, key=wanted.get)
    return run, wanted[run] / (rate_per_core * max(workers, 1))


def estimate_runs(runs: list[RunConfig], runs_dir: Path | None, device: str, data_sizes: tuple[int, int],
                  progress: bool | None = None, recalibrate: bool = False, world: int = 1,
                  step_time: float | None = None, accumulate: int = 1,
                  priced_from: tuple[str | Path, ...] = ()) -> list[RunEstimate]:
    """Per run: calibrated epoch seconds and the epochs it has left in `runs_dir` (all of them
    where it is None), on `world` devices. `step_time` (seconds per global batch, the user's)
    prices every run; without it, the finished records of a run's configuration on this device in
    the results folders `priced_from` (`recorded_epoch_seconds`) replace its calibration.

    Each distinct configuration is calibrated once (`recalibrate`: measured again, not taken
    from the cache), with progress shown when anything is measured; a calibration far off its
    model's other configurations (`estimate.outliers`) is measured once more."""

    def done(rc: RunConfig) -> int:
        return 0 if runs_dir is None else epochs_done(runs_dir / rc.run_id, rc.recipe.epochs)

    if step_time is not None:
        return [estimate_run(rc, Calibration.given(step_time, rc.recipe.batch_size), done(rc), data_sizes, world)
                for rc in runs]
    records = [r for folder in priced_from for r in read_records(Path(folder) / "runs")]
    recorded = recorded_epoch_seconds(runs, records, describe_device(device)) if records else {}
    priced = {rc.run_id: RunEstimate(rc.run_id, recorded[rc.run_id], max(rc.recipe.epochs - done(rc), 0),
                                     recorded=True) for rc in runs if rc.run_id in recorded}
    if rest := [rc for rc in runs if rc.run_id not in priced]:
        calibrated = calibrated_runs(rest, device, data_sizes, done, progress, recalibrate, world, accumulate)
        priced.update(zip((rc.run_id for rc in rest), calibrated))
    return [priced[rc.run_id] for rc in runs]


def calibrated_runs(runs: list[RunConfig], device: str, data_sizes: tuple[int, int], done: Callable[[RunConfig], int],
                    progress: bool | None, recalibrate: bool, world: int, accumulate: int) -> list[RunEstimate]:
    """`estimate_runs`' calibrated part: each distinct configuration timed once."""
    keys = [json.dumps(calibration_key(rc, device, resolve_precision(rc.recipe.precision, device), world, accumulate),
                       default=str) for rc in runs]
    distinct = list(dict(zip(keys, runs)).items())
    at = {"world": world, "accumulate": accumulate}
    pending = recalibrate or any(calibrate(rc, device, measure=False, **at)[0] is None
                                 for _, rc in distinct)
    cals = {key: calibrate(rc, device, force=recalibrate, **at)[0] for key, rc in
            track(distinct, "calibrating", "config", show=pending if progress is None else progress,
                  label=lambda item: item[1].run_id)}
    suspects = outliers([(rc, cals[key], config_cost(*rc.key).flops) for key, rc in distinct])
    for key, rc in distinct:
        if rc in suspects:
            log.warning("calibration of %s is far off its neighbours (%.2f s per step); measuring it again",
                        rc.run_id, cals[key].step_s)
            cals[key] = calibrate(rc, device, force=True, **at)[0]
    return [estimate_run(rc, cals[key], done(rc), data_sizes, world) for rc, key in zip(runs, keys)]


IDENTITY_ONLY = ("seed", "data", "source")  # what tells seeds apart, not what a run costs


def recorded_epoch_seconds(runs: list[RunConfig], records: list[dict[str, Any]], device: str) -> dict[str, float]:
    """Per planned run id, the median wall seconds per epoch of the finished records of its
    configuration (any seed, any schedule length) that ran on `device` (`machine.describe_device`):
    what those runs cost here, steadier than a calibration taken while other work shares the
    machine."""
    def cost_key(config: dict[str, Any]) -> str:  # an epoch costs the same whatever the schedule's length
        recipe = {k: v for k, v in config.get("recipe", {}).items() if k != "epochs"}
        return json.dumps({**{k: v for k, v in config.items() if k not in IDENTITY_ONLY}, "recipe": recipe},
                          sort_keys=True, default=str)

    seen: dict[str, list[float]] = {}
    for r in records:
        try:
            if r.get("status") != "finished" or r.get("device") != device or not r["epochs_done"] > 0:
                continue
            key = cost_key(RunConfig.from_dict(r["config"]).to_dict())
            seen.setdefault(key, []).append(float(r["wall_time_s"]) / int(r["epochs_done"]))
        except (KeyError, TypeError, ValueError):  # a record without the fields: no price from it
            continue
    return {rc.run_id: median(found) for rc in runs if (found := seen.get(cost_key(rc.to_dict())))}


def plan_hours(estimates: list[RunEstimate], shards: int = 1) -> float:
    """Hours left for the whole plan, per shard: the N shards of a plan run side by side."""
    return sum(e.hours_left for e in estimates) / max(shards, 1)


def format_hours(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h"

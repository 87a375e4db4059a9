"""One training run: `train_run` opens the run (its data and its folder's record), builds the
`classifier.ImageClassifier` and its trainer, fits it into the folder (checkpoint, metrics CSV,
result.json) and resumes it there, in a `RunContext` resolved once by its caller.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from . import __version__, distributed, preemption
from .checkpoints import CHECKPOINT, AtomicCheckpointIO, resumable_checkpoint, safe_load
from .classifier import FINITE_CHECK_EVERY, Diverged, ImageClassifier
from .config import LOGGERS, ConfigError, Recipe, RunConfig, check_processes
from .data import DataError, DataSet, get_dataset
from .features import FeatureError, fit_widths, load_trained
from .flops import measure
from .machine import allocated_cpus, describe_device
from .models import MODELS, get_spec, resolve_knobs
from .models.registry import derivation, starts_from_baseline
from .precision import Precision, backend_settings, precision_on, resolve_precision
from .record_schema import read_record
from .records import DamagedRecord, write_record

log = logging.getLogger(__name__)
for _noise in (r".*treespec, LeafSpec.*", r".*exists and is not empty.*", r".*smaller than the logging interval.*"):
    warnings.filterwarnings("ignore", message=_noise)
# Lightning advertises a cloud logger before every fit (in a sweep, one line per run), and
# announces a Ctrl-C, which the command line reports in its own one line.
QUIET = ("litlogger", "Detected KeyboardInterrupt")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda r: not any(text in r.getMessage() for text in QUIET))


def is_rank_zero() -> bool:
    """False in the processes Lightning's DDP launcher starts for ranks 1..N-1, and in the tasks
    `srun` starts for them under SLURM (their SLURM_PROCID)."""
    if os.environ.get("RANK") is not None:
        return int(os.environ["RANK"]) == 0
    if int(os.environ.get("SLURM_NTASKS", 1)) > 1 and os.environ.get("SLURM_PROCID") is not None:
        return int(os.environ["SLURM_PROCID"]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def versions() -> dict[str, str]:
    import torchvision  # lazy: loaded only on the path that needs it

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "lightning": L.__version__, "ghost_ablate": __version__}


def environment(device: str) -> dict[str, Any]:
    """The device the run trains on (not whether the host has a GPU) and the software versions."""
    return {"device": describe_device(device), "versions": versions()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summarize_history(history: list[dict[str, float]]) -> dict[str, Any]:
    """Final and best test accuracy, epochs done and throughput from per-epoch entries."""
    if not history:
        return {"epochs_done": 0}
    accs = [h.get("test_acc") for h in history]
    scored = [(a, h["epoch"]) for a, h in zip(accs, history) if a is not None]
    best = max(scored) if scored else (None, None)
    time_s = sum(h["train_time_s"] for h in history)
    images = sum(h["train_images"] for h in history)
    return {
        "epochs_done": len(history),
        "final_test_acc": history[-1].get("test_acc"),
        "final_test_acc5": history[-1].get("test_acc5"),
        "best_test_acc": best[0],
        "best_epoch": best[1],
        "train_time_s": time_s,
        "train_images_per_s": images / time_s if time_s > 0 else None,
        "history": history,
    }


# The oldest Linux driver each CUDA major version of a torch build runs on (NVIDIA's release notes,
# minor-version compatibility): a build for a newer CUDA sees no GPU on an older driver.
MIN_DRIVER = {"13": "580.65.06", "12": "525.60.13", "11": "450.80.02"}
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")  # present wherever an NVIDIA kernel driver is loaded


def resolve_device(accelerator: str, *, available: bool | None = None, driver_present: bool | None = None) -> str:
    """"cuda" or "cpu" for an --accelerator choice (auto: CUDA when visible). A GPU run that cannot
    have its GPU is a one-line error, never a quiet CPU run: `cuda` asked for where torch sees none,
    or `auto` on a machine whose NVIDIA driver is loaded but too old for this torch build
    (--accelerator cpu trains there on purpose). `available`/`driver_present` are for tests."""
    available = torch.cuda.is_available() if available is None else available
    if available and accelerator != "cpu":
        return "cuda"
    driver_present = NVIDIA_DRIVER.exists() if driver_present is None else driver_present
    if accelerator == "cuda" or (accelerator == "auto" and driver_present):
        raise ConfigError(no_gpu_message(accelerator, driver_present))
    return "cpu"


def no_gpu_message(accelerator: str, driver_present: bool) -> str:
    """What is missing for a GPU run, and how to get a torch that runs on this driver."""
    cuda = torch.version.cuda
    if cuda is None:
        build = f"torch {torch.__version__} is a CPU-only build"
    else:
        need = MIN_DRIVER.get(cuda.split(".")[0])
        build = (f"torch {torch.__version__} is built for CUDA {cuda}"
                 + (f", which needs NVIDIA driver >= {need}" if need else ""))
    seen = "an NVIDIA driver is loaded but torch cannot use it" if driver_present else "no NVIDIA driver is loaded"
    return (f"--accelerator {accelerator}: no usable GPU ({seen}; {build}); update the driver, or install a torch "
            f"built for your driver's CUDA (`make install STACK=` with a matching torch wheel, see docs/gpu.md), "
            f"or train on the CPU on purpose with --accelerator cpu")


def keep_precision(here: Precision, record: dict[str, Any] | None, device: str) -> Precision:
    """The precision a resumed run goes on in: the one its record says it started with. `auto`
    resolves per machine, so a run started in fp32 on one CPU would otherwise go on in bf16 on
    another; an explicit request that differs from the record cannot happen (it is in the id)."""
    before = ((record or {}).get("precision") or {}).get("resolved")
    if before is None or before == here.resolved:
        return here
    reason = (f"auto: kept {before}, which the run started in (on {record.get('device', 'another machine')}); "
              f"here auto would pick {here.resolved}")
    log.warning("warning: %s", reason)
    return precision_on(device, here.requested, before, reason)


def make_loggers(kind: str, out: Path, config: RunConfig, version: str) -> list[Any]:
    """Lightning's CSV logger (always: it is where the records come from) plus the tracker asked
    for. MLflow logs to MLFLOW_TRACKING_URI (default: ./mlruns), in the experiment
    MLFLOW_EXPERIMENT_NAME (default: ghost-ablate); W&B to WANDB_PROJECT (default: ghost-ablate),
    offline when WANDB_MODE=offline. Each names the run by its id and tags it with its config."""
    if kind not in LOGGERS:
        raise ConfigError(f"unknown logger {kind!r}; valid: {', '.join(LOGGERS)}")
    loggers: list[Any] = [CSVLogger(out, name="logs", version=version)]
    needs = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}.get(kind)
    if needs and importlib.util.find_spec(needs) is None:
        raise ConfigError(f"--logger {kind} needs the {needs} package: pip install 'ghost-ablate[tracking]'")
    tags = {"run_id": config.run_id, "model": config.model, "profile": config.profile, "seed": str(config.seed),
            "dataset": config.dataset}
    if kind == "tensorboard":
        loggers.append(TensorBoardLogger(out, name="tb", version=version))
    elif kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger  # lazy: an optional or rarely used dependency, loaded on use

        loggers.append(MLFlowLogger(os.environ.get("MLFLOW_EXPERIMENT_NAME", "ghost-ablate"), config.run_id,
                                    tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"), tags=tags))
    elif kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger  # lazy: an optional or rarely used dependency, loaded on use

        loggers.append(WandbLogger(name=config.run_id, id=config.run_id.replace(".", "_"), save_dir=str(out),
                                   project=os.environ.get("WANDB_PROJECT", "ghost-ablate"), resume="allow",
                                   offline=os.environ.get("WANDB_MODE") == "offline", tags=list(tags.values())))
    return loggers


def slurm_plugins() -> list[Any]:
    """Under SLURM: Lightning's SLURM environment (ranks from srun). Requeueing on pre-emption is
    `preemption`'s (a save at a step's end), not Lightning's (a save inside the signal handler)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment  # lazy: loaded only on the path that needs it

    env = distributed.cluster_environment()
    return [env] if isinstance(env, SLURMEnvironment) else []


def make_trainer(recipe: Recipe, out: Path, devices: int, device: str, precision: Precision, progress: bool,
                 attempt: int = 1, nodes: int = 1, loggers: list[Any] | None = None, accumulate: int = 1
                 ) -> L.Trainer:
    cuda = device == "cuda"
    settings = backend_settings(device, recipe.deterministic)
    if not cuda:
        torch.set_num_threads(max(allocated_cpus() // devices, 1))
    return L.Trainer(
        accelerator="cuda" if cuda else "cpu",
        devices=devices,
        num_nodes=nodes,
        strategy="ddp" if devices * nodes > 1 else "auto",
        precision=precision.lightning,
        max_epochs=recipe.epochs,
        accumulate_grad_batches=accumulate,
        sync_batchnorm=recipe.sync_batchnorm and devices * nodes > 1,
        limit_train_batches=recipe.limit_train_batches or 1.0,
        limit_val_batches=recipe.limit_test_batches or 1.0,
        deterministic=recipe.deterministic,
        benchmark=settings["cudnn_benchmark"],
        # One log folder per attempt: Lightning's CSV writer deletes an existing metrics.csv.
        logger=loggers if loggers is not None else [CSVLogger(out, name="logs", version=f"attempt-{attempt}")],
        callbacks=[
            # One rolling checkpoint, rewritten every epoch. (save_last alone writes nothing
            # before the end of training when no top-k checkpoint is kept.)
            ModelCheckpoint(dirpath=out, filename=Path(CHECKPOINT).stem, save_top_k=1, monitor=None,
                            enable_version_counter=False, save_on_train_epoch_end=True),
            LearningRateMonitor(logging_interval="epoch"),
        ],
        plugins=[AtomicCheckpointIO(), *slurm_plugins()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=FINITE_CHECK_EVERY,
        default_root_dir=out,
    )


def start_from_source(config: RunConfig, module: ImageClassifier, runs_dir: Path) -> dict[str, Any] | None:
    """Make a run's network from its source run's final weights (`config.source`, a finished run
    beside it) by the derivation its spec declares (`models.registry.derivation`: pruned from its
    baseline, or fine-tuned from its own model), replacing `module.model`. Return what the record
    says of the source, or None for a run that starts from random weights. A network derived from
    its baseline with no source named, or a source that is not finished or has no checkpoint, is a
    ConfigError naming what to run."""

    spec = get_spec(config.model)
    knobs = resolve_knobs(config.model, config.ratio, config.dw_size, config.width, **dict(config.knobs))
    if not config.source:
        if starts_from_baseline(config.model, knobs):
            raise ConfigError(f"{config.model} with init=pruned starts from a trained {spec.baseline}: "
                              f"run it from an experiment file (its row trains the baseline first, see `from:`), or "
                              f"train it from random weights with --set init=scratch")
        return None
    if knobs.get("init") == "scratch":
        raise ConfigError(f"run {config.run_id} names a source run but its model starts from random weights")
    source_dir = runs_dir / config.source
    source_record = read_record(source_dir) or {}
    if source_record.get("status") != "finished":
        raise ConfigError(f"source run {config.source} of {config.run_id} is not finished; run the sweep again "
                          f"once it is")
    try:
        trained = load_trained(source_dir)
        derive = derivation(config.model, trained.name)
    except (FeatureError, ValueError) as err:
        raise ConfigError(f"source run of {config.run_id}: {err}") from None
    network, how = derive(trained.model, module.model, knobs)
    module.model = network.train()  # loaded for inference (eval mode); Lightning keeps a module's mode
    return {"run_id": config.source, "final_test_acc": source_record.get("final_test_acc"), "criterion": how}


def shape_from_checkpoint(config: RunConfig, module: ImageClassifier, ckpt: Path | None) -> None:
    """Give an equal-budget run's network the widths its own checkpoint was saved with, so that
    resuming loads it (the widths came from pruning its source, not from the config)."""
    if ckpt is not None and MODELS[config.model].shaped_by_source:  # only then is the checkpoint read here
        module.model = fit_widths(module.model, config.model, safe_load(ckpt)["state_dict"])


def loader_timeout_error(err: BaseException) -> DataError | None:
    """torch's "DataLoader timed out after N seconds" said with its likely causes, or None."""
    if not isinstance(err, RuntimeError) or "DataLoader timed out" not in str(err):
        return None
    return DataError(f"{str(err).splitlines()[0].rstrip('.')}: a loader worker sent no batch; likely a hung decode, "
                     f"a full /dev/shm, or too few file descriptors (`ulimit -n`; raise it, or lower the batch or "
                     f"GHOST_ABLATE_WORKERS)")


UNREADABLE_LISTED = 100  # unreadable images named in a record; all are counted


def gather_unreadable(data: L.LightningDataModule) -> None:
    """Under DDP each process saw its own share of the images: give every process all the
    unreadable ones, so rank 0's record counts them all."""

    if not hasattr(data, "unreadable") or not (dist.is_available() and dist.is_initialized()):
        return
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, sorted(data.unreadable))
    data.unreadable = {p for part in everyone for p in part}


@dataclass(frozen=True)
class RunContext:
    """Where runs train, resolved once by the command (or a sweep's plan) and handed to each run,
    never re-derived: the data set and its folder, the device, the processes each run spans, and
    the tracker its metrics go to."""

    dataset: DataSet
    data_dir: str
    device: str  # "cpu" or "cuda", as `resolve_device` decided
    devices: int = 1
    nodes: int = 1
    accumulate: int = 1
    download: bool = True
    logger: str = "csv"

    @classmethod
    def resolve(cls, data_dir: str | Path, *, dataset: str = "cifar10", accelerator: str = "auto",
                **scale: Any) -> RunContext:
        """The context of `data_dir` on the device `accelerator` names (`scale`: the other fields)."""
        return cls(get_dataset(dataset), str(data_dir), resolve_device(accelerator), **scale)

    @property
    def world(self) -> int:
        return self.devices * self.nodes


@dataclass
class OpenedRun:
    """A run opened for training: its data loaded and checked against the plan, and what its
    folder held from earlier attempts (an empty dict for a new run)."""

    config: RunConfig
    identity: dict[str, Any]  # config.to_dict(): what the record and the checkpoint say the run is
    data: L.LightningDataModule
    fingerprint: str
    prior: dict[str, Any]


def open_run(config: RunConfig, where: RunContext, out: Path, per_device: int) -> OpenedRun:
    """Load the run's data and its folder's record: data that is not what the run was planned for,
    a damaged record, or a folder holding another configuration is a user error naming the fix."""
    recipe, dataset, data_dir = config.recipe, where.dataset, where.data_dir
    if config.dataset != dataset.name:
        raise ConfigError(f"run {config.run_id} trains on {config.dataset}, not on the {dataset.name} in {data_dir}")
    data = dataset.module(data_dir, per_device, recipe.eval_batch_size, config.seed, where.download,
                          image_size=recipe.image_size, augmentation=recipe.augmentation).load()
    seen = dataset.fingerprint(data_dir)
    if config.data is None:
        config = config.with_data(seen)
    elif config.data != seen:
        raise ConfigError(f"{data_dir} holds another data set (fingerprint {seen}) than run {config.run_id} was "
                          f"planned for ({config.data}); plan the run with this data (same command, without --out)")
    try:
        record = read_record(out, named_by_id=out.name == config.run_id)
    except DamagedRecord as err:
        raise DamagedRecord(err.path, f"{err.reason}; move it aside to train the run again from its checkpoint "
                                      f"(`ghost-ablate doctor {out.parent.parent} --fix` does that), or restore "
                                      f"it from a copy") from None
    identity = config.to_dict()
    if record is not None and record.get("config") != identity:
        other = "data" if {**record.get("config", {}), "data": seen} == identity else "configuration"
        raise ConfigError(f"{out} holds run {record.get('run_id')} of another {other}; use another --out")
    return OpenedRun(config, identity, data, seen, record or {})


def add_callbacks(trainer: L.Trainer, recipe: Recipe, out: Path, ranks: distributed.Ranks,
                  extra: list[L.Callback] | None) -> None:
    """The callbacks a run's recipe and environment ask for, after the caller's own."""
    trainer.callbacks.extend(extra or [])
    if recipe.ema_decay is not None:  # Lightning's EMA: validation and checkpoints hold the averaged weights
        from lightning.pytorch.callbacks import EMAWeightAveraging  # lazy: loaded only on the path that needs it

        trainer.callbacks.append(EMAWeightAveraging(decay=recipe.ema_decay))
    if preemption.install():  # under SLURM: save at the step a pre-emption warning arrives
        trainer.callbacks.append(preemption.SaveOnPreemption(out / CHECKPOINT, ranks.any, ranks.world))


def started_record(run: OpenedRun, where: RunContext, cost: Any, precision: Precision, layout: dict[str, Any],
                   attempt: int, source: dict[str, Any] | None, notes: list[str]) -> dict[str, Any]:
    """The record written as an attempt starts (status `running`); `layout`: nodes, devices,
    accumulation and the effective batch and lr."""
    config, prior = run.config, run.prior
    record = {
        "run_id": config.run_id, "config": run.identity, "status": "running",
        "params": cost.params, "flops": cost.flops,
        "data": {"dir": where.data_dir, "fingerprint": run.fingerprint, "train_size": run.data.sizes[0],
                 "test_size": run.data.sizes[1]},
        **layout, "started_at": prior.get("started_at", _now()), "attempts": attempt,
        "precision": precision.to_record(), **environment(where.device),
        **({"scored_weights": f"ema (decay {config.recipe.ema_decay:g})"}
           if config.recipe.ema_decay is not None else {}),
    }
    if source:
        record["source"] = source
    if prior.get("checkpoint_notes") or notes:
        record["checkpoint_notes"] = [*(prior.get("checkpoint_notes") or []), *notes]
    return record


def outcome(err: BaseException) -> tuple[str, str, BaseException | None]:
    """(status, error text, what to raise instead or None) for an exception that ended `fit`."""
    if isinstance(err, Diverged):
        return "diverged", str(err), None
    if isinstance(err, preemption.Preempted):
        return "interrupted", (f"pre-empted: {err}; the requeued job resumes it" if err.requeue else
                               f"stopped by SIGTERM: {err}; the same command resumes it"), None
    if isinstance(err, (KeyboardInterrupt, SystemExit)):
        if isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt):  # Lightning's exit(1)
            return "interrupted", "interrupted by the user or a signal", KeyboardInterrupt()
        return "interrupted", "interrupted by the user or a signal", None
    if (stuck := loader_timeout_error(err)) is not None:
        return "failed", str(stuck), stuck
    return "failed", f"{type(err).__name__}: {err}", None


def finish_record(record: dict[str, Any], run: OpenedRun, module: ImageClassifier, trainer: L.Trainer,
                  resumed: bool, attempt: int, device: str, ended: tuple[str, str | None], seconds: float) -> None:
    """What an attempt adds to its record when it ends, whatever ended it: `ended` is (status, error)."""
    prior = run.prior
    unreadable = sorted(set((prior.get("unreadable_images") or {}).get("files") or [])
                        | getattr(run.data, "unreadable", set()))
    if unreadable:  # folder data sets skip images that cannot be decoded, and say which here
        record["unreadable_images"] = {"count": len(unreadable), "files": unreadable[:UNREADABLE_LISTED]}
    if resumed and module.start_step is not None:  # where each resumed attempt picked up
        record["resumes"] = [*(prior.get("resumes") or []), {"attempt": attempt, "from_step": module.start_step}]
    record["optimizer_steps"] = trainer.global_step
    if device == "cuda":  # this process's device: what the dry-run's calibration predicts per device
        record["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    if module.test_correct is not None:
        record["test_correct"] = module.test_correct
    record.update(summarize_history(module.history), test_confusion=module.confusion, status=ended[0],
                  error=ended[1], wall_time_s=prior.get("wall_time_s", 0.0) + seconds, finished_at=_now())


def train_run(config: RunConfig, where: RunContext, out_dir: str | Path, *, progress: bool | None = None,
              callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train `config` into `out_dir` in the context `where`, resuming from its last checkpoint;
    return the record.

    A finished run returns its record at once. A folder holding another configuration is
    refused. Divergence is recorded (status `diverged`) and raised as `Diverged`.
    """
    out, recipe, device = Path(out_dir), config.recipe, where.device
    per_device = check_processes(recipe, where.world, where.accumulate, device)
    ranks = distributed.current()
    run = open_run(config, where, out, per_device)
    config, prior = run.config, run.prior
    if prior.get("status") == "finished":
        return prior

    L.seed_everything(config.seed, workers=True, verbose=False)
    module = ImageClassifier(config.model, config.ratio, config.dw_size, config.width,
                             where.dataset.num_classes, run.identity["recipe"], dict(config.knobs) or None)
    precision = keep_precision(resolve_precision(recipe.precision, device), prior or None, device)
    module.channels_last = precision.channels_last
    attempt = prior.get("attempts", 0) + 1
    trainer = make_trainer(recipe, out, where.devices, device, precision,
                           sys.stdout.isatty() if progress is None else progress, attempt, where.nodes,
                           make_loggers(where.logger, out, config, f"attempt-{attempt}"), where.accumulate)
    add_callbacks(trainer, recipe, out, ranks, callbacks)
    module.run_config = run.identity
    identity = {"run_config": module.run_config, "hyper_parameters": dict(module.hparams)}
    ranks.agree(config.run_id, "run")
    ckpt, notes = ranks.decide(lambda: resumable_checkpoint(out, identity))  # one checkpoint for every rank
    source = start_from_source(config, module, out.parent) if ckpt is None else prior.get("source")
    shape_from_checkpoint(config, module, ckpt)
    cost = measure(module.model, recipe.image_size or where.dataset.input_size)  # before any compile
    layout = {**({"nodes": where.nodes} if where.nodes > 1 else {}), "devices": where.devices,
              **({"accumulate": where.accumulate} if where.accumulate > 1 else {}),
              **({"distributed": ranks.describe()} if ranks.world > 1 else {}),
              "effective_batch_size": per_device * where.world * where.accumulate, "effective_lr": recipe.scaled_lr}
    record = started_record(run, where, cost, precision, layout, attempt, source, notes)
    writes_record = trainer.is_global_zero  # rank 0 only under DDP
    if writes_record:
        write_record(out, record)
    clock, status, error = time.perf_counter(), "failed", None
    try:
        trainer.fit(module, datamodule=run.data, ckpt_path=ckpt, weights_only=True)
        status = "interrupted" if trainer.interrupted else "finished"
        gather_unreadable(run.data)
    except BaseException as err:
        status, error, instead = outcome(err)
        if isinstance(err, Diverged):
            record["diverged_epoch"] = err.epoch
        if instead is not None:
            raise instead from None
        raise
    finally:
        finish_record(record, run, module, trainer, ckpt is not None, attempt, device, (status, error),
                      time.perf_counter() - clock)
        if writes_record:
            write_record(out, record)
    return record

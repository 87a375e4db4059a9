"""One training run: a LightningModule around any registry model, and `train_run` which
trains it into a folder (checkpoint, metrics CSV, result.json) and resumes it there.
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
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from . import __version__, distributed, preemption
from .checkpoints import CHECKPOINT, AtomicCheckpointIO, resumable_checkpoint, safe_load
from .config import (
    LOGGERS,
    ConfigError,
    Recipe,
    RunConfig,
    check_processes,
    make_recipe,
)
from .data import DataError, DataSet, get_dataset
from .features import FeatureError, fit_widths, load_trained
from .flops import measure
from .machine import allocated_cpus, describe_device, machine_load
from .models import build_model, get_spec, resolve_knobs
from .models.registry import derivation, starts_from_baseline
from .precision import Precision, backend_settings, precision_on, resolve_precision
from .record_schema import read_record
from .records import DamagedRecord, pack_outcomes, write_record

log = logging.getLogger(__name__)
for _noise in (r".*treespec, LeafSpec.*", r".*exists and is not empty.*", r".*smaller than the logging interval.*"):
    warnings.filterwarnings("ignore", message=_noise)
# Lightning advertises a cloud logger before every fit (in a sweep, one line per run), and
# announces a Ctrl-C, which the command line reports in its own one line.
QUIET = ("litlogger", "Detected KeyboardInterrupt")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda r: not any(text in r.getMessage() for text in QUIET))
CONFUSION_CLASSES = 100  # the most classes whose test confusion matrix a record keeps
FINITE_CHECK_EVERY = 50  # steps between host syncs that check the loss is finite


def is_rank_zero() -> bool:
    """False in the processes Lightning's DDP launcher starts for ranks 1..N-1, and in the tasks
    `srun` starts for them under SLURM (their SLURM_PROCID)."""
    if os.environ.get("RANK") is not None:
        return int(os.environ["RANK"]) == 0
    if int(os.environ.get("SLURM_NTASKS", 1)) > 1 and os.environ.get("SLURM_PROCID") is not None:
        return int(os.environ["SLURM_PROCID"]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


class Diverged(RuntimeError):
    def __init__(self, epoch: int) -> None:
        super().__init__(f"loss became NaN or infinite in epoch {epoch}")
        self.epoch = epoch


class ImageClassifier(L.LightningModule):
    """Cross-entropy classification with SGD, step or cosine schedule, top-1/top-5 accuracy."""

    def __init__(self, model: str, ratio: int | None = None, dw_size: int | None = None,
                 width: float | None = None, num_classes: int | None = None,
                 recipe: dict[str, Any] | None = None, knobs: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        num_classes = num_classes or get_spec(model).num_classes  # the model's own classes where none given
        self.recipe: Recipe = make_recipe(**(recipe or {}))
        # the recipe's knob values (its source's dropout, say) where the run does not set the knob
        knobs = {**self.recipe.knobs_for(get_spec(model).knobs), **(knobs or {})}
        self.model = build_model(model, ratio, dw_size, width, num_classes, **knobs)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc1 = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        # Kept for CIFAR-sized label sets: ImageNet's 1000 x 1000 would be megabytes in every record.
        self.test_confusion = MulticlassConfusionMatrix(num_classes) if num_classes <= CONFUSION_CLASSES else None
        self.confusion: list[list[int]] | None = None  # rows: true class, columns: predicted; last test pass
        self.test_correct: str | None = None  # last test pass, image by image (pack_outcomes)
        self._correct: list[torch.Tensor] | None = None
        self.channels_last = False  # set by train_run from the resolved precision
        self.run_config: dict[str, Any] | None = None  # the run's identity, set by train_run, kept in checkpoints
        self.history: list[dict[str, float]] = []  # one entry per finished epoch, kept in checkpoints
        self._nonfinite: torch.Tensor | None = None
        self._clock = 0.0
        self._train_time: float | None = None
        self.start_step: int | None = None  # the optimizer step this attempt started from (> 0: resumed)
        self._train_images = 0
        self._epoch_lr = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.recipe.compile:
            self.model.compile()  # in place: parameter names (and checkpoints) stay the same

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # -- training ----------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.start_step = self.trainer.global_step

    def on_train_epoch_start(self) -> None:
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self._train_images = 0
        self._epoch_lr = self.optimizers().param_groups[0]["lr"]  # the schedulers step before epoch end
        self._train_time = None
        self._clock = time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self._nonfinite is None:  # resumed mid-epoch: Lightning does not call on_train_epoch_start
            self.on_train_epoch_start()
        if not len(y):  # every image of the batch was unreadable (folder data sets skip those)
            if self.trainer.world_size == 1:
                return None  # the step is skipped
            # Under DDP every rank must join the step's gradient all-reduce, or the others wait in it
            # for ever: a zero loss that reaches every parameter gives zero gradients here.
            return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
        logits = self(self._inputs(x))
        loss = F.cross_entropy(logits, y, label_smoothing=self.recipe.label_smoothing)
        self._nonfinite |= ~torch.isfinite(loss.detach())  # no host sync here
        self.train_acc(logits.detach(), y)
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        self._train_images += len(y)
        if (batch_idx + 1) % FINITE_CHECK_EVERY == 0:
            self._raise_if_diverged()
        return loss

    def _raise_if_diverged(self) -> None:
        """Raise Diverged on every rank when any rank's loss went non-finite (one reduced flag,
        so no rank stops alone and leaves the others waiting in a collective)."""
        seen = self._nonfinite is not None and bool(self._nonfinite)
        if self.trainer.strategy.reduce_boolean_decision(seen, all=False):
            raise Diverged(self.current_epoch)

    def _stop_clock(self) -> None:
        if self._on_cuda():
            torch.cuda.synchronize()
        self._train_time = time.perf_counter() - self._clock

    # -- evaluation on the test set each epoch -------------------------------------------
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        if not len(y):
            return
        x = self._inputs(x)
        logits = self(x)
        if self.recipe.tta_flip:  # the mirror's logits averaged in: the mirror is as likely an image
            logits = (logits + self(torch.flip(x, dims=[3]))) / 2
        if self._correct is not None:
            self._correct.append(logits.argmax(1) == y)  # on the device: one copy to the host per pass
        self.test_acc1(logits, y)
        self.test_acc5(logits, y)
        if self.test_confusion is not None:
            self.test_confusion.update(logits, y)
        self.log("test_loss", F.cross_entropy(logits, y), batch_size=len(y), sync_dist=True)
        self.log("test_acc", self.test_acc1, batch_size=len(y))
        self.log("test_acc5", self.test_acc5, batch_size=len(y))

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:  # training part ends
            self._stop_clock()
            self._raise_if_diverged()
        # per-image outcome of one process's whole, unshuffled test pass (not kept under DDP, where
        # each rank sees a share)
        self._correct = [] if self.trainer.world_size == 1 else None

    def on_validation_epoch_end(self) -> None:
        if self._correct is not None and not self.trainer.sanity_checking:
            self.test_correct = pack_outcomes(torch.cat(self._correct).cpu().tolist()) if self._correct else None
        self._correct = None
        if self.test_confusion is not None:
            self.confusion = self.test_confusion.compute().tolist()
            self.test_confusion.reset()

    def on_train_epoch_end(self) -> None:
        self._raise_if_diverged()  # also when no test loop ran this epoch
        if self._train_time is None:
            self._stop_clock()
        m = self.trainer.callback_metrics
        entry = {"epoch": self.current_epoch, "lr": self._epoch_lr,
                 "train_time_s": self._train_time, "train_images": self._train_images * self.trainer.world_size,
                 **machine_load()}
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_acc5"):
            if key in m:
                entry[key] = float(m[key])
        self.history.append(entry)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["history"] = self.history
        checkpoint["test_confusion"] = self.confusion
        checkpoint["test_correct"] = self.test_correct
        checkpoint["run_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("history", []))
        self.confusion = checkpoint.get("test_confusion")
        self.test_correct = checkpoint.get("test_correct")

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's union of return types
        r = self.recipe
        opt = torch.optim.SGD(param_groups(self.model, r), lr=r.scaled_lr, momentum=r.momentum, nesterov=r.nesterov,
                              weight_decay=r.weight_decay)
        main_epochs = r.epochs - r.warmup_epochs
        if r.schedule == "step":
            milestones = [m - r.warmup_epochs for m in r.milestones if m > r.warmup_epochs]
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, r.gamma)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(main_epochs, 1))
        if r.warmup_epochs:
            warm = torch.optim.lr_scheduler.LinearLR(opt, 0.1, 1.0, total_iters=r.warmup_epochs)
            sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, sched], milestones=[r.warmup_epochs])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def param_groups(model: torch.nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one at the recipe's weight decay, or, with
    `norm_weight_decay` set, the normalization layers' weights and biases apart at that decay
    (torchvision's split, as its reference recipes use it)."""
    if recipe.norm_weight_decay is None:
        return [{"params": list(model.parameters())}]
    from torchvision.ops._utils import split_normalization_params  # lazy: loaded only on the path that needs it

    norm, other = split_normalization_params(model)
    return [{"params": other}, {"params": norm, "weight_decay": recipe.norm_weight_decay}]


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
    if ckpt is None or not get_spec(config.model).shaped_by_source:
        return

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


@dataclass
class OpenedRun:
    """A run opened for training: its data loaded and checked against the plan, and what its
    folder held from earlier attempts (an empty dict for a new run)."""

    config: RunConfig
    dataset: DataSet
    data: L.LightningDataModule
    fingerprint: str
    prior: dict[str, Any]


def open_run(config: RunConfig, data_dir: str | Path, out: Path, per_device: int, download: bool) -> OpenedRun:
    """Load the run's data and its folder's record: data that is not what the run was planned for,
    a damaged record, or a folder holding another configuration is a user error naming the fix."""
    recipe = config.recipe
    dataset = get_dataset(config.dataset)
    data = dataset.module(data_dir, per_device, recipe.eval_batch_size, config.seed, download,
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
    if record is not None and record.get("config") != config.to_dict():
        other = "data" if {**record.get("config", {}), "data": seen} == config.to_dict() else "configuration"
        raise ConfigError(f"{out} holds run {record.get('run_id')} of another {other}; use another --out")
    return OpenedRun(config, dataset, data, seen, record or {})


def add_callbacks(trainer: L.Trainer, recipe: Recipe, out: Path, ranks: distributed.Ranks,
                  extra: list[L.Callback] | None) -> None:
    """The callbacks a run's recipe and environment ask for, after the caller's own."""
    trainer.callbacks.extend(extra or [])
    if recipe.ema_decay is not None:  # Lightning's EMA: validation and checkpoints hold the averaged weights
        from lightning.pytorch.callbacks import EMAWeightAveraging  # lazy: loaded only on the path that needs it

        trainer.callbacks.append(EMAWeightAveraging(decay=recipe.ema_decay))
    if preemption.install():  # under SLURM: save at the step a pre-emption warning arrives
        trainer.callbacks.append(preemption.SaveOnPreemption(out / CHECKPOINT, ranks.any, ranks.world))


def started_record(run: OpenedRun, data_dir: str | Path, cost: Any, device: str, precision: Precision,
                   layout: dict[str, Any], attempt: int, source: dict[str, Any] | None,
                   notes: list[str]) -> dict[str, Any]:
    """The record written as an attempt starts (status `running`); `layout`: nodes, devices,
    accumulation and the effective batch and lr."""
    config, prior = run.config, run.prior
    record = {
        "run_id": config.run_id, "config": config.to_dict(), "status": "running",
        "params": cost.params, "flops": cost.flops,
        "data": {"dir": str(data_dir), "fingerprint": run.fingerprint, "train_size": run.data.sizes[0],
                 "test_size": run.data.sizes[1]},
        **layout, "started_at": prior.get("started_at", _now()), "attempts": attempt,
        "precision": precision.to_record(), **environment(device),
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


def train_run(config: RunConfig, data_dir: str | Path, out_dir: str | Path, *, devices: int = 1,
              accelerator: str = "auto", download: bool = True, progress: bool | None = None,
              callbacks: list[L.Callback] | None = None, nodes: int = 1, logger: str = "csv",
              accumulate: int = 1) -> dict[str, Any]:
    """Train `config` into `out_dir`, resuming from its last checkpoint; return the record.

    A finished run returns its record at once. A folder holding another configuration is
    refused. Divergence is recorded (status `diverged`) and raised as `Diverged`.
    """
    out, recipe, world = Path(out_dir), config.recipe, devices * nodes
    device = resolve_device(accelerator)
    per_device = check_processes(recipe, world, accumulate, device)
    ranks = distributed.current()
    run = open_run(config, data_dir, out, per_device, download)
    config, prior = run.config, run.prior
    if prior.get("status") == "finished":
        return prior

    L.seed_everything(config.seed, workers=True, verbose=False)
    module = ImageClassifier(config.model, config.ratio, config.dw_size, config.width,
                             run.dataset.num_classes, config.to_dict()["recipe"],
                             dict(config.knobs) or None)
    precision = keep_precision(resolve_precision(recipe.precision, device), prior or None, device)
    module.channels_last = precision.channels_last
    attempt = prior.get("attempts", 0) + 1
    trainer = make_trainer(recipe, out, devices, device, precision,
                           sys.stdout.isatty() if progress is None else progress, attempt, nodes,
                           make_loggers(logger, out, config, f"attempt-{attempt}"), accumulate)
    add_callbacks(trainer, recipe, out, ranks, callbacks)
    module.run_config = config.to_dict()
    identity = {"run_config": module.run_config, "hyper_parameters": dict(module.hparams)}
    ranks.agree(config.run_id, "run")
    ckpt, notes = ranks.decide(lambda: resumable_checkpoint(out, identity))  # one checkpoint for every rank
    source = start_from_source(config, module, out.parent) if ckpt is None else prior.get("source")
    shape_from_checkpoint(config, module, ckpt)
    cost = measure(module.model, recipe.image_size or run.dataset.input_size)  # before any compile
    layout = {**({"nodes": nodes} if nodes > 1 else {}), "devices": devices,
              **({"accumulate": accumulate} if accumulate > 1 else {}),
              **({"distributed": ranks.describe()} if ranks.world > 1 else {}),
              "effective_batch_size": per_device * world * accumulate, "effective_lr": recipe.scaled_lr}
    record = started_record(run, data_dir, cost, device, precision, layout, attempt, source, notes)
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

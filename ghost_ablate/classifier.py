"""The LightningModule every run trains: any registry model under cross-entropy and SGD (step or
cosine schedule, warm-up, label smoothing), top-1/top-5 and the confusion matrix each epoch, a
per-epoch history kept in its checkpoints, and a divergence check that costs no host sync per step.
`training.train_run` builds it, trains it and writes its record.
"""
from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from .config import Recipe, make_recipe
from .machine import machine_load
from .models import build_model, get_spec
from .records import pack_outcomes

CONFUSION_CLASSES = 100  # the most classes whose test confusion matrix a record keeps
FINITE_CHECK_EVERY = 50  # steps between host syncs that check the loss is finite


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

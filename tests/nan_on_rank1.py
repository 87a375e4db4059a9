"""`ghost-ablate ARGS` in which rank 1 alone computes a NaN loss on the last training batch of
epoch 1 (Lightning's launcher re-runs this file for rank 1, so the patch holds there too)."""
import sys

import torch

from ghost_ablate.cli import main
from ghost_ablate.classifier import ImageClassifier

_forward = ImageClassifier.forward


def forward(self, x):  # noqa: ANN001, ANN201
    out = _forward(self, x)
    trainer = self._trainer
    if (trainer is not None and trainer.training and trainer.global_rank == 1 and trainer.current_epoch == 0
            and self.trainer.fit_loop.epoch_loop.batch_idx == trainer.num_training_batches - 1):
        out = out * torch.tensor(float("nan"))
    return out


ImageClassifier.forward = forward
sys.exit(main(sys.argv[1:]))

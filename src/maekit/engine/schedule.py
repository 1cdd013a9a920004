"""Per-iteration learning-rate schedule of the references (``util/lr_sched.py``, docs/REFERENCE_RECIPES.md C.1).

The schedule is stateless: the LR is a function of the fractional epoch, so a resumed run
recomputes exactly the same values and no scheduler state needs saving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def lr_at(epoch_float: float, *, base_lr: float, min_lr: float, epochs: float, warmup_epochs: float) -> float:
    """Linear warmup from 0, then half-cosine decay to ``min_lr``.

    Args:
        epoch_float: ``epoch + i / iters_per_epoch`` at the iteration where the LR is set.

    Returns:
        ``base_lr * e / warmup`` for ``e < warmup``, else
        ``min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * (e - warmup) / (epochs - warmup)))``.
    """
    if epoch_float < warmup_epochs:
        return base_lr * epoch_float / warmup_epochs
    progress = (epoch_float - warmup_epochs) / (epochs - warmup_epochs)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class LRSchedule:
    """:func:`lr_at` with its parameters bound; ``schedule(epoch_float) -> lr``."""

    base_lr: float
    min_lr: float
    epochs: float
    warmup_epochs: float

    def __call__(self, epoch_float: float) -> float:
        return lr_at(epoch_float, base_lr=self.base_lr, min_lr=self.min_lr, epochs=self.epochs,
                     warmup_epochs=self.warmup_epochs)


def adjust_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> float:
    """Set every group's LR to ``lr * group['lr_scale']`` (``lr`` where there is no scale). Returns lr."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
    return lr

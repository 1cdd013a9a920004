"""Per-iteration learning-rate schedule of the references (``util/lr_sched.py``, docs/REFERENCE_RECIPES.md C.1).

The schedule is stateless: the LR is a function of the fractional epoch, so a resumed run
recomputes exactly the same values and no scheduler state needs saving.
"""

from __future__ import annotations

import logging
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UsageError

logger = logging.getLogger("maekit.engine")


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
        return lr_at(epoch_float, **dataclasses.asdict(self))


def adjust_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> float:
    """Set every group's LR to ``lr * group['lr_scale']`` (``lr`` where there is no scale). Returns lr."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
    return lr


def check_warmup(*, warmup_epochs: float, epochs: int) -> str | None:
    """Warn when the lr never leaves warmup (``warmup_epochs >= epochs``)."""
    if epochs <= 0 or warmup_epochs < epochs:
        return None
    msg = (f"warmup_epochs ({warmup_epochs:g}) >= epochs ({epochs}): the learning rate never reaches its peak "
           f"and the cosine decay never starts; use --warmup_epochs {max(epochs // 10, 1)} or fewer for a "
           f"{epochs}-epoch run")
    logger.warning(msg)
    return msg


def check_schedule(*, start_epoch: int, epochs: int, resumed_from: Path | None) -> None:
    """A run whose start is at or past the end would exit 0 having done nothing."""
    if start_epoch < epochs:
        return
    if resumed_from is not None:
        raise UsageError(f"{resumed_from} already finished epoch {start_epoch - 1}, the last of --epochs "
                         f"{epochs}: nothing left to train; raise --epochs to train longer")
    raise UsageError(f"--start_epoch {start_epoch} is not before --epochs {epochs}: nothing would be trained")

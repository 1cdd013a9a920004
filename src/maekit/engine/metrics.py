"""Classification evaluation: top-1 / top-5 accuracy and loss over a loader (docs/REFERENCE_RECIPES.md C.1).

Metrics are weighted by batch size and summed over ranks, so ``--dist_eval`` (each rank sees a
shard) and plain evaluation (each rank sees everything) give the same numbers. Unlike the
reference, the duplicates that ``DistributedSampler`` pads onto the last ranks are not counted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
import torch.nn as nn
from timm.utils import accuracy
from torch.utils.data import DistributedSampler

from .distributed import sum_over_ranks

logger = logging.getLogger("maekit.engine")


def autocast_context(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op for fp32 (``dtype`` None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no grad inside; each module's train flag is put back afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _real_samples_on_rank(loader) -> int | None:
    """How many leading samples of this rank's shard are real (not padding), or None if unknown.

    ``DistributedSampler`` pads the index list to a multiple of the world size and deals it
    round-robin, so the padding is the tail of the last ranks' shards.
    """
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))


def _logits(output) -> torch.Tensor:
    # timm classifiers return a tensor; HF-style models an object with `.logits`.
    return output if isinstance(output, torch.Tensor) else output.logits


def evaluate(
    model: nn.Module,
    loader,
    *,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    criterion: nn.Module | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean loss of ``model`` on ``loader``.

    Args:
        loader: yields ``(images (B, C, H, W), targets (B,) class indices, num_skipped)``.
        criterion: defaults to ``nn.CrossEntropyLoss()``.

    Returns:
        ``{'acc1', 'acc5', 'loss', 'n'}`` (``n`` = number of samples counted, over all ranks).
    """
    criterion = criterion or nn.CrossEntropyLoss()
    limit = _real_samples_on_rank(loader)
    sums, pos = [0.0] * 4, 0  # samples, loss, acc1, acc5 (each weighted by the samples)
    with eval_mode(model):
        for images, targets, num_skipped, *_ in loader:
            b = images.shape[0]
            keep = b if limit is None else max(0, min(b, limit - pos))
            pos += b + int(num_skipped)
            if keep == 0:
                continue
            images = images[:keep].to(device, non_blocking=True)
            targets = targets[:keep].to(device, non_blocking=True)
            with autocast_context(device, autocast_dtype):
                logits = _logits(model(images))
                loss = criterion(logits, targets)
            acc1, acc5 = accuracy(logits.float(), targets, topk=(1, 5))
            sums = [s + v * keep for s, v in zip(sums, (1.0, loss.item(), acc1.item(), acc5.item()))]
    count, loss_sum, acc1_sum, acc5_sum = sum_over_ranks(sums)
    n = max(count, 1.0)
    stats = {"acc1": acc1_sum / n, "acc5": acc5_sum / n, "loss": loss_sum / n, "n": int(count)}
    logger.info("* Acc@1 %.3f Acc@5 %.3f loss %.3f", stats["acc1"], stats["acc5"], stats["loss"])
    return stats

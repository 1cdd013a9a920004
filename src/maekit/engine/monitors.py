"""Feature-quality monitors run by the :class:`~maekit.engine.runner.Runner` after each epoch.

A monitor is a callable ``monitor(model, epoch, ctx) -> dict[str, float]``, called on every rank
with the bare (not DDP-wrapped) model after the epoch's training and evaluation, before the
``log.txt`` line and the checkpoint; its numbers join the epoch record. ``ctx`` is a
:class:`MonitorContext`. Monitors with state that must survive a resume have ``state_dict()`` /
``load_state_dict()``; the Runner keeps that state in the checkpoint under ``monitors``.

None of them changes the training trajectory: features are computed in eval mode under
``no_grad`` with the RNG state restored afterwards, and the probe head has its own generator.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .checkpoint import capture_rng_state, restore_rng_state
from .distributed import DistInfo
from .knn import class_capped_indices, dataset_targets, extract_features, knn_accuracy

logger = logging.getLogger("maekit.engine")
Monitor = Callable[[nn.Module, int, "MonitorContext"], "dict[str, float]"]


@dataclass
class MonitorContext:
    """What a monitor may use: where to write, which rank, the reporter, this epoch's record so far."""

    output_dir: str | os.PathLike | None
    dist: DistInfo
    reporter: Any  # engine.report.Reporter (add_scalars, add_image, log_epoch)
    epochs: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    autocast_dtype: torch.dtype | None = None
    log: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.dist.rank == 0


def is_due(epoch: int, every: int, epochs: int) -> bool:
    """Every ``every`` epochs (counting from 1) and at the last epoch."""
    every = max(int(every or 1), 1)
    return (epoch + 1) % every == 0 or (epochs > 0 and epoch + 1 == epochs)


def run_monitors(monitors: Sequence[Monitor], model: nn.Module, epoch: int, ctx: MonitorContext) -> None:
    """Call each monitor in order, adding its numbers to ``ctx.log``, where later ones see them.

    The RNG state (torch, CUDA, numpy, random) is restored afterwards whatever the monitors drew
    (module inits, shuffles), so training continues exactly as without them.
    """
    if not monitors:
        return
    rng = capture_rng_state()
    try:
        for monitor in monitors:
            ctx.log.update(monitor(model, epoch, ctx) or {})
    finally:
        restore_rng_state(rng)


def monitor_states(monitors: Sequence[Any]) -> dict[str, Any]:
    """``{name: state}`` of the monitors that have state (saved in the checkpoint)."""
    return {_name(m, i): m.state_dict() for i, m in enumerate(monitors) if hasattr(m, "state_dict")}


def load_monitor_states(monitors: Sequence[Any], states: dict[str, Any] | None) -> None:
    """Inverse of :func:`monitor_states`; a monitor absent from the checkpoint starts fresh."""
    for i, m in enumerate(monitors):
        state = (states or {}).get(_name(m, i))
        if state is not None and hasattr(m, "load_state_dict"):
            m.load_state_dict(state)


def _name(monitor: Any, index: int) -> str:
    return str(getattr(monitor, "name", None) or f"{type(monitor).__name__}{index}")


class LabelledFeatures:
    """Bank and query features of a labelled data set, extracted at most once per epoch.

    The bank keeps the first ``bank_per_class`` images of each class, the queries the first
    ``ceil(max_queries / classes)`` of each class of the query set, so the cost is bounded and the
    sets are the same every epoch.
    """

    def __init__(self, bank: Dataset, queries: Dataset, *, bank_per_class: int | None, max_queries: int | None,
                 num_classes: int | None = None, batch_size: int = 64, num_workers: int = 0):
        bank_targets, query_targets = dataset_targets(bank), dataset_targets(queries)
        self.num_classes = int(num_classes or max(bank_targets + query_targets) + 1)
        q_per_class = math.ceil(max_queries / self.num_classes) if max_queries else None
        self.bank = Subset(bank, class_capped_indices(bank_targets, bank_per_class))
        self.queries = Subset(queries, class_capped_indices(query_targets, q_per_class))
        self.batch_size, self.num_workers = batch_size, num_workers
        self._cached: tuple[int, tuple] | None = None

    def describe(self) -> str:
        return (f"{len(self.bank)} bank images, {len(self.queries)} query images, "
                f"{self.num_classes} classes")

    def get(self, model: nn.Module, epoch: int, ctx: MonitorContext) -> tuple[torch.Tensor, ...]:
        """``(bank_feats, bank_labels, query_feats, query_labels)``; collective on first call per epoch."""
        if self._cached is None or self._cached[0] != epoch:
            kw = {"device": ctx.device, "batch_size": self.batch_size, "num_workers": self.num_workers,
                      "autocast_dtype": ctx.autocast_dtype}
            self._cached = (epoch, (*extract_features(model, self.bank, **kw),
                                    *extract_features(model, self.queries, **kw)))
        return self._cached[1]


class KnnMonitor:
    """Weighted k-NN top-1 / top-5 (``knn_top1``, ``knn_top5``, in %) every ``every`` epochs."""

    name = "knn"

    def __init__(self, features: LabelledFeatures, *, k: int, temperature: float, every: int = 1):
        self.features, self.every, self.k, self.temperature = features, every, k, temperature
        logger.info("k-NN monitor (k=%d, T=%g) every %d epoch(s): %s", k, temperature, every, features.describe())

    def __call__(self, model: nn.Module, epoch: int, ctx: MonitorContext) -> dict[str, float]:
        if not is_due(epoch, self.every, ctx.epochs):
            return {}
        bank, bank_y, queries, query_y = self.features.get(model, epoch, ctx)
        acc = knn_accuracy(bank, bank_y, queries, query_y, num_classes=self.features.num_classes, k=self.k,
                           temperature=self.temperature)
        logger.info("k-NN (k=%d) on %d queries: top-1 %.2f%%  top-5 %.2f%%", self.k, len(query_y),
                    acc["top1"], acc["top5"])
        return {"knn_top1": acc["top1"], "knn_top5": acc["top5"]}


class OnlineProbe:
    """A detached ``BatchNorm1d(affine=False) + Linear`` head on the frozen features, trained a few
    passes per epoch with its own AdamW and generator; logs ``probe_top1`` (%) on the queries.

    The head is not part of the model (so not in the checkpoint's model weights); its weights,
    optimizer and generator are saved through :meth:`state_dict` and come back on resume.
    """

    name = "online_probe"

    def __init__(self, features: LabelledFeatures, *, every: int = 1, passes: int = 10, lr: float = 1e-2,
                 batch_size: int = 64, seed: int = 0):
        self.features, self.every, self.passes, self.batch_size = features, every, passes, batch_size
        self.lr, self.head, self.optimizer = lr, None, None
        self.generator = torch.Generator().manual_seed(seed)
        self._pending: dict | None = None

    def _build(self, dim: int) -> None:
        n = self.features.num_classes
        # momentum=None: running statistics are the exact mean over the steps since the last reset
        self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6, momentum=None), nn.Linear(dim, n))
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=0.0)
        if self._pending is not None:  # resumed: the saved head, no new draw from the generator
            self.head.load_state_dict(self._pending["head"])
            self.optimizer.load_state_dict(self._pending["optimizer"])
            self._pending = None
            return
        with torch.no_grad():  # init from our own stream, not the training one
            w = torch.randn(self.head[1].weight.shape, generator=self.generator) * 0.01
            self.head[1].weight.copy_(w.clamp_(-0.02, 0.02))
            self.head[1].bias.zero_()

    def __call__(self, model: nn.Module, epoch: int, ctx: MonitorContext) -> dict[str, float]:
        if not is_due(epoch, self.every, ctx.epochs):
            return {}
        bank, bank_y, queries, query_y = self.features.get(model, epoch, ctx)
        if self.head is None:
            self._build(bank.shape[1])
        self.head.train()
        # The encoder moved since the last call: statistics of the new features only (cumulative
        # over this call's passes, momentum=None), the linear layer continues from where it was.
        self.head[0].reset_running_stats()
        loss = torch.zeros(())
        for _ in range(self.passes):
            order = torch.randperm(len(bank_y), generator=self.generator)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                loss = nn.functional.cross_entropy(self.head(bank[idx]), bank_y[idx])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        self.head.eval()
        with torch.no_grad():
            pred = self.head(queries).argmax(dim=1)
        top1 = 100.0 * (pred == query_y).float().mean().item()
        logger.info("online probe: top-1 %.2f%% on %d queries (train loss %.4f)", top1, len(query_y), loss.item())
        return {"probe_top1": top1, "probe_loss": float(loss.item())}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        if self.head is not None:
            state.update(head=self.head.state_dict(), optimizer=self.optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if "head" in state:  # the head is built from it on the next call, when the feature size is known
            self.head, self._pending = None, state

"""Weighted k-NN evaluation of frozen features (the solo-learn / DINO protocol).

Every image is encoded unmasked, in eval mode, pooled to one vector and L2-normalised. A query
votes with its ``k`` nearest bank images (cosine similarity ``s``), each weighted by
``exp(s / T)``; the class with the largest summed weight is the prediction. The defaults of ``k``
and ``T`` are the ``knn_k`` / ``knn_temperature`` options of :class:`maekit.tasks.config.KnnOptions`
(20 and 0.07: Wu et al. 2018, as used by DINO and solo-learn).

Feature extraction is sharded over the ranks (each rank encodes every ``world_size``-th image)
and gathered to all ranks, so every rank returns the same numbers. It draws nothing from the
global RNG streams: the loaders get their own ``torch.Generator`` and the RNG state is restored
around the whole call, so a training run is bit-for-bit the same with or without it.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .checkpoint import capture_rng_state, restore_rng_state
from .distributed import all_gather_objects, get_rank, get_world_size
from .metrics import autocast_context, eval_mode


def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, D) unmasked pooled features.

    Classifiers: their own pooling before the head (``forward_head(pre_logits=True)``); MAE
    pretraining models: the cls token of ``forward_features``; models without a cls token
    (ConvMAE): the mean of the tokens. The same rule as ``maekit.pipeline('image_feature_extraction')``.
    """
    tokens = model.forward_features(images)
    pretraining = getattr(model, "is_pretraining", None)
    if pretraining is None:
        pretraining = hasattr(model, "forward_decoder")
    if not pretraining and hasattr(model, "forward_head"):
        return model.forward_head(tokens, pre_logits=True)
    if getattr(model, "cls_token", None) is not None:
        return tokens[:, 0]
    return tokens.mean(dim=1)


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, no grad, RNG state restored afterwards; each module's train flag is put back."""
    rng = capture_rng_state()
    try:
        with eval_mode(model):
            yield model
    finally:
        restore_rng_state(rng)


def class_capped_indices(targets: Sequence[int], per_class: int | None) -> list[int]:
    """The first ``per_class`` indices of every class (all when None or <= 0), in index order.

    Deterministic (no sampling), so the bank is the same every epoch and on every rank.
    """
    if not per_class or per_class <= 0:
        return list(range(len(targets)))
    seen: Counter[int] = Counter()
    keep = []
    for i, t in enumerate(targets):
        seen[int(t)] += 1
        if seen[int(t)] <= per_class:
            keep.append(i)
    return keep


def dataset_targets(dataset: Dataset) -> list[int]:
    """Class indices of a labelled dataset without decoding images (``targets`` or ``samples``)."""
    if isinstance(dataset, Subset):
        inner = dataset_targets(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    targets = getattr(dataset, "targets", None)
    if targets is None and hasattr(dataset, "samples"):
        targets = [s[1] for s in dataset.samples]
    if targets is None:
        raise ValueError(f"{type(dataset).__name__} has no 'targets': k-NN needs a labelled dataset "
                         "(class folders or builtin:digits)")
    return [int(t) for t in targets]


def _collate(batch):
    kept = [b for b in batch if b is not None]  # undecodable files are None; drop them
    if not kept:
        return None
    return torch.stack([b[0] for b in kept]), torch.tensor([int(b[1]) for b in kept], dtype=torch.int64)


def extract_features(model: nn.Module, dataset: Dataset, *, device: torch.device | str = "cpu",
                     batch_size: int = 64, num_workers: int = 0,
                     autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode a labelled dataset: ``(features (N, D) float32 L2-normalised, labels (N,))`` on CPU.

    Collective under torch.distributed: each rank encodes its shard, then all ranks receive
    everything (rank 0's shard first). Undecodable images are left out.
    """
    rank, world = get_rank(), get_world_size()
    shard = Subset(dataset, list(range(rank, len(dataset), world)))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate, generator=torch.Generator())
    feats, labels = [], []
    with frozen_eval(model):
        for batch in loader:
            if batch is None:
                continue
            images = batch[0].to(device, non_blocking=True)
            with autocast_context(device, autocast_dtype):
                f = pooled_features(model, images)
            feats.append(F.normalize(f.float(), dim=1).cpu())
            labels.append(batch[1])
    mine = (torch.cat(feats) if feats else torch.zeros(0, 0), torch.cat(labels) if labels else torch.zeros(0))
    parts = [p for p in all_gather_objects(mine) if p[0].numel()]
    if not parts:
        raise ValueError("no image could be encoded for k-NN (empty or undecodable dataset)")
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]).long()


def knn_scores(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, *, num_classes: int,
               k: int, temperature: float, chunk: int = 1024) -> torch.Tensor:
    """Class scores (Nq, num_classes) of weighted k-NN.

    Args:
        bank: (Nb, D) L2-normalised features; bank_labels: (Nb,) class indices.
        queries: (Nq, D) L2-normalised features.
        k: neighbours (capped at Nb); temperature: ``T`` of the ``exp(sim / T)`` weights.
    """
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, queries.shape[0], chunk):
        sim = queries[start:start + chunk] @ bank.T  # (n, Nb) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        scores = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype)
        out.append(scores.scatter_add_(1, bank_labels[top_idx], weights))
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                 query_labels: torch.Tensor, *, num_classes: int, k: int,
                 temperature: float) -> dict[str, float]:
    """``{'top1': %, 'top5': %}`` of weighted k-NN (top-5 is top-``num_classes`` below 5 classes)."""
    scores = knn_scores(bank, bank_labels, queries, num_classes=num_classes, k=k, temperature=temperature)
    ranked = scores.topk(min(5, num_classes), dim=1).indices
    hit = ranked == query_labels.view(-1, 1)
    n = max(query_labels.numel(), 1)
    return {"top1": 100.0 * hit[:, 0].sum().item() / n, "top5": 100.0 * hit.any(dim=1).sum().item() / n}

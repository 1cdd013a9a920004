"""Data loaders of the references (REFERENCES C.1) with skipping of undecodable files.

Every maekit loader yields ``(images, targets, num_skipped)``:

- ``images``: (B, C, H, W) float; ``targets``: (B,) int64 (class indices, or -1 for
  unlabelled data); ``num_skipped``: Python int, the files of this batch that could not be
  decoded (already warned about by name by the dataset). B = batch size - num_skipped.
- When every file of a batch is bad, ``images`` is ``torch.empty(0)`` and ``targets``
  ``torch.empty(0, dtype=int64)`` with ``num_skipped`` = the batch size; the engine skips
  such a batch (check ``images.shape[0] == 0``).

Samplers: training always uses ``DistributedSampler(shuffle=True, seed=seed)``, also in a
single process (1 replica, rank 0) as the references do, so ``loader.sampler.set_epoch(e)``
(or :func:`set_epoch`) works the same everywhere. Evaluation uses a ``SequentialSampler``
(every rank sees the whole set) unless ``dist_eval=True``: then
``DistributedSampler(shuffle=False)`` shards it; when the set size is not a multiple of the
number of ranks the sampler pads by repeating the first samples, so a few images are counted
twice in the metrics (warned).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    Sampler,
    SequentialSampler,
    default_collate,
)


def collate_skip_none(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Collate ``(image, target)`` items, dropping ``None`` (undecodable files).

    Returns:
        ``(images (B, ...), targets (B,) int64, num_skipped)``; empty tensors and
        ``num_skipped = len(batch)`` when every item is None.
    """
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    images, targets = default_collate(good)
    return images, torch.as_tensor(targets, dtype=torch.int64), skipped


def dist_info() -> tuple[int, int]:
    """(world_size, rank) of the initialised default process group, else (1, 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def build_sampler(
    dataset: Dataset,
    *,
    train: bool,
    seed: int = 0,
    dist_eval: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> Sampler:
    """The sampler :func:`build_loader` uses (see the module docstring).

    ``num_replicas`` / ``rank`` override the process group (tests, or custom launchers).
    """
    world, this_rank = dist_info()
    if num_replicas is not None:
        world, this_rank = num_replicas, (rank if rank is not None else 0)
    if train:
        return DistributedSampler(dataset, num_replicas=world, rank=this_rank, shuffle=True, seed=seed)
    if dist_eval:
        if len(dataset) % world:
            warnings.warn(
                f"dist_eval with {len(dataset)} samples on {world} ranks: the sampler repeats "
                f"{world - len(dataset) % world} sample(s) to even out the shards, "
                "which slightly changes the metrics",
                UserWarning,
                stacklevel=3,
            )
        return DistributedSampler(dataset, num_replicas=world, rank=this_rank, shuffle=False)
    return SequentialSampler(dataset)


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    pin_memory: bool = True,
    drop_last: bool | None = None,
    seed: int = 0,
    dist_eval: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> DataLoader:
    """A DataLoader yielding ``(images, targets, num_skipped)`` (module docstring).

    Args:
        dataset: a maekit dataset (items ``(tensor, target)`` or None).
        batch_size: per process.
        train: training (shuffled DistributedSampler, ``drop_last`` True by default) or
            evaluation (sequential, or sharded with ``dist_eval``; ``drop_last`` False).
        num_workers: worker processes; workers persist across epochs when > 0.
        pin_memory: pin batches, applied only when CUDA is available (no warning on CPU).
        drop_last: override the default above.
        seed: shuffling seed of the DistributedSampler (same on every rank, as required).
            Augmentation randomness follows the global torch seed (set it per rank).
        dist_eval: shard evaluation over the ranks.
        num_replicas, rank: override torch.distributed (see :func:`build_sampler`).

    The sampler is ``loader.sampler``; call :func:`set_epoch` every epoch.

    Raises:
        ValueError: ``batch_size`` < 1, or a training loader would have no batch at all
            (fewer samples per rank than ``batch_size`` with ``drop_last``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sampler = build_sampler(
        dataset, train=train, seed=seed, dist_eval=dist_eval, num_replicas=num_replicas, rank=rank
    )
    drop_last = train if drop_last is None else drop_last
    per_rank = len(sampler)  # type: ignore[arg-type]
    if drop_last and per_rank < batch_size:
        raise ValueError(
            f"{len(dataset)} samples give {per_rank} per process, fewer than batch_size={batch_size}: "  # type: ignore[arg-type]
            "with drop_last every batch would be dropped; lower batch_size"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        drop_last=drop_last,
        collate_fn=collate_skip_none,
        persistent_workers=num_workers > 0,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle a training loader for ``epoch`` (no-op for sequential samplers)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)

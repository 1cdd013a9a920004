"""Data loaders of the references (docs/REFERENCE_RECIPES.md C.1) with skipping of undecodable files.

Every maekit loader yields a :class:`Batch` ``(images, targets, num_skipped, mask_seeds)``:

- ``images``: (B, C, H, W) float; ``targets``: (B,) int64 (class indices, or -1 for
  unlabelled data); ``num_skipped``: Python int, the files of this batch that could not be
  decoded (already warned about by name by the dataset). B = batch size - num_skipped.
- ``mask_seeds``: (B,) int64, each image's own mask seed on training loaders
  (:mod:`maekit.data.seeding`), else None. The engine reads only the first three fields, so a
  loader of its own may yield plain ``(images, targets, num_skipped)`` triples.
- When every file of a batch is bad, ``images`` is ``torch.empty(0)`` and ``targets``
  ``torch.empty(0, dtype=int64)`` with ``num_skipped`` = the batch size; the engine skips
  such a batch (check ``images.shape[0] == 0``).

``build_loader`` returns a :class:`~maekit.data.device.DeviceLoader` over the DataLoader: batches
arrive on the training device, uint8 images (``uint8=True`` transforms) normalised there. Training
loaders give every sample its own augmentation and mask seed from ``(seed, epoch, index)``
(:mod:`maekit.data.seeding`). Workers persist across epochs, prefetch 4 batches each, ignore
SIGTERM/SIGINT (the main process owns shutdown), and default to the CPUs per process
(:func:`default_num_workers`).

Samplers: training always uses ``DistributedSampler(shuffle=True, seed=seed)``, also in a
single process (1 replica, rank 0) as the references do, so ``loader.sampler.set_epoch(e)``
(or :func:`set_epoch`) works the same everywhere. Evaluation uses a ``SequentialSampler``
(every rank sees the whole set) unless ``dist_eval=True``: then
``DistributedSampler(shuffle=False)`` shards it; when the set size is not a multiple of the
number of ranks the sampler pads by repeating the first samples, so a few images are counted
twice in the metrics (warned).
"""

from __future__ import annotations

import atexit
import functools
import importlib
import signal
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    Sampler,
    SequentialSampler,
    default_collate,
)

from ..tasks.config import default_num_workers  # the --num_workers default (a torch-free module)
from .device import Batch, DeviceLoader
from .gpu_decode import EncodedBatch, EncodedCrop
from .seeding import SeededDataset, SeededSampler


def collate_skip_none(batch: Sequence[Any]) -> Batch:
    """Collate ``(image, target)`` or ``(image, target, mask_seed)`` items, dropping ``None``
    (undecodable files), into a :class:`Batch`; ``mask_seeds`` is set when the items carry them
    (:class:`~maekit.data.seeding.SeededDataset`). Empty tensors and ``num_skipped = len(batch)``
    when every item is None.
    """
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.int64), skipped)
    images = [item[0] for item in good]
    encoded = any(isinstance(x, EncodedCrop) for x in images)  # --decode gpu: decoded on the device
    images = EncodedBatch(images) if encoded else default_collate(images)
    targets = torch.as_tensor(default_collate([item[1] for item in good]), dtype=torch.int64)
    seeds = torch.tensor([item[2] for item in good], dtype=torch.int64) if len(good[0]) > 2 else None
    return Batch(images, targets, skipped, seeds)


def dist_info(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """(world_size, rank): ``num_replicas`` and ``rank`` (default 0) when given (tests, custom
    launchers), else those of the initialised default process group, else (1, 0)."""
    if num_replicas is not None:
        return num_replicas, rank or 0
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def build_sampler(dataset: Dataset, *, train: bool, seed: int = 0, dist_eval: bool = False,
                  num_replicas: int | None = None, rank: int | None = None, seeded: bool = False) -> Sampler:
    """The sampler :func:`build_loader` uses (see the module docstring).

    ``num_replicas`` / ``rank`` override the process group (tests, or custom launchers).
    ``seeded``: a training sampler yields ``(index, epoch)`` keys for a
    :class:`~maekit.data.seeding.SeededDataset` (same shuffling and sharding).
    """
    world, this_rank = dist_info(num_replicas, rank)
    if train:
        cls = SeededSampler if seeded else DistributedSampler
        return cls(dataset, num_replicas=world, rank=this_rank, shuffle=True, seed=seed)
    if dist_eval:
        n = len(dataset)  # type: ignore[arg-type]
        if n % world:
            warnings.warn(f"dist_eval with {n} samples on {world} ranks: the sampler repeats "
                          f"{world - n % world} sample(s) to even out the shards, which slightly changes "
                          "the metrics", UserWarning, stacklevel=3)
        return DistributedSampler(dataset, num_replicas=world, rank=this_rank, shuffle=False)
    return SequentialSampler(dataset)


def _worker_init(user_fn: Callable[[int], None] | None, worker_id: int) -> None:
    """``worker_init_fn``: workers ignore SIGTERM / SIGINT, so a signal sent to the whole process
    group (``timeout``, ``kill -- -PGID``, SLURM) reaches the main process, which owns shutdown
    and finishes its checkpoint, instead of killing the workers under it. torch seeds each
    worker's ``torch`` / ``random`` / NumPy RNGs from the loader's base seed + worker id; samples
    drawn through a SeededDataset reseed per sample anyway. Then ``user_fn`` runs, if any."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if user_fn is not None:
        user_fn(worker_id)


# Multi-process iterators of maekit's loaders and their worker processes, stopped at interpreter
# exit (_stop_workers_at_exit).
_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()
_LIVE_WORKERS: weakref.WeakSet = weakref.WeakSet()


class WorkerDataLoader(DataLoader):
    """The DataLoader maekit builds: its multi-process iterators are recorded so that their workers,
    which ignore SIGTERM (:func:`_worker_init`), are shut down when the interpreter exits."""

    def _get_iterator(self):
        it = super()._get_iterator()
        if self.num_workers > 0:
            _LIVE_ITERATORS.add(it)
            _LIVE_WORKERS.update(getattr(it, "_workers", ()))
        return it


WorkerDataLoader.replay_class = WorkerDataLoader  # what engine.loop rebuilds for a mid-epoch resume


def _stop_workers_at_exit() -> None:
    """Shut down the workers of loaders still alive when the interpreter exits (persistent workers,
    an epoch left half-read, a notebook's loader), the way PyTorch does when an iterator is deleted.

    Without this, multiprocessing's own exit handler would terminate them with SIGTERM, which they
    ignore, and then join them: the exit would hang for ever. atexit runs last-in, first-out, and
    both PyTorch's exit flag and multiprocessing's handler are registered before this one.
    """
    for it in list(_LIVE_ITERATORS):
        it._shutdown_workers()
    # Any worker still running (one whose iterator was collected while it lagged: PyTorch's
    # terminate() is the SIGTERM they ignore) would be joined for ever: killed, with PyTorch's
    # SIGCHLD watchdog put to its default first so that nothing is raised at exit.
    left = [p for p in list(_LIVE_WORKERS) if p.is_alive()]
    if not left:
        return
    if hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for p in left:
        p.kill()
    for p in left:
        p.join(timeout=5)


# multiprocessing registers its exit handler when multiprocessing.util is first imported (perhaps only
# when a first worker starts): import it now, so that the handler below, registered later, runs first.
importlib.import_module("multiprocessing.util")
atexit.register(_stop_workers_at_exit)


def _dataset_and_sampler(dataset, *, batch_size: int, train: bool, drop_last: bool, seed: int, seeded: bool,
                         dist_eval: bool, num_replicas, rank):
    """(dataset wrapped for per-sample seeds, its sampler) for :func:`build_loader`; iterable
    datasets shard themselves (no sampler) and learn the batch size for their per-worker quotas."""
    if isinstance(dataset, IterableDataset):
        if hasattr(dataset, "set_batch_size"):  # tar shards: per-worker quotas in whole batches
            dataset.set_batch_size(batch_size)
        if hasattr(dataset, "sample_seeds"):  # tar shards: per-sample seeds, as SeededDataset gives
            dataset.sample_seeds = seed if seeded else None
        return dataset, None
    if seeded and not isinstance(dataset, SeededDataset):
        dataset = SeededDataset(dataset, seed)
    sampler = build_sampler(dataset, train=train, seed=seed, dist_eval=dist_eval,
                            num_replicas=num_replicas, rank=rank, seeded=seeded)
    per_rank = len(sampler)  # type: ignore[arg-type]
    if drop_last and per_rank < batch_size:
        raise ValueError(
            f"{len(dataset)} samples give {per_rank} per process, fewer than batch_size={batch_size}: "  # type: ignore[arg-type]
            "with drop_last every batch would be dropped; lower batch_size"
        )
    return dataset, sampler


def build_loader(dataset: Dataset, *, batch_size: int, train: bool, num_workers: int | None = 0,
                 pin_memory: bool = True, drop_last: bool | None = None, seed: int = 0,
                 dist_eval: bool = False, num_replicas: int | None = None, rank: int | None = None,
                 device: torch.device | str | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, per_sample_seeds: bool = True, prefetch_factor: int = 4,
                 worker_init_fn: Callable[[int], None] | None = None) -> DeviceLoader:
    """A loader yielding ``(images, targets, num_skipped)`` (module docstring).

    Args:
        dataset: a maekit dataset (items ``(image, target)`` or None), map-style or iterable
            (iterable ones shard themselves over ranks and workers and need ``len``; see
            :func:`maekit.data.as_dataset`).
        batch_size: per process.
        train: training (shuffled DistributedSampler, ``drop_last`` True by default) or
            evaluation (sequential, or sharded with ``dist_eval``; ``drop_last`` False).
        num_workers: worker processes (None: :func:`default_num_workers`); they persist across
            epochs, prefetch ``prefetch_factor`` batches each and ignore SIGTERM/SIGINT.
        pin_memory: pin batches, applied only when CUDA is available (no warning on CPU).
        drop_last: override the default above.
        seed: shuffling seed of the DistributedSampler (same on every rank, as required), and
            the base of the per-sample seeds.
        dist_eval: shard evaluation over the ranks.
        num_replicas, rank: override torch.distributed (see :func:`build_sampler`).
        device, mean, std: the result is a :class:`DeviceLoader` over the DataLoader
            (``.loader``): it delivers batches on ``device`` (default CPU) and normalises uint8
            images there with ``mean`` / ``std``.
        per_sample_seeds: training augmentations (and the mask seeds carried with each batch)
            depend only on ``(seed, epoch, sample index)`` (:mod:`maekit.data.seeding`);
            False draws them from the global RNGs as the references do.
        worker_init_fn: run in each worker after maekit's own init.

    The sampler is ``loader.sampler``; call :func:`set_epoch` every epoch.

    Raises:
        ValueError: ``batch_size`` < 1, or a training loader would have no batch at all
            (fewer samples per rank than ``batch_size`` with ``drop_last``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers is None:
        num_workers = default_num_workers()
    drop_last = train if drop_last is None else drop_last
    dataset, sampler = _dataset_and_sampler(dataset, batch_size=batch_size, train=train, drop_last=drop_last,
                                            seed=seed, seeded=train and per_sample_seeds, dist_eval=dist_eval,
                                            num_replicas=num_replicas, rank=rank)
    loader = WorkerDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        drop_last=drop_last,
        collate_fn=collate_skip_none,
        # An iterable dataset (no sampler) learns its epoch through set_epoch in this process: its
        # workers must start afresh each epoch to see it.
        persistent_workers=num_workers > 0 and sampler is not None,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        worker_init_fn=functools.partial(_worker_init, worker_init_fn) if num_workers > 0 else None,
    )
    return DeviceLoader(loader, device if device is not None else "cpu", mean, std)


def set_epoch(loader: DataLoader | DeviceLoader, epoch: int) -> None:
    """Reshuffle a training loader for ``epoch`` (no-op for sequential samplers)."""
    for part in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        if hasattr(part, "set_epoch"):  # the sampler; an iterable dataset that reshuffles itself
            part.set_epoch(epoch)

"""Per-sample random streams: the augmentation and the masking noise of one image depend only on
``(seed, epoch, sample index)``.

With the reference pipeline the crops, flips and masks come from global RNGs whose state depends
on how many images were drawn before, in which worker, on which rank. maekit instead gives every
sample its own seed, so the data a training step sees does not depend on when a run stopped and
resumed, on ``num_workers``, or on the number of processes (for the same global batch size the
``DistributedSampler`` puts the same images in each global batch, and each image gets the same
augmentation and mask wherever it is processed).

- :func:`sample_seed` mixes ``(seed, epoch, index, stream)`` into a 63-bit seed (SplitMix64).
  Stream :data:`AUGMENT_STREAM` seeds the transforms, :data:`MASK_STREAM` the masking noise.
- :class:`SeededSampler` is a ``DistributedSampler`` whose items are ``(index, epoch)``.
- :class:`SeededDataset` wraps a map-style dataset: ``ds[(index, epoch)]`` runs the wrapped
  ``__getitem__(index)`` with torch, ``random`` and NumPy seeded from :func:`sample_seed` (the
  caller's RNG states are restored afterwards), and appends the sample's mask seed to the item.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, get_worker_info

AUGMENT_STREAM = 0
MASK_STREAM = 1
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int, stream: int = AUGMENT_STREAM) -> int:
    """A 63-bit seed for one sample: a hash of ``(seed, epoch, index, stream)``.

    Distinct inputs give unrelated seeds (SplitMix64 chaining), and the value never depends on
    the process, worker or order in which samples are drawn.
    """
    h = 0
    for part in (seed, epoch, index, stream):
        h = _splitmix64(h ^ (int(part) & _MASK64))
    return h >> 1  # torch.manual_seed and NumPy accept it; stays a non-negative int64


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch (CPU), ``random`` and NumPy's global RNG with ``seed`` inside the block and
    restore the caller's states afterwards (torchvision and timm transforms draw from these)."""
    # The CPU generator directly: torch.manual_seed also seeds every accelerator backend and goes
    # through a torch.compile guard, about 15 ms per call, more than decoding the image.
    gen = torch.default_generator
    # In a DataLoader worker every sample reseeds, so nothing there needs the old states back.
    keep = get_worker_info() is None
    states = (gen.get_state(), random.getstate(), np.random.get_state()) if keep else None
    gen.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    try:
        yield
    finally:
        if states is not None:
            gen.set_state(states[0])
            random.setstate(states[1])
            np.random.set_state(states[2])


def seeded_item(make: Callable[[], Any], seed: int, epoch: int, index: int) -> Any:
    """``make()`` (an ``(image, target)`` item or None) run under :func:`seeded_rngs` with
    ``sample_seed(seed, epoch, index)``, as ``(image, target, mask_seed)`` where ``mask_seed =
    sample_seed(seed, epoch, index, MASK_STREAM)``; None stays None."""
    with seeded_rngs(sample_seed(seed, epoch, index)):
        item = make()
    return None if item is None else (*item[:2], sample_seed(seed, epoch, index, MASK_STREAM))


class SeededSampler(DistributedSampler):
    """``DistributedSampler`` (same shuffling and sharding) yielding ``(index, epoch)`` keys for
    :class:`SeededDataset`; call ``set_epoch`` every epoch as usual."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((int(i), epoch) for i in super().__iter__())


class DatasetView(Dataset):
    """A map-style dataset over ``self.dataset``: its length and its other attributes (``classes``,
    ``samples``, ``features``...) are the wrapped dataset's."""

    dataset: Any

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        # Not "dataset" itself (unset while unpickling) nor dunders: the DataLoader fetcher would
        # find the wrapped dataset's __getitems__ and bypass this wrapper.
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SeededDataset(DatasetView):
    """A map-style dataset whose randomness is a function of ``(seed, epoch, index)``.

    ``ds[(index, epoch)]`` -> the wrapped item (``(image, target)`` or None) computed under
    :func:`seeded_rngs` with ``sample_seed(seed, epoch, index)``, as ``(image, target,
    mask_seed)`` where ``mask_seed = sample_seed(seed, epoch, index, MASK_STREAM)``. A plain int
    key returns the wrapped item unchanged (evaluation, sequential samplers).

    Attributes of the wrapped dataset (``classes``, ``samples``...) are reachable through this one.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, epoch = key
        return seeded_item(lambda: self.dataset[index], self.seed, epoch, index)

    def __repr__(self) -> str:
        return f"SeededDataset({self.dataset!r}, seed={self.seed})"

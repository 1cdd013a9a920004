"""The loader wrapper that finishes batches on the training device.

Workers send ``uint8`` (N, C, H, W) images (4x fewer bytes than float32 and no per-image
ToTensor/Normalize on the CPU); :class:`DeviceLoader` copies them from pinned memory with
``non_blocking=True`` and converts them on the device::

    x = (u8.float() - 255 * mean) / (255 * std)     # == Normalize(mean, std)(ToTensor()(pil))

which equals the reference's ``ToTensor()`` + ``Normalize()`` to float rounding (a few ulp). On
CUDA the copy and the conversion of batch k+1 run on a side stream while batch k trains, as
timm's ``PrefetchLoader`` does (timm's class is not reused: it yields ``(input, target)`` pairs and
cannot carry maekit's ``num_skipped`` or per-sample mask seeds). Float batches pass through
(moved to the device only), so the wrapper also serves datasets that already normalise.

Batches keep the maekit form (:class:`~maekit.data.loader.Batch`); the per-sample mask seeds
stay on the CPU (they are inputs of :func:`maekit.models.masking.per_sample_noise`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader


class Batch(NamedTuple):
    """One batch of every maekit loader (:mod:`maekit.data.loader` says what each field holds)."""

    images: Any
    """(B, C, H, W) float or uint8 images (an ``EncodedBatch`` before ``--decode gpu`` decoding)."""
    targets: torch.Tensor
    """(B,) int64 class indices (-1 for unlabelled data)."""
    num_skipped: int
    """Files of this batch that could not be decoded (B = batch size - num_skipped)."""
    mask_seeds: torch.Tensor | None = None
    """(B,) int64 per-sample mask seeds of a seeded training loader, else None."""


def batch_mask_seeds(batch: Sequence[Any]) -> torch.Tensor | None:
    """The (N,) int64 per-sample mask seeds of a loader batch (its ``mask_seeds`` field), or None
    for a batch without them (a plain ``(images, targets, num_skipped)`` triple).

    Feed them to :func:`maekit.models.masking.per_sample_noise` and pass the result as ``noise=``
    to the MAE forward, so each image's mask depends only on ``(seed, epoch, index)``.
    """
    return batch[3] if len(batch) > 3 else None


class DeviceLoader:
    """Iterate ``loader`` and deliver :class:`~maekit.data.loader.Batch` es on ``device``: uint8 images
    normalised with ``mean`` / ``std`` there, float images moved as they are.

    Args:
        loader: a DataLoader yielding ``(images, targets, num_skipped[, mask_seeds])``.
        device: the training device.
        mean, std: per-channel constants in [0, 1] units (the ``Normalize`` ones); needed for
            uint8 batches.

    ``sampler``, ``batch_sampler``, ``dataset``, ``batch_size``, ``num_workers`` and ``len()``
    are the wrapped loader's, so ``loader.sampler.set_epoch(e)`` works as before.
    """

    def __init__(self, loader: DataLoader, device: torch.device | str, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.mean = self.std = None
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            self.mean = torch.tensor([255.0 * m for m in mean], device=self.device).view(shape)
            self.std = torch.tensor([255.0 * s for s in std], device=self.device).view(shape)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self) -> Any:
        """The DataLoader's sampler; for an iterable dataset with ``set_epoch`` (which has no
        sampler of its own) an object whose ``set_epoch`` reaches the dataset."""
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch") or not hasattr(self.loader.dataset, "set_epoch"):
            return sampler
        return self.loader.dataset

    def __getattr__(self, name: str) -> Any:
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)  # sampler, dataset, batch_size, num_workers...

    def _finish(self, batch: Sequence[Any]) -> Any:
        images, targets, skipped = batch[0], batch[1], batch[2]
        # --decode gpu batches (maekit.data.gpu_decode.EncodedBatch) decode on the device to uint8
        images = images.decode(self.device) if hasattr(images, "decode") else images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            if self.mean is None:
                raise ValueError("the loader yields uint8 images but DeviceLoader got no mean/std to normalise them")
            if images.shape[1] != self.mean.shape[1]:
                raise ValueError(f"uint8 images have {images.shape[1]} channels but mean/std have "
                                 f"{self.mean.shape[1]} values")
            images = images.float().sub_(self.mean).div_(self.std)
        if isinstance(targets, torch.Tensor):
            targets = targets.to(self.device, non_blocking=True)
        return Batch(images, targets, skipped, batch_mask_seeds(batch))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any, int]]:
        return self.iter_batches(self.loader)

    def iter_batches(self, batches: Iterable[Sequence[Any]]) -> Iterator[tuple[torch.Tensor, Any, int]]:
        """Finish raw batches of the wrapped loader (or of a replay of its batch sampler, e.g.
        the rest of an epoch after a mid-epoch resume) on the device."""
        if self.device.type != "cuda":
            return (self._finish(batch) for batch in batches)
        return self._cuda_prefetch(batches)

    def _cuda_prefetch(self, batches: Iterable[Sequence[Any]]) -> Iterator[tuple[torch.Tensor, Any, int]]:
        # Batch k+1 is copied and normalised on a side stream while the caller trains on batch k.
        stream = torch.cuda.Stream(device=self.device)
        pending = None
        for batch in batches:
            with torch.cuda.stream(stream):
                ready = self._finish(batch)
            if pending is not None:
                yield pending
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for t in ready[:2]:
                if isinstance(t, torch.Tensor) and t.is_cuda:
                    t.record_stream(torch.cuda.current_stream(self.device))
            pending = ready
        if pending is not None:
            yield pending

    def __repr__(self) -> str:
        return f"DeviceLoader({self.loader!r}, device={self.device})"

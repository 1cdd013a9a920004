"""Any dataset object as a maekit dataset: maekit applies its own transforms to the user's items.

:func:`as_dataset` accepts a map-style torch ``Dataset`` (or any object with ``__getitem__`` and
``__len__``: a list, a Hugging Face ``datasets.Dataset``) or an ``IterableDataset``. Items may be:

- a PIL image; an encoded image (``bytes``, or a dict with ``"bytes"``/``"path"`` as Hugging
  Face stores undecoded images); a file path;
- a uint8 tensor (C, H, W) or (H, W), or a NumPy uint8 array (H, W[, C]);
- a float tensor (C, H, W) with values in [0, 1] (an image, transformed like a PIL image), except
  one that already has the model's input shape (``in_chans``, H, W): it is taken as the model's
  input, already normalised, and passed through untouched (datasets built with maekit's own
  transforms, as earlier maekit versions required);
- ``(image, label)`` / ``[image, label]``, or a dict with an image key (``image_key``, or the
  only one of image, img, pixel_values, jpg, jpeg, png, webp present) and an optional label key
  (``label_key``, or label, labels, cls, target, class).

Items without a label get -1 (:data:`~maekit.data.datasets.UNLABELLED_TARGET`). An item that is
None or whose image cannot be decoded becomes None (counted as skipped, like a corrupt file).

Iterable datasets are split by maekit over ranks and DataLoader workers (item k of the stream goes
to rank k mod world, then to worker (k div world) mod workers); every rank reads ``len // world``
items so that all ranks run the same number of steps. They need ``len()``. Their augmentation
seeds come from the item's position in the stream, so they too are independent of worker count.
"""

from __future__ import annotations

import io
import itertools
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from torchvision.transforms import functional as TF

from .datasets import UNLABELLED_TARGET
from .images import _DECODE_ERRORS, UndecodableImageWarning, convert_image, load_transformed, mode_for_chans
from .seeding import DatasetView, seeded_item

IMAGE_KEYS = ("image", "img", "pixel_values", "jpg", "jpeg", "png", "webp")
LABEL_KEYS = ("label", "labels", "cls", "target", "class")


def _pick(keys: list[str], candidates: tuple[str, ...], given: str | None, what: str) -> str | None:
    if given is not None:
        if given not in keys:
            raise ValueError(f"dataset items have no {what} key {given!r}; their keys: {sorted(keys)}")
        return given
    found = [k for k in candidates if k in keys]
    if len(found) > 1 and what == "image":
        raise ValueError(f"dataset items have several image keys {found}; choose one with image_key=")
    return found[0] if found else None


class ItemConverter:
    """``item -> (model input, label)`` or None for one user item (module docstring).

    Args:
        transform: maekit transform of PIL images (may decode lazily, ``lazy_decode``).
        in_chans: model channels.
        input_size: model (H, W): float tensors of shape (in_chans, H, W) pass through.
        image_key, label_key: dict keys (auto-detected when None).
    """

    def __init__(self, transform: Callable[[Any], Any] | None, *, in_chans: int = 3,
                 input_size: tuple[int, int] | None = None, image_key: str | None = None,
                 label_key: str | None = None) -> None:
        mode_for_chans(in_chans)  # checked now, not at the first item
        self.transform, self.in_chans, self.input_size = transform, in_chans, input_size
        self.image_key, self.label_key = image_key, label_key
        self._keys: tuple[str, str | None] | None = None

    def split(self, item: Any) -> tuple[Any, Any]:
        """(image, label or None) of one item."""
        if isinstance(item, dict):
            if self._keys is None or self._keys[0] not in item:  # detected once, again if items differ
                keys = list(item)
                image_key = _pick(keys, IMAGE_KEYS, self.image_key, "image")
                if image_key is None:
                    raise ValueError(f"dataset items are dicts without an image key ({', '.join(IMAGE_KEYS)}); "
                                     f"their keys: {sorted(keys)}; pass image_key=")
                self._keys = (image_key, _pick(keys, LABEL_KEYS, self.label_key, "label"))
            image_key, label_key = self._keys
            return item[image_key], (item.get(label_key) if label_key else None)
        if isinstance(item, (tuple, list)):
            if len(item) not in (1, 2):
                raise ValueError(f"dataset items are sequences of {len(item)} values; expected (image, label)")
            return item[0], (item[1] if len(item) == 2 else None)
        return item, None

    def __call__(self, item: Any) -> tuple[Any, int] | None:
        if item is None:
            return None
        image, label = self.split(item)
        target = UNLABELLED_TARGET if label is None else int(label)
        if (isinstance(image, torch.Tensor) and image.is_floating_point() and self.input_size is not None
                and tuple(image.shape) == (self.in_chans, *self.input_size)):  # already the model's input
            return image, target
        try:
            out = self._transform(image)
        except _DECODE_ERRORS as err:
            warnings.warn(f"skipping an undecodable dataset item: {type(err).__name__}: {err}",
                          UndecodableImageWarning, stacklevel=2)
            return None
        return None if out is None else (out, target)

    def _transform(self, image: Any) -> Any:
        if isinstance(image, dict) and ("bytes" in image or "path" in image):  # HF undecoded Image feature
            image = image["bytes"] if image.get("bytes") is not None else image["path"]
        if isinstance(image, (bytes, bytearray, memoryview)):
            return load_transformed(io.BytesIO(image), self.in_chans, self.transform,
                                    name="in a dataset item")
        if isinstance(image, (str, os.PathLike)):
            return load_transformed(image, self.in_chans, self.transform)
        if isinstance(image, torch.Tensor):
            image = TF.to_pil_image(image if image.ndim == 3 else image.unsqueeze(0))
        elif isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        elif not isinstance(image, Image.Image):
            raise TypeError(f"dataset item image of type {type(image).__name__}: expected a PIL image, "
                            "a uint8/float tensor, a NumPy array, bytes or a file path")
        if not getattr(self.transform, "lazy_decode", False):
            image = convert_image(image, self.in_chans)
        return self.transform(image) if self.transform is not None else image


class MapDataset(DatasetView):
    """A map-style user dataset with maekit's item conversion (:class:`ItemConverter`); an item whose
    image the dataset itself fails to decode (a Hugging Face ``Image`` cell) is skipped like a bad file."""

    def __init__(self, dataset: Any, convert: ItemConverter) -> None:
        self.dataset, self.convert = dataset, convert

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        try:
            item = self.dataset[int(index)]  # datasets decodes the image cell here
        except _DECODE_ERRORS as err:
            warnings.warn(f"skipping undecodable image at row {index} of the dataset: "
                          f"{type(err).__name__}: {err}", UndecodableImageWarning, stacklevel=2)
            return None
        return self.convert(item)


class StreamDataset(IterableDataset):
    """An iterable user dataset split over ranks and workers (module docstring)."""

    def __init__(self, source: Any, convert: ItemConverter, *, seed: int = 0, world_size: int = 1,
                 rank: int = 0) -> None:
        try:
            total = len(source)
        except TypeError:
            raise ValueError(f"the iterable dataset {type(source).__name__} has no len(): maekit needs it to "
                             "plan the epoch (steps, schedule); give the dataset a __len__") from None
        self.source, self.convert, self.seed = source, convert, int(seed)
        self.world_size, self.rank, self.epoch = world_size, rank, 0
        self.per_rank = total // world_size
        if self.per_rank == 0:
            raise ValueError(f"the iterable dataset has {total} items, fewer than the {world_size} processes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[tuple[Any, int, int] | None]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(self.epoch)
        end = self.per_rank * self.world_size  # drop the tail so every rank reads per_rank items
        stride = self.world_size * workers
        first = self.rank + self.world_size * worker
        for pos, item in zip(range(first, end, stride), itertools.islice(self.source, first, end, stride)):
            yield seeded_item(lambda: self.convert(item), self.seed, self.epoch, pos)


def as_dataset(source: Any, *, transform: Callable[[Any], Any] | None, in_chans: int = 3,
               input_size: tuple[int, int] | None = None, image_key: str | None = None,
               label_key: str | None = None, seed: int = 0, world_size: int = 1, rank: int = 0) -> Dataset:
    """A maekit dataset over any dataset object (module docstring).

    Args:
        source: map-style (``__getitem__`` + ``__len__``) or iterable dataset.
        transform: maekit transform (e.g. :func:`~maekit.data.build_pretrain_transform`).
        in_chans: model channels; input_size: model (H, W) (float tensors of this shape pass through).
        image_key, label_key: keys of dict items (auto-detected when None).
        seed, world_size, rank: iterable datasets only (their split and augmentation seeds).

    Returns:
        A Dataset whose items are ``(model input, label)`` or None (iterables add the mask seed).

    Raises:
        TypeError: ``source`` is neither; ValueError: an iterable without ``len()``.
    """
    from .hf_datasets import detect_columns, is_hf_dataset_object

    if is_hf_dataset_object(source) and image_key is None:  # columns by feature type (Image, ClassLabel)
        image_key, label_key = detect_columns(source.features, None, label_key, labelled=False,
                                              required=False)
    convert = ItemConverter(transform, in_chans=in_chans, input_size=input_size, image_key=image_key,
                            label_key=label_key)
    if isinstance(source, IterableDataset) or (not hasattr(source, "__getitem__") and hasattr(source, "__iter__")):
        return StreamDataset(source, convert, seed=seed, world_size=world_size, rank=rank)
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        return MapDataset(source, convert)
    raise TypeError(f"{type(source).__name__} is not a dataset: give a map-style dataset (__getitem__ and "
                    "__len__), an IterableDataset, a folder or builtin:digits")

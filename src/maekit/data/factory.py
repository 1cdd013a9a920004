"""One entry point from a ``--data_path`` value to a dataset: folders or ``builtin:<name>``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .builtin import BUILTIN_DATASETS, BUILTIN_PREFIX, DIGITS_DEFAULT_SIZE, DigitsDataset
from .datasets import ImageClassFolder, UnlabeledImageFolder, resolve_split_dir


def is_builtin(data_path: str | os.PathLike | None) -> bool:
    """True for ``'builtin:<name>'`` data paths."""
    return isinstance(data_path, str) and data_path.lower().startswith(BUILTIN_PREFIX)


def resolve_dataset(
    data_path: str | os.PathLike,
    split: str = "train",
    *,
    labelled: bool = True,
    transform: Callable[[Any], Any] | None = None,
    in_chans: int = 3,
    train_split: str | os.PathLike | None = None,
    val_split: str | os.PathLike | None = None,
    builtin_size: int | tuple[int, int] = DIGITS_DEFAULT_SIZE,
) -> Dataset:
    """The dataset behind ``data_path`` for one split.

    - ``'builtin:digits'``: :class:`DigitsDataset` (``split`` 'train' or 'val'/'test';
      images of ``builtin_size``).
    - labelled folders: :class:`ImageClassFolder` on :func:`resolve_split_dir`
      (``data_path/train``, ``data_path/val``, or ``train_split`` / ``val_split``).
    - unlabelled folders (pretraining), ``split='train'``: ``train_split`` if given, else
      ``data_path/train`` when it exists, else every image under ``data_path`` (flat or
      nested). ``split='val'``: the val folder, which must exist.

    Items are ``(transform(image), target)`` (target -1 when ``labelled=False``) or None for
    an undecodable file. Labelled datasets have ``classes`` and ``class_to_idx``.

    Raises:
        ValueError: unknown builtin name or split. FileNotFoundError: missing folder, no
        images, empty class folder (the message names the path).
    """
    if split == "test":
        split = "val"
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if is_builtin(data_path):
        name = str(data_path)[len(BUILTIN_PREFIX) :].lower()
        if name != "digits":
            raise ValueError(
                f"unknown built-in dataset {data_path!r}; available: "
                + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)
            )
        return DigitsDataset(
            split, transform=transform, in_chans=in_chans, size=builtin_size, labelled=labelled
        )
    if labelled:
        root = resolve_split_dir(data_path, split, train_split=train_split, val_split=val_split)
        return ImageClassFolder(root, transform=transform, in_chans=in_chans)
    if split == "train" and train_split is None:
        return UnlabeledImageFolder(Path(data_path), transform=transform, in_chans=in_chans, split="train")
    root = resolve_split_dir(data_path, split, train_split=train_split, val_split=val_split)
    return UnlabeledImageFolder(root, transform=transform, in_chans=in_chans, split=None)

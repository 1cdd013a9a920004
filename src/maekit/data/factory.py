"""One entry point from a ``--data_path`` value to a dataset: folders, tar shards, ``hf:<name>`` or
``builtin:<name>``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .builtin import BUILTIN_DATASETS, BUILTIN_PREFIX, DigitsDataset
from .datasets import ImageClassFolder, UnlabeledImageFolder, check_split, resolve_split_dir
from .hf_datasets import is_hf_source
from .shards import is_shard_source, resolve_shards


def is_builtin(data_path: str | os.PathLike | None) -> bool:
    """True for ``'builtin:<name>'`` data paths."""
    return isinstance(data_path, str) and data_path.lower().startswith(BUILTIN_PREFIX)


def resolve_dataset(data_path: str | os.PathLike, split: str = "train", *, labelled: bool = True,
                    transform: Callable[[Any], Any] | None = None, in_chans: int = 3,
                    train_split: str | os.PathLike | None = None, val_split: str | os.PathLike | None = None,
                    **source_options: Any) -> Dataset:
    """The dataset behind ``data_path`` for one split.

    - ``'builtin:digits'``: :class:`DigitsDataset` (``split`` 'train' or 'val'/'test'; 32x32 images).
    - labelled folders: :class:`ImageClassFolder` on :func:`resolve_split_dir`
      (``data_path/train``, ``data_path/val``, or ``train_split`` / ``val_split``).
    - unlabelled folders (pretraining), ``split='train'``: ``train_split`` if given, else
      ``data_path/train`` when it exists, else every image under ``data_path`` (flat or
      nested). ``split='val'``: the val folder, which must exist.

    - tar shards (:mod:`maekit.data.shards`) and ``hf:NAME_OR_PATH`` (:mod:`maekit.data.hf_datasets`),
      with ``source_options`` from :func:`source_options` (``num_samples``, ``seed``;
      ``image_column``, ``label_column``, ``split_name``).

    Items are ``(transform(image), target)`` (target -1 when ``labelled=False``) or None for
    an undecodable file. Labelled datasets have ``classes`` and ``class_to_idx``.

    Raises:
        ValueError: unknown builtin name or split. FileNotFoundError: missing folder, no
        images, empty class folder (the message names the path).
    """
    split = check_split(split)
    if is_hf_source(data_path) or is_shard_source(data_path):
        return _source_dataset(data_path, split, labelled=labelled, transform=transform, in_chans=in_chans,
                               **source_options)
    if is_builtin(data_path):
        name = str(data_path)[len(BUILTIN_PREFIX) :].lower()
        if name != "digits":
            raise ValueError(
                f"unknown built-in dataset {data_path!r}; available: "
                + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)
            )
        return DigitsDataset(split, transform=transform, in_chans=in_chans, labelled=labelled)
    if not labelled and split == "train" and train_split is None:
        return UnlabeledImageFolder(Path(data_path), transform=transform, in_chans=in_chans, split="train")
    root = resolve_split_dir(data_path, split, train_split=train_split, val_split=val_split)
    if labelled:
        return ImageClassFolder(root, transform=transform, in_chans=in_chans)
    return UnlabeledImageFolder(root, transform=transform, in_chans=in_chans, split=None)


def source_options(cfg: Any, split: str = "train") -> dict[str, Any]:
    """The options of tar-shard and ``hf:`` sources in a task config (absent fields: defaults).

    Hugging Face split names: ``cfg.split`` is the split the command trains on (``split='train'``),
    or, for a config without training (``maekit eval``), the split it evaluates; otherwise
    ``train_split`` / ``val_split`` name them; unset, the defaults of :func:`~.hf_datasets.pick_split`.
    """
    trains = hasattr(cfg, "epochs")
    if split == "train":
        name = getattr(cfg, "split", None) or getattr(cfg, "train_split", None)
    else:
        name = getattr(cfg, "val_split", None) or (None if trains else getattr(cfg, "split", None))
    return {
        "image_column": getattr(cfg, "image_column", None),
        "label_column": getattr(cfg, "label_column", None),
        "num_samples": getattr(cfg, "num_samples", None),
        "seed": getattr(cfg, "seed", 0),
        "split_name": name,
    }


def _source_dataset(data_path: Any, split: str, *, image_column: str | None = None,
                    label_column: str | None = None, split_name: str | None = None,
                    num_samples: int | None = None, seed: int = 0, **kwargs: Any) -> Dataset:
    """Tar shards or a Hugging Face dataset (the modules are imported only when used); ``kwargs``:
    ``labelled``, ``transform``, ``in_chans``."""
    if is_hf_source(data_path):
        from .hf_datasets import HFImageDataset, load_hf, pick_split

        data = pick_split(load_hf(os.fspath(data_path)), split, split_name)
        return HFImageDataset(data, image_column=image_column, label_column=label_column, **kwargs)
    from .shard_dataset import ShardDataset

    index = resolve_shards(data_path, split, num_samples=num_samples if split == "train" else None)
    return ShardDataset(index, train=split == "train", seed=seed, **kwargs)

"""Hugging Face ``datasets`` as a ``--data_path``: ``hf:NAME_OR_PATH``.

``NAME_OR_PATH`` is, in this order:

- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  (``datasets.load_from_disk``);
- any other local folder: the ``imagefolder`` builder (``load_dataset("imagefolder",
  data_dir=...)``: class sub-folders become a ``label`` ClassLabel, ``train/`` ``val/`` ``test/``
  sub-folders become splits);
- a Hub dataset name (``load_dataset(NAME)``; downloads to the ``datasets`` cache).

Columns: the image column is the only ``datasets.Image`` feature (or the one named ``image`` /
``img`` when there are several); the label column is the only ``ClassLabel`` feature (or one
named ``label`` / ``labels``). ``image_column`` / ``label_column`` override the choice; an
ambiguous or missing column is an error naming the columns. Splits: ``split`` when given, else
``train`` for training and the first of ``validation``, ``val``, ``test`` for evaluation.

Any ``datasets.Dataset`` object (e.g. handed to the Trainer) goes through :class:`HFImageDataset`.
Items are ``(transform(image), target)`` like the folder datasets (target -1 when unlabelled),
or ``None`` for an image that cannot be decoded (warned, then dropped and counted by the loader).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .adapt import ItemConverter, MapDataset

HF_PREFIX = "hf:"
_IMAGE_NAMES = ("image", "img", "images", "pixel_values")
_LABEL_NAMES = ("label", "labels", "fine_label", "class", "target")
_EVAL_SPLITS = ("validation", "val", "valid", "test")


def _datasets():
    """datasets, imported when first used (the optional ``hf`` extra: :func:`~.shards.webdataset_module`)."""
    import datasets

    return datasets


def is_hf_source(data_path: Any) -> bool:
    """True for ``'hf:<name or folder>'`` data paths."""
    return isinstance(data_path, str) and data_path.startswith(HF_PREFIX)


def load_hf(spec: str) -> Any:
    """The ``Dataset`` or ``DatasetDict`` behind ``hf:NAME_OR_PATH`` (module docstring)."""
    ds = _datasets()
    name = spec.removeprefix(HF_PREFIX)
    if not name:
        raise ValueError("hf: needs a dataset name or folder, e.g. hf:cifar10 or hf:/data/my_saved_dataset")
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return ds.load_from_disk(str(path))
        return ds.load_dataset("imagefolder", data_dir=str(path))
    if path.exists():
        raise ValueError(f"hf:{name} is a file; give a save_to_disk folder, an image folder or a Hub "
                         "dataset name")
    from ..hub.remote import bound_hub_session, unreachable

    bound_hub_session()  # a Hub that never answers: one bounded wait, not datasets' retries of none
    try:
        return ds.load_dataset(name)
    except Exception as err:  # noqa: BLE001 - datasets raises many types (not found, HTTP, config errors)
        silent = unreachable(err, f"hf:{name}")
        if silent:
            raise FileNotFoundError(silent) from err
        raise FileNotFoundError(
            f"cannot load the Hugging Face dataset {name!r}: it is not a local folder and the Hub said "
            f"{type(err).__name__}: {err}"
        ) from None


def pick_split(data: Any, split: str, split_name: str | None = None) -> Any:
    """One ``Dataset`` from a ``DatasetDict`` (or the ``Dataset`` itself for training)."""
    if not hasattr(data, "keys"):  # a single Dataset: it is the training split
        if split_name is not None or split == "train":
            return data
        raise ValueError("this Hugging Face dataset has no splits, so there is no evaluation split; "
                         "save it as a DatasetDict with a validation split")
    wanted = [split_name] if split_name else (["train"] if split == "train" else list(_EVAL_SPLITS))
    for name in wanted:
        if name in data:
            return data[name]
    raise ValueError(f"the Hugging Face dataset has splits {list(data.keys())}, none of {wanted}; "
                     "choose one with --split")


def _pick(features: Any, pool: list[str], given: str | None, kind: type, names: tuple[str, ...], what: str,
          flag: str) -> str | None:
    """``given`` (checked to be a column), else the only column of ``pool`` of feature type ``kind``,
    else the only one with a usual name; None when there is none."""
    if given is not None:
        if given not in features:
            raise ValueError(f"{flag} {given!r} is not a column of this dataset; columns: {list(features)}")
        return given
    typed = [c for c in pool if isinstance(features[c], kind)]
    if len(typed) == 1:
        return typed[0]
    named = [c for c in typed or pool if c.lower() in names]
    if len(named) == 1:
        return named[0]
    if typed:
        raise ValueError(f"several {what} columns {typed}; choose one with {flag}")
    return None


def detect_columns(features: Any, image_column: str | None = None, label_column: str | None = None, *,
                   labelled: bool = True, required: bool = True) -> tuple[str | None, str | None]:
    """(image column, label column or None) of a dataset's ``features`` (module docstring rules).

    ``required=False``: no image column gives None instead of an error (ambiguity still raises).
    """
    ds = _datasets()
    columns = list(features)
    image = _pick(features, columns, image_column, ds.Image, _IMAGE_NAMES, "image", "--image_column")
    if image is None and not required:
        return None, label_column
    if image is None:
        raise ValueError(f"no image column found among {columns}; name it with --image_column")
    others = [c for c in columns if c != image]
    label = _pick(features, others, label_column, ds.ClassLabel, _LABEL_NAMES, "label", "--label_column")
    if labelled and label is None:
        raise ValueError(f"no label column found among {columns}; name it with --label_column")
    return image, label


class HFImageDataset(MapDataset):
    """A ``datasets.Dataset`` of images as maekit items ``(transform(image), target)``.

    Args:
        data: a ``datasets.Dataset``.
        image_column, label_column: the columns (:func:`detect_columns` picks them when None).
        labelled: return the label column as target (else -1).
        transform: applied to the converted PIL image; ``in_chans``: its channels.

    Attributes: ``classes`` (ClassLabel names, or the sorted distinct label values as strings),
    ``class_to_idx``, ``targets``; ``dataset``, the rows (image and label columns only), whose
    other attributes (``features``...) are reachable through this one.
    """

    def __init__(self, data: Any, *, image_column: str | None = None, label_column: str | None = None,
                 labelled: bool = True, transform: Callable[[Any], Any] | None = None,
                 in_chans: int = 3) -> None:
        image, label = detect_columns(data.features, image_column, label_column, labelled=labelled)
        self.image_column, self.label_column = image, (label if labelled else None)
        # rows are {image: PIL, bytes, path or HWC uint8 cell, label: int} dicts
        rows = data.select_columns([c for c in (image, self.label_column) if c is not None])
        super().__init__(rows, ItemConverter(transform, in_chans=in_chans, image_key=image,
                                             label_key=self.label_column))
        if self.label_column is not None:
            feature = data.features[self.label_column]
            self.targets = [int(t) for t in self.dataset[self.label_column]]
            names = getattr(feature, "names", None)
            self.classes = list(names) if names else [str(i) for i in range(max(self.targets) + 1)]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        else:
            self.targets = [-1] * len(self.dataset)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rows={len(self)}, image_column={self.image_column!r}, "
                f"label_column={self.label_column!r})")


def is_hf_dataset_object(obj: Any) -> bool:
    """True for a ``datasets.Dataset`` (checked by module name, so ``datasets`` is not imported)."""
    return type(obj).__module__.startswith("datasets.") and hasattr(obj, "features")

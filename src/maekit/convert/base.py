"""What every format module provides: a :class:`Format` object, and :class:`Loaded` from its reader.

A format module ends with ``FORMAT = Format(...)``; :mod:`.formats` collects them in one table,
so a new format is one new module plus one line there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.base import PROCESSOR_NAME
from ._util import StateDict
from .errors import ConversionError


@dataclass
class Loaded:
    """Weights under the official names plus what the file says about its model.

    Attributes:
        state_dict: name -> tensor, official (R1 / R2) parameter names and layouts.
        hints: ``model_name`` / ``model_args`` (exact, maekit folders) or loose facts
            (``num_heads``, ``norm_pix_loss``, ``layer_norm_eps``, ``img_size``...) and ``source``.
        notes: what the reader skipped or assumed.
    """

    state_dict: StateDict
    hints: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


Writer = Callable[[Mapping[str, torch.Tensor], Path, Any], tuple[Path, list[str]]]


@dataclass(frozen=True)
class Format:
    """One checkpoint format.

    Attributes:
        name: what ``--from`` / ``--to`` take.
        suffixes: file suffixes that imply this format for an output path (first: the default).
        folder: the format is a folder (``config.json`` + weights), not one file.
        sniff: ``sniff(path, head) -> bool``: is this file (``head`` = its first 4 KiB) or folder
            (``head`` = b"") of this format? Asked in the table's order.
        read: ``read(path) -> Loaded`` (official names).
        write: ``write(state_dict, dst, spec) -> (path written, notes)``; ``spec`` is the
            :class:`~maekit.convert.spec.ArchSpec` of the model, or None when unknown.
        families: the model families the format can hold.
        aliases: other names accepted for ``name`` (``pytorch``, ``paddle``...).
    """

    name: str
    suffixes: tuple[str, ...]
    folder: bool
    sniff: Callable[[Path, bytes], bool]
    read: Callable[[Path], Loaded]
    write: Writer
    families: tuple[str, ...] = ("mae", "vit", "convmae", "convvit")
    aliases: tuple[str, ...] = ()



WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # of a transformers or timm folder
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def folder_of(path: str | os.PathLike) -> Path:
    """The folder a path is, or holds the file it is."""
    p = Path(path)
    return p.parent if p.is_file() else p


def read_json(path: Path) -> Any:
    """The JSON in ``path`` (None when there is no such file)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConversionError(f"invalid JSON ({e})", path) from e


def read_json_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json`` as a dict ({} when absent or not an object)."""
    cfg = read_json(folder / "config.json")
    return cfg if isinstance(cfg, dict) else {}


def maekit_metadata(model_name: str, model_args: Mapping[str, Any]) -> dict[str, str]:
    """The safetensors metadata of maekit's files: the model's name and arguments, read back as hints."""
    return {"format": "pt", "maekit.model_name": model_name,
            "maekit.model_args": json.dumps(dict(model_args), sort_keys=True)}


def label_list(labels: Any) -> list[str] | None:
    """Labels as a list of strings: a list, or a dict by index (HF ``id2label``, timm ``label_names``);
    None for none (or ids that are not numbers: no usable order)."""
    if isinstance(labels, dict):
        try:
            labels = [labels[k] for k in sorted(labels, key=int)]
        except ValueError:
            return None
    return [str(n) for n in labels] if isinstance(labels, (list, tuple)) and labels else None


def size_arg(size: Any) -> int | list[int] | None:
    """An image size (S, [H, W] or (H, W)) as a model argument: one number when square."""
    if not size:
        return None
    size = [int(s) for s in (size if isinstance(size, (list, tuple)) else [size])]
    return size[0] if len(set(size)) == 1 else size


def preprocessing_hint(mean: Any, std: Any, crop_pct: Any = None) -> dict[str, Any] | None:
    """``{"image_mean", "image_std"[, "crop_pct"]}`` from a file's normalisation, None when it has none."""
    if not isinstance(mean, (list, tuple)) or not isinstance(std, (list, tuple)) or len(mean) != len(std):
        return None
    out: dict[str, Any] = {"image_mean": [float(m) for m in mean], "image_std": [float(s) for s in std]}
    if isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1:
        out["crop_pct"] = float(crop_pct)
    return out


def read_processor_file(folder: Path) -> dict[str, Any] | None:
    """The normalisation (and maekit's ``crop_pct``) of ``folder/preprocessor_config.json`` -- maekit's
    or transformers' -- as a ``preprocessing`` hint; None when the folder has no such file."""
    data = read_json(folder / PROCESSOR_NAME)
    if not isinstance(data, dict):
        return None
    return preprocessing_hint(data.get("image_mean"), data.get("image_std"), data.get("crop_pct"))

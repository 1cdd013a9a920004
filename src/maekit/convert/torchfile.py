"""Reading torch and safetensors files safely: the helpers every format module shares.

``torch_load`` unpickles nothing but tensors, plain containers and ``argparse.Namespace``
(:func:`maekit.fileio.safe_torch_load`); ``find_state_dict`` finds the
weights inside whatever a checkpoint holds (official ``{'model': ...}``, maekit training
checkpoints with their ``extra``, DDP ``module.`` prefixes) and ``checkpoint_facts`` what it
records beside them; ``read_safetensors`` and ``safetensors_keys`` read a safetensors file or only
its header; ``load_weights`` / ``load_folder_weights`` read a weights file / a transformers or timm
folder's weights (shard index, ``model.safetensors`` or ``pytorch_model.bin``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..fileio import safe_torch_load
from ._util import StateDict, describe_keys
from .base import SHARD_INDEXES, WEIGHT_FILES, read_json
from .errors import ConversionError

TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_CONTAINER_KEYS = ("model", "state_dict", "model_state", "module", "net")


def is_torch_head(head: bytes) -> bool:
    """The first bytes of a ``torch.save`` file: a ZIP archive or the legacy pickle magic."""
    return head.startswith(b"PK\x03\x04") or head.startswith(TORCH_LEGACY_MAGIC)


def torch_load(path: str | os.PathLike, mmap: bool = False) -> Any:
    """``torch.load`` that unpickles nothing but tensors, containers and ``argparse.Namespace``."""
    try:
        return safe_torch_load(path, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        why = next((ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        hint = ("" if _is_torch_file(path)
                else " This is no torch.save file; a PaddlePaddle pickle reads with --from passl.")
        raise ConversionError("refused to load: the file asks to unpickle something other than tensors, "
                              "containers and argparse.Namespace, and maekit never runs code from a file "
                              f"({why.strip()}).{hint}", path) from e
    except (EOFError, zipfile.BadZipFile) as e:
        raise ConversionError(f"truncated or corrupted PyTorch file ({type(e).__name__}: {e})", path) from e
    except RuntimeError as e:
        raise ConversionError(f"truncated or corrupted PyTorch file ({str(e).splitlines()[0]})", path) from e
    except (OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise ConversionError("no such file", path) from e
        raise ConversionError(f"cannot read as a PyTorch file ({type(e).__name__}: {e})", path) from e


def _is_torch_file(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            return is_torch_head(f.read(len(TORCH_LEGACY_MAGIC)))
    except OSError:
        return True


# the reference scripts' args -> (hint, type)
_ARGS = {"model": ("model_name", str), "norm_pix_loss": ("norm_pix_loss", bool),
         "input_size": ("img_size", int)}


def checkpoint_facts(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """(hints, notes) of what a training checkpoint (torch or PASSL) records beside its weights: its
    ``args`` (the reference scripts': model, norm_pix_loss, input_size), maekit's ``extra`` (the exact
    model and labels), its epoch and optimizer."""
    if not isinstance(obj, Mapping):
        return {}, []
    args = vars(obj["args"]) if isinstance(obj.get("args"), argparse.Namespace) else obj.get("args")
    hints: dict[str, Any] = {}
    if isinstance(args, Mapping):
        hints["source"] = "the checkpoint's args"
        hints.update((dst, args[k]) for k, (dst, kind) in _ARGS.items() if isinstance(args.get(k), kind))
    extra = obj.get("extra")
    if isinstance(extra, Mapping):  # a maekit training checkpoint records its exact model and labels
        if isinstance(extra.get("model_name"), str) and isinstance(extra.get("model_args"), Mapping):
            hints.update(model_name=extra["model_name"], model_args=dict(extra["model_args"]))
        if isinstance(extra.get("class_names"), (list, tuple)):
            hints["class_names"] = [str(c) for c in extra["class_names"]]
    epoch = f" of epoch {obj['epoch']}" if isinstance(obj.get("epoch"), int) else ""
    if "optimizer" in obj:
        return hints, [f"training checkpoint{epoch}; optimizer / scaler state ignored"]
    return hints, [f"checkpoint{epoch}"] if epoch else []


def find_state_dict(obj: Any, path: str | os.PathLike | None = None) -> StateDict:
    """The state dict inside a loaded checkpoint: ``obj`` itself when it is a dict of tensors, else
    the one under ``model`` / ``state_dict`` / ``model_state`` / ``module`` / ``net``; a DDP
    ``module.`` prefix (on every key) is stripped.

    Raises:
        ConversionError: no non-empty dict of tensors found (the message names ``path``).
    """
    sd = obj
    if isinstance(sd, Mapping) and not all(isinstance(v, torch.Tensor) for v in sd.values()):
        for key in _CONTAINER_KEYS:
            if isinstance(sd.get(key), Mapping):
                sd = sd[key]
                break
    if not isinstance(sd, Mapping) or not sd:
        raise ConversionError("no state dict found (expected a dict of tensors, or one under 'model')", path)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError("not a state dict: entries that are not tensors: " + describe_keys(bad), path)
    if all(str(k).startswith("module.") for k in sd):  # DDP's prefix, on every key
        return {str(k)[len("module."):]: v for k, v in sd.items()}
    return {str(k): v for k, v in sd.items()}


def safetensors_keys(path: Path, head: bytes, size: int) -> list[str] | None:
    if len(head) < 9:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= size - 8 or head[8:9] != b"{":
        return None
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):  # a header nested deeper than any real one: not safetensors
        return None
    return [k for k in header if k != "__metadata__"] if isinstance(header, dict) else None


def load_weights(file: Path) -> StateDict:
    """The tensors of a ``.safetensors`` or (weights-only) PyTorch weights file."""
    if file.suffix == ".safetensors":
        return read_safetensors(file)[0]
    return find_state_dict(torch_load(file), file)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise ConversionError("no such file", path) from e
        raise ConversionError(f"truncated or corrupted safetensors file ({e})", path) from e


def load_folder_weights(folder: Path, weights: Path | None = None) -> StateDict:
    """The tensors of a transformers / timm folder: its shard index's files, its one weights file, or
    ``weights`` (one file of it)."""
    files = [weights] if weights is not None else _weight_files(folder)
    return {k: t for f in files for k, t in load_weights(f).items()}


def _weight_files(folder: Path) -> list[Path]:
    for index in (folder / n for n in SHARD_INDEXES):
        if index.is_file():
            try:
                names = list(dict.fromkeys(read_json(index)["weight_map"].values()))
            except (TypeError, KeyError, AttributeError) as e:
                raise ConversionError(f"unreadable shard index ({e})", index) from e
            # Shards are files of this folder: an index must not point elsewhere ('../x', '/x').
            bad = [n for n in names if not isinstance(n, str) or not n or Path(n).name != n]
            if bad:
                raise ConversionError(f"shard index names files outside the folder: {bad[:3]}", index)
            return [folder / n for n in names]
    for single in (folder / n for n in WEIGHT_FILES):
        if single.is_file():
            return [single]
    raise ConversionError("no model.safetensors or pytorch_model.bin in this folder", folder)

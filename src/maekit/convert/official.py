"""Official PyTorch files (R1 MAE, R2 ConvMAE; REFERENCES D.1-D.3).

Every kind the references publish or write: ``{'model': state_dict}`` (encoder-only pretrain,
``_full``, ``visualize``, fine-tuned, linear-probed), training checkpoints with ``optimizer``,
``epoch``, ``scaler`` and ``args`` (an ``argparse.Namespace``), a bare state dict, and
``state_dict`` / DDP ``module.`` variants. Loaded with ``torch.load(weights_only=True)``: only
tensors, plain containers and ``argparse.Namespace`` are unpickled, never code.
"""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..fileio import SAFE_GLOBALS, atomic_write, safe_torch_load
from ._util import StateDict, describe_keys, plain_tensors, strip_prefix
from .base import Loaded
from .errors import ConversionError

__all__ = ["SAFE_GLOBALS", "unpack_checkpoint", "find_state_dict", "read", "torch_load", "write"]
_CONTAINER_KEYS = ("model", "state_dict", "model_state", "module", "net")


def torch_load(path: str | os.PathLike, mmap: bool = False) -> Any:
    """``torch.load`` that unpickles nothing but tensors, containers and ``argparse.Namespace``."""
    try:
        return safe_torch_load(path, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        why = next((ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        hint = (
            ""
            if _is_torch_file(path)
            else " This is no torch.save file; a PaddlePaddle pickle reads with --from passl."
        )
        raise ConversionError(
            "refused to load: the file asks to unpickle something other than tensors, "
            f"containers and argparse.Namespace, and maekit never runs code from a file "
            f"({why.strip()}).{hint}",
            path,
        ) from e
    except (EOFError, zipfile.BadZipFile) as e:
        raise ConversionError(f"truncated or corrupted PyTorch file ({type(e).__name__}: {e})", path) from e
    except RuntimeError as e:
        raise ConversionError(f"truncated or corrupted PyTorch file ({str(e).splitlines()[0]})", path) from e
    except (OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise ConversionError("no such file", path) from e
        raise ConversionError(f"cannot read as a PyTorch file ({type(e).__name__}: {e})", path) from e


def _is_torch_file(path: str | os.PathLike) -> bool:
    from .detect import TORCH_LEGACY_MAGIC

    try:
        with open(path, "rb") as f:
            head = f.read(len(TORCH_LEGACY_MAGIC))
    except OSError:
        return True
    return head.startswith(b"PK\x03\x04") or head == TORCH_LEGACY_MAGIC


def _args_hints(args: Any) -> dict[str, Any]:
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, Mapping):
        return {}
    hints: dict[str, Any] = {"source": "the checkpoint's args"}
    if isinstance(args.get("model"), str):
        hints["model_name"] = args["model"]
    if isinstance(args.get("norm_pix_loss"), bool):
        hints["norm_pix_loss"] = args["norm_pix_loss"]
    if isinstance(args.get("input_size"), int):
        hints["img_size"] = args["input_size"]
    return hints


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
    sd = strip_prefix(sd, "module.")
    return {str(k): v for k, v in sd.items()}


def unpack_checkpoint(obj: Any, path: str | os.PathLike) -> tuple[StateDict, dict[str, Any], list[str]]:
    """The model weights inside a loaded checkpoint object, plus hints and notes."""
    hints: dict[str, Any] = {}
    notes: list[str] = []
    if isinstance(obj, Mapping) and "args" in obj:
        hints = _args_hints(obj["args"])
    extra = obj.get("extra") if isinstance(obj, Mapping) else None
    if isinstance(extra, Mapping):  # a maekit training checkpoint records its exact model and labels
        if isinstance(extra.get("model_name"), str) and isinstance(extra.get("model_args"), Mapping):
            hints.update(model_name=extra["model_name"], model_args=dict(extra["model_args"]))
        if isinstance(extra.get("class_names"), (list, tuple)):
            hints["class_names"] = [str(c) for c in extra["class_names"]]
    if isinstance(obj, Mapping) and isinstance(obj.get("epoch"), int):
        notes.append(
            f"training checkpoint of epoch {obj['epoch']}; optimizer / scaler state ignored"
            if "optimizer" in obj
            else f"checkpoint of epoch {obj['epoch']}"
        )
    return find_state_dict(obj, path), hints, notes


def read(path: str | os.PathLike) -> Loaded:
    sd, hints, notes = unpack_checkpoint(torch_load(path), path)
    from .detect import looks_hf

    if looks_hf(sd):  # a transformers state dict saved with torch.save
        from .hf import from_hf

        sd, more = from_hf(sd, path)
        notes += ["Hugging Face parameter names, mapped to the official ones"] + more
    return Loaded(sd, hints, notes)


def write(sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, spec=None) -> Path:
    """``{'model': state_dict}`` with ``torch.save``, as the official scripts publish weights."""
    tensors = plain_tensors(sd)
    return atomic_write(dst, lambda tmp: torch.save({"model": tensors}, tmp))

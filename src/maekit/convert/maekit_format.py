"""maekit model folders: ``config.json`` (``{"model_name", "model_args"}``) + ``model.safetensors``.

The folder rebuilds its model with ``create_model(model_name, **model_args)``; the weights are
the model's state dict under the official names. ``save_pretrained`` / ``from_pretrained`` of
``maekit.api`` read and write the same layout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ._util import atomic_write_dir, plain_tensors
from .base import PROCESSOR_FILE, Format, Loaded, folder_of, read_json, read_json_config, read_processor_file
from .errors import ConversionError
from .torchfile import read_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def read_config(folder: Path) -> dict[str, Any]:
    f = folder / CONFIG_NAME
    cfg = read_json(f)
    if cfg is None:
        raise ConversionError(
            f"no {CONFIG_NAME} (a maekit model folder holds {CONFIG_NAME} + {WEIGHTS_NAME})", folder)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_name"), str):
        raise ConversionError("not a maekit config (no 'model_name')", f)
    if not isinstance(cfg.get("model_args", {}), dict):
        raise ConversionError("'model_args' is not an object", f)
    return cfg


def read(path: str | os.PathLike) -> Loaded:
    folder = folder_of(path)
    cfg = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ConversionError(f"no {WEIGHTS_NAME}", folder)
    sd = read_safetensors(weights)[0]
    hints = {
        "model_name": cfg["model_name"],
        "model_args": dict(cfg.get("model_args", {})),
        "source": "the maekit config.json",
    }
    if isinstance(cfg.get("class_names"), list):
        hints["class_names"] = [str(c) for c in cfg["class_names"]]
    if (pre := read_processor_file(folder)) is not None:
        hints["preprocessing"] = pre
    return Loaded(sd, hints, [])


def write(
    sd: Mapping[str, torch.Tensor],
    dst: str | os.PathLike,
    model_name: str,
    model_args: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    processor: Mapping[str, Any] | None = None,
) -> Path:
    """Write the folder atomically (a temporary folder renamed into place); ``processor``: the
    ``preprocessor_config.json`` to write beside (none when None)."""
    tensors = plain_tensors(sd)
    cfg = {"model_name": model_name, "model_args": dict(model_args or {}), **dict(extra or {})}
    meta = {
        "format": "pt",
        "maekit.model_name": model_name,
        "maekit.model_args": json.dumps(cfg["model_args"], sort_keys=True),
    }

    def write_dir(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        save_file(tensors, tmp / WEIGHTS_NAME, metadata=meta)
        if processor is not None:
            (tmp / PROCESSOR_FILE).write_text(json.dumps(dict(processor), indent=2) + "\n", encoding="utf-8")

    return atomic_write_dir(dst, write_dir)


def _write_format(sd: Mapping[str, torch.Tensor], dst: Path, spec) -> tuple[Path, list[str]]:
    """The folder ``model.save_pretrained`` writes: config.json (+ labels), weights and the
    model's ``preprocessor_config.json`` (with the source's normalisation when it records one)."""
    if spec is None:
        raise ConversionError("the maekit format needs a model name")
    labels = {"class_names": list(spec.class_names)} if spec.class_names else None
    return write(sd, dst, spec.name, spec.args, extra=labels, processor=spec.preprocessor()), []


FORMAT = Format("maekit", (), folder=True, read=read, write=_write_format,
                sniff=lambda p, head: p.is_dir() and "model_name" in read_json_config(p))

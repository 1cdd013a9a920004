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

from ..fileio import atomic_write_dir, plain_tensors
from ..models.base import PROCESSOR_NAME, WEIGHTS_NAME
from ..models.config import CONFIG_NAME, ModelConfig
from .base import Format, Loaded, folder_of, maekit_metadata, read_json, read_json_config, read_processor_file
from .errors import ConversionError
from .torchfile import read_safetensors


def read(path: str | os.PathLike) -> Loaded:
    folder = folder_of(path)
    data = read_json(folder / CONFIG_NAME)
    if data is None:
        raise ConversionError(
            f"no {CONFIG_NAME} (a maekit model folder holds {CONFIG_NAME} + {WEIGHTS_NAME})", folder)
    try:
        cfg = ModelConfig.from_dict(data)
    except ValueError as e:
        raise ConversionError(str(e), folder / CONFIG_NAME) from e
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ConversionError(f"no {WEIGHTS_NAME}", folder)
    hints = {"model_name": cfg.model_name, "model_args": cfg.model_args, "source": "the maekit config.json",
             "class_names": cfg.class_names or None, "weights": cfg.weights}
    if (pre := read_processor_file(folder)) is not None:
        hints["preprocessing"] = pre
    return Loaded(read_safetensors(weights)[0], hints, [])


def write_model_folder(sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, cfg: ModelConfig,
                       processor: Mapping[str, Any]) -> Path:
    """The folder ``model.save_pretrained`` writes, atomically (a temporary folder renamed into
    place): ``cfg`` as config.json, the weights, and ``processor`` as preprocessor_config.json."""
    tensors = plain_tensors(sd)
    meta = maekit_metadata(cfg.model_name, cfg.model_args)

    def write_dir(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(cfg.to_json_string(), encoding="utf-8")
        save_file(tensors, tmp / WEIGHTS_NAME, metadata=meta)
        (tmp / PROCESSOR_NAME).write_text(json.dumps(dict(processor), indent=2) + "\n", encoding="utf-8")

    return atomic_write_dir(dst, write_dir)


def write(sd: Mapping[str, torch.Tensor], dst: Path, spec) -> tuple[Path, list[str]]:
    """``maekit convert --to maekit``: the folder of :func:`write_model_folder`, labels and the source's
    normalisation included when it records them."""
    if spec is None:
        raise ConversionError("the maekit format needs a model name")
    cfg = ModelConfig(spec.name, dict(spec.args), list(spec.class_names) if spec.class_names else None)
    return write_model_folder(sd, dst, cfg, spec.preprocessor()), []


FORMAT = Format("maekit", (), folder=True, read=read, write=write,
                sniff=lambda p, head: p.is_dir() and "model_name" in read_json_config(p))

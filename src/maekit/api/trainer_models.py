"""The Trainer's model argument, resolved: which architecture to build and which weights to start from.

A model is given as a registered name (bare or with a weights tag), a model folder or checkpoint
file, a :class:`~maekit.api.MAEConfig` (or its dict), or an ``nn.Module`` built by maekit;
:func:`resolve_spec` turns any of them into a :class:`ModelSpec`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..models import canonical_name, create_model
from .config import MAEConfig


@dataclass
class ModelSpec:
    """A model, resolved: what to build and which weights to start from."""

    name: str
    model_args: dict[str, Any] = field(default_factory=dict)
    weights_path: str | None = None  # a file / folder maekit.convert reads
    state_dict: dict[str, torch.Tensor] | None = None  # official names, on the CPU
    label: str = ""  # for messages

    @property
    def has_weights(self) -> bool:
        return self.weights_path is not None or self.state_dict is not None


def load_training_checkpoint(path: str | os.PathLike) -> nn.Module | None:
    """The model of a maekit training checkpoint (``extra.model_name`` / ``model_args`` saved by
    the tasks), with its weights and class names; None for any other file."""
    from ..engine.checkpoint import load_checkpoint
    from ..weights import extract_state_dict

    p = Path(path)
    if not p.is_file():
        return None
    try:
        ckpt = load_checkpoint(p)
    except Exception:  # not a torch training checkpoint (safetensors, .ckpt, ...): other readers
        return None
    extra = ckpt.get("extra") if isinstance(ckpt, dict) else None
    if not isinstance(extra, dict) or not extra.get("model_name") or "model" not in ckpt:
        return None
    model = create_model(extra["model_name"], **dict(extra.get("model_args") or {}))
    model.load_state_dict(extract_state_dict(ckpt))
    from .modeling import _finish

    cfg = MAEConfig(model.model_name, dict(model.model_args), class_names=extra.get("class_names"))
    return _finish(model, cfg, None)


def resolve_spec(source: Any, *, load_weights: bool, published: bool, download: bool) -> ModelSpec:
    """``source`` (name, path, config, dict or module) -> :class:`ModelSpec`.

    ``load_weights``: read the weights a path / tagged name / module carries. ``published``: a bare
    name means its published weights too (inference), not a random initialisation (training).
    """
    if isinstance(source, nn.Module):
        if not hasattr(source, "model_name"):
            raise ValueError(f"{type(source).__name__} was not built by maekit (no model_name): build it "
                             "with maekit.create_model or AutoModel so the Trainer can rebuild it")
        sd = {k: v.detach().cpu().clone() for k, v in source.state_dict().items()} if load_weights else None
        return ModelSpec(canonical_name(source.model_name), dict(getattr(source, "model_args", {}) or {}),
                         state_dict=sd, label=f"the given {source.model_name} module")
    if isinstance(source, Mapping):
        source = MAEConfig.from_dict(dict(source))
    if isinstance(source, MAEConfig):
        return ModelSpec(source.model_name, dict(source.model_args), label=f"config of {source.model_name}")
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"model must be a name, a folder or file, a config or an nn.Module; got "
                         f"{type(source).__name__}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        module = load_training_checkpoint(path)
        if module is not None:
            return ModelSpec(module.model_name, dict(module.model_args), weights_path=str(path),
                             label=text)
        from .modeling import resolve_source

        cfg = resolve_source(path, load_weights=False).config
        return ModelSpec(cfg.model_name, dict(cfg.model_args),
                         weights_path=str(path) if load_weights else None, label=text)
    from . import zoo

    arch, tag = zoo.split_name(text)
    entry = zoo.lookup(text)  # ValueError for an unknown model or tag
    if load_weights and entry is not None and (tag is not None or published):
        from .modeling import AutoModel

        module = AutoModel.from_pretrained(text, download=download)
        sd = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        return ModelSpec(canonical_name(module.model_name), dict(module.model_args), state_dict=sd,
                         label=text)
    if tag is not None:  # weights asked for, but not loaded: still that entry's architecture
        return ModelSpec(canonical_name(entry.model_name), dict(entry.model_args), label=text)
    return ModelSpec(canonical_name(arch), {}, label=text)


__all__ = ["ModelSpec", "load_training_checkpoint", "resolve_spec"]

"""The Trainer's model argument, resolved: which architecture to build and which weights to start from.

A model is given as a registered name (bare or with a weights tag), a model folder or checkpoint
file, a :class:`~maekit.api.MAEConfig` (or its dict), or an ``nn.Module`` built by maekit;
:func:`resolve_spec` turns any of them into a :class:`ModelSpec` through :mod:`maekit.hub`
(the one loader).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..hub import load_config, lookup, resolve, split_name
from ..models import canonical_name
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

    @property
    def weights(self) -> str | dict[str, torch.Tensor] | None:
        """The weights as :func:`maekit.hub.load_weights_into` takes them."""
        return self.state_dict if self.state_dict is not None else self.weights_path


def _module_spec(module: nn.Module, load_weights: bool) -> ModelSpec:
    if not hasattr(module, "config"):
        raise ValueError(f"{type(module).__name__} was not built by maekit (no config): build it with "
                         "maekit.create_model or maekit.load_model so the Trainer can rebuild it")
    sd = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if load_weights else None
    return ModelSpec(canonical_name(module.model_name), dict(module.model_args), state_dict=sd,
                     label=f"the given {module.model_name} module")


def resolve_spec(source: Any, *, load_weights: bool, published: bool, download: bool) -> ModelSpec:
    """``source`` (name, path, config, dict or module) -> :class:`ModelSpec`.

    ``load_weights``: read the weights a path / tagged name / module carries. ``published``: a bare
    name means its published weights too (inference), not a random initialisation (training).
    """
    if isinstance(source, nn.Module):
        return _module_spec(source, load_weights)
    if isinstance(source, Mapping):
        source = MAEConfig.from_dict(dict(source))
    if isinstance(source, MAEConfig):
        return ModelSpec(source.model_name, dict(source.model_args), label=f"config of {source.model_name}")
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"model must be a name, a folder or file, a config or an nn.Module; got "
                         f"{type(source).__name__}")
    text = os.fspath(source)
    if Path(text).expanduser().exists():
        cfg = load_config(text)
        return ModelSpec(cfg.model_name, dict(cfg.model_args), weights_path=text if load_weights else None,
                         label=text)
    tag = split_name(text)[1]
    entry = lookup(text)  # ValueError for an unknown model or tag
    if load_weights and entry is not None and (tag is not None or published):
        found = resolve(text, weights=True, download=download)
        return ModelSpec(found.config.model_name, dict(found.config.model_args), state_dict=found.state_dict,
                         label=text)
    if tag is None:  # a bare name for training: the registered architecture, randomly initialised
        return ModelSpec(canonical_name(split_name(text)[0]), {}, label=text)
    cfg = resolve(text, weights=False, download=False).config  # weights asked for, not loaded: that entry's model
    return ModelSpec(cfg.model_name, dict(cfg.model_args), label=text)


__all__ = ["ModelSpec", "resolve_spec"]

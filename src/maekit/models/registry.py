"""Model registry: one decorator, one constructor, one listing (timm style).

Every architecture is a function registered under one or more names. ``create_model`` is the
only constructor the rest of maekit uses; it records the name and the constructor arguments on
the model as ``model.config`` (a :class:`~maekit.models.config.ModelConfig`), so that
``model.save_pretrained`` can rebuild it.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Any, Callable

import torch.nn as nn


from .config import ModelConfig, other_kind_args
from .limits import check_model_args

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, aliases: tuple[str, ...] = ()):
    """Register ``fn`` under its own name and ``aliases``."""

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        for name in (f.__name__, *aliases):
            if name in _MODELS:
                raise ValueError(f"model name {name!r} registered twice")
            _MODELS[name] = f
            if name != f.__name__:
                _ALIASES[name] = f.__name__
        return f

    return wrap(fn) if fn is not None else wrap


def list_models(pattern: str | None = None, include_aliases: bool = True) -> list[str]:
    """Registered names, sorted, optionally filtered by a shell-style pattern (``'mae_*'``)."""
    names = sorted(n for n in _MODELS if include_aliases or n not in _ALIASES)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def canonical_name(name: str) -> str:
    """The primary name behind an alias (``maevit_base_patch16`` -> ``vit_base_patch16``)."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (maekit.list_models() lists all {len(_MODELS)} names)")
    return _ALIASES.get(name, name)


def is_pretraining_model(name_or_model: str | nn.Module) -> bool:
    """True for masked-autoencoder names or models (``mae_*``, ``convmae_*``), False for classifiers."""
    if isinstance(name_or_model, nn.Module):
        return bool(getattr(name_or_model, "is_pretraining", False))
    return canonical_name(name_or_model).startswith(("mae_", "convmae_"))


def classifier_name(name: str) -> str:
    """The classifier of a pretraining model (``mae_vit_base_p16`` -> ``vit_base_patch16``,
    ``convmae_convvit_base_patch16`` -> ``convvit_base_patch16``); classifiers are returned as they are."""
    canon = canonical_name(name)
    if not is_pretraining_model(canon):
        return canon
    short = canon.replace("_dec512d8b", "")
    short = short[len("convmae_"):] if short.startswith("convmae_") else short[len("mae_"):]
    if not is_model(short):
        raise ValueError(f"no classifier is registered for {name!r} (looked for {short!r})")
    return canonical_name(short)


def classifier_config(config: ModelConfig) -> ModelConfig:
    """The config of the classifier whose encoder the pretraining model ``config`` is (decoder and
    pretraining-only arguments dropped, no labels); a classifier's config is returned as is."""
    if not is_pretraining_model(config.model_name):
        return config
    return ModelConfig(classifier_name(config.model_name), other_kind_args(config.model_args, decoder=True), None,
                       config.weights)


def is_model(name: str) -> bool:
    return name in _MODELS


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a registered name or alias (see :func:`list_models`).
        **overrides: constructor arguments that replace the preset's (``img_size``,
            ``patch_size``, ``in_chans``, ``embed_dim``, ``norm_pix_loss``, ``num_classes``...).

    Returns:
        The model; ``model.config`` records the canonical name and ``overrides``.
    """
    canon = canonical_name(name)
    overrides = check_model_args(name, overrides)  # before anything is allocated: depth 1e9, patch_size 0 ...
    fn = _MODELS[name]
    try:
        model = fn(**overrides)
    except TypeError as e:
        params = [p for p in inspect.signature(fn).parameters if p != "kwargs"]
        raise ValueError(f"cannot build {name!r} with {sorted(overrides)}: {e}"
                         + (f" (accepted: {params})" if params else "")) from e
    model.config = ModelConfig(canon, dict(overrides))
    return model

"""Model configuration: which registered model, with which constructor arguments.

A :class:`MAEConfig` is ``model_name`` + ``model_args`` (the overrides given to
``create_model``) + a few extras (``class_names``, ``weights``). That is exactly what
``config.json`` of a model folder holds, so it round-trips. For reading, every resolved
architecture field is also available (``config.embed_dim``, ``config.depth``...), taken from
the model built on the ``meta`` device (no memory, no time), and the Hugging Face /
MindFormers field names are aliases of ours:

=============================  =======================
alias                          maekit / official name
=============================  =======================
image_size                     img_size
num_channels                   in_chans
hidden_size                    embed_dim
num_hidden_layers              depth
num_attention_heads            num_heads
decoder_hidden_size, decoder_dim  decoder_embed_dim
decoder_num_hidden_layers      decoder_depth
decoder_num_attention_heads    decoder_num_heads
norm_pixel_loss                norm_pix_loss
num_labels                     num_classes
=============================  =======================

Setting an attribute (``config.image_size = 64``) sets the override of the official name.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..models import canonical_name, create_model

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PROCESSOR_NAME = "preprocessor_config.json"

FIELD_ALIASES: dict[str, str] = {
    "image_size": "img_size",
    "num_channels": "in_chans",
    "hidden_size": "embed_dim",
    "num_hidden_layers": "depth",
    "num_attention_heads": "num_heads",
    "decoder_hidden_size": "decoder_embed_dim",
    "decoder_dim": "decoder_embed_dim",
    "decoder_num_hidden_layers": "decoder_depth",
    "decoder_num_attention_heads": "decoder_num_heads",
    "norm_pixel_loss": "norm_pix_loss",
    "num_labels": "num_classes",
}
EXTRA_FIELDS = ("class_names", "weights")
"""Top-level config entries that are not constructor arguments."""

_TASK_MIM = "masked_image_modeling"
_TASK_CLS = "image_classification"


def official_field(name: str) -> str:
    return FIELD_ALIASES.get(name, name)


def is_pretraining_model(model: nn.Module) -> bool:
    """MAE / ConvMAE pretraining models (a decoder and ``unpatchify``), as opposed to classifiers."""
    return hasattr(model, "forward_decoder") and hasattr(model, "unpatchify")


def describe_model(model: nn.Module) -> dict[str, Any]:
    """The architecture fields of a built model (duck-typed over MAE, ConvMAE, ViT, ConvViT)."""
    pe = getattr(model, "patch_embed", None)
    d: dict[str, Any] = {"task": _TASK_MIM if is_pretraining_model(model) else _TASK_CLS}
    img = getattr(model, "img_size", None) or getattr(pe, "img_size", None)
    if img is not None:
        h, w = (img, img) if isinstance(img, int) else tuple(img)[:2]
        d["img_size"] = int(h) if h == w else [int(h), int(w)]
    p = getattr(model, "patch_size", None) or getattr(pe, "patch_size", None)
    if p is not None:
        d["patch_size"] = int(p if isinstance(p, int) else p[0])
    chans = getattr(model, "in_chans", None)
    if chans is None and pe is not None and hasattr(pe, "proj"):
        chans = pe.proj.in_channels
    d["in_chans"] = int(chans) if chans is not None else None
    dim = getattr(model, "embed_dim", None)
    if dim is None and hasattr(model, "pos_embed"):
        dim = model.pos_embed.shape[-1]
    d["embed_dim"] = int(dim) if dim is not None else None
    if hasattr(model, "blocks"):
        d["depth"] = len(model.blocks)
        blocks = model.blocks
    elif hasattr(model, "blocks3"):
        d["depth"] = [len(model.blocks1), len(model.blocks2), len(model.blocks3)]
        blocks = model.blocks3
    else:
        blocks = []
    if len(blocks) and hasattr(blocks[0], "attn"):
        d["num_heads"] = int(blocks[0].attn.num_heads)
    if hasattr(model, "decoder_embed"):
        d["decoder_embed_dim"] = int(model.decoder_embed.out_features)
        d["decoder_depth"] = len(model.decoder_blocks)
        if len(model.decoder_blocks):
            d["decoder_num_heads"] = int(model.decoder_blocks[0].attn.num_heads)
    if hasattr(model, "norm_pix_loss"):
        d["norm_pix_loss"] = bool(model.norm_pix_loss)
    if not is_pretraining_model(model):
        d["num_classes"] = int(getattr(model, "num_classes", 0))
        if hasattr(model, "global_pool"):
            d["global_pool"] = model.global_pool
    return d


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class MAEConfig:
    """``model_name`` + ``model_args`` (+ ``class_names``, ``weights``); prints as JSON.

    Args:
        model_name: a registered name or alias (stored canonical).
        model_args: constructor overrides for ``create_model``; alias keys are translated.
        **extra: ``class_names`` (list of labels), ``weights`` (the weights name it came
            from), or constructor arguments given flat (``MAEConfig('vit_base_patch16',
            num_labels=10)``).
    """

    def __init__(self, model_name: str, model_args: dict[str, Any] | None = None, **extra: Any):
        object.__setattr__(self, "model_name", canonical_name(model_name))
        args = {official_field(k): _jsonable(v) for k, v in (model_args or {}).items()}
        ext: dict[str, Any] = {}
        for k, v in extra.items():
            if k in EXTRA_FIELDS:
                ext[k] = _jsonable(v)
            elif v is not None:
                args[official_field(k)] = _jsonable(v)
        object.__setattr__(self, "model_args", args)
        object.__setattr__(self, "extra", ext)
        object.__setattr__(self, "_resolved", None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MAEConfig:
        """From ``{"model_name": ..., "model_args": {...}, ...}`` (``config.json``)."""
        if "model_name" not in data:
            raise ValueError(f"a maekit config needs 'model_name'; got keys {sorted(data)}")
        extra = {k: data[k] for k in EXTRA_FIELDS if k in data}
        return cls(data["model_name"], data.get("model_args") or {}, **extra)

    @classmethod
    def from_model(cls, model: nn.Module) -> MAEConfig:
        """The config of a model built by ``create_model`` (``model_name`` / ``model_args``)."""
        if not hasattr(model, "model_name"):
            raise ValueError(f"{type(model).__name__} was not built by maekit.create_model (no model_name); "
                             "build it with create_model(name, ...) to save or describe it")
        extra = {}
        names = getattr(model, "class_names", None)
        if names is not None:
            extra["class_names"] = list(names)
        cfg = cls(model.model_name, dict(getattr(model, "model_args", {})), **extra)
        object.__setattr__(cfg, "_resolved", describe_model(model))
        return cfg

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> MAEConfig:
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> MAEConfig:
        """Same as :meth:`AutoConfig.from_pretrained`."""
        return AutoConfig.from_pretrained(name_or_path, **kwargs)

    # ------------------------------------------------------------------ access
    def architecture(self) -> dict[str, Any]:
        """Every resolved architecture field (overrides applied), from a meta-device build."""
        if self._resolved is None:
            with torch.device("meta"):
                model = create_model(self.model_name, **self.model_args)
            object.__setattr__(self, "_resolved", describe_model(model))
        return dict(self._resolved)

    @property
    def task(self) -> str:
        """``'masked_image_modeling'`` (pretraining models) or ``'image_classification'``."""
        return self.architecture()["task"]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        key = official_field(name)
        if key in self.model_args:
            return self.model_args[key]
        if key in self.extra:
            return self.extra[key]
        if key in EXTRA_FIELDS:
            return None
        arch = self.architecture()
        if key in arch:
            return arch[key]
        raise AttributeError(f"{type(self).__name__} of {self.model_name!r} has no field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("model_name", "model_args", "extra"):
            raise AttributeError(f"{name} is read-only; build a new config")
        if name in EXTRA_FIELDS:
            self.extra[name] = _jsonable(value)
        else:
            self.model_args[official_field(name)] = _jsonable(value)
            object.__setattr__(self, "_resolved", None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MAEConfig) and self.to_dict() == other.to_dict()

    def __deepcopy__(self, memo):
        return MAEConfig.from_dict(copy.deepcopy(self.to_dict(), memo))

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """``{"model_name", "model_args", **extra}``: what ``config.json`` holds."""
        return {"model_name": self.model_name, "model_args": dict(self.model_args), **self.extra}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``config.json`` into ``save_directory`` (created)."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / CONFIG_NAME
        path.write_text(self.to_json_string(), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        shown = self.to_dict()
        names = shown.get("class_names")
        if isinstance(names, list) and len(names) > 8:
            shown["class_names"] = names[:8] + [f"... ({len(names)} in all)"]
        try:
            shown["resolved"] = self.architecture()
        except (ValueError, TypeError) as e:  # an invalid override: still printable
            shown["resolved"] = f"<cannot build: {e}>"
        return f"{type(self).__name__} {json.dumps(shown, indent=2)}"


class AutoConfig:
    """``AutoConfig.from_pretrained(name | folder | file | URL)`` -> :class:`MAEConfig`."""

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides: Any) -> MAEConfig:
        """The config of a registered name (``'mae_vit_base_patch16'``, with weights tag
        ``'.visualize'``...), a model folder, a checkpoint file (architecture inferred from its
        keys) or a URL of one. ``overrides`` set constructor arguments (aliases accepted).
        """
        from .modeling import resolve_source

        source = resolve_source(name_or_path, load_weights=False)
        cfg = source.config
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg

    @classmethod
    def for_model(cls, model_name: str, **model_args: Any) -> MAEConfig:
        """A config for a registered model with the given constructor arguments."""
        return MAEConfig(model_name, model_args)

    @staticmethod
    def show_support_list() -> list[str]:
        """Names with published weights (MindFormers' method name)."""
        from .zoo import list_pretrained

        return list_pretrained()

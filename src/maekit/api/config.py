"""Model configuration: which registered model, with which constructor arguments.

A :class:`MAEConfig` is ``model_name`` + ``model_args`` (the overrides given to
``create_model``) + a few extras (``class_names``, ``weights``). That is exactly what
``config.json`` of a model folder holds, so it round-trips. For reading, every resolved
architecture field is also available (``config.embed_dim``, ``config.depth``...), taken from
the model built on the ``meta`` device (no memory, no time), and the Hugging Face /
MindFormers field names of ``FIELD_ALIASES`` (``image_size``, ``num_channels``, ``hidden_size``,
``num_hidden_layers``, ``num_labels`` ...) are aliases of ours.

Setting an attribute (``config.image_size = 64``) sets the override of the official name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..hub.table import list_pretrained
from ..models import canonical_name, is_pretraining_model
from ..models.config import CONFIG_NAME, ModelConfig, jsonable

FIELD_ALIASES: dict[str, str] = {  # Hugging Face / MindFormers name -> ours (the official one)
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

_TASK_MIM = "masked_image_modeling"
_TASK_CLS = "image_classification"


def official_field(name: str) -> str:
    return FIELD_ALIASES.get(name, name)


class MAEConfig(ModelConfig):
    """A :class:`~maekit.models.ModelConfig` that reads like a Hugging Face config: alias names
    (``FIELD_ALIASES``) and every resolved architecture field as attributes; prints as JSON.

    Args:
        model_name: a registered name or alias (stored canonical).
        model_args: constructor overrides for ``create_model``; alias keys are translated.
        class_names, weights: as :class:`~maekit.models.ModelConfig`.
        **flat: constructor arguments given flat (``MAEConfig('vit_base_patch16', num_labels=10)``).
    """

    def __init__(self, model_name: str, model_args: dict[str, Any] | None = None,
                 class_names: list[str] | None = None, weights: str | None = None, **flat: Any):
        args = {official_field(k): v for k, v in {**(model_args or {}), **flat}.items() if v is not None}
        state = dict(model_name=canonical_name(model_name), model_args=jsonable(args),
                     class_names=None if class_names is None else [str(c) for c in class_names],
                     weights=weights)
        self.__dict__.update(state)  # fields are read-only afterwards (__setattr__)

    def model_config(self) -> ModelConfig:
        """The plain :class:`~maekit.models.ModelConfig` (what ``model.config`` holds)."""
        return ModelConfig.from_dict(self.to_dict())

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> MAEConfig:
        """Same as :meth:`AutoConfig.from_pretrained`."""
        return AutoConfig.from_pretrained(name_or_path, **kwargs)

    def architecture(self) -> dict[str, Any]:
        """Every resolved architecture field (overrides applied), as the model states it
        (``model.architecture()``), with the task; the model's record
        (:func:`maekit.convert.arch_spec`: built once on the meta device, no memory, no init)."""
        from ..convert.spec import arch_spec

        spec = arch_spec(self.model_name, self.model_args)
        arch = {k: jsonable(v) for k, v in spec.architecture.items() if k != "family"}
        h, w = arch["img_size"]
        arch["img_size"] = h if h == w else [h, w]
        return {"task": self.task, **arch}

    @property
    def task(self) -> str:
        """``'masked_image_modeling'`` (pretraining models) or ``'image_classification'``."""
        return _TASK_MIM if is_pretraining_model(self.model_name) else _TASK_CLS

    def __getattr__(self, name: str) -> Any:  # only for names that are not fields
        if name.startswith("_"):
            raise AttributeError(name)
        key = official_field(name)
        if key in self.model_args:
            return self.model_args[key]
        arch = self.architecture()
        if key in arch:
            return arch[key]
        raise AttributeError(f"{type(self).__name__} of {self.model_name!r} has no field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("model_name", "model_args"):
            raise AttributeError(f"{name} is read-only; build a new config")
        if name in ("class_names", "weights"):
            self.__dict__[name] = jsonable(value)
        else:
            self.model_args[official_field(name)] = jsonable(value)

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``config.json`` into ``save_directory`` (created)."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(self.to_json_string(), encoding="utf-8")
        return out / CONFIG_NAME

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
        from ..hub.load import load_config

        cfg = MAEConfig.from_dict(load_config(name_or_path).to_dict())
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg

    show_support_list = staticmethod(list_pretrained)  # MindFormers' name: the names with published weights

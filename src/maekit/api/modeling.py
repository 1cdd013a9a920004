"""``AutoModel`` / ``from_pretrained`` / ``save_pretrained``: Hugging Face style names over
:func:`maekit.load_model` (every source it takes, and its loading rules, are in
:mod:`maekit.hub.load`) and ``model.save_pretrained`` (:class:`maekit.models.base.MaekitModel`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..hub import table
from ..hub.load import DecoderNotLoadedWarning, load_model
from ..models import create_model
from ..models.base import unwrap
from .config import MAEConfig, official_field


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, processor: Any = None) -> Path:
    """``model.save_pretrained(save_directory, processor)`` of a model (DDP / compiled wrappers unwrapped)."""
    return unwrap(model).save_pretrained(save_directory, processor=processor)


class AutoModel:
    """Build maekit models by name, folder, file or URL (:mod:`maekit.hub.load`)."""

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | nn.Module, *, download: bool = True,
                        base_url: str | None = None, progress: bool = True, device: Any = None,
                        **overrides: Any) -> nn.Module:
        """:func:`maekit.load_model`, with the Hugging Face argument names accepted as aliases
        (``image_size=448``, ``num_labels=10``: see :mod:`maekit.api.config`).

        Returns:
            The model in eval mode.
        """
        overrides = {official_field(k): v for k, v in overrides.items()}  # image_size -> img_size ...
        return load_model(name_or_path, download=download, base_url=base_url, progress=progress, device=device,
                          **overrides)

    @classmethod
    def from_config(cls, config: MAEConfig | Mapping[str, Any], *, device: Any = None,
                    **overrides: Any) -> nn.Module:
        """A randomly initialised model of ``config`` (a :class:`MAEConfig` or its dict)."""
        config = MAEConfig.from_dict(dict(config) if isinstance(config, Mapping) else config.to_dict())
        for k, v in overrides.items():
            setattr(config, k, v)
        model = create_model(config.model_name, **config.model_args)
        model.config = config.model_config()
        if device is not None:
            model.to(device)
        return model.eval()

    show_support_list = staticmethod(table.list_pretrained)  # MindFormers' name: names with published weights


def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """:meth:`AutoModel.from_pretrained`."""
    return AutoModel.from_pretrained(name_or_path, **kwargs)


__all__ = ["AutoModel", "DecoderNotLoadedWarning", "from_pretrained", "save_pretrained"]

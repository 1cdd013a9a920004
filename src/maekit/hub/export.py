"""``export_model(model, destination, format)``: a model in another library's layout, with its labels
and its normalisation / crop (``model.preprocessor_config()``).

- ``"timm"``: a timm folder; ``timm.create_model("local-dir:PATH", pretrained=True)`` gives the
  same outputs with no other argument (labels, mean / std, crop in its ``pretrained_cfg``);
- ``"hf"``: a transformers folder with ``preprocessor_config.json`` and ``id2label`` from the
  model's ``class_names``; ``transformers.pipeline("image-classification", model=PATH)`` runs it;
- ``"official"`` / ``"passl"`` / ``"mindformers"`` / ``"maekit"``: the files those code bases read.

The writing is :func:`maekit.convert.save_state_dict`'s (the same code as ``maekit convert``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn as nn


def export_model(model: nn.Module, destination: str | os.PathLike, format: str) -> Path:
    """Write ``model`` (any maekit model; its labels too) in ``format``; returns the path written.

    Raises:
        maekit.convert.ConversionError: the format cannot hold the model (ConvMAE for timm / HF,
            an ``fc_norm`` classifier for transformers' ViT ...), with the reason.
    """
    from ..convert import save_state_dict

    return save_state_dict(model.state_dict(), destination, format, model.model_name, model.model_args,
                           class_names=model.class_names, preprocessing=model.preprocessor_config())

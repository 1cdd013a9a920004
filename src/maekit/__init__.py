"""maekit: Masked Autoencoders (MAE) and ConvMAE for PyTorch.

>>> import maekit
>>> model = maekit.create_model("mae_vit_base_patch16", norm_pix_loss=True)
>>> out = model(images, mask_ratio=0.75)            # out.loss, out.pred, out.mask, out.ids_restore
>>> pipe = maekit.pipeline("masked_image_modeling", model="mae_vit_large_patch16.visualize")

Models, the registry and output types load eagerly; the high-level API (Auto classes, Trainer,
pipelines) and the converters load on first use so that ``import maekit`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from .models import MAEOutput, create_model, list_models

__version__ = "0.1.0"

_LAZY = {
    "AutoConfig": "api", "AutoModel": "api", "AutoImageProcessor": "api", "pipeline": "api",
    "save_pretrained": "api", "from_pretrained": "api", "list_pretrained": "api",
    "Trainer": "api", "TrainingArguments": "api",
    "load_state_dict": "convert", "detect_format": "convert",
    "load_pretrained_encoder": "weights",
}

__all__ = ["MAEOutput", "__version__", "create_model", "list_models", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'maekit' has no attribute {name!r}")

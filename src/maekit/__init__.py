"""maekit: Masked Autoencoders (MAE) and ConvMAE for PyTorch.

>>> import maekit
>>> model = maekit.create_model("mae_vit_base_patch16", norm_pix_loss=True)
>>> out = model(images)        # 75% of the patches masked: out.loss, out.pred, out.mask, out.ids_restore
>>> pipe = maekit.pipeline("masked_image_modeling", model="mae_vit_large_patch16.visualize")

Every name loads on first use, so ``import maekit`` (and ``maekit -h``) imports neither torch,
timm nor torchvision.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first attribute access)
_LAZY = {
    "MAEOutput": "models", "create_model": "models", "list_models": "models",
    "load_model": "hub", "load_weights_into": "hub",
    "AutoConfig": "api", "AutoModel": "api", "AutoImageProcessor": "api", "pipeline": "api",
    "save_pretrained": "api", "from_pretrained": "api", "list_pretrained": "api",
    "Trainer": "api", "TrainingArguments": "api",
    "load_state_dict": "convert", "detect_format": "convert",
}

__all__ = ["__version__", *_LAZY]


# subpackages reachable as attributes after ``import maekit`` (``maekit.hub.export_model``)
_SUBPACKAGES = ("hub", "convert", "models", "data", "engine", "api", "tasks")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'maekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))

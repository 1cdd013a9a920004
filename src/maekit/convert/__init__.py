"""Checkpoint conversion: official PyTorch, PASSL (Paddle), MindFormers (MindSpore), Hugging
Face, timm and maekit model folders, read and written without their frameworks and without
running code from any file.

Everything is exchanged as a state dict under the official (R1 / R2) parameter names::

    from maekit.convert import convert, load_state_dict, detect_format
    convert("mae_pretrain_vit_base.pth", "mae_base/")          # -> maekit folder
    convert("mae_base/", "vit-mae-base/", to_format="hf")       # -> transformers folder
    sd = load_state_dict("checkpoint-1599.pd")                  # PASSL, official names
"""

from ._util import fold_linprobe_head
from .api import convert, load_state_dict, read_checkpoint, save_state_dict
from .detect import detect_format
from .errors import ConversionError
from .infer import infer_model
from .spec import arch_spec

__all__ = ["ConversionError", "arch_spec", "convert", "detect_format", "fold_linprobe_head", "infer_model",
           "load_state_dict", "read_checkpoint", "save_state_dict"]

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
from .api import (ConversionReport, LoadedCheckpoint, convert, format_for_destination, load_state_dict, read_checkpoint,
                  resolve_model, save_state_dict)
from .detect import detect_format
from .errors import ConversionError
from .formats import FORMATS, TABLE, get_format
from .infer import family_of, infer_model
from .spec import ArchSpec, arch_spec

__all__ = ["FORMATS", "TABLE", "ArchSpec", "ConversionError", "ConversionReport", "LoadedCheckpoint", "convert",
           "arch_spec", "detect_format", "family_of", "fold_linprobe_head", "format_for_destination", "get_format",
           "infer_model", "load_state_dict", "read_checkpoint", "resolve_model", "save_state_dict"]

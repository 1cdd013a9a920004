"""The table of checkpoint formats: one :class:`~maekit.convert.base.Format` per module.

The order is the detection order (:func:`maekit.convert.detect.detect_format`): the folder
formats first, transformers' names before the official torch files, then safetensors, Paddle
pickles and MindSpore checkpoints. A new format is a module that ends with ``FORMAT = Format(...)``
plus its entry here.
"""

from __future__ import annotations

from . import hf, maekit_format, mindformers, official, passl, timm_format
from .base import Format
from .errors import ConversionError

TABLE: dict[str, Format] = {f.name: f for f in (
    maekit_format.FORMAT, hf.FORMAT, official.FORMAT, timm_format.FORMAT, passl.FORMAT, mindformers.FORMAT)}
FORMATS = tuple(TABLE)
"""The format names, in detection order."""


def get_format(name: str) -> Format:
    """The format called ``name`` or one of its aliases (``pytorch``, ``paddle``, ``transformers``...)."""
    key = name.lower()
    for fmt in TABLE.values():
        if key == fmt.name or key in fmt.aliases:
            return fmt
    raise ConversionError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}")

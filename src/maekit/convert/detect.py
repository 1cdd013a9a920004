"""Tell a checkpoint's format from its content (never from its name alone).

Each format of :mod:`.formats` says whether a file or folder is its own (``Format.sniff``); they
are asked in the table's order:

1. A folder: ``config.json`` with ``model_name`` -> ``maekit``; with ``model_type`` /
   ``architectures`` (or no config but HF weights / a shard index) -> ``hf``. A file named
   ``config.json`` / ``model.safetensors`` / ``pytorch_model.bin`` inside such a folder counts
   as the folder.
2. A ``torch.save`` file (ZIP with ``data.pkl``, or the legacy pickle magic) -> ``hf`` when its
   keys are transformers' names, else ``official``.
3. A safetensors header -> ``hf`` for transformers' names, else ``timm``.
4. Any other pickle (protocol 2-5) -> ``passl`` (``paddle.save`` writes plain pickles).
5. A protobuf stream whose first field is a ``Checkpoint.value`` holding a string ``tag`` ->
   ``mindformers``.

Anything else raises :class:`ConversionError` naming the file.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .base import SHARD_INDEXES, WEIGHT_FILES
from .errors import ConversionError
from .formats import TABLE

_FOLDER_FILES = ("config.json", *WEIGHT_FILES, *SHARD_INDEXES)


def _check_zip(p: Path) -> None:
    """A ZIP must be a whole ``torch.save`` archive (the messages name what is wrong)."""
    try:
        with zipfile.ZipFile(p) as z:
            torch_zip = any(n.endswith("data.pkl") for n in z.namelist())
    except zipfile.BadZipFile as e:
        raise ConversionError(f"truncated or corrupted ZIP / PyTorch file ({e})", p) from e
    if not torch_zip:
        raise ConversionError("a ZIP archive that is not a torch.save file (no data.pkl)", p)


def detect_format(path: str | os.PathLike) -> str:
    """The name of the format of a file or folder (rules in the module doc)."""
    p = Path(path)
    if not p.exists():
        raise ConversionError("no such file or folder", p)
    in_folder = p.name in _FOLDER_FILES and (p.parent / "config.json").is_file()  # a file of a model folder
    folder = p if p.is_dir() else p.parent if in_folder else None
    fmt = folder and next((f.name for f in TABLE.values() if f.folder and f.sniff(folder, b"")), None)
    if fmt:
        return fmt
    if p.is_dir():
        raise ConversionError("cannot tell the format of this folder: no config.json with 'model_name' "
                              "(maekit) or 'model_type' (Hugging Face), and no HF weights", p)
    if p.stat().st_size == 0:
        raise ConversionError("empty file", p)
    with open(p, "rb") as f:
        head = f.read(4096)
    if head[:4] == b"PK\x03\x04":
        _check_zip(p)
    for fmt in TABLE.values():
        if fmt.sniff(p, head):
            return fmt.name
    raise ConversionError("cannot tell the format: not a PyTorch file, pickle (PaddlePaddle), safetensors "
                          "file or MindSpore checkpoint; pass --from FORMAT if it is one of them", p)

"""Tell a checkpoint's format from its content (never from its name alone).

Rules, in order:

1. A folder: ``config.json`` with ``model_name`` -> ``maekit``; with ``model_type`` /
   ``architectures`` -> ``hf``; no config: the weight names decide (HF names -> ``hf``).
   A file named ``config.json`` / ``model.safetensors`` / ``pytorch_model.bin`` inside such a
   folder counts as the folder.
2. A ZIP archive holding ``*/data.pkl`` (``torch.save``) or a pickle starting with PyTorch's
   legacy magic number -> ``official`` (unless its keys are HF names -> ``hf``).
3. Any other pickle (protocol 2-5) -> ``passl`` (``paddle.save`` writes plain pickles).
4. A safetensors header (8-byte little-endian length + JSON) -> ``hf`` if the tensor names
   are HF names, ``maekit`` if it sits in a maekit folder, else ``timm``.
5. A protobuf stream whose first field is a ``Checkpoint.value`` holding a string ``tag`` ->
   ``mindformers``.

Anything else raises :class:`ConversionError` naming the file.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

from .errors import ConversionError
from .mindspore_ckpt import looks_like_ckpt

TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_HF_PREFIXES = (
    "vit.embeddings.",
    "vit.encoder.layer.",
    "vit.layers.",
    "embeddings.patch_embeddings.",
    "encoder.layer.",
    "decoder.decoder_layers.",
    "decoder.decoder_encoder.",
    "classifier.",
    "vit.layernorm.",
)
_FOLDER_FILES = (
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def looks_hf(keys: Iterable[str]) -> bool:
    return any(k.startswith(_HF_PREFIXES) for k in keys)


def _safetensors_keys(path: Path, head: bytes, size: int) -> list[str] | None:
    if len(head) < 9:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= size - 8 or head[8:9] != b"{":
        return None
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    return [k for k in header if k != "__metadata__"] if isinstance(header, dict) else None


def _folder_format(folder: Path) -> str | None:
    cfg_file = folder / "config.json"
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text())
        except ValueError as e:
            raise ConversionError(f"invalid JSON ({e})", cfg_file) from e
        if isinstance(cfg, dict) and "model_name" in cfg:
            return "maekit"
        if isinstance(cfg, dict) and ("model_type" in cfg or "architectures" in cfg):
            return "hf"
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            inner = detect_format(folder / name, _in_folder=True)
            return "hf" if inner == "hf" else None
    if (folder / "model.safetensors.index.json").is_file() or (
        folder / "pytorch_model.bin.index.json"
    ).is_file():
        return "hf"
    return None


def detect_format(path: str | os.PathLike, _in_folder: bool = False) -> str:
    """'maekit', 'official', 'passl', 'mindformers', 'hf' or 'timm' (rules in the module doc)."""
    p = Path(path)
    if not p.exists():
        raise ConversionError("no such file or folder", p)
    if p.is_dir():
        fmt = _folder_format(p)
        if fmt is None:
            raise ConversionError(
                "cannot tell the format of this folder: no config.json with 'model_name' "
                "(maekit) or 'model_type' (Hugging Face), and no HF weights",
                p,
            )
        return fmt
    if not _in_folder and p.name in _FOLDER_FILES and (p.parent / "config.json").is_file():
        fmt = _folder_format(p.parent)
        if fmt is not None:
            return fmt
    size = p.stat().st_size
    if size == 0:
        raise ConversionError("empty file", p)
    with open(p, "rb") as f:
        head = f.read(4096)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(p) as z:
                torch_zip = any(n.endswith("data.pkl") for n in z.namelist())
        except zipfile.BadZipFile as e:
            raise ConversionError(f"truncated or corrupted ZIP / PyTorch file ({e})", p) from e
        if not torch_zip:
            raise ConversionError("a ZIP archive that is not a torch.save file (no data.pkl)", p)
        return _torch_kind(p)
    if head.startswith(TORCH_LEGACY_MAGIC):
        return _torch_kind(p)
    keys = _safetensors_keys(p, head, size)
    if keys is not None:
        if looks_hf(keys):
            return "hf"
        return "timm"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "passl"
    if looks_like_ckpt(head):
        return "mindformers"
    raise ConversionError(
        "cannot tell the format: not a PyTorch file, pickle (PaddlePaddle), safetensors "
        "file or MindSpore checkpoint; pass --from FORMAT if it is one of them",
        p,
    )


def _torch_kind(p: Path) -> str:
    """'official', or 'hf' for a pytorch_model.bin of transformers."""
    if p.name.startswith("pytorch_model"):
        from .official import unpack_checkpoint, torch_load

        try:
            sd = unpack_checkpoint(torch_load(p, mmap=True), p)[0]
        except ConversionError:
            return "official"
        return "hf" if looks_hf(sd) else "official"
    return "official"

"""Hugging Face transformers parameter names <-> the official ones (ViTMAE / ViT; docs/REFERENCE_RECIPES.md D.6).

Written names are those of the hub checkpoints (``vit.encoder.layer.i.attention.attention.query``
...); read: those, the in-memory names of transformers 5 (``layers.i.attention.q_proj``,
``mlp.fc1``...) and the ``decoder.decoder_encoder.layer.j`` spelling transformers 5 writes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import torch

from ._util import NameMap, describe_keys, prefixed
from .errors import ConversionError

_QKV = {"q": "query", "k": "key", "v": "value"}  # transformers 5's q_proj... -> the hub's query...
_LAYER = {  # official block sub-name -> HF (hub) sub-name ({p}: weight / bias; a tuple: the split qkv)
    "norm1.{p}": "layernorm_before.{p}",
    "norm2.{p}": "layernorm_after.{p}",
    "attn.qkv.{p}": tuple(f"attention.attention.{n}.{{p}}" for n in _QKV.values()),
    "attn.proj.{p}": "attention.output.dense.{p}",
    "mlp.fc1.{p}": "intermediate.dense.{p}",
    "mlp.fc2.{p}": "output.dense.{p}",
}
_ENCODER = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.{p}": "embeddings.patch_embeddings.projection.{p}",
    "norm.{p}": "layernorm.{p}",
    **prefixed(_LAYER, "blocks.{}.", "encoder.layer.{}."),
}
_DECODER = {
    **{k: "decoder." + k for k in ("decoder_embed.{p}", "mask_token", "decoder_pos_embed", "decoder_norm.{p}",
                                   "decoder_pred.{p}")},
    **prefixed(_LAYER, "decoder_blocks.{}.", "decoder.decoder_layers.{}."),
}
_HEAD = {"head.{p}": "classifier.{p}"}
_MAPS = {
    "ViTMAEForPreTraining": NameMap({**prefixed(_ENCODER, "", "vit."), **_DECODER}),
    "ViTMAEModel": NameMap(_ENCODER),
    "ViTForImageClassification": NameMap({**prefixed(_ENCODER, "", "vit."), **_HEAD}),
}
_READ = NameMap({**prefixed(_ENCODER, "", "vit."), **_DECODER, **_HEAD})  # names read, "vit." put first

# transformers 5 in-memory / saved spellings -> hub spellings; then the "vit." of the hub names
_NORMALISE = [
    (re.compile(r"^decoder\.decoder_encoder\.layer\."), "decoder.decoder_layers."),
    (re.compile(r"^(vit\.)?layers\."), r"\1encoder.layer."),
    (re.compile(r"\.attention\.([qkv])_proj\."), lambda m: f".attention.attention.{_QKV[m[1]]}."),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
    (re.compile(r"\.mlp\.fc1\."), ".intermediate.dense."),
    (re.compile(r"\.mlp\.fc2\."), ".output.dense."),
    (re.compile(r"^(embeddings|encoder|layernorm)\."), r"vit.\1."),
]
_SKIPPED = ("vit.pooler.", "pooler.", "vit.embeddings.mask_token")  # no counterpart in MAE


def _normalise(name: str) -> str:
    for pat, rep in _NORMALISE:
        name = pat.sub(rep, name)
    return name


def looks_hf(keys: Iterable[str]) -> bool:
    """Whether parameter names are transformers' (and not the official ones)."""
    return any(_READ.knows(_normalise(k)) for k in keys)


def to_hf(sd: Mapping[str, torch.Tensor], arch: str, path: str | os.PathLike = "") -> dict[str, torch.Tensor]:
    """Official names -> hub names of ``arch`` (the fused qkv split into query, key, value)."""
    out, bad = _MAPS[arch].to_foreign(sd)
    if bad:
        raise ConversionError(f"no {arch} name for: " + describe_keys(bad), path)
    return out


def from_hf(sd: Mapping[str, torch.Tensor], path: str | os.PathLike = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Hub (or transformers-5) names -> (official-name state dict, notes on skipped weights)."""
    names = {raw: _normalise(raw) for raw in sd}
    skipped = [raw for raw, name in names.items() if name.startswith(_SKIPPED)]
    out, unknown = _READ.to_official({names[k]: t for k, t in sd.items() if k not in skipped}, path)
    if unknown:
        raise ConversionError("not a ViTMAE / ViT checkpoint: unknown weights " + describe_keys(unknown), path)
    if not out:
        raise ConversionError("no weights found", path)
    notes = [f"skipped {describe_keys(skipped)} (no counterpart in MAE)"] if skipped else []
    return out, notes

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

from ._util import describe_keys
from .errors import ConversionError

_HF_PREFIXES = ("vit.embeddings.", "vit.encoder.layer.", "vit.layers.", "embeddings.patch_embeddings.", "encoder.layer.",
                "decoder.decoder_layers.", "decoder.decoder_encoder.", "classifier.", "vit.layernorm.")


def looks_hf(keys: Iterable[str]) -> bool:
    """Whether parameter names are transformers' (and not the official ones)."""
    return any(k.startswith(_HF_PREFIXES) for k in keys)


_LAYER = {  # official block sub-key -> HF (hub) sub-key ({} of qkv: query, key, value)
    "norm1.weight": "layernorm_before.weight",
    "norm1.bias": "layernorm_before.bias",
    "norm2.weight": "layernorm_after.weight",
    "norm2.bias": "layernorm_after.bias",
    "attn.qkv.weight": "attention.attention.{}.weight",
    "attn.qkv.bias": "attention.attention.{}.bias",
    "attn.proj.weight": "attention.output.dense.weight",
    "attn.proj.bias": "attention.output.dense.bias",
    "mlp.fc1.weight": "intermediate.dense.weight",
    "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight",
    "mlp.fc2.bias": "output.dense.bias",
}
_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_QKV = ("query", "key", "value")
_EMBED = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_DECODER = {
    "decoder_embed.weight": "decoder.decoder_embed.weight",
    "decoder_embed.bias": "decoder.decoder_embed.bias",
    "mask_token": "decoder.mask_token",
    "decoder_pos_embed": "decoder.decoder_pos_embed",
    "decoder_norm.weight": "decoder.decoder_norm.weight",
    "decoder_norm.bias": "decoder.decoder_norm.bias",
    "decoder_pred.weight": "decoder.decoder_pred.weight",
    "decoder_pred.bias": "decoder.decoder_pred.bias",
}
_HEAD = {"head.weight": "classifier.weight", "head.bias": "classifier.bias"}
ARCHITECTURES = ("ViTMAEForPreTraining", "ViTMAEModel", "ViTForImageClassification")

# transformers 5 in-memory / saved spellings -> hub spellings
_NORMALISE = [
    (re.compile(r"^decoder\.decoder_encoder\.layer\."), "decoder.decoder_layers."),
    (re.compile(r"^(vit\.)?layers\."), r"\1encoder.layer."),
    (re.compile(r"\.attention\.q_proj\."), ".attention.attention.query."),
    (re.compile(r"\.attention\.k_proj\."), ".attention.attention.key."),
    (re.compile(r"\.attention\.v_proj\."), ".attention.attention.value."),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
    (re.compile(r"\.mlp\.fc1\."), ".intermediate.dense."),
    (re.compile(r"\.mlp\.fc2\."), ".output.dense."),
]
_HF_LAYER_RE = re.compile(r"^(vit\.encoder\.layer|encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$")
_HF_QKV_RE = re.compile(r"^attention\.attention\.(query|key|value)\.(weight|bias)$")
_EMBED_BACK = {v: k for k, v in _EMBED.items()}
_BACK = {**{v: k for k, v in _DECODER.items()}, **{v: k for k, v in _HEAD.items()}}


def _normalise(name: str) -> str:
    for pat, rep in _NORMALISE:
        name = pat.sub(rep, name)
    return name


# ------------------------------------------------------------------------------ names
def _hf_name(key: str, arch: str, prefix: str) -> str | None:
    """The hub name of official ``key`` in ``arch`` (``{}``: one per query / key / value), or None."""
    if key in _EMBED:
        return prefix + _EMBED[key]
    if key in _DECODER and arch == "ViTMAEForPreTraining" or key in _HEAD and arch == "ViTForImageClassification":
        return {**_DECODER, **_HEAD}[key]
    m = re.match(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)$", key)
    if not m or m[3] not in _LAYER or m[1] == "decoder_blocks" and arch != "ViTMAEForPreTraining":
        return None
    base = f"{prefix}encoder.layer.{m[2]}" if m[1] == "blocks" else f"decoder.decoder_layers.{m[2]}"
    return f"{base}.{_LAYER[m[3]]}"


def to_hf(sd: Mapping[str, torch.Tensor], arch: str, path: str | os.PathLike = "") -> dict[str, torch.Tensor]:
    """Official names -> hub names of ``arch`` (the fused qkv split into query, key, value)."""
    prefix = "" if arch == "ViTMAEModel" else "vit."
    out: dict[str, torch.Tensor] = {}
    names = {key: _hf_name(key, arch, prefix) for key in sd}
    bad = [key for key, name in names.items() if name is None]
    if bad:
        raise ConversionError(f"no {arch} name for: " + describe_keys(bad), path)
    for key, name in names.items():
        parts = zip(_QKV, sd[key].chunk(3, dim=0)) if "{}" in name else [("", sd[key])]
        out.update((name.format(n), t) for n, t in parts)
    return out


def _official_name(name: str) -> tuple[str | None, str | None]:
    """(official key, query / key / value or None) of a normalised hub name; ('', None): a key with
    no counterpart in MAE; (None, None): unknown."""
    plain = name[4:] if name.startswith("vit.") else name
    if m := _HF_LAYER_RE.match(name):
        group, i, sub = m.groups()
        base = f"decoder_blocks.{i}" if group.startswith("decoder") else f"blocks.{i}"
        if q := _HF_QKV_RE.match(sub):
            return f"{base}.attn.qkv.{q[2]}", q[1]
        return (f"{base}.{_LAYER_BACK[sub]}" if sub in _LAYER_BACK else None), None
    if plain in _EMBED_BACK or name in _BACK:
        return _EMBED_BACK.get(plain) or _BACK[name], None
    return ("" if plain.startswith(("pooler.", "embeddings.mask_token")) else None), None


def from_hf(sd: Mapping[str, torch.Tensor], path: str | os.PathLike = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Hub (or transformers-5) names -> (official-name state dict, notes on skipped weights)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    skipped, unknown = [], []
    for raw, t in sd.items():
        key, part = _official_name(_normalise(raw))
        if part is not None:
            qkv.setdefault(key, {})[part] = t
        elif key:
            out[key] = t
        else:
            (unknown if key is None else skipped).append(raw)
    for key, parts in qkv.items():
        if sorted(parts) != sorted(_QKV):
            raise ConversionError(f"{key.rsplit('.attn', 1)[0]}: query/key/value {key.rsplit('.', 1)[1]} "
                                  "incomplete", path)
        out[key] = torch.cat([parts[n] for n in _QKV], dim=0)
    if unknown:
        raise ConversionError("not a ViTMAE / ViT checkpoint: unknown weights " + describe_keys(unknown), path)
    if not out:
        raise ConversionError("no weights found", path)
    notes = [f"skipped {describe_keys(skipped)} (no counterpart in MAE)"] if skipped else []
    return out, notes

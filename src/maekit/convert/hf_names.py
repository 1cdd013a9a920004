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


_LAYER = {  # official block sub-key -> HF (hub) sub-key
    "norm1.weight": "layernorm_before.weight",
    "norm1.bias": "layernorm_before.bias",
    "norm2.weight": "layernorm_after.weight",
    "norm2.bias": "layernorm_after.bias",
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


def _normalise(name: str) -> str:
    for pat, rep in _NORMALISE:
        name = pat.sub(rep, name)
    return name


# ------------------------------------------------------------------------------ names
def to_hf(sd: Mapping[str, torch.Tensor], arch: str, path: str | os.PathLike = "") -> dict[str, torch.Tensor]:
    """Official names -> hub names of ``arch``."""
    prefix = "" if arch == "ViTMAEModel" else "vit."
    out: dict[str, torch.Tensor] = {}
    bad = []
    for key, t in sd.items():
        m = re.match(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)$", key)
        if key in _EMBED:
            out[prefix + _EMBED[key]] = t
        elif key in _DECODER and arch == "ViTMAEForPreTraining":
            out[_DECODER[key]] = t
        elif key in _HEAD and arch == "ViTForImageClassification":
            out[_HEAD[key]] = t
        elif m:
            group, i, sub = m.groups()
            base = f"{prefix}encoder.layer.{i}" if group == "blocks" else f"decoder.decoder_layers.{i}"
            if group == "decoder_blocks" and arch != "ViTMAEForPreTraining":
                bad.append(key)
            elif sub in ("attn.qkv.weight", "attn.qkv.bias"):
                kind = sub.rsplit(".", 1)[1]
                for name, part in zip(_QKV, t.chunk(3, dim=0)):
                    out[f"{base}.attention.attention.{name}.{kind}"] = part
            elif sub in _LAYER:
                out[f"{base}.{_LAYER[sub]}"] = t
            else:
                bad.append(key)
        else:
            bad.append(key)
    if bad:
        raise ConversionError(f"no {arch} name for: " + describe_keys(bad), path)
    return out


def from_hf(sd: Mapping[str, torch.Tensor], path: str | os.PathLike = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Hub (or transformers-5) names -> official names."""
    emb_back = {v: k for k, v in _EMBED.items()}
    dec_back = {v: k for k, v in _DECODER.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    skipped, unknown = [], []
    for raw, t in sd.items():
        name = _normalise(raw)
        plain = name[4:] if name.startswith("vit.") else name
        m = _HF_LAYER_RE.match(name)
        if m:
            group, i, sub = m.groups()
            base = f"decoder_blocks.{i}" if group.startswith("decoder") else f"blocks.{i}"
            q = _HF_QKV_RE.match(sub)
            if q:
                qkv.setdefault((base, q.group(2)), {})[q.group(1)] = t
            elif sub in _LAYER_BACK:
                out[f"{base}.{_LAYER_BACK[sub]}"] = t
            else:
                unknown.append(raw)
        elif plain in emb_back:
            out[emb_back[plain]] = t
        elif name in dec_back:
            out[dec_back[name]] = t
        elif name in ("classifier.weight", "classifier.bias"):
            out["head." + name.split(".")[1]] = t
        elif plain.startswith(("pooler.", "embeddings.mask_token")):
            skipped.append(raw)
        else:
            unknown.append(raw)
    for (base, kind), parts in qkv.items():
        if sorted(parts) != sorted(_QKV):
            raise ConversionError(f"{base}: query/key/value {kind} incomplete", path)
        out[f"{base}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in _QKV], dim=0)
    if unknown:
        raise ConversionError("not a ViTMAE / ViT checkpoint: unknown weights " + describe_keys(unknown), path)
    if not out:
        raise ConversionError("no weights found", path)
    notes = [f"skipped {describe_keys(skipped)} (no counterpart in MAE)"] if skipped else []
    return out, notes

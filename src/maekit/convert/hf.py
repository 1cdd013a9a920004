"""Hugging Face transformers folders (REFERENCES D.6, A.11).

Three architectures, both ways:

* ``ViTMAEForPreTraining`` (``vit.*`` encoder + ``decoder.*``) <-> MAE pretraining model;
* ``ViTMAEModel`` (encoder without the ``vit.`` prefix) <-> an encoder-only MAE checkpoint;
* ``ViTForImageClassification`` (``vit.*`` + ``classifier``) <-> a ViT classifier that pools the
  cls token (``global_pool=False``); transformers has no global-average-pool ViT, so a
  ``fc_norm`` classifier is refused (use ``--to timm``).

Written with the names of the hub checkpoints (``vit.encoder.layer.i.attention.attention.query``
...), which every transformers version loads (5.x renames them on load). Read: those, the
in-memory names of transformers 5 (``layers.i.attention.q_proj``, ``mlp.fc1``...) and the
``decoder.decoder_encoder.layer.j`` spelling that transformers 5 writes for the decoder.
``config.json`` keeps ``layer_norm_eps`` (1e-6 for MAE; transformers' default is 1e-12),
``norm_pix_loss`` and the head counts, and they come back as model arguments.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._util import atomic_write_dir, describe_keys, plain_tensors
from .base import Loaded
from .errors import ConversionError

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


def from_hf(
    sd: Mapping[str, torch.Tensor], path: str | os.PathLike = ""
) -> tuple[dict[str, torch.Tensor], list[str]]:
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
        raise ConversionError(
            "not a ViTMAE / ViT checkpoint: unknown weights " + describe_keys(unknown), path
        )
    if not out:
        raise ConversionError("no weights found", path)
    notes = [f"skipped {describe_keys(skipped)} (no counterpart in MAE)"] if skipped else []
    return out, notes


# ------------------------------------------------------------------------------ files
def _weight_files(folder: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            try:
                names = json.loads((folder / index).read_text())["weight_map"].values()
            except (ValueError, KeyError, AttributeError) as e:
                raise ConversionError(f"unreadable shard index ({e})", folder / index) from e
            names = list(dict.fromkeys(names))
            # Shards are files of this folder: an index must not point elsewhere ('../x', '/x').
            bad = [n for n in names if not isinstance(n, str) or not n or Path(n).name != n]
            if bad:
                raise ConversionError(f"shard index names files outside the folder: {bad[:3]}", folder / index)
            return [folder / n for n in names]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return [folder / single]
    raise ConversionError("no model.safetensors or pytorch_model.bin in this folder", folder)


def load_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors or (weights-only) PyTorch file -> {name: tensor}."""
    if file.suffix == ".safetensors":
        try:
            return load_file(file)
        except (SafetensorError, OSError, ValueError) as e:
            raise ConversionError(f"truncated or corrupted safetensors file ({e})", file) from e
    from .official import unpack_checkpoint, torch_load

    return unpack_checkpoint(torch_load(file), file)[0]


def folder_of(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.parent if p.is_file() else p


def read_config(folder: Path) -> dict[str, Any]:
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        return {}
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise ConversionError(f"invalid JSON ({e})", cfg_file) from e
    return cfg if isinstance(cfg, dict) else {}


def config_hints(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """HF config -> maekit model facts."""
    if not cfg:
        return {}
    h: dict[str, Any] = {"source": "the HF config.json"}
    for src, dst in (
        ("num_attention_heads", "num_heads"),
        ("decoder_num_attention_heads", "decoder_num_heads"),
        ("layer_norm_eps", "layer_norm_eps"),
        ("norm_pix_loss", "norm_pix_loss"),
        ("image_size", "img_size"),
    ):
        if cfg.get(src) is not None:
            h[dst] = cfg[src]
    if cfg.get("hidden_act", "gelu") != "gelu":
        h["warning"] = f"hidden_act={cfg['hidden_act']!r} (maekit uses exact GELU)"
    return h


def read(path: str | os.PathLike) -> Loaded:
    """A transformers folder, or one weights file of it (with its folder's config.json if any)."""
    p = Path(path)
    folder = folder_of(p)
    cfg = read_config(folder)
    files = (
        [p] if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth") else _weight_files(folder)
    )
    raw: dict[str, torch.Tensor] = {}
    for f in files:
        raw.update(load_tensors(f))
    sd, notes = from_hf(raw, folder)
    hints = config_hints(cfg)
    if "warning" in hints:
        notes.append(hints.pop("warning"))
    if cfg.get("model_type") == "vit" and "head.weight" in sd and "norm.weight" not in sd:
        notes.append("HF ViT without final layernorm")
    return Loaded(sd, hints, notes)


def _img_size(spec) -> Any:
    h, w = spec.img_size
    return h if h == w else [h, w]


def build_config(spec, arch: str, dtype: torch.dtype) -> dict[str, Any]:
    """config.json for ``arch`` from a :class:`~maekit.convert.spec.ModelSpec`."""
    cfg: dict[str, Any] = {
        "architectures": [arch],
        "model_type": "vit" if arch == "ViTForImageClassification" else "vit_mae",
        "hidden_size": spec.embed_dim,
        "num_hidden_layers": spec.depth,
        "num_attention_heads": spec.num_heads,
        "intermediate_size": int(round(spec.embed_dim * spec.mlp_ratio)),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": spec.layer_norm_eps,
        "image_size": _img_size(spec),
        "patch_size": spec.patch_size,
        "num_channels": spec.in_chans,
        "qkv_bias": True,
        "dtype": str(dtype).replace("torch.", ""),
    }
    if arch == "ViTForImageClassification":
        n = spec.num_classes or 0
        cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
        cfg["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    else:
        cfg.update(
            {
                "decoder_hidden_size": spec.decoder_embed_dim,
                "decoder_num_hidden_layers": spec.decoder_depth,
                "decoder_num_attention_heads": spec.decoder_num_heads,
                "decoder_intermediate_size": int(round(spec.decoder_embed_dim * spec.mlp_ratio)),
                "mask_ratio": 0.75,
                "norm_pix_loss": bool(spec.norm_pix_loss),
            }
        )
    return cfg


def write(sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, spec) -> tuple[Path, list[str]]:
    """A transformers folder: ``config.json`` + ``model.safetensors``."""
    notes: list[str] = []
    if spec.family in ("convmae", "convvit"):
        raise ConversionError(
            "transformers has no ConvMAE model; ConvMAE converts to maekit, official and passl", dst
        )
    if spec.family == "mae":
        arch = "ViTMAEForPreTraining" if any(k.startswith("decoder_") for k in sd) else "ViTMAEModel"
        if arch == "ViTMAEModel":
            notes.append("no decoder weights: written as ViTMAEModel (encoder only)")
    else:
        if "fc_norm.weight" in sd:
            raise ConversionError(
                "transformers' ViTForImageClassification classifies the cls token; this "
                "classifier averages the patch tokens (fc_norm, global_pool=True), which it "
                "cannot express. Use --to timm, or a global_pool=False model",
                dst,
            )
        if "head.weight" not in sd:
            raise ConversionError(
                "a ViT classifier without a head has no ViTForImageClassification form", dst
            )
        arch = "ViTForImageClassification"
    if spec.family == "mae" and not isinstance(spec.mlp_ratio, (int, float)):
        raise ConversionError(f"unsupported mlp_ratio {spec.mlp_ratio}", dst)
    tensors = plain_tensors(to_hf(sd, arch, dst))
    dtype = next(iter(tensors.values())).dtype
    cfg = build_config(spec, arch, dtype)

    def write_dir(tmp: Path) -> None:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    return atomic_write_dir(dst, write_dir), notes

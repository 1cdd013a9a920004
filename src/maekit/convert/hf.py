"""Hugging Face transformers folders (docs/REFERENCE_RECIPES.md D.6, A.11).

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..fileio import atomic_write_dir, plain_tensors
from ..models.base import PROCESSOR_NAME
from .base import (SHARD_INDEXES, WEIGHT_FILES, Format, Loaded, folder_of, label_list, read_json_config,
                   read_processor_file, size_arg)
from .errors import ConversionError
from .hf_names import from_hf, looks_hf, to_hf
from .torchfile import find_state_dict, is_torch_head, load_folder_weights, safetensors_keys, torch_load



# ------------------------------------------------------------------------------ files
_HINTS = {"num_attention_heads": "num_heads", "decoder_num_attention_heads": "decoder_num_heads",
          "layer_norm_eps": "layer_norm_eps", "norm_pix_loss": "norm_pix_loss", "image_size": "img_size"}


def read(path: str | os.PathLike) -> Loaded:
    """A transformers folder, or one weights file of it (with its folder's config.json if any)."""
    p = Path(path)
    folder = folder_of(p)
    cfg = read_json_config(folder)
    weights = p if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth") else None
    sd, notes = from_hf(load_folder_weights(folder, weights), folder)
    hints: dict[str, Any] = {"source": "the HF config.json"} if cfg else {}  # the config's model facts
    hints.update((dst, cfg[src]) for src, dst in _HINTS.items() if cfg.get(src) is not None)
    labels = label_list(cfg.get("id2label"))
    if labels and labels != [f"LABEL_{i}" for i in range(len(labels))]:  # transformers' default names
        hints["class_names"] = labels
    if (pre := read_processor_file(folder)) is not None:
        hints["preprocessing"] = pre
    if cfg.get("hidden_act", "gelu") != "gelu":
        notes.append(f"hidden_act={cfg['hidden_act']!r} (maekit uses exact GELU)")
    if cfg.get("model_type") == "vit" and "head.weight" in sd and "norm.weight" not in sd:
        notes.append("HF ViT without final layernorm")
    return Loaded(sd, hints, notes)


def build_config(spec, arch: str, dtype: torch.dtype) -> dict[str, Any]:
    """config.json for ``arch`` from a :class:`~maekit.convert.spec.ArchSpec`."""
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
        "image_size": size_arg(spec.img_size),
        "patch_size": spec.patch_size,
        "num_channels": spec.in_chans,
        "qkv_bias": True,
        "dtype": str(dtype).replace("torch.", ""),
    }
    if arch == "ViTForImageClassification":
        names = list(spec.class_names or [f"LABEL_{i}" for i in range(spec.num_classes or 0)])
        cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
        cfg["label2id"] = {n: i for i, n in enumerate(names)}
    else:
        cfg.update(decoder_hidden_size=spec.decoder_embed_dim, decoder_num_hidden_layers=spec.decoder_depth,
                   decoder_num_attention_heads=spec.decoder_num_heads,
                   decoder_intermediate_size=int(round(spec.decoder_embed_dim * spec.mlp_ratio)),
                   # the encoder-only export is for features: transformers' ViTMAEModel then keeps every patch
                   mask_ratio=0.75 if arch == "ViTMAEForPreTraining" else 0.0,
                   norm_pix_loss=bool(spec.norm_pix_loss))
    return cfg


def image_processor_config(spec) -> dict[str, Any]:
    """``preprocessor_config.json`` of a transformers image processor for the model (so
    ``AutoImageProcessor`` and ``pipeline`` preprocess as maekit does): bicubic, the model's mean / std;
    a pretraining model's ``ViTImageProcessor`` resizes the whole image to the input size, a
    classifier's ``BitImageProcessor`` resizes the shorter side to ``size / crop_pct`` and centre-crops
    ``size``: maekit's evaluation transform (``crop_pct`` recorded too, for maekit's reader)."""
    pre = spec.preprocessor()
    out = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": pre["size"], "resample": 3,
           "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
           "image_mean": pre["image_mean"], "image_std": pre["image_std"]}
    if pre["resize_mode"] == "crop":
        edge = int(min(pre["size"].values()) / pre["crop_pct"])
        out.update(image_processor_type="BitImageProcessor", size={"shortest_edge": edge},
                   do_center_crop=True, crop_size=pre["size"], crop_pct=pre["crop_pct"],
                   do_convert_rgb=pre["num_channels"] == 3)
    return out


def write(sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, spec) -> tuple[Path, list[str]]:
    """A transformers folder: ``config.json`` + ``model.safetensors``."""
    if spec.family == "mae":
        arch = "ViTMAEForPreTraining" if any(k.startswith("decoder_") for k in sd) else "ViTMAEModel"
    elif "fc_norm.weight" in sd:
        raise ConversionError("transformers' ViTForImageClassification classifies the cls token; this "
                              "classifier averages the patch tokens (fc_norm, global_pool=True), which it "
                              "cannot express. Export it --to timm instead (transformers.pipeline runs timm "
                              "folders through its TimmWrapper), or fine-tune with --cls_token", dst)
    elif "head.weight" not in sd:
        raise ConversionError("a ViT classifier without a head has no ViTForImageClassification form", dst)
    else:
        arch = "ViTForImageClassification"
    notes = ["no decoder weights: written as ViTMAEModel (encoder only)"] if arch == "ViTMAEModel" else []
    tensors = plain_tensors(to_hf(sd, arch, dst))
    files = {"config.json": build_config(spec, arch, next(iter(tensors.values())).dtype),
             PROCESSOR_NAME: image_processor_config(spec)}

    def write_dir(tmp: Path) -> None:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        for name, data in files.items():
            (tmp / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    return atomic_write_dir(dst, write_dir), notes


def _hf_weights_file(path: Path, head: bytes) -> bool:
    keys = safetensors_keys(path, head, path.stat().st_size)
    if keys is not None:
        return looks_hf(keys)
    if is_torch_head(head) and path.name.startswith("pytorch_model"):  # transformers' torch.save
        try:
            return looks_hf(find_state_dict(torch_load(path, mmap=True), path))
        except ConversionError:
            return False
    return False


def sniff(path: Path, head: bytes) -> bool:
    """A folder whose config.json has ``model_type`` / ``architectures`` (or, without one, HF
    weights or a shard index), or a weights file with transformers' names."""
    if not path.is_dir():
        return _hf_weights_file(path, head)
    cfg = read_json_config(path)
    if "model_type" in cfg or "architectures" in cfg:
        return True
    if "model_name" in cfg:
        return False
    if any((path / n).is_file() for n in SHARD_INDEXES):
        return True
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            with open(path / name, "rb") as f:
                return _hf_weights_file(path / name, f.read(4096))
    return False


FORMAT = Format("hf", (), folder=True, sniff=sniff, read=read, write=write, families=("mae", "vit"),
                aliases=("huggingface", "transformers"))

"""timm ViT weights: a timm model folder, or one ``.safetensors`` file (docs/REFERENCE_RECIPES.md E1.2, D.7).

A destination without the ``.safetensors`` suffix gets a timm folder (:mod:`.timm_folder`:
``timm.create_model("local-dir:PATH", pretrained=True)`` loads it with no other argument); the
folders of timm's Hub repositories are read the same way.

timm's ``VisionTransformer`` uses the official names (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm`` / ``fc_norm``, ``head``), so a ``.safetensors`` file is the state dict itself:

* an MAE pretraining model exports its encoder (decoder and mask token dropped): it loads
  with ``timm.create_model('vit_base_patch16_224', pretrained=True,
  pretrained_cfg_overlay=dict(file=path, num_classes=0), num_classes=0)``;
* a ViT classifier exports everything (a linear-probe BatchNorm head is folded into the
  Linear): ``pretrained_cfg_overlay=dict(file=path, num_classes=K), num_classes=K,
  global_pool='avg' | 'token'`` loads it strictly.

Read: any such file (or ``timm.create_model(...).state_dict()`` saved with safetensors) with
no timm-only parts (register tokens, layer scale, ...). maekit writes its model name and
arguments into the safetensors metadata, and reads them back as hints.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..fileio import atomic_write, plain_tensors
from . import timm_folder
from ._util import describe_keys
from .base import WEIGHT_FILES, Format, Loaded, maekit_metadata
from .errors import ConversionError
from .torchfile import load_folder_weights, read_safetensors, safetensors_keys

_VIT_KEY = re.compile(
    r"^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|(norm|fc_norm|head)\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias))$"
)


def metadata_hints(meta: Mapping[str, str]) -> dict:
    if "maekit.model_name" not in meta:
        return {}
    try:
        args = json.loads(meta.get("maekit.model_args", "{}"))
    except ValueError:
        args = {}
    return {"model_name": meta["maekit.model_name"], "model_args": args, "source": "maekit metadata"}


def read(path: str | os.PathLike) -> Loaded:
    """A timm folder (:mod:`.timm_folder`) or one ``.safetensors`` file of a timm ViT's state dict."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent if p.name in WEIGHT_FILES else None
    cfg = None if folder is None else timm_folder.timm_config(folder)
    if cfg is not None:  # a timm folder, or its weights file
        sd = load_folder_weights(folder, None if p.is_dir() else p)
        loaded = Loaded(sd, timm_folder.timm_hints(cfg), [])
    else:
        sd, meta = read_safetensors(path)
        loaded = Loaded(sd, metadata_hints(meta), [])
    bad = [k for k in loaded.state_dict if not _VIT_KEY.match(k)]
    if bad:
        raise ConversionError("not a plain ViT (timm) state dict that MAE models can use; unsupported "
                              "weights: " + describe_keys(bad), path)
    return loaded


def write(sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, spec=None) -> tuple[Path, list[str]]:
    """The part of ``sd`` (a linear-probe head already folded) that a timm ViT holds: a ``.safetensors``
    destination gets the bare state dict; any other a timm folder."""
    dropped = [k for k in sd if k.startswith(("decoder_", "mask_token"))]
    tensors = {k: v for k, v in sd.items() if k not in dropped}
    notes = ([f"encoder exported; {len(dropped)} decoder weights dropped (timm has no MAE decoder)"]
             if dropped else [])
    bad = [k for k in tensors if not _VIT_KEY.match(k)]
    if bad:
        raise ConversionError("timm's VisionTransformer has no place for: " + describe_keys(bad))
    if Path(dst).suffix.lower() != ".safetensors":
        folder, folder_notes = timm_folder.write_folder(tensors, Path(dst), spec)
        return folder, notes + folder_notes
    tensors = plain_tensors(tensors)
    meta = {"format": "pt"} if spec is None else maekit_metadata(spec.name, spec.args)
    return atomic_write(dst, lambda tmp: save_file(tensors, tmp, metadata=meta)), notes


def sniff(path: Path, head: bytes) -> bool:
    """A timm folder, or a safetensors file (transformers' names were claimed by ``hf`` before)."""
    if path.is_dir():
        return timm_folder.timm_config(path) is not None
    return safetensors_keys(path, head, path.stat().st_size) is not None


# A folder format whose output is one file when the destination ends in .safetensors.
FORMAT = Format("timm", (".safetensors",), folder=True, read=read, write=write, families=("mae", "vit"),
                sniff=sniff, aliases=("safetensors",))

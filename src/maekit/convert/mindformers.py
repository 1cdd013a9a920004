"""MindFormers names and layouts (docs/REFERENCE_RECIPES.md D.5), on top of the ``.ckpt`` codec of
:mod:`maekit.convert.mindspore_ckpt` (read and written without MindSpore).

Names and layouts (MAE pretraining model and ViT classifier):

========================================  =================================================  ==========
official                                   MindFormers                                         layout
========================================  =================================================  ==========
cls_token / pos_embed                      vit.cls_tokens / vit.pos_embed                      same
patch_embed.proj.*                         vit.patch_embed.proj.*                              same
blocks.i.norm1 / norm2 .weight/.bias       vit.blocks.i.layernorm1 / layernorm2 .gamma/.beta   same
blocks.i.attn.qkv.weight/.bias [3D, D]     vit.blocks.i.attention.dense1/2/3 .weight/.bias     split rows
blocks.i.attn.proj.weight                  vit.blocks.i.attention.projection.weight            transposed
blocks.i.mlp.fc1.weight / fc2.weight       vit.blocks.i.output.mapping / projection .weight     transposed
norm, fc_norm .weight/.bias                vit.norm, vit.fc_norm .gamma/.beta                  same
head.*                                     head.*                                              same
mask_token / decoder_pos_embed             mask_tokens / decoder_pos_embed                     same
decoder_embed.* / decoder_pred.*           decoder_embed.* / decoder_pred.*                    same
decoder_blocks.j.*                         decoder_blocks.j.* (sub-names as the encoder)       as encoder
decoder_norm.weight/.bias                  decoder_norm.gamma/.beta                            same
========================================  =================================================  ==========

Read tolerantly: decoder names with the ``vit.`` prefix the official converter emits
(``vit.decoder_*``, ``vit.mask_tokens``), an encoder table named ``sincos_pos_embedding``, and
absent fixed tables (refilled by the caller). Optimizer moments (``adam_m.``, ``adam_v.``, ...)
and bookkeeping scalars (``global_step``, ``learning_rate``, ...) are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..fileio import plain_tensors
from ._util import NameMap, describe_keys, prefixed
from .base import Format, Loaded
from .errors import ConversionError
from .mindspore_ckpt import SLICE_BYTES, looks_like_ckpt, read_entries, write_entries

OPTIMIZER_PREFIXES = ("adam_m.", "adam_v.", "moment1.", "moment2.", "moments.", "accu_grads.", "accum_grads.",
                      "global_norm", "scale_sense", "optimizer.")
BOOKKEEPING = {"global_step", "learning_rate", "epoch_num", "step_num", "loss_scale", "current_iterator_step",
               "last_overflow_iterator_step", "beta1_power", "beta2_power", "cur_step", "weight_decay", "scale_sense",
               "current_epoch", "current_step"}


# ------------------------------------------------------------------------ names
# official block sub-name -> MindFormers ({p}: weight / bias, {g}: gamma / beta; a tuple: the split qkv)
_BLOCK = {
    "norm1.{p}": "layernorm1.{g}",
    "norm2.{p}": "layernorm2.{g}",
    "attn.qkv.{p}": tuple(f"attention.dense{j}.{{p}}" for j in (1, 2, 3)),
    "attn.proj.{p}": "attention.projection.{p}",
    "mlp.fc1.{p}": "output.mapping.{p}",
    "mlp.fc2.{p}": "output.projection.{p}",
}
_NAMES = NameMap({
    "cls_token": "vit.cls_tokens",
    "pos_embed": "vit.pos_embed",
    "patch_embed.proj.{p}": "vit.patch_embed.proj.{p}",
    "norm.{p}": "vit.norm.{g}",
    "fc_norm.{p}": "vit.fc_norm.{g}",
    "head.{p}": "head.{p}",
    "mask_token": "mask_tokens",
    "decoder_norm.{p}": "decoder_norm.{g}",
    **{k: k for k in ("decoder_pos_embed", "decoder_embed.{p}", "decoder_pred.{p}")},
    **prefixed(_BLOCK, "blocks.{}.", "vit.blocks.{}."),
    **prefixed(_BLOCK, "decoder_blocks.{}.", "decoder_blocks.{}."),
}, transposed=[f"{b}.{{}}.{w}.weight" for b in ("blocks", "decoder_blocks")
                for w in ("attn.proj", "mlp.fc1", "mlp.fc2")])


def _read_name(name: str) -> str:
    """The official converter's names (decoder ones with ``vit.`` too, ``sincos_pos_embedding``) as ours."""
    if name.startswith("vit.") and name[4:].startswith(("decoder_", "mask_tokens")):
        return name[4:]
    return "vit.pos_embed" if name in ("sincos_pos_embedding", "vit.sincos_pos_embedding") else name


def read(path: str | os.PathLike) -> Loaded:
    """A ``.ckpt``: MindFormers names / layouts -> official ones, noting the entries skipped."""
    entries, notes = read_entries(path)
    ignored = [name for name in entries if name in BOOKKEEPING or name.startswith(OPTIMIZER_PREFIXES)]
    sd, unknown = _NAMES.to_official({_read_name(n): t for n, t in entries.items() if n not in ignored}, path)
    if not sd:
        raise ConversionError("no MindFormers MAE / ViT parameter in this checkpoint; entries: "
                              + describe_keys(sorted(entries)), path)
    if ignored:
        notes.append(f"skipped {len(ignored)} optimizer / bookkeeping entries ({describe_keys(ignored, 3)})")
    if unknown:
        notes.append(f"skipped {len(unknown)} unrecognised entries: {describe_keys(unknown)}")
    return Loaded(sd, {}, notes)


def to_mindformers(sd: Mapping[str, torch.Tensor],
                   path: str | os.PathLike = "") -> list[tuple[str, torch.Tensor]]:
    """Official names / layouts -> MindFormers (encoder and decoder)."""
    out, bad = _NAMES.to_foreign(plain_tensors(sd))
    if bad:
        raise ConversionError("the MindFormers format holds MAE / ViT models only; no MindFormers name for: "
                              + describe_keys(bad), path)
    return list(out.items())


def write(sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, spec=None,
          slice_bytes: int = SLICE_BYTES) -> Path:
    return write_entries(to_mindformers(sd, dst), dst, slice_bytes)


FORMAT = Format("mindformers", (".ckpt",), folder=False, sniff=lambda p, head: looks_like_ckpt(head), read=read,
                write=lambda sd, dst, spec: (write(sd, dst), []), families=("mae", "vit"),
                aliases=("mindspore", "ms"))

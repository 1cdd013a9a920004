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
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ._util import describe_keys, fold_linprobe_head, plain_tensors
from .base import Format, Loaded
from .errors import ConversionError
from .mindspore_ckpt import DTYPE_NAMES, DTYPES, SLICE_BYTES, looks_like_ckpt, read_entries, write_entries

__all__ = ["DTYPES", "DTYPE_NAMES", "SLICE_BYTES", "from_mindformers", "read", "read_entries", "to_mindformers",
           "write", "write_entries"]

OPTIMIZER_PREFIXES = ("adam_m.", "adam_v.", "moment1.", "moment2.", "moments.", "accu_grads.", "accum_grads.",
                      "global_norm", "scale_sense", "optimizer.")
BOOKKEEPING = {"global_step", "learning_rate", "epoch_num", "step_num", "loss_scale", "current_iterator_step",
               "last_overflow_iterator_step", "beta1_power", "beta2_power", "cur_step", "weight_decay", "scale_sense",
               "current_epoch", "current_step"}


# ------------------------------------------------------------------------ names
_BLOCK_TO_MF = {
    "norm1.weight": "layernorm1.gamma",
    "norm1.bias": "layernorm1.beta",
    "norm2.weight": "layernorm2.gamma",
    "norm2.bias": "layernorm2.beta",
    "attn.proj.weight": "attention.projection.weight",
    "attn.proj.bias": "attention.projection.bias",
    "mlp.fc1.weight": "output.mapping.weight",
    "mlp.fc1.bias": "output.mapping.bias",
    "mlp.fc2.weight": "output.projection.weight",
    "mlp.fc2.bias": "output.projection.bias",
}
_BLOCK_FROM_MF = {v: k for k, v in _BLOCK_TO_MF.items()}
_TRANSPOSED = {"attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"}
_ROOT_TO_MF = {
    "cls_token": "vit.cls_tokens",
    "pos_embed": "vit.pos_embed",
    "patch_embed.proj.weight": "vit.patch_embed.proj.weight",
    "patch_embed.proj.bias": "vit.patch_embed.proj.bias",
    "norm.weight": "vit.norm.gamma",
    "norm.bias": "vit.norm.beta",
    "fc_norm.weight": "vit.fc_norm.gamma",
    "fc_norm.bias": "vit.fc_norm.beta",
    "head.weight": "head.weight",
    "head.bias": "head.bias",
    "mask_token": "mask_tokens",
    "decoder_pos_embed": "decoder_pos_embed",
    "decoder_embed.weight": "decoder_embed.weight",
    "decoder_embed.bias": "decoder_embed.bias",
    "decoder_norm.weight": "decoder_norm.gamma",
    "decoder_norm.bias": "decoder_norm.beta",
    "decoder_pred.weight": "decoder_pred.weight",
    "decoder_pred.bias": "decoder_pred.bias",
}
_ROOT_FROM_MF = {v: k for k, v in _ROOT_TO_MF.items()}
_ROOT_FROM_MF.update({"sincos_pos_embedding": "pos_embed", "vit.sincos_pos_embedding": "pos_embed"})
_BLOCK_RE = re.compile(r"^(vit\.blocks|decoder_blocks)\.(\d+)\.(.+)$")
_OFFICIAL_BLOCK_RE = re.compile(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)$")
_QKV_RE = re.compile(r"^attention\.dense([123])\.(weight|bias)$")


def _is_bookkeeping(name: str) -> bool:
    return name in BOOKKEEPING or name.startswith(OPTIMIZER_PREFIXES)


def _official_name(name: str) -> tuple[str | None, str | None]:
    """(official key, '1' / '2' / '3' of a split qkv or None) of a MindFormers name; (None, None):
    not a MAE / ViT parameter."""
    if name.startswith("vit.") and name[4:].startswith(("decoder_", "mask_tokens")):
        name = name[4:]  # the official converter prefixes every key, decoder ones too
    if not (m := _BLOCK_RE.match(name)):
        return _ROOT_FROM_MF.get(name), None
    group, i, sub = m.groups()
    base = f"{'blocks' if group == 'vit.blocks' else 'decoder_blocks'}.{i}"
    if q := _QKV_RE.match(sub):
        return f"{base}.attn.qkv.{q[2]}", q[1]
    return (f"{base}.{_BLOCK_FROM_MF[sub]}" if sub in _BLOCK_FROM_MF else None), None


def from_mindformers(
    entries: Mapping[str, torch.Tensor], path: str | os.PathLike = ""
) -> tuple[dict, list[str]]:
    """MindFormers names / layouts -> (official-name state dict, notes on the entries skipped)."""
    sd: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    ignored = [name for name in entries if _is_bookkeeping(name)]
    unknown = []
    for name, t in entries.items():
        key, part = (None, None) if _is_bookkeeping(name) else _official_name(name)
        if part is not None:
            qkv.setdefault(key, {})[part] = t
        elif key is not None:
            sd[key] = t.t().contiguous() if key.split(".", 2)[-1] in _TRANSPOSED and t.ndim == 2 else t
        elif not _is_bookkeeping(name):
            unknown.append(name)
    for key, parts in qkv.items():
        if sorted(parts) != ["1", "2", "3"]:
            base, kind = key.rsplit(".attn.qkv.", 1)
            raise ConversionError(
                f"{base}: attention.dense1/2/3.{kind} incomplete (found dense{''.join(sorted(parts))})", path
            )
        sd[key] = torch.cat([parts["1"], parts["2"], parts["3"]], dim=0)
    if not sd:
        raise ConversionError(
            "no MindFormers MAE / ViT parameter in this checkpoint; entries: "
            + describe_keys(sorted(entries)),
            path,
        )
    notes = []
    if ignored:
        notes.append(f"skipped {len(ignored)} optimizer / bookkeeping entries ({describe_keys(ignored, 3)})")
    if unknown:
        notes.append(f"skipped {len(unknown)} unrecognised entries: {describe_keys(unknown)}")
    return sd, notes


def to_mindformers(
    sd: Mapping[str, torch.Tensor], path: str | os.PathLike = ""
) -> list[tuple[str, torch.Tensor]]:
    """Official names / layouts -> MindFormers (encoder and decoder)."""
    out: list[tuple[str, torch.Tensor]] = []
    bad = []
    for key, t in plain_tensors(sd).items():
        if key in _ROOT_TO_MF:
            out.append((_ROOT_TO_MF[key], t))
            continue
        m = _OFFICIAL_BLOCK_RE.match(key)
        if m:
            group, i, sub = m.groups()
            base = f"{'vit.blocks' if group == 'blocks' else 'decoder_blocks'}.{i}"
            if sub in ("attn.qkv.weight", "attn.qkv.bias"):
                kind = sub.rsplit(".", 1)[1]
                for j, part in enumerate(t.chunk(3, dim=0), start=1):
                    out.append((f"{base}.attention.dense{j}.{kind}", part.contiguous()))
                continue
            if sub in _BLOCK_TO_MF:
                out.append((f"{base}.{_BLOCK_TO_MF[sub]}", t.t().contiguous() if sub in _TRANSPOSED else t))
                continue
        bad.append(key)
    if bad:
        raise ConversionError(
            "the MindFormers format holds MAE / ViT models only; no MindFormers name for: "
            + describe_keys(bad),
            path,
        )
    return out


def read(path: str | os.PathLike) -> Loaded:
    entries, notes = read_entries(path)
    sd, more = from_mindformers(entries, path)
    return Loaded(sd, {}, notes + more)


def write(
    sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, spec=None, slice_bytes: int = SLICE_BYTES
) -> Path:
    return write_entries(to_mindformers(sd, dst), dst, slice_bytes)


def _write_format(sd: Mapping[str, torch.Tensor], dst: Path, spec) -> tuple[Path, list[str]]:
    if spec is not None and spec.family in ("convmae", "convvit"):
        raise ConversionError("the MindFormers format holds MAE / ViT models only (no ConvMAE)", dst)
    sd, note = fold_linprobe_head(sd)  # MindFormers' classifier head is one Linear
    return write(sd, dst), [note] if note else []


FORMAT = Format("mindformers", (".ckpt",), folder=False, sniff=lambda p, head: looks_like_ckpt(head), read=read,
                write=_write_format, families=("mae", "vit"), aliases=("mindspore", "ms"))

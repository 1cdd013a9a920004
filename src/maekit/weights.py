"""Load a pretraining checkpoint's encoder into a classifier (fine-tuning / linear probing).

Follows the official ``main_finetune.py`` (docs/REFERENCE_RECIPES.md C.3, A.6): decoder keys dropped, a head
whose shape differs dropped, ``pos_embed`` resized bicubically when the grid differs, the head
re-initialised (trunc-normal, std 2e-5 for fine-tuning, 0.01 for linear probing), and a report of
missing and unexpected keys. Unlike the reference (which asserts), anything other than the
expected missing keys raises a ``ValueError`` that lists them, so a wrong file never loads
silently into a randomly initialised encoder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from .convert import load_state_dict  # any supported format, official names
from .convert.fit import DECODER_PREFIXES, FIXED_TABLES, FUSION_PREFIXES, HEAD_PREFIXES
from .convert.torchfile import find_state_dict
from .models.pos_embed import resize_pos_embed

log = logging.getLogger(__name__)

# Keys of a pretraining model that a classifier does not have: the decoder and ConvMAE's fusion
# convs (which only the decoder uses).
_PRETRAIN_ONLY_PREFIXES = DECODER_PREFIXES + FUSION_PREFIXES


@dataclass
class LoadReport:
    """What :func:`load_pretrained_encoder` did."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    pos_embed_resized: tuple[tuple[int, int], tuple[int, int]] | None = None
    head_reinitialised: bool = False

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.pos_embed_resized:
            (a, b), (c, d) = self.pos_embed_resized
            lines.append(f"position embedding interpolated from {a}x{b} to {c}x{d}")
        lines.append(f"missing (initialised fresh): {self.missing or 'none'}")
        lines.append(f"unexpected (ignored): {_summarise(self.unexpected) or 'none'}")
        if self.head_reinitialised:
            lines.append("classifier head re-initialised")
        return "; ".join(lines)


def _summarise(keys: list[str], limit: int = 8) -> str:
    if len(keys) <= limit:
        return ", ".join(keys)
    return ", ".join(keys[:limit]) + f", ... ({len(keys) - limit} more)"


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The weights inside a loaded checkpoint: ``obj['model']``, ``obj['state_dict']`` (...) or ``obj``.

    Also strips a DDP ``module.`` prefix. Raises a ``ValueError`` (``ConversionError``) when no
    non-empty dict of tensors is found.
    """
    return find_state_dict(obj)


def _resize_checkpoint_pos_embed(model: nn.Module, state: dict[str, torch.Tensor], report: LoadReport) -> None:
    if "pos_embed" not in state or not hasattr(model, "pos_embed"):
        return
    ours, theirs = model.pos_embed, state["pos_embed"]
    if ours.shape == theirs.shape or ours.shape[-1] != theirs.shape[-1]:
        return  # same grid, or another width (reported as a shape mismatch by the caller)
    prefix, grid = int(model.num_prefix_tokens), tuple(model.grid_size)  # the model says both
    n_old = theirs.shape[1] - prefix
    side = int(round(n_old**0.5))
    if side * side != n_old:
        raise ValueError(f"pos_embed of shape {tuple(theirs.shape)} cannot be resized to {tuple(ours.shape)}")
    state["pos_embed"] = resize_pos_embed(theirs, grid, num_prefix_tokens=prefix, old_grid=(side, side))
    report.pos_embed_resized = ((side, side), grid)


def _head_linear(model: nn.Module) -> nn.Linear | None:
    head = getattr(model, "head", None)
    if isinstance(head, nn.Sequential):  # linear probe: BatchNorm1d + Linear
        head = head[-1]
    return head if isinstance(head, nn.Linear) else None


def load_pretrained_encoder(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    *,
    head_init_std: float | None = 2e-5,
) -> LoadReport:
    """Load pretrained encoder weights into a classifier.

    Args:
        model: a classifier (``vit_*`` or ``convvit_*``), possibly with a linear-probe head.
        source: a checkpoint file (official ``{'model': ...}``, a maekit training checkpoint,
            a bare state dict, or any format ``maekit.convert`` reads) or an in-memory dict.
        head_init_std: trunc-normal std for the re-initialised head weight (2e-5 fine-tune,
            0.01 linear probe); ``None`` leaves the head as built.

    Returns:
        A :class:`LoadReport`; also logged.

    Raises:
        ValueError: encoder weights missing from the checkpoint, shapes that do not fit, or
            nothing matched at all.
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    state = load_state_dict(source) if isinstance(source, (str, os.PathLike)) else extract_state_dict(source)
    state = {k: v for k, v in state.items() if not k.startswith(_PRETRAIN_ONLY_PREFIXES)}
    own = model.state_dict()
    for key in [k for k in state if k.startswith("head.") and k in own and own[k].shape != state[k].shape]:
        del state[key]  # a head for another number of classes: dropped, as the reference does
    report = LoadReport()
    _resize_checkpoint_pos_embed(model, state, report)

    bad_shapes = [f"{k}: {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad_shapes:
        raise ValueError(f"{name}: weights do not fit the model: {_summarise(bad_shapes)}")
    result = model.load_state_dict(state, strict=False)
    report.missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    report.unexpected = list(result.unexpected_keys)
    report.loaded = [k for k in state if k in own]
    not_head = [k for k in report.missing if not k.startswith(HEAD_PREFIXES)]
    if not report.loaded or not_head:
        raise ValueError(
            f"{name}: the checkpoint does not hold this model's encoder "
            f"({len(report.loaded)} tensors matched; missing {_summarise(not_head or report.missing)}). "
            "Is it a checkpoint of another architecture or size?"
        )
    head = _head_linear(model)
    if head_init_std is not None and head is not None and any(k.startswith("head.") for k in report.missing):
        trunc_normal_(head.weight, std=head_init_std)
        nn.init.zeros_(head.bias)
        report.head_reinitialised = True
    log.info("%s: %s", name, report)
    return report


def load_pretraining_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, label: str = "weights",
                             allow_missing_decoder: bool = False) -> list[str]:
    """Load official-name weights into a pretraining model (MAE / ConvMAE).

    Fixed position tables of another grid are skipped (the model keeps its own). Anything else
    missing, unexpected or of the wrong shape raises a ``ValueError`` naming ``label``, except
    the decoder (and ConvMAE's fusion convs, which only the decoder uses) of an encoder-only
    file when ``allow_missing_decoder``.

    Returns:
        The decoder keys left at their initialisation (empty for a full checkpoint).
    """
    sd, own = dict(state_dict), model.state_dict()
    name = getattr(model, "model_name", type(model).__name__)
    for key in FIXED_TABLES:
        if key in sd and key in own and sd[key].shape != own[key].shape:
            del sd[key]
    bad = [f"{k}: {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items()
           if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{label}: weights do not fit {name}: {_summarise(bad)}")
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if k not in FIXED_TABLES]
    decoder = [k for k in missing if k.startswith(_PRETRAIN_ONLY_PREFIXES)]
    other = [k for k in missing if k not in decoder] + ([] if allow_missing_decoder else decoder)
    if other or result.unexpected_keys:
        hint = " (an encoder-only file: reconstructions need the decoder)" if decoder and not allow_missing_decoder \
            else ""
        raise ValueError(f"{label}: weights do not fit {name}{hint}: missing {_summarise(other) or 'none'}; "
                         f"unexpected {_summarise(list(result.unexpected_keys)) or 'none'}")
    return decoder

"""Does a state dict fit a model, and what must change so that it does?

``check_fit`` compares official-name weights with a :class:`ArchSpec` (shapes, missing encoder
weights); ``fit_state_dict`` fills absent fixed sin-cos tables, drops the parts the model has not
(decoder / fusion convs of a classifier, head of a pretraining model) and keeps or folds a
linear-probe head. Every such step is reported in the notes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from ..models.base import PRETRAINING_FAMILIES
from ..models.pos_embed import get_2d_sincos_pos_embed
from ._util import StateDict, describe_keys, fold_linprobe_head
from .errors import ConversionError
from .spec import ArchSpec

# Key families of the official state dicts (D.2, D.3).
DECODER_PREFIXES = ("decoder_", "mask_token")
FUSION_PREFIXES = ("stage1_output_decode.", "stage2_output_decode.")
HEAD_PREFIXES = ("head.", "fc_norm.")
FIXED_TABLES = ("pos_embed", "decoder_pos_embed")


def part_of(key: str, family: str) -> str:
    """'encoder', 'decoder', 'fusion' or 'head' (the final ``norm`` belongs to the head of a
    classifier, whose pooling decides between ``norm`` and ``fc_norm``)."""
    if key.startswith(DECODER_PREFIXES):
        return "decoder"
    if key.startswith(FUSION_PREFIXES):
        return "fusion"
    if key.startswith(HEAD_PREFIXES) or (family not in PRETRAINING_FAMILIES and key.startswith("norm.")):
        return "head"
    return "encoder"


def foreign_keys(keys: Iterable[str], family: str) -> list[str]:
    """The ``keys`` of parts a model of ``family`` has not, among keys it has no place for: a
    classifier's decoder / fusion convs / head of another kind (a linear-probe head for a plain one,
    the pooling norm it does not use), a pretraining model's head (``head``, ``fc_norm``).
    The one rule of which parts belong to which kind of model (converter and loader)."""
    foreign = ("head",) if family in PRETRAINING_FAMILIES else ("decoder", "fusion", "head")
    return [k for k in keys if part_of(k, family) in foreign]


def _unfit(spec: ArchSpec, why: str) -> ConversionError:
    return ConversionError(f"the weights do not fit model {spec.name} {spec.args}: {why}")


def check_fit(sd: Mapping[str, torch.Tensor], spec: ArchSpec) -> tuple[list[str], list[str]]:
    """Compare ``sd`` with the model's state dict.

    Returns:
        (missing, unexpected) key lists.

    Raises:
        ConversionError: a shared key has another shape, or an encoder weight is missing.
    """
    bad = [f"{k} {tuple(sd[k].shape)} (model: {s})" for k, s in spec.shapes.items()
           if k in sd and tuple(sd[k].shape) != s]
    if bad:
        raise _unfit(spec, f"{len(bad)} shape mismatch(es): {describe_keys(bad, 4)}")
    missing = [k for k in spec.shapes if k not in sd]
    unexpected = [k for k in sd if k not in spec.shapes]
    soft = FIXED_TABLES if spec.family in PRETRAINING_FAMILIES else ()
    hard = [k for k in missing if part_of(k, spec.family) == "encoder" and k not in soft]
    if hard:
        raise _unfit(spec, "missing " + describe_keys(hard))
    return missing, unexpected


def _linprobe_head(out: StateDict, spec: ArchSpec, missing: list[str], unexpected: list[str], keep: bool,
                   notes: list[str]) -> tuple[StateDict, list[str], list[str]]:
    """A classifier's linear-probe head (``head.0`` BatchNorm1d, ``head.1`` Linear): kept as in the
    file (``keep``) or folded into one Linear ``head``."""
    linprobe = [k for k in unexpected if k.startswith(("head.0.", "head.1."))]
    if not linprobe or spec.family in PRETRAINING_FAMILIES:
        return out, missing, unexpected
    if keep:
        notes.append("linear-probe head (head.0 = BatchNorm1d, head.1 = Linear) kept as in the file")
        return out, [k for k in missing if not k.startswith("head.")], [k for k in unexpected if k not in linprobe]
    out, note = fold_linprobe_head(out)
    notes.append(note)
    return (out, *check_fit(out, spec))


def _drop_foreign(out: StateDict, spec: ArchSpec, unexpected: list[str], notes: list[str]) -> None:
    """Drop the parts model ``spec`` has not (a classifier's decoder / fusion convs, a pretraining
    model's head); anything else unexpected is a ConversionError."""
    dropped = foreign_keys(unexpected, spec.family)
    other = [k for k in unexpected if k not in dropped]
    if other:
        raise _unfit(spec, "unexpected " + describe_keys(other))
    for k in dropped:
        out.pop(k)
    if dropped:
        parts = "/".join(sorted({part_of(k, spec.family) for k in dropped}))
        notes.append(f"dropped {len(dropped)} {parts} weight(s) that model {spec.name} has not: "
                     + describe_keys(dropped, 3))


def _fill_fixed_tables(out: StateDict, spec: ArchSpec, missing: list[str], notes: list[str]) -> None:
    """A pretraining model's absent sin-cos tables (the decoder's only when the decoder is there)."""
    has_decoder = any(m.startswith("decoder_") for m in out)
    grid = (spec.img_size[0] // spec.stride, spec.img_size[1] // spec.stride)
    dtype = next(iter(out.values())).dtype if out else torch.float32
    for k in FIXED_TABLES:
        if k in missing and (k == "pos_embed" or has_decoder):
            out[k] = get_2d_sincos_pos_embed(spec.shapes[k][-1], grid, spec.family == "mae")[None].to(dtype)
            missing.remove(k)
            notes.append(f"{k} was absent; filled with the fixed sin-cos table")


_MISSING_NOTES = {
    "decoder": "no decoder weights (encoder-only checkpoint): the decoder of a model built from this file starts "
               "from its initialisation",
    "fusion": "no stage1/2_output_decode weights (encoder-only ConvMAE checkpoint)",
    "head": "no classification head weights: the head starts from its initialisation",
}


def fit_state_dict(sd: Mapping[str, torch.Tensor], spec: ArchSpec, *,
                   keep_linprobe: bool = True) -> tuple[StateDict, list[str]]:
    """Make ``sd`` match ``spec``: fill missing fixed sin-cos tables, drop the parts the model
    has not (decoder / fusion convs of a classifier, head of a pretraining model), and keep or
    fold a linear-probe head. Anything else that does not fit raises ConversionError.

    Returns:
        (state dict, notes): the fitted weights and one note per step taken.
    """
    notes: list[str] = []
    out, missing, unexpected = _linprobe_head(dict(sd), spec, *check_fit(sd, spec), keep_linprobe, notes)
    _drop_foreign(out, spec, unexpected, notes)
    pretraining = spec.family in PRETRAINING_FAMILIES
    if pretraining:
        _fill_fixed_tables(out, spec, missing, notes)
    parts = {part_of(k, spec.family) for k in missing}
    shown = ("decoder", "fusion") if pretraining else ("decoder", "fusion", "head")
    notes += [_MISSING_NOTES[p] for p in shown if p in parts]
    return out, notes


"""Which registered model do these weights fit, and with which arguments?

Read from the weights (exactly): the family (MAE / ConvMAE pretraining model or ViT / ConvViT
classifier), widths, depths, patch sizes, input channels, MLP ratios, decoder width and depth,
number of classes, pooling (``fc_norm`` = global average pool, ``norm`` = cls token), and the
image size from the position table (a square grid; a non-square grid is recognised when the
table is the fixed sin-cos one of MAE / ConvMAE pretraining).

Not in the weights: the number of attention heads, ``norm_pix_loss`` and the LayerNorm epsilon.
They come, in this order, from an explicit override (``num_heads=...``), the file's own
metadata (HF ``config.json``, the ``args`` of a training checkpoint, a maekit ``config.json``),
or the registered presets: a head count only when every preset of that width has the same one
(else the source is refused, naming the argument: a guessed head count changes the model's
function); ``norm_pix_loss`` (the loss only) the preset's, said as assumed. Each such choice is
reported in the notes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..models.base import PRETRAINING_FAMILIES
from ..models.config import jsonable
from ..models.pos_embed import get_2d_sincos_pos_embed
from ._util import count_blocks, describe_keys
from .base import size_arg
from .errors import ConversionError
from .fit import DECODER_PREFIXES, FUSION_PREFIXES, HEAD_PREFIXES, check_fit
from .spec import ArchSpec, arch_spec, presets, stride_of


# Arguments that weights determine, and those they cannot.
_ARCH = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "mlp_ratio", "decoder_embed_dim", "decoder_depth",
         "num_classes", "global_pool")
SOFT_ARGS = ("num_heads", "decoder_num_heads", "norm_pix_loss", "layer_norm_eps")


def family_of(sd: Mapping[str, torch.Tensor]) -> str:
    """'mae', 'vit', 'convmae' or 'convvit' from the key names (D.2, D.3)."""
    conv = "patch_embed1.proj.weight" in sd
    if not conv and "patch_embed.proj.weight" not in sd:
        raise ConversionError("these weights are not an MAE / ViT / ConvMAE state dict (no 'patch_embed.proj.weight' "
                              "or 'patch_embed1.proj.weight'); keys: " + describe_keys(sorted(sd)))
    pretrain = (any(k.startswith(DECODER_PREFIXES + FUSION_PREFIXES) for k in sd)
                or not any(k.startswith(HEAD_PREFIXES) for k in sd))
    return ("convmae" if pretrain else "convvit") if conv else ("mae" if pretrain else "vit")


def grid_from_pos_embed(pos: torch.Tensor, cls_row: bool, fixed: bool) -> tuple[int, int] | None:
    """Patch grid (Gh, Gw) of a position table (1, [1+] L, D), or None when it cannot be told."""
    length = pos.shape[1] - int(cls_row)
    if length <= 0:
        return None
    side = math.isqrt(length)
    square = (side, side) if side * side == length else None
    if fixed and pos.shape[-1] % 4 == 0 and pos.device.type != "meta":  # the sin-cos table tells any grid
        pairs = [(a, length // a) for a in range(1, length + 1) if length % a == 0 and a != length // a]
        for gh, gw in ([square] if square else []) + pairs:
            ref = get_2d_sincos_pos_embed(pos.shape[-1], (gh, gw), cls_row)
            if torch.allclose(pos[0].float(), ref, atol=1e-4):
                return gh, gw
    return square


def _conv_facts(sd: Mapping[str, torch.Tensor], keys: list[str]) -> dict[str, Any]:
    ws = [sd.get(f"patch_embed{i}.proj.weight") for i in (1, 2, 3)]
    if any(w is None or w.ndim != 4 for w in ws):
        raise ConversionError("ConvMAE weights need patch_embed1/2/3.proj.weight (4-D convolutions)")
    dims = tuple(int(w.shape[0]) for w in ws)
    ratios = [None if (w := sd.get(f"blocks{i}.0.mlp.fc1.weight")) is None else w.shape[0] / d
              for i, d in zip((1, 2, 3), dims)]
    return dict(embed_dim=dims, patch_size=tuple(int(w.shape[-1]) for w in ws),
                depth=tuple(count_blocks(keys, f"blocks{i}") for i in (1, 2, 3)), in_chans=int(ws[0].shape[1]),
                mlp_ratio=tuple(ratios) if None not in ratios else None)


def _vit_facts(sd: Mapping[str, torch.Tensor], keys: list[str]) -> dict[str, Any]:
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[-1] != w.shape[-2]:
        raise ConversionError(f"patch_embed.proj.weight has shape {tuple(w.shape)}; expected a square "
                              "convolution kernel (D, C, p, p)")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    return dict(embed_dim=int(w.shape[0]), patch_size=int(w.shape[-1]), in_chans=int(w.shape[1]),
                depth=count_blocks(keys, "blocks"), mlp_ratio=None if fc1 is None else fc1.shape[0] / w.shape[0])


def _part_facts(sd: Mapping[str, torch.Tensor], keys: list[str], family: str) -> dict[str, Any]:
    """Decoder width / depth of a pretraining model, or head size and pooling of a classifier."""
    if family in PRETRAINING_FAMILIES:
        dec = sd.get("decoder_embed.weight")
        width = int(dec.shape[0]) if dec is not None else (
            int(sd["mask_token"].shape[-1]) if "mask_token" in sd else None)
        return {} if width is None else dict(decoder_embed_dim=width,
                                              decoder_depth=count_blocks(keys, "decoder_blocks"))
    head = sd.get("head.weight", sd.get("head.1.weight"))
    pool = "avg" if "fc_norm.weight" in sd else ("token" if "norm.weight" in sd else None)
    return dict(num_classes=0 if head is None else int(head.shape[0]), global_pool=pool)


def weight_facts(sd: Mapping[str, torch.Tensor], family: str) -> dict[str, Any]:
    """The architecture numbers the weights determine (None where they do not)."""
    keys = list(sd)
    conv = family in ("convmae", "convvit")
    f: dict[str, Any] = dict.fromkeys(_ARCH)
    f.update(_conv_facts(sd, keys) if conv else _vit_facts(sd, keys))
    stride, cls_row = stride_of(f["patch_size"]), not conv
    f["width"] = width = f["embed_dim"][2] if conv else f["embed_dim"]  # of the attention blocks
    pos = sd.get("pos_embed")
    if pos is not None:
        if pos.ndim != 3 or pos.shape[-1] != width:
            raise ConversionError(
                f"pos_embed has shape {tuple(pos.shape)}; expected (1, L{'+1' if cls_row else ''}, {width})")
        grid = grid_from_pos_embed(pos, cls_row, fixed=family in PRETRAINING_FAMILIES)
        f["grid_tokens"] = pos.shape[1] - int(cls_row)
        if grid is not None:
            f["img_size"] = (grid[0] * stride, grid[1] * stride)
    f.update(_part_facts(sd, keys, family))
    return f


def _as_arg(key: str, value: Any) -> Any:
    """Spec value -> constructor argument (JSON friendly)."""
    if key == "img_size":
        return size_arg(value)
    return value == "avg" if key == "global_pool" else jsonable(value)


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "mlp_ratio":
        a = a if isinstance(a, tuple) else (a,)
        b = b if isinstance(b, tuple) else (b,)
        return len(a) == len(b) and all(abs(x - y) < 1e-9 for x, y in zip(a, b))
    return a == b


def _pick_heads(width: int, family: str, decoder: bool, given: Any, source: str | None, label: str,
                notes: list[str]) -> int:
    """A head count: given / stated by the file, else the one every registered preset of this width
    has. Anything else would be a guess that changes the model's function: refused, naming how to
    give it (issue 21 item 1)."""
    if given is not None:
        if source:
            notes.append(f"{label}={given} ({source})")
        return int(given)
    heads = {(s.decoder_num_heads if decoder else s.num_heads): n for n, s in presets(family)
             if (s.decoder_embed_dim if decoder else s.width) == width}
    if len(heads) == 1:
        count, preset = next(iter(heads.items()))
        notes.append(f"{label}={count}: not stored in the weights; every preset of width {width} ({preset}) has "
                     f"{count} (pass --{label} to change)")
        return int(count)
    part = "decoder" if decoder else "encoder"
    raise ConversionError(
        f"{label} (attention heads of the {part}, width {width}) is not stated by the source and "
        + (f"the presets of that width disagree ({sorted(heads)})" if heads else "no registered preset has that width")
        + f": give it (maekit convert --{label} N; load_model(..., {label}=N); a run's --config "
        f"model_args: {{{label}: N}}); maekit does not guess it")


def _candidate_cost(facts: dict[str, Any], spec: ArchSpec) -> int:
    arch = spec.architecture
    return sum(3 if k in ("embed_dim", "decoder_embed_dim") else 1
               for k in _ARCH if facts.get(k) is not None and not _same(k, facts[k], arch.get(k)))


def _trusted(state_dict, hints: dict, overrides: dict, notes: list[str]):
    """A maekit folder / checkpoint names its exact model: (name, args) if the weights fit it. Recorded
    arguments that are invalid (out of range, wrong type, no such argument) are refused, not
    replaced by a guess from the weights."""
    name = hints.get("model_name")
    if not (name and "model_args" in hints):
        return None
    args = {**hints["model_args"], **overrides}
    spec = arch_spec(name, args)
    try:
        check_fit(state_dict, spec)
        return name, args
    except ConversionError as e:
        notes.append(f"the file names model {name} {hints['model_args']}, but: {e}; inferring from the weights")
        return None


def _pick_preset(facts: dict, family: str, name_hint: str | None) -> tuple[str, ArchSpec]:
    """The named model when it is of the family, else the registered preset closest to the facts."""
    from ..models import is_model

    with contextlib.suppress(ConversionError):  # a named model of another kind: the closest preset
        if name_hint and is_model(name_hint) and (hinted := arch_spec(name_hint)).family == family:
            return name_hint, hinted
    return min(presets(family), key=lambda c: _candidate_cost(facts, c[1]))


def _settle_img_size(facts: dict, overrides: dict, hints: dict, name: str, preset: ArchSpec,
                     notes: list[str]) -> None:
    """A forced or hinted image size settles what the weights leave open (a non-square grid)."""
    size = overrides.pop("img_size", None)
    if size is None and facts.get("img_size") is None:
        size = hints.get("img_size")
    if size is not None:
        facts["img_size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if facts.get("img_size") is None and facts.get("grid_tokens") is not None:
        raise ConversionError(f"cannot tell the image size: the position table holds {facts['grid_tokens']} "
                              "patches, not a square grid; pass img_size=(H, W) (--img_size H W)")
    if facts.get("img_size") is None:
        notes.append(f"no position table in the weights: img_size={preset.img_size} from preset {name}")


def _soft_args(facts: dict, family: str, preset: ArchSpec, soft: dict, hints: dict,
               notes: list[str]) -> dict[str, Any]:
    """Head counts, ``norm_pix_loss``, LayerNorm eps: given, from the file, or from the preset."""
    def given(key: str) -> tuple[Any, str | None]:
        if key in soft:
            return soft[key], "given"
        if hints.get(key) is not None:
            return hints[key], f"from {hints.get('source', 'the file')}"
        return None, None

    args: dict[str, Any] = {}
    heads = _pick_heads(facts["width"], family, False, *given("num_heads"), "num_heads", notes)
    if heads != preset.num_heads:
        args["num_heads"] = heads
    pretrain = family in PRETRAINING_FAMILIES
    if pretrain and facts.get("decoder_embed_dim") is not None:
        dheads = _pick_heads(facts["decoder_embed_dim"], family, True, *given("decoder_num_heads"),
                             "decoder_num_heads", notes)
        if dheads != preset.decoder_num_heads:
            args["decoder_num_heads"] = dheads
    value, src = given("norm_pix_loss")
    if pretrain and value is None:
        notes.append(f"norm_pix_loss: not stated by the source, assumed {preset.norm_pix_loss} (the preset's; it "
                     "changes the loss only: pass --norm_pix_loss if the model was trained on normalised-pixel "
                     "targets)")
    elif pretrain and bool(value) != preset.norm_pix_loss:
        args["norm_pix_loss"] = bool(value)
    value, src = given("layer_norm_eps")
    if value is not None and float(value) != preset.layer_norm_eps:
        args["layer_norm_eps"] = float(value)
        notes.append(f"layer_norm_eps={value} ({src}; the MAE references use 1e-6)")
    return args


def infer_model(state_dict: Mapping[str, torch.Tensor], *, hints: Mapping[str, Any] | None = None,
                **overrides: Any) -> tuple[str, dict[str, Any], list[str]]:
    """The registered model that ``state_dict`` (official names) fits.

    Args:
        state_dict: weights under the official parameter names.
        hints: what the file itself says: ``model_name`` and ``model_args`` (maekit folders),
            or loose facts ``num_heads``, ``decoder_num_heads``, ``norm_pix_loss``,
            ``layer_norm_eps``, ``img_size`` (HF configs, training-checkpoint ``args``).
        **overrides: constructor arguments that win over everything (``num_heads=16``...).

    Returns:
        (model_name, model_args, notes): ``create_model(model_name, **model_args)`` builds a
        model the weights fit; ``notes`` says what was not in the weights and where it came from.

    Raises:
        ConversionError: the weights are no MAE / ViT / ConvMAE state dict, or fit no model.
    """
    hints = dict(hints or {})
    notes: list[str] = []
    family = family_of(state_dict)
    trusted = _trusted(state_dict, hints, overrides, notes)
    if trusted is not None:
        return trusted[0], trusted[1], notes
    facts = weight_facts(state_dict, family)
    name, preset = _pick_preset(facts, family, hints.get("model_name"))
    soft = {k: overrides.pop(k) for k in list(overrides) if k in SOFT_ARGS}
    _settle_img_size(facts, overrides, hints, name, preset, notes)
    arch = preset.architecture
    args = {k: _as_arg(k, facts[k]) for k in _ARCH
            if facts.get(k) is not None and not _same(k, facts[k], arch.get(k))}
    args.update(_soft_args(facts, family, preset, soft, hints, notes))
    if family not in PRETRAINING_FAMILIES and facts.get("num_classes") == 0:
        notes.append("no classification head in the weights (num_classes=0: features out)")
    args.update(overrides)  # anything else the caller asked for (drop_path_rate, ...)

    spec = arch_spec(name, args)
    check_fit(state_dict, spec)
    return name, args, notes

"""Reading, writing and converting checkpoints of every supported format.

All readers return weights under the official (R1 / R2) parameter names and layouts; all
writers take them. ``convert`` = detect -> read -> match a model -> write.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.config import ModelConfig
from ._util import StateDict, fold_linprobe_head
from .base import Loaded
from .detect import detect_format
from .formats import TABLE, get_format
from .errors import ConversionError
from .fit import check_fit, fit_state_dict
from .infer import SOFT_ARGS, family_of, infer_model
from .spec import ArchSpec, arch_spec

_LOSSLESS_HEADS = ("maekit", "official", "passl")  # formats that keep a linear-probe BatchNorm head


def read(path: str | os.PathLike, format: str | None = None) -> tuple[str, Loaded]:
    """(format, Loaded) for any supported file or folder."""
    fmt = get_format(format).name if format else detect_format(path)
    if not Path(path).exists():
        raise ConversionError("no such file or folder", path)
    return fmt, TABLE[fmt].read(Path(path))


def load_state_dict(path: str | os.PathLike, format: str | None = None) -> StateDict:
    """The weights of any supported file or folder under the official parameter names.

    Args:
        path: a maekit / HF folder, an official ``.pth``, a PASSL ``.pd`` / ``.pdparams``, a
            MindFormers ``.ckpt`` or a timm ``.safetensors``.
        format: one of :data:`FORMATS`; detected from the content when None.

    Raises:
        ConversionError: unreadable, unsafe, corrupted or unrecognised input.
    """
    return read(path, format)[1].state_dict


@dataclass
class LoadedCheckpoint:
    """A source read: the model it records or its weights fit (``config``: name, arguments, labels,
    published weights name) and, when read, the weights fitted to that model (what
    ``maekit.load_model`` builds from)."""

    config: ModelConfig
    label: str  # the path or source, for messages
    state_dict: StateDict | None = None
    preprocessing: dict[str, Any] | None = None  # image_mean / image_std / crop_pct the source records
    format: str | None = None
    notes: list[str] = field(default_factory=list)


def resolve_model(sd: StateDict, hints: dict[str, Any] | None = None, model: str | None = None,
                  **overrides: Any) -> tuple[str, dict[str, Any], list[str], ArchSpec]:
    """(model_name, model_args, notes, spec) of the model the weights go into.

    ``model`` picks the registered model: its shape is the preset's plus ``overrides`` (and the
    arguments a maekit folder of the same model records), and the weights must fit it;
    otherwise the model is inferred from the weights (:func:`infer_model`).
    """
    hints = dict(hints or {})
    if not model:
        name, args, notes = infer_model(sd, hints=hints, **overrides)
        return name, args, notes, arch_spec(name, args)
    from ..models import canonical_name, is_model

    preset = arch_spec(model)  # an unknown name raises the registry's "did you mean" error
    hinted = hints.get("model_name")
    if hinted and "model_args" in hints and is_model(hinted) and canonical_name(hinted) == canonical_name(model):
        args = dict(hints["model_args"])
    else:  # the model's own shape; only what the file states beyond the weights is carried over
        arch = preset.architecture
        args = {k: hints[k] for k in SOFT_ARGS
                if None not in (hints.get(k), arch.get(k)) and hints[k] != arch[k]}
    args.update(overrides)
    spec = arch_spec(model, args)
    try:
        check_fit(sd, spec)
    except ConversionError as e:
        raise ConversionError(f"{e.problem} (without a model name the shape is taken from the weights)") from e
    return model, args, [], spec


def read_checkpoint(path: str | os.PathLike, format: str | None = None, model: str | None = None, *,
                    keep_linprobe: bool = False, **overrides: Any) -> LoadedCheckpoint:
    """Read any supported checkpoint and match it to a registered model.

    The weights are fitted to the model: absent fixed sin-cos tables are filled, parts the model
    has not (a decoder for a classifier...) are dropped, a linear-probe BatchNorm head is folded
    into the Linear head when the model has a plain one (kept with ``keep_linprobe``). Every such
    step is in ``notes``.
    """
    fmt, loaded = read(path, format)
    try:
        name, args, notes, spec = resolve_model(loaded.state_dict, loaded.hints, model, **overrides)
    except ConversionError as e:  # name the file whose weights or recorded arguments are refused
        cfg_file = Path(path) / "config.json"  # a folder's records the model
        raise e if e.path else ConversionError(e.problem, cfg_file if cfg_file.is_file() else path) from e
    sd, fit_notes = fit_state_dict(loaded.state_dict, spec, keep_linprobe=keep_linprobe)
    cfg = ModelConfig(name, args, loaded.hints.get("class_names"), loaded.hints.get("weights"))
    return LoadedCheckpoint(cfg, os.fspath(path), sd, loaded.hints.get("preprocessing"), fmt,
                            loaded.notes + notes + fit_notes)


def format_for_destination(dst: str | os.PathLike) -> str:
    """The format a destination path implies (its suffix; a folder or no suffix -> maekit)."""
    p = Path(dst)
    fmt = next((f.name for f in TABLE.values() if p.suffix.lower() in f.suffixes), None)
    if fmt is not None:
        return fmt
    if p.is_dir() or not p.suffix:
        return "maekit"
    raise ConversionError(f"cannot tell the output format from the suffix {p.suffix!r}; pass --to FORMAT", dst)


def _destination(dst: str | os.PathLike, fmt: str) -> Path:
    p, folder = Path(dst), TABLE[fmt].folder
    if not folder and p.is_dir():
        return p / ("model" + TABLE[fmt].suffixes[0])  # a file format given an existing folder
    if folder and p.exists() and not p.is_dir() and p.suffix.lower() not in TABLE[fmt].suffixes:
        raise ConversionError(f"the {fmt} format is a folder, but this path is an existing file", p)
    return p


def save_state_dict(state_dict: StateDict, dst: str | os.PathLike, format: str, model_name: str | None = None,
                    config: dict[str, Any] | None = None, class_names: Sequence[str] | None = None,
                    preprocessing: dict[str, Any] | None = None) -> Path:
    """Write official-name weights in ``format``.

    Args:
        state_dict: weights under the official names (``model.state_dict()``).
        dst: file or folder (a file format given an existing folder writes ``model.<ext>`` in it).
        format: one of :data:`FORMATS`.
        model_name, config: the model (``create_model(model_name, **config)``) the weights
            belong to; needed by ``maekit`` and ``hf`` (inferred from the weights when None) and
            checked against the weights (a shape mismatch raises ConversionError).
        class_names: the label of each classifier output (HF ``id2label``, timm ``label_names``,
            maekit ``class_names``); ignored when their number is not the model's.
        preprocessing: ``image_mean`` / ``image_std`` / ``crop_pct`` for the formats that record
            them (HF ``preprocessor_config.json``, timm ``pretrained_cfg``).

    Returns:
        The path written. Files and folders appear complete or not at all.
    """
    fmt = get_format(format).name
    sd = dict(state_dict)
    spec: ArchSpec | None = None
    if model_name or fmt in ("maekit", "hf", "timm"):
        try:
            spec = resolve_model(sd, None, model_name, **(config or {}))[3]
        except ConversionError:
            if model_name or fmt != "timm":
                raise
    if fmt != "official":  # nothing but the official format keeps arbitrary keys; fail early and clearly
        family_of(sd)
    if spec is not None:
        spec = spec.with_metadata(class_names, preprocessing)
    return _write(sd, fmt, _destination(dst, fmt), spec)[0]


def _write(sd: StateDict, fmt: str, dst: Path, spec: ArchSpec | None) -> tuple[Path, list[str]]:
    """The format's writer; a model the format cannot hold (ConvMAE for HF, timm, MindFormers) is refused,
    and a linear-probe head is folded into one Linear for the formats that have no other head."""
    if spec is not None and spec.family not in TABLE[fmt].families:
        raise ConversionError(f"the {fmt} format holds {' / '.join(TABLE[fmt].families)} models only, not "
                              f"{spec.family}; ConvMAE converts to maekit, official and passl", dst)
    note = None
    if fmt not in _LOSSLESS_HEADS:
        sd, note = fold_linprobe_head(sd)
    written, notes = TABLE[fmt].write(sd, dst, spec)
    return written, [note] + notes if note else notes


@dataclass
class ConversionReport:
    """What ``convert`` did."""

    src: str
    dst: str
    from_format: str
    to_format: str
    model_name: str
    model_args: dict[str, Any]
    num_tensors: int
    num_params: int
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.model_args.items()))
        lines = [f"{self.src} ({self.from_format}) -> {self.dst} ({self.to_format})",
                 f"model: {self.model_name}({args})", f"{self.num_tensors} tensors, {self.num_params:,} values"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def convert(src: str | os.PathLike, dst: str | os.PathLike, from_format: str | None = None,
            to_format: str | None = None, model: str | None = None, **overrides: Any) -> ConversionReport:
    """Convert a checkpoint between formats.

    Args:
        src: input file or folder.
        dst: output file or folder.
        from_format / to_format: one of :data:`FORMATS`; detected from ``src``'s content /
            implied by ``dst`` (suffix; folder -> maekit) when None.
        model: registered model the weights are for; inferred from the weights when None.
        **overrides: model arguments the weights cannot tell (``num_heads``, ``norm_pix_loss``,
            ``layer_norm_eps``, ``img_size``...).

    Returns:
        A :class:`ConversionReport` (``print`` it).

    Raises:
        ConversionError: bad input, weights that fit no model (or not ``model``), or a model the
            output format cannot hold. Nothing is written then.
    """
    fmt_out = get_format(to_format).name if to_format else format_for_destination(dst)
    out = _destination(dst, fmt_out)
    if out.exists() and Path(src).exists() and os.path.samefile(src, out):
        raise ConversionError("source and destination are the same", out)
    ck = read_checkpoint(src, from_format, model, keep_linprobe=fmt_out in _LOSSLESS_HEADS, **overrides)
    cfg, sd = ck.config, ck.state_dict
    spec = arch_spec(cfg.model_name, cfg.model_args).with_metadata(cfg.class_names, ck.preprocessing)
    written, write_notes = _write(sd, fmt_out, out, spec)
    n_params = sum(t.numel() for t in sd.values() if t.is_floating_point())
    return ConversionReport(os.fspath(src), os.fspath(written), ck.format, fmt_out, cfg.model_name, cfg.model_args,
                            len(sd), n_params, ck.notes + write_notes)
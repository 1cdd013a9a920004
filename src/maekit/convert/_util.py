"""Small shared helpers of the converters: key bookkeeping and the linear-probe head fold.

File writes (atomic files and folders, safetensors-ready tensors) live in :mod:`maekit.fileio`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from ..fileio import atomic_write_dir, plain_tensors  # noqa: F401  (re-exported for the format modules)
from .errors import ConversionError

StateDict = dict[str, torch.Tensor]


def block_indices(keys: Iterable[str], prefix: str) -> list[int]:
    """Sorted distinct ``i`` of keys ``{prefix}.{i}.*``."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pat.match(k))})


def count_blocks(keys: Iterable[str], prefix: str) -> int:
    idx = block_indices(keys, prefix)
    if idx and idx != list(range(len(idx))):
        raise ConversionError(f"block indices of {prefix!r} are not 0..n-1: {idx}")
    return len(idx)


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Drop ``prefix`` from every key when *all* keys carry it (``module.`` of DDP)."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return dict(sd)


def describe_keys(keys: Iterable[str], limit: int = 6) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def fold_linprobe_head(sd: Mapping[str, torch.Tensor], eps: float = 1e-6) -> tuple[StateDict, str | None]:
    """Fold the official linear-probe head (BatchNorm1d(affine=False, eps=1e-6) + Linear, keys
    ``head.0.*`` / ``head.1.*``) into one Linear ``head.*`` (eval-mode maths; not invertible)."""
    if "head.1.weight" not in sd:
        return dict(sd), None
    out = {k: v for k, v in sd.items() if not k.startswith("head.")}
    w, b = sd["head.1.weight"].double(), sd["head.1.bias"].double()
    if "head.0.running_mean" in sd:
        mean, var = sd["head.0.running_mean"].double(), sd["head.0.running_var"].double()
        scale = 1.0 / torch.sqrt(var + eps)
        if "head.0.weight" in sd:  # affine BatchNorm (not the official one, but foldable)
            scale = scale * sd["head.0.weight"].double()
        shift = -mean * scale + (sd["head.0.bias"].double() if "head.0.bias" in sd else 0.0)
        w, b = w * scale[None, :], b + w @ shift
    dtype = sd["head.1.weight"].dtype
    out["head.weight"], out["head.bias"] = w.to(dtype), b.to(dtype)
    return out, (
        "the linear-probe head (BatchNorm1d without affine + Linear) was folded into one Linear "
        "'head' (same eval-mode outputs up to rounding; the BatchNorm statistics are not kept)"
    )

"""Small shared helpers: atomic folder writes, tensor hygiene, key bookkeeping.

Atomic *file* writes are :func:`maekit.fileio.atomic_write`, shared with the engine."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from ..fileio import temp_sibling
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


def plain_tensors(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Detached CPU tensors, contiguous, no two sharing storage (what safetensors requires)."""
    out: StateDict = {}
    seen: set[int] = set()
    for k, v in sd.items():
        t = v.detach().cpu().contiguous()
        st = t.untyped_storage()
        if t.numel() and (
            t.storage_offset() or st.nbytes() != t.numel() * t.element_size() or st.data_ptr() in seen
        ):
            t = t.clone()  # a view into a bigger or shared buffer
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def atomic_write_dir(dst: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder with ``write(tmp_dir)``, then move it to ``dst``.

    If ``dst`` already is a folder, the files written replace theirs and its other files are
    kept (moved over); the swap is renames only, so ``dst`` is never a half-written folder, and
    a failure puts the old folder back.
    """
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise ConversionError("exists and is not a folder", dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dst, "dir")
    tmp.mkdir()
    try:
        write(tmp)
        written = {p.name for p in tmp.iterdir()}
        if not dst.exists():
            os.replace(tmp, dst)
            return dst
        old = temp_sibling(dst, "old")
        os.replace(dst, old)
        try:
            for p in old.iterdir():  # keep the user's other files
                if p.name not in written:
                    os.replace(p, tmp / p.name)
            os.replace(tmp, dst)
        except BaseException:
            for p in tmp.iterdir() if tmp.exists() else ():
                if p.name not in written:
                    os.replace(p, old / p.name)
            os.replace(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


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

"""Safe and atomic file primitives shared by ``engine`` (training checkpoints) and ``convert``
(foreign formats).

Imports only torch and the standard library, so both packages can depend on it without
depending on each other (the engine must not pull in the converters, which import the models).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

# Official MAE / ConvMAE training checkpoints pickle their args as an argparse.Namespace: the one
# class besides tensors and plain containers that a weights-only load admits.
SAFE_GLOBALS = [argparse.Namespace]


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` that also admits ``argparse.Namespace``: never runs code.

    Raises whatever ``torch.load`` raises; callers turn that into their own readable error.
    """
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (not possible on every OS / filesystem)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_sibling(dst: Path, kind: str = "file") -> Path:
    """A fresh, unused name ``.{dst.name}.XXXX.{kind}.tmp`` next to ``dst`` (nothing created).

    The writer creates the file itself, so it gets the usual permissions (umask), not mkstemp's 0600.
    """
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=f".{kind}.tmp", dir=dst.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)


def atomic_write(dst: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path next to ``dst``, fsync it, then rename it over ``dst``.

    Readers see the old file or the new one, never a partial one. A failure (or an interruption,
    KeyboardInterrupt included) leaves ``dst`` as it was and removes the temporary file.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dst)
    try:
        write(tmp)
        with open(tmp, "r+b") as f:  # flush the data before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)
    return dst


def plain_tensors(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU tensors, contiguous, no two sharing storage (what safetensors requires)."""
    out: dict[str, torch.Tensor] = {}
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
        raise NotADirectoryError(f"{dst}: exists and is not a folder")
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

"""Safe and atomic file primitives shared by ``engine`` (training checkpoints) and ``convert``
(foreign formats).

Imports only torch and the standard library, so both packages can depend on it without
depending on each other (the engine must not pull in the converters, which import the models).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
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

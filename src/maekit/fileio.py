"""Safe and atomic file primitives shared by ``engine`` (training checkpoints) and ``convert``
(foreign formats).

Imports only torch and the standard library, so both packages can depend on it without
depending on each other (the engine must not pull in the converters, which import the models).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import sys
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
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
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

    Raises:
        maekit.errors.DiskFullError / RuntimeFailure: the write failed (a full disk, a file-size
            limit, a read-only folder; torch and safetensors report these without an errno): the
            message names ``dst``'s folder and its free space.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dst)
    try:
        write(tmp)
        with open(tmp, "r+b") as f:  # flush the data before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException as e:
        failure = _write_failure(dst, e, [tmp])
        tmp.unlink(missing_ok=True)
        if failure is not None:
            raise failure from e
        raise
    fsync_dir(dst.parent)
    return dst


def _write_failure(dst: Path, e: BaseException, partial: list[Path]) -> BaseException | None:
    """The one-line error for a failed write of ``dst`` (None: ``e`` is no write failure)."""
    from .errors import MaekitError, _fsize_limit, write_failure

    if isinstance(e, MaekitError) or not (isinstance(e, (OSError, RuntimeError)) or "Safetensor" in type(e).__name__):
        return None
    if isinstance(e, OSError):  # raised as it is, naming dst: the CLI's message gives its folder and free space
        if e.errno is not None and e.filename is None:
            e.filename = os.fspath(dst)
        return None
    found = re.search(r"os error (\d+)", str(e))  # safetensors keeps the errno in its message only
    if found and getattr(e, "errno", None) is None:
        e = OSError(int(found.group(1)), str(e))
    sizes = [p.stat().st_size for p in partial if p.is_file()]
    limit = _fsize_limit()
    # a write stopped at the file-size limit: say so (torch's "unexpected pos" carries no errno)
    needed = max(sizes) + 1 if sizes and limit is not None and max(sizes) >= limit else None
    return write_failure(dst, e, needed=needed)


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
    """Fill a temporary folder with ``write(tmp_dir)``, then put it at ``dst``.

    If ``dst`` already is a folder, the files written replace theirs and its other files are kept
    (hard-linked, else copied, into the new folder). The swap is one atomic exchange of the two
    folders (Linux ``renameat2(RENAME_EXCHANGE)``), so ``dst`` is always the old folder or the new
    one, even under SIGKILL. Where the exchange is not available, ``dst`` is renamed aside for a
    moment; a kill in that moment is repaired by the next call (:func:`recover_dir`).

    Raises:
        maekit.errors.DiskFullError / RuntimeFailure: as :func:`atomic_write`.
    """
    dst = Path(dst)
    recover_dir(dst)
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"{dst}: exists and is not a folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dst, "dir")
    tmp.mkdir()
    try:
        write(tmp)
        if not dst.exists():
            os.replace(tmp, dst)
            return dst
        written = {p.name for p in tmp.iterdir()}
        for p in dst.iterdir():  # keep the user's other files: links, so dst stays whole meanwhile
            if p.name not in written:
                _link_or_copy(p, tmp / p.name)
        if not _exchange(tmp, dst):
            _swap_by_renames(tmp, dst)
    except BaseException as e:
        failure = _write_failure(dst, e, [p for p in tmp.rglob("*")] if tmp.exists() else [])
        shutil.rmtree(tmp, ignore_errors=True)
        if failure is not None:
            raise failure from e
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
    return dst


def _link_or_copy(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy_file)
    else:
        link_or_copy_file(src, dst)


def link_or_copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` a hard link to the file ``src``; a copy where the filesystem has no hard links."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # a filesystem without hard links
        shutil.copy2(src, dst, follow_symlinks=False)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        fsync_dir(b.parent)
        return True
    return False


def _swap_by_renames(tmp: Path, dst: Path) -> None:
    old = temp_sibling(dst, "old")
    os.replace(dst, old)  # a kill between these two renames: recover_dir puts `old` back
    try:
        os.replace(tmp, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    os.replace(old, tmp)  # the caller removes tmp


def recover_dir(dst: str | os.PathLike) -> Path | None:
    """Put back a folder that an interrupted :func:`atomic_write_dir` left renamed aside
    (``.{name}.XXXX.old.tmp``) when ``dst`` itself is missing; returns what was restored."""
    dst = Path(dst)
    if dst.exists() or not dst.parent.is_dir():
        return None
    aside = sorted(dst.parent.glob(f".{glob.escape(dst.name)}.*.old.tmp"), key=lambda p: p.stat().st_mtime)
    if not aside:
        return None
    os.replace(aside[-1], dst)
    return aside[-1]


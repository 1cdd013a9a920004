"""Weight cache and downloads.

Files live under the cache directory ``$MAEKIT_HOME`` (default ``~/.cache/maekit``):
table entries at ``weights/<path>`` (``weights/pretrain/mae_pretrain_vit_base.pth``: the same
relative path as on the server, so a file can be placed there by hand), other URLs at
``url/<hash>/<file name>``.

A download goes to ``<file>.part`` with a tqdm progress bar; an interrupted download is
resumed with an HTTP ``Range`` request (a server that ignores it is read from the start).
The complete file is checked against the entry's ``sha256`` and/or ``md5_prefix``: a
mismatch deletes the file and raises :class:`ChecksumError`. Only then is it renamed into
place. A file already in the cache (downloaded, or placed by hand) is checked once, and a
``<file>.verified`` marker records that. A file lock serialises concurrent downloads of the
same file (several ranks of one job).

``MAEKIT_OFFLINE=1`` forbids the network: a cached file is used, a missing one raises
:class:`WeightsUnavailableError` naming the URL, the cache path and how to place the file.
The same error (with the network error) is raised when a download fails.
``MAEKIT_WEIGHTS_URL`` replaces the base URL of the table (a mirror, or a test server).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

from .table import DEFAULT_BASE_URL, WeightsEntry, entry_for_url

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")


class WeightsUnavailableError(FileNotFoundError):
    """Weights are not cached and cannot be downloaded (offline, or the network failed)."""


class ChecksumError(ValueError):
    """A downloaded or cached file does not match its published checksum (the file is deleted)."""


def cache_dir() -> Path:
    """``$MAEKIT_HOME`` or ``~/.cache/maekit``."""
    home = os.environ.get("MAEKIT_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "maekit"


def is_offline() -> bool:
    """True when ``MAEKIT_OFFLINE`` is set to 1/true/yes/on."""
    return os.environ.get("MAEKIT_OFFLINE", "").strip().lower() in _TRUE


# ---------------------------------------------------------------------------- checksums
def verify_file(path: Path, what: str, *, sha256: str | None = None, md5_prefix: str | None = None) -> bool:
    """Check a file against a full sha256 and/or an md5 prefix (``what`` names it in the message).

    Returns:
        True when a checksum was checked, False when none is known (nothing to check).

    Raises:
        ChecksumError: a mismatch (the file is deleted).
    """
    if not sha256 and not md5_prefix:
        return False
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    md5, sha = md5.hexdigest(), sha.hexdigest()
    if sha256 and sha.lower() != sha256.lower():
        path.unlink()
        raise ChecksumError(f"{what}: sha256 {sha} does not match the published {sha256}")
    if md5_prefix and not md5.lower().startswith(md5_prefix.lower()):
        path.unlink()
        raise ChecksumError(f"{what}: md5 {md5} does not start with the published prefix {md5_prefix}")
    return True


# ---------------------------------------------------------------------------- download
@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # Windows: no lock (one process per file is the user's job)
        yield
        return
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed, however the block ends
        yield


def _unavailable(url: str, dest: Path, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"{reason}: {url} is not in the cache. Download it yourself and place it at {dest} "
        f"(the cache is $MAEKIT_HOME, now {cache_dir()}), or pass the local file path instead of the name"
    )


def _request(url: str) -> urllib.request.Request:
    from .. import __version__

    return urllib.request.Request(url, headers={"User-Agent": f"maekit/{__version__}"})


def _transfer(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range when ``part`` is not empty)."""
    from tqdm.auto import tqdm

    start = part.stat().st_size if part.exists() else 0
    request = _request(url)
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing left to send: the part file is complete
            return
        raise
    with response:
        if start and response.status != 206:  # Range ignored: the body is the whole file
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        if start:
            log.info("resuming %s at byte %d", url, start)
        with open(part, "ab" if start else "wb") as f, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        ) as bar:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise OSError(f"download of {url} ended after {part.stat().st_size} of {total} bytes "
                      f"(kept {part} to resume)")


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, md5_prefix: str | None = None,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """Return ``dest``, downloading ``url`` there first unless it is already present.

    See the module docstring for resumption, checksums, locking and ``MAEKIT_OFFLINE``.

    Raises:
        WeightsUnavailableError: offline, or the transfer failed (a ``.part`` file is kept
            for the next attempt to resume).
        ChecksumError: the file does not match ``sha256`` / ``md5_prefix`` (it is deleted).
    """
    dest = Path(dest)
    marker = dest.with_name(dest.name + ".verified")
    if dest.is_file() and (marker.exists() or not (sha256 or md5_prefix)):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(dest):
        if dest.is_file():  # placed by hand, or by another process while we waited
            if not marker.exists() and verify_file(dest, str(dest), sha256=sha256, md5_prefix=md5_prefix):
                marker.write_text("ok\n")
            return dest
        if is_offline():
            raise _unavailable(url, dest, "MAEKIT_OFFLINE is set")
        part = dest.with_name(dest.name + ".part")
        try:
            _transfer(url, part, progress=progress, timeout=timeout)
        except (urllib.error.URLError, OSError) as e:
            raise _unavailable(url, dest, f"downloading failed ({e})") from e
        checked = verify_file(part, url, sha256=sha256, md5_prefix=md5_prefix)
        if not checked:
            warnings.warn(f"{url}: no published checksum; only the transfer length was checked", stacklevel=2)
        os.replace(part, dest)
        if checked:
            marker.write_text("ok\n")
    log.info("downloaded %s to %s", url, dest)
    return dest


def fetch_weights(entry: WeightsEntry, *, base: str | None = None, progress: bool = True) -> Path:
    """The local path of a table entry's file, downloaded into the cache if needed; its URL is
    ``entry.url``, else ``entry.path`` under ``base``, ``$MAEKIT_WEIGHTS_URL`` or the official base."""
    base = base or os.environ.get("MAEKIT_WEIGHTS_URL") or DEFAULT_BASE_URL
    return download(entry.url or base.rstrip("/") + "/" + entry.path, cache_dir() / "weights" / entry.path,
                    sha256=entry.sha256, md5_prefix=entry.md5_prefix, progress=progress)


def fetch_url(url: str, *, progress: bool = True) -> Path:
    """The local path of any http(s) URL, downloaded into the cache if needed (the table's
    checksum applies when the URL is one of its files)."""
    entry = entry_for_url(url)
    sums = {} if entry is None else dict(sha256=entry.sha256, md5_prefix=entry.md5_prefix)
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    dest = cache_dir() / "url" / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    return download(url, dest, progress=progress, **sums)


def read_url_bytes(url: str, *, timeout: float = 30.0) -> bytes:
    """The body of a small URL (an image), honouring ``MAEKIT_OFFLINE``; errors name the URL."""
    if is_offline():
        raise WeightsUnavailableError(f"cannot read {url}: MAEKIT_OFFLINE is set")
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as e:
        raise FileNotFoundError(f"cannot read {url}: {e}") from e


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))

"""The failures maekit expects, and the one place that turns them into messages and exit codes.

Every expected failure ends the command with a one-paragraph message on stderr, never a
traceback. Exit code 2 is a usage or configuration mistake (a bad option, value, config file or
input file: fix the command line); 1 is a failure at run time (disk full, read-only folder,
network, training diverged, data that cannot be read). ``--debug`` or ``MAEKIT_DEBUG=1`` prints
the traceback as well. Anything else is a bug and keeps its traceback.

Imports only the standard library: every package (engine, models, tasks) may raise these.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

USAGE, RUNTIME = 2, 1


class MaekitError(Exception):
    """Base of maekit's expected failures; ``exit_code`` is what the CLI returns."""

    exit_code = RUNTIME


class UsageError(MaekitError, ValueError):
    """A bad option or value on the command line (a ValueError, so older ``except ValueError`` holds)."""

    exit_code = USAGE


class ConfigError(UsageError):
    """A bad value in a config file (config.json, YAML); the message names the key."""


class RunFolderError(UsageError):
    """``--output_dir`` is in use by another live run, or holds an earlier run's checkpoints."""


class CheckpointError(MaekitError, RuntimeError):
    """A file that is not a readable training checkpoint (truncated, corrupt, foreign).

    Exit code 2: the file named on the command line (or found by ``--resume auto``) is unusable.
    """

    exit_code = USAGE


class RuntimeFailure(MaekitError, RuntimeError):
    """A failure at run time that the user can act on (the message says how)."""


class DiskFullError(RuntimeFailure):
    """A write failed for lack of space (or a file-size limit); names the folder and the free space."""


class DataError(RuntimeFailure):
    """The data gave nothing to train on (every image failed to decode, empty epoch)."""


class TrainingDiverged(RuntimeFailure):
    """Loss, gradients or parameters became NaN/inf; nothing was written after the last good save."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _existing_folder(path: str | os.PathLike) -> Path:
    p = Path(path).absolute()
    while not p.is_dir() and p != p.parent:
        p = p.parent
    return p


def write_failure(path: str | os.PathLike, cause: BaseException, needed: int | None = None) -> MaekitError:
    """The error to raise when writing ``path`` failed with ``cause``.

    ``torch.save`` reports a full disk as a bare ``RuntimeError`` (``unexpected pos`` /
    ``file write failed``), so the free space and the file-size limit are checked here.
    """
    folder = _existing_folder(Path(path).parent)
    code = getattr(cause, "errno", None)
    usage, space = _free_space(folder)
    need = f" (this file needs about {human_bytes(needed)})" if needed else ""
    limit = _fsize_limit()
    if code == errno.EROFS or isinstance(cause, PermissionError):
        return RuntimeFailure(f"cannot write {path}: {folder} is read-only or not writable by this user; "
                              "choose another --output_dir")
    if code == errno.EFBIG or (code is None and needed and limit is not None and needed > limit):
        return DiskFullError(f"cannot write {path}: larger than this process's file-size limit "
                             f"(ulimit -f: {human_bytes(limit or 0)}){need}; raise the limit")
    # torch.save loses the errno of a full disk: compare the free space with what the file needs
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) or (
            code is None and usage is not None and usage.free < (needed or 1 << 20)):
        return DiskFullError(f"no space left on device writing {path}: {folder} has {space}{need}. "
                             "Free some space (old checkpoint-N.pth files, --save_every 0 keeps only the "
                             "last) or choose another --output_dir; checkpoints already written are intact")
    return RuntimeFailure(f"writing {path} failed ({type(cause).__name__}: {first_line(cause)}); {folder} has "
                          f"{space}")


def _free_space(folder: Path) -> tuple[Any, str]:
    """(``shutil.disk_usage`` of ``folder`` or None, "N free of M" for a message)."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None, "free space unknown"
    return usage, f"{human_bytes(usage.free)} free of {human_bytes(usage.total)}"


def _fsize_limit() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message (at most 300 characters), or its type's name when empty."""
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _module_of(e: BaseException) -> set[str]:
    return {c.__module__.split(".")[0] for c in type(e).__mro__}


def _is_network(e: BaseException) -> bool:
    return bool(_module_of(e) & {"requests", "urllib3", "httpx", "httpx2", "httpcore"}) \
        or isinstance(e, (ConnectionError, TimeoutError)) \
        or type(e).__name__ in ("URLError", "gaierror", "HfHubHTTPError", "OfflineModeIsEnabled")


def _causes(e: BaseException) -> list[BaseException]:
    out, seen = [], {id(e)}
    while (e := e.__cause__ or e.__context__) is not None and id(e) not in seen:
        seen.add(id(e))
        out.append(e)
    return out


# Optional extras (pyproject.toml): a missing one is a line with the install command, not a traceback.
EXTRAS = {"webdataset": "shards", "datasets": "hf", "fastapi": "app", "uvicorn": "app", "multipart": "app",
          "python_multipart": "app", "wandb": "wandb"}


def _missing_extra(exc: ImportError) -> str | None:
    if "pip install" in str(exc):  # maekit's own message names the extra
        return first_line(exc)
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    return None if extra is None else f"this needs the {extra} extra ({top} is missing): pip install 'maekit[{extra}]'"


def describe(exc: BaseException) -> tuple[int, str] | None:
    """``(exit_code, message)`` for an expected failure, None for an unexpected one (a bug)."""
    if isinstance(exc, MaekitError):
        return exc.exit_code, str(exc).strip().split("\n\n")[0]  # the first paragraph
    if isinstance(exc, ImportError) and (missing := _missing_extra(exc)):
        return RUNTIME, missing
    if "yaml" in _module_of(exc):
        return USAGE, f"cannot read the YAML config: {' '.join(str(exc).split())}"
    if _is_network(exc):
        return RUNTIME, (f"network failure ({type(exc).__name__}: {first_line(exc)}). Check the connection, or "
                         "use a local file or folder (HF_HUB_OFFLINE=1 uses only what is cached)")
    if any(_is_network(c) for c in _causes(exc)):  # e.g. "weights unavailable" raised from a URLError
        return RUNTIME, str(exc)
    if isinstance(exc, OSError):
        return _describe_os_error(exc)
    if isinstance(exc, RuntimeError) and (worker := _killed_worker(exc)):
        return RUNTIME, worker
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return RUNTIME, (f"out of memory ({first_line(exc)}): lower --batch_size (and raise --accum_iter to "
                         "keep the effective batch), use --amp bf16, or a smaller --input_size")
    if isinstance(exc, ValueError):  # maekit raises ValueError for bad arguments throughout
        return USAGE, str(exc)
    return None


def _killed_worker(exc: RuntimeError) -> str | None:
    """PyTorch's "DataLoader worker (pid(s) N) ..." as what happened and what to do."""
    found = re.search(r"DataLoader worker \(pids? ?\(?s?\)? ?([\d, ]+)\)(.*)", str(exc))
    if found is None:
        return None
    # the signal is named by the error this one was raised from (PyTorch's SIGCHLD handler)
    signalled = [m.group(0) for c in (exc, *_causes(exc)) if (m := re.search(r"killed by signal: \w+", str(c)))]
    how = ("is " + signalled[0]) if signalled else (found.group(2).strip().rstrip(".") or "exited unexpectedly")
    oom = (" (a SIGKILL: most likely the kernel's out-of-memory killer)" if how.endswith("Killed") else
           " (a worker that vanishes was most often killed by the kernel's out-of-memory killer: see dmesg)")
    return (f"data-loading worker (pid {found.group(1).strip()}) {how}{oom}. The checkpoints already written "
            "are intact: rerun with --resume auto to continue. To use less memory: fewer --num_workers, a smaller "
            "--batch_size (raise --accum_iter to keep the effective batch) or --input_size")


def _describe_os_error(exc: OSError) -> tuple[int, str]:
    """A missing or clashing path is the user's (exit 2); permissions, a full disk, the rest: 1."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)):
        return USAGE, str(exc)
    if isinstance(exc, PermissionError):
        return RUNTIME, (f"permission denied on {exc.filename or 'a file'}: this user may not read or write it; "
                         "fix its permissions or choose another path")
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EFBIG, errno.EROFS):
        return RUNTIME, str(write_failure(exc.filename or ".", exc))
    return RUNTIME, f"{type(exc).__name__}: {exc}"


def debug_requested(argv: Sequence[str] = ()) -> bool:
    """``--debug`` on the command line or ``MAEKIT_DEBUG`` set to anything but 0/false/empty."""
    env = os.environ.get("MAEKIT_DEBUG", "").strip().lower()
    return "--debug" in argv or env not in ("", "0", "false", "no")


def handle_cli_error(command: str, exc: BaseException, argv: Sequence[str] = ()) -> int | None:
    """Print the message of an expected failure and return its exit code; None (re-raise) for a bug.

    With ``--debug`` / ``MAEKIT_DEBUG=1`` the traceback is printed before the message.
    """
    described = describe(exc)
    if described is None:
        return None
    code, message = described
    if debug_requested(argv):
        traceback.print_exception(exc)
    else:
        message += " (--debug or MAEKIT_DEBUG=1 shows the traceback)" if code == RUNTIME else ""
    print(f"maekit {command}: error: {message}", file=sys.stderr)
    return code

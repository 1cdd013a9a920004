"""Training checkpoints: atomic writes, safe loads, auto-resume look-up, RNG state (DESIGN, D.1).

A training checkpoint is a plain dict (``model``, ``optimizer``, ``scaler``, ``epoch``, ``args``,
``rng``, ...) made only of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: loading never runs pickled code.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..errors import CheckpointError, MaekitError, UsageError, first_line, write_failure
from ..fileio import atomic_write, link_or_copy_file, safe_torch_load

logger = logging.getLogger("maekit.engine")

LAST_NAME = "checkpoint-last.pth"
BEST_NAME = "checkpoint-best.pth"
# Every checkpoint file a run writes: checkpoint-{N,last,best,good}.pth and ConvMAE's checkpoint.pth
CHECKPOINT_RE = re.compile(r"checkpoint(-(\d+|last|best|good))?\.pth")


# Temporary names of fileio.temp_sibling: ".{name}.XXXXXXXX.{kind}.tmp".
_TEMP_RE = re.compile(r"\..+\.[A-Za-z0-9_]+\.(file|link)\.tmp")


def state_nbytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict: about the size ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v) for v in obj)
    return 0


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` with ``torch.save`` atomically: readers see the old file or the new one.

    Raises:
        DiskFullError: no space (or a file-size limit); the message names the folder and the free
            space. The previous file at ``path`` is left as it was.
        RuntimeFailure: any other write failure (read-only folder...).
    """
    try:
        return atomic_write(path, lambda tmp: torch.save(state, tmp))
    except MaekitError as e:  # atomic_write's own message, but with the size this file needs
        raise write_failure(path, e.__cause__ or e, needed=state_nbytes(state)) from e.__cause__
    except (OSError, RuntimeError) as e:  # torch.save reports ENOSPC as a RuntimeError
        raise write_failure(path, e, needed=state_nbytes(state)) from e


def remove_orphan_temps(output_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by saves that were killed (``.checkpoint-*.XXXX.file.tmp``).

    Call only while holding the folder's lock: a live run's save in progress uses the same names.
    Returns the removed paths.
    """
    d = Path(output_dir)
    found = [p for p in d.iterdir() if _TEMP_RE.fullmatch(p.name) and p.is_file()] if d.is_dir() else []
    for p in found:
        p.unlink(missing_ok=True)
    return found


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Publish ``src`` also as ``dst`` atomically, by hard link when possible (no second copy).

    A hard link stays valid when ``src`` is later replaced, because replacing makes a new inode.
    """
    return atomic_write(dst, lambda tmp: link_or_copy_file(src, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True`` (plus ``argparse.Namespace``).

    An ``args`` Namespace (official files) is returned as a plain dict.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, corrupt, not a torch file, holds objects other than
            plain data, or is not a dict. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = safe_torch_load(path, map_location=map_location)
    except Exception as e:  # torch raises many types here (RuntimeError, UnpicklingError, IndexError...)
        raise CheckpointError(f"cannot read checkpoint {path}: truncated, corrupt, or not a plain-data "
                              f"torch checkpoint ({type(e).__name__}: {first_line(e)})") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if isinstance(ckpt.get("args"), argparse.Namespace):
        ckpt["args"] = vars(ckpt["args"])
    return ckpt


def describe_mismatch(own: dict, weights: dict, limit: int = 4) -> str:
    """What keeps ``weights`` from loading strictly into a model whose state dict is ``own``: the
    missing, unexpected and other-shape entries, a few named and the rest counted."""
    def few(keys: list[str]) -> str:
        return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")

    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in weights and hasattr(weights[k], "shape") and tuple(weights[k].shape) != tuple(own[k].shape)]
    parts = [f"{name}: {few(keys)}" for name, keys in
             (("missing", missing), ("unexpected", unexpected), ("other shapes (file vs model)", shapes)) if keys]
    return "; ".join(parts) or "the state dicts differ"


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The file ``--resume auto`` picks in ``output_dir``, without loading it.

    ``checkpoint-last.pth``, else the highest ``checkpoint-N.pth``, else ConvMAE's rolling
    ``checkpoint.pth``, else None; a file that is not a complete ``torch.save`` archive (a save
    cut short by a full disk or a kill) is passed over, as :func:`load_newest_checkpoint` does.
    """
    return next((p for p in checkpoint_candidates(output_dir) if zipfile.is_zipfile(p)), None)


def checkpoint_candidates(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``output_dir``, newest first: last, numbered (highest first), ``checkpoint.pth``.

    ``--resume auto`` tries them in this order and takes the first that loads.
    """
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = [d / LAST_NAME] if (d / LAST_NAME).is_file() else []
    numbered = [(int(m.group(2)), p) for p in d.iterdir()
                if (m := CHECKPOINT_RE.fullmatch(p.name)) and (m.group(2) or "").isdigit() and p.is_file()]
    found += [p for _, p in sorted(numbered, reverse=True)]
    return found + ([d / "checkpoint.pth"] if (d / "checkpoint.pth").is_file() else [])


def load_newest_checkpoint(output_dir: str | os.PathLike,
                           map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint in ``output_dir`` that loads (``--resume auto``), or None if there is none.

    Files that do not load (truncated by a full disk, corrupt) are skipped with a warning that
    names them and the reason; if none loads, the first error is raised.
    """
    first: CheckpointError | None = None
    for path in checkpoint_candidates(output_dir):
        try:
            ckpt = load_checkpoint(path, map_location=map_location)
        except CheckpointError as e:
            logger.warning("--resume auto: skipping %s: %s", path.name, e)
            first = first or e
            continue
        if not isinstance(ckpt.get("model"), dict):
            logger.warning("--resume auto: skipping %s: no 'model' state dict in it", path.name)
            continue
        return path, ckpt
    if first is not None:
        raise CheckpointError(f"--resume auto: no checkpoint in {output_dir} loads; the newest failed with: {first}")
    return None


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA devices, numpy, random) as plain data."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; missing parts are left alone."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        n = min(len(state["cuda"]), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"][:n]])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(int(v) for v in s["state"].tolist()), s["gauss_next"]))


def to_plain(obj: Any) -> Any:
    """``obj`` with only types ``weights_only`` loading accepts (paths and unknown objects -> str)."""
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


class ResumeArgsError(UsageError):
    """A resume whose options differ from the checkpoint's (names the differences)."""


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def args_differences(stored: dict | None, current: dict, keys: Iterable[str] | None = None) -> dict[str, tuple]:
    """``{key: (stored, current)}`` for the ``keys`` (default: every key) present in both that differ."""
    if not isinstance(stored, dict):
        return {}
    diff, current = {}, to_plain(current)  # as a checkpoint stores it (paths as text ...)
    for key in sorted(set(stored) & set(current)) if keys is None else keys:
        if key in stored and key in current and _norm(stored[key]) != _norm(current[key]):
            if key == "input_size" and _norm(stored[key]) in ([_norm(current[key])], _norm(current[key])):
                continue
            diff[key] = (stored[key], current[key])
    return diff


def check_resume_args(stored: dict | None, current: dict, *, path: Any, ignore: bool = False,
                      keys: Iterable[str] | None = None) -> dict[str, tuple]:
    """Refuse (``ResumeArgsError``) a resume whose options ``keys`` (default: all) differ from the
    checkpoint's, unless ``ignore``. Returns the differences (logged as a warning when ignored).
    """
    diff = args_differences(stored, current, keys)
    if not diff:
        return diff
    lines = "; ".join(f"--{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
    if not ignore:
        raise ResumeArgsError(
            f"cannot resume from {path}: the run was started with other options ({lines}). Resuming would "
            "silently change the training; give the checkpoint's values, start a new --output_dir, or add "
            "--resume_ignore_args to continue with the new ones (the old configuration is kept in "
            "config-history.yaml).")
    logger.warning("resuming from %s with changed options (--resume_ignore_args): %s", path, lines)
    return diff

"""Training checkpoints: atomic writes, safe loads, auto-resume look-up, RNG state (DESIGN, D.1).

A training checkpoint is a plain dict (``model``, ``optimizer``, ``scaler``, ``epoch``, ``args``,
``rng``, ...) made only of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: loading never runs pickled code.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write, fsync_dir, safe_torch_load, temp_sibling

LAST_NAME = "checkpoint-last.pth"
BEST_NAME = "checkpoint-best.pth"


class CheckpointError(RuntimeError):
    """A file that is not a readable training checkpoint (truncated, corrupt, foreign)."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` with ``torch.save`` atomically: readers see the old file or the new one."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Publish ``src`` also as ``dst`` atomically, by hard link when possible (no second copy).

    A hard link stays valid when ``src`` is later replaced, because replacing makes a new inode.
    """
    src, dst = Path(src), Path(dst)
    tmp = temp_sibling(dst, "link")
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except OSError:  # no hard links here (another filesystem, FAT, some network mounts): copy
        tmp.unlink(missing_ok=True)
        atomic_write(dst, lambda t: shutil.copyfile(src, t))
    return dst


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
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {path}: truncated, corrupt, or not a plain-data "
                              f"torch checkpoint ({type(e).__name__}: {first})") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if isinstance(ckpt.get("args"), argparse.Namespace):
        ckpt["args"] = vars(ckpt["args"])
    return ckpt


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The file ``--resume auto`` picks in ``output_dir``.

    ``checkpoint-last.pth``, else the highest ``checkpoint-N.pth``, else ConvMAE's rolling
    ``checkpoint.pth``, else None.
    """
    d = Path(output_dir)
    if not d.is_dir():
        return None
    if (d / LAST_NAME).is_file():
        return d / LAST_NAME
    numbered = [(int(m.group(1)), p) for p in d.iterdir()
                if (m := re.fullmatch(r"checkpoint-(\d+)\.pth", p.name)) and p.is_file()]
    if numbered:
        return max(numbered)[1]
    return d / "checkpoint.pth" if (d / "checkpoint.pth").is_file() else None


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

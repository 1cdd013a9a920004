"""Progress, JSON epoch log, TensorBoard and config writers; all silent on non-zero ranks.

Named ``logs`` so that it does not shadow the standard ``logging`` module inside the package.
Messages go through ``logging.getLogger('maekit...')``; the CLI calls :func:`setup_logging` once.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml

from ..console import CurrentStreamHandler
from ..fileio import atomic_write
from .checkpoint import args_differences, to_plain
from .distributed import is_main_process

logger = logging.getLogger("maekit.engine")
_HANDLER_FLAG = "_maekit_handler"


def setup_logging(rank: int = 0, level: int = logging.INFO, stream: str = "stdout") -> None:
    """Send ``maekit.*`` log records to ``stream`` (stdout; ``"stderr"`` for commands whose stdout is
    their result) as ``[HH:MM:SS] message``; warnings only on rank != 0.

    Idempotent: a second call replaces the handler it added before.
    """
    root = logging.getLogger("maekit")
    for h in list(root.handlers):
        if getattr(h, _HANDLER_FLAG, False):
            root.removeHandler(h)
    handler = CurrentStreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    setattr(handler, _HANDLER_FLAG, True)
    root.addHandler(handler)
    root.setLevel(level if rank == 0 else logging.WARNING)
    root.propagate = False


class Progress:
    """Per-step progress of one epoch on rank 0.

    A tqdm bar (loss, lr, img/s, ETA) when stdout is a terminal; otherwise one log line every
    ``log_every`` steps and at the last step, in the reference MetricLogger layout:
    ``Epoch: [e]  [  i/N]  eta: 0:01:02  lr: 0.000123  loss: 0.1234 (0.2345)  img/s: 812.3``.
    """

    def __init__(self, total: int, *, epoch: int, start: int = 0, log_every: int = 20):
        self.total, self.epoch, self.start, self.log_every = total, epoch, start, max(int(log_every), 1)
        self.enabled = is_main_process()
        self.t0 = time.perf_counter()
        self.bar = None
        if self.enabled and sys.stdout.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=f"Epoch {epoch}", file=sys.stdout,
                            dynamic_ncols=True, leave=False)

    def update(self, step: int, *, loss: float, loss_avg: float, lr: float, images_per_sec: float) -> None:
        """Report that batch ``step`` (0-based, within the epoch) is done."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step + 1 - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", avg=f"{loss_avg:.4f}", lr=f"{lr:.2e}",
                                 img_s=f"{images_per_sec:.1f}", refresh=False)
            return
        if (step - self.start) % self.log_every == 0 or step == self.total - 1:
            done = step + 1 - self.start
            left = (time.perf_counter() - self.t0) / done * (self.total - step - 1)
            eta = datetime.timedelta(seconds=int(left))
            width = len(str(self.total))
            msg = (f"Epoch: [{self.epoch}]  [{step:>{width}}/{self.total}]  eta: {eta}  "
                   f"lr: {lr:.6f}  loss: {loss:.4f} ({loss_avg:.4f})  img/s: {images_per_sec:.1f}")
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                msg += f"  max mem: {torch.cuda.max_memory_allocated() / 2**20:.0f}"
            logger.info(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class JsonLogWriter:
    """Appends one JSON object per line to ``output_dir/log.txt`` (reference format); nothing when
    not ``enabled`` (ranks != 0)."""

    def __init__(self, output_dir: str | os.PathLike | None, *, enabled: bool = True):
        self.path = Path(output_dir) / "log.txt" if (output_dir and enabled) else None

    def write(self, stats: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(to_plain(stats)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def drop_from_epoch(self, epoch: int) -> None:
        """Remove the lines of epochs >= ``epoch`` (work a resumed run is about to redo).

        The epoch line is written before the epoch's checkpoint, so a run killed in between
        leaves a line the resumed run would otherwise repeat.
        """
        if self.path is None or not self.path.is_file():
            return
        lines = [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        keep = [ln for ln in lines if not _epoch_at_least(ln, epoch)]
        if len(keep) != len(lines):
            atomic_write(self.path, lambda tmp: tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8"))


def _epoch_at_least(line: str, epoch: int) -> bool:
    try:
        value = json.loads(line).get("epoch")
    except (ValueError, AttributeError):
        return False  # not ours: keep it
    return isinstance(value, int) and value >= epoch


def save_config(output_dir: str | os.PathLike | None, config: dict[str, Any], *,
                enabled: bool | None = None, keys: Iterable[str] | None = None) -> Path | None:
    """Write the resolved run configuration as ``config.yaml`` (rank 0). Returns the path or None.

    An earlier ``config.yaml`` that differs in ``keys`` (default: any) is first appended to
    ``config-history.yaml`` (a YAML list, oldest first, each with the time it was replaced).
    """
    if not output_dir or not (is_main_process() if enabled is None else enabled):
        return None
    path = Path(output_dir) / "config.yaml"
    if path.is_file():
        _archive_config(path, config, keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safe_dump rejects tuples and tensors (configs should hold no tensors, but do not crash): as lists
    plain = json.loads(json.dumps(to_plain(config), default=torch.Tensor.tolist))
    path.write_text(yaml.safe_dump(plain, sort_keys=False), encoding="utf-8")
    return path


def _archive_config(current: Path, new_config: dict, keys: Iterable[str] | None) -> None:
    try:
        old = yaml.safe_load(current.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        old = {"unreadable_config_yaml": current.read_text(encoding="utf-8", errors="replace")}
    if not args_differences(old, new_config, keys) and not args_differences(new_config, old, keys):
        return
    history = current.with_name("config-history.yaml")
    entries = yaml.safe_load(history.read_text(encoding="utf-8")) if history.is_file() else None
    entries = entries if isinstance(entries, list) else []
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    entries.append({"replaced_at": stamp, "config": old})
    history.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")

"""Where a run's numbers and pictures go: TensorBoard, a CSV table, Weights & Biases (rank 0 only).

``--report_to tensorboard,csv,wandb`` picks the backends; the default is TensorBoard when
``--log_dir`` is set and nothing otherwise (the reference behaviour). ``none`` turns all off.

- ``tensorboard``: events in ``log_dir`` (per-step ``train_loss`` / ``lr`` at x = epoch * 1000,
  epoch metrics, images).
- ``csv``: ``output_dir/metrics.csv``, one row per epoch, columns = every key logged so far
  (rewritten atomically each epoch; a resumed run drops the rows of the epochs it redoes).
- ``wandb``: the optional ``wandb`` package (``pip install maekit[wandb]``); the run is named
  after ``output_dir``, files go under ``output_dir/wandb``. ``WANDB_MODE=offline`` works
  without network.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RuntimeFailure, UsageError, first_line
from ..fileio import atomic_write
from .checkpoint import to_plain
from .distributed import is_main_process

logger = logging.getLogger("maekit.engine")
BACKENDS = ("tensorboard", "csv", "wandb")


def parse_report_to(report_to: str | Iterable[str] | None, *, log_dir: Any = None) -> list[str]:
    """``'tensorboard,csv'`` / a list / None -> backend names; None means TensorBoard iff ``log_dir``."""
    if not report_to:
        return ["tensorboard"] if log_dir else []
    items = report_to.replace(" ", ",").split(",") if isinstance(report_to, str) else list(report_to)
    names = [n.strip().lower() for n in items if n and n.strip()]
    if names in (["none"], ["no"]):
        return []
    if "all" in names:
        names = list(BACKENDS)
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        raise ValueError(f"--report_to: unknown logger(s) {unknown}; choose from {', '.join(BACKENDS)} "
                         "(comma-separated) or none")
    if "tensorboard" in names and not log_dir:
        raise ValueError("--report_to tensorboard needs --log_dir (the folder for the event files)")
    return list(dict.fromkeys(names))


class Reporter:
    """Scalars, epoch records and images to the chosen backends; a no-op on ranks != 0.

    ``active``, ``add_scalars``, ``add_image``, ``log_epoch``, ``flush``, ``close``; the Runner's
    one writer (TensorBoard alone when only ``log_dir`` is given).
    """

    def __init__(self, *, log_dir: str | os.PathLike | None = None, output_dir: str | os.PathLike | None = None,
                 report_to: str | Iterable[str] | None = None, config: dict | None = None,
                 enabled: bool | None = None):
        self.backends = parse_report_to(report_to, log_dir=log_dir)
        self.enabled = is_main_process() if enabled is None else enabled
        self.tb = self.wandb_run = None
        self.csv_path = Path(output_dir) / "metrics.csv" if output_dir else None
        if not self.enabled:
            return
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(log_dir))
        if "csv" in self.backends and self.csv_path is None:
            raise ValueError("--report_to csv needs --output_dir (metrics.csv is written there)")
        if "wandb" in self.backends:
            self.wandb_run = _start_wandb(output_dir, config)

    @property
    def active(self) -> bool:
        """True when per-step scalars go anywhere (TensorBoard or wandb)."""
        return self.tb is not None or self.wandb_run is not None

    def add_scalars(self, values: dict[str, float], x: int) -> None:
        """Per-step scalars at ``x`` = int(epoch_float * 1000) (the reference's ``epoch_1000x``)."""
        if self.tb is not None:
            for tag, v in values.items():
                self.tb.add_scalar(tag, v, x)
        if self.wandb_run is not None:
            self.wandb_run.log({**{f"step/{k}": v for k, v in values.items()}, "epoch_1000x": x})

    def add_image(self, tag: str, image: Any, epoch: int) -> None:
        """A PIL image or (H, W, C) uint8 array, at x = ``epoch``."""
        if not self.active:
            return
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.tb is not None:
            self.tb.add_image(tag, arr, epoch, dataformats="HWC")
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({tag: wandb.Image(arr), "epoch": epoch})

    def log_epoch(self, record: dict[str, Any]) -> None:
        """One epoch's record (the ``log.txt`` line): CSV row, wandb, and TensorBoard for monitor keys."""
        if not self.enabled:
            return
        epoch = int(record.get("epoch", 0))
        numeric = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:  # at the end of the epoch on train_loss's axis (epoch_1000x)
            for k, v in numeric.items():
                if k.startswith(("knn_", "probe_", "recon_")):
                    self.tb.add_scalar(f"monitor/{k}", v, epoch_end(epoch))
        if self.wandb_run is not None:
            self.wandb_run.log({f"epoch/{k}": v for k, v in numeric.items() if k != "epoch"} | {"epoch": epoch})
        if "csv" in self.backends:
            self._write_csv(record, epoch)

    def _write_csv(self, record: dict[str, Any], epoch: int) -> None:
        rows: list[dict[str, Any]] = []
        if self.csv_path.is_file():
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if _int(r.get("epoch")) < epoch]
        rows.append({k: v for k, v in to_plain(record).items() if not isinstance(v, (dict, list))})
        columns = list(dict.fromkeys(["epoch"] + [k for r in rows for k in r]))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.csv_path, lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"))

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def epoch_end(epoch: int) -> int:
    """The x of an epoch's end on the per-step axis ``epoch_1000x`` (so every TensorBoard scalar of
    a run shares one axis)."""
    return (int(epoch) + 1) * 1000


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return -1


def _start_wandb(output_dir: Any, config: dict | None):
    try:
        import wandb
    except ImportError as e:
        raise ValueError("--report_to wandb needs the wandb package: pip install 'maekit[wandb]' "
                         "(or pip install wandb)") from e
    folder = Path(output_dir or ".").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # Resume the same wandb run after a restart: the id is derived from the output folder.
    run_id = "maekit-" + hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    # wandb waits 90 s (+10) for a server that never answers; 30 s unless the user chose
    settings = None if os.environ.get("WANDB_INIT_TIMEOUT") else wandb.Settings(init_timeout=30)
    try:
        return wandb.init(project=os.environ.get("WANDB_PROJECT", "maekit"), name=folder.name, dir=str(folder),
                          id=run_id, resume="allow", config=to_plain(config or {}), reinit="finish_previous",
                          settings=settings)
    except wandb.errors.UsageError as e:  # no API key, above all
        raise UsageError(f"--report_to wandb: {first_line(e)} (or set WANDB_API_KEY; WANDB_MODE=offline "
                         "logs without an account, to sync later)") from e
    except wandb.errors.CommError as e:  # the server did not answer in time
        server = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        wait = os.environ.get("WANDB_INIT_TIMEOUT", "30")
        raise RuntimeFailure(f"--report_to wandb: no answer from {server} within {wait} s ({first_line(e)}); "
                             "check the connection, raise WANDB_INIT_TIMEOUT, or set WANDB_MODE=offline") from e


"""Checks before and during a run that turn silent no-ops into clear errors (used by ``Runner``).

A negative ``--clip_grad`` (training goes uphill), ``--accum_iter`` above the batches of an epoch
(the optimizer never steps), ``--epochs 0`` or a start epoch past the end (exit 0 having done
nothing) and an epoch in which every image failed to decode (loss 0) all used to "succeed".
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError, RunFolderError, UsageError
from .checkpoint import remove_orphan_temps
from .distributed import sum_over_ranks
from .lock import RunLock, check_fresh_run

logger = logging.getLogger("maekit.engine")


def check_settings(*, clip_grad: float | None, epochs: int, accum_iter: int) -> None:
    """Refuse values that would make training a silent no-op or go uphill."""
    if clip_grad is not None and not (isinstance(clip_grad, (int, float)) and math.isfinite(clip_grad)
                                      and clip_grad > 0):
        raise UsageError(f"--clip_grad must be a positive number (the largest gradient norm allowed), got "
                         f"{clip_grad!r}; leave it out to train without clipping")
    if int(epochs) < 1:
        raise UsageError(f"--epochs must be at least 1, got {epochs}: nothing would be trained")
    if int(accum_iter) < 1:
        raise UsageError(f"--accum_iter must be at least 1, got {accum_iter}")


def check_batches(loader: Iterable, accum_iter: int) -> None:
    """The optimizer must step at least once per epoch."""
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return  # an iterable without a length: nothing to check up front
    batch = getattr(loader, "batch_size", None)
    if n == 0:
        raise UsageError("the training data gives no batch at all (fewer samples than --batch_size "
                         f"{batch}?); lower --batch_size or add data")
    if accum_iter > n:
        raise UsageError(f"--accum_iter {accum_iter} is more than the {n} batches of an epoch (--batch_size "
                         f"{batch}): the optimizer would never step; lower --accum_iter to at most {n} "
                         "or --batch_size")


def check_schedule(*, start_epoch: int, epochs: int, resumed_from: Path | None) -> None:
    """A run whose start is at or past the end would exit 0 having done nothing."""
    if start_epoch < epochs:
        return
    if resumed_from is not None:
        raise UsageError(f"{resumed_from} already finished epoch {start_epoch - 1}, the last of --epochs "
                         f"{epochs}: nothing left to train; raise --epochs to train longer")
    raise UsageError(f"--start_epoch {start_epoch} is not before --epochs {epochs}: nothing would be trained")


def check_epoch_data(*, n_samples: int, skipped_files: int, epoch: int) -> None:
    """An epoch that trained on no sample at all: every image failed to decode (or none came)."""
    if n_samples > 0:
        return
    if skipped_files:
        raise DataError(f"every image of epoch {epoch} failed to decode ({skipped_files} files skipped, 0 "
                        "trained on): check the data folder (the warnings above name the files)")
    raise DataError(f"epoch {epoch} trained on no sample at all: check the data")


def take_output_dir(lock: RunLock, output_dir: str | os.PathLike | None, *, resume: Any, overwrite: bool,
                    is_main: bool) -> None:
    """Lock ``output_dir`` (rank 0), refuse to clobber an earlier run, drop orphan temporary files.

    Collective: every rank calls it and all raise together, so no rank waits for a failed one.
    """
    error: Exception | None = None
    try:
        if is_main:
            lock.acquire()
        check_fresh_run(output_dir, resume=resume, overwrite=overwrite, remove=is_main)
        if is_main and output_dir:
            for p in remove_orphan_temps(output_dir):
                logger.warning("removed %s, left by a save that was interrupted", p.name)
    except Exception as e:  # raised below, after the other ranks heard of it
        error = e
    if sum_over_ranks([float(error is not None)])[0]:
        lock.release()
        raise error if error is not None else RunFolderError(f"another rank could not use --output_dir {output_dir}")

"""``Runner``: epochs, DDP, evaluation, logs, checkpoints, resume and signals around the loop.

Files written to ``output_dir`` (rank 0): ``config.yaml`` (before step 0), ``log.txt`` (one JSON
line per epoch), ``checkpoint-last.pth`` (after every epoch and on SIGTERM/SIGINT),
``checkpoint-{epoch}.pth`` (every ``save_every`` epochs and the last one) and
``checkpoint-best.pth`` (when the eval metric improves). TensorBoard events go to ``log_dir``.

Stopping on a signal: the handler only sets a flag. The loop finishes the optimizer step in
progress (or drops an unfinished accumulation window), all ranks agree to stop at the same step,
``checkpoint-last.pth`` is written with ``epoch`` = the last complete epoch and ``step_in_epoch`` =
the number of batches of the next epoch already done, and :class:`TrainingInterrupted` is raised.
Resuming calls ``sampler.set_epoch`` with the same epoch (same shuffle) and skips those batches,
so every sample is seen exactly once per epoch. The RNG state saved is the one at the stopping
point (rewound to the window start when a window is dropped), and re-creating the DataLoader
iterator does not consume it, so model-side randomness (masks, dropout) continues exactly as in an
uninterrupted run; only augmentations drawn inside DataLoader worker processes differ (their seeds
come from the new iterator). The per-epoch sums of the interrupted part are saved
(``partial_epoch``), so the epoch's logged loss is the same as without interruption.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import TrainingDiverged, UsageError
from .checkpoint import (BEST_NAME, LAST_NAME, capture_rng_state, check_resume_args, copy_checkpoint,
                         describe_mismatch, load_checkpoint, load_newest_checkpoint, restore_rng_state,
                         save_checkpoint, to_plain)
from .distributed import DistInfo, all_gather_objects, apply_thread_policy, sum_over_ranks
from .lock import take_output_dir
from .logs import JsonLogWriter, save_config
from .loop import EpochStats, StepFn, TrainingInterrupted, check_batches, check_epoch_data, train_one_epoch
from .monitors import MonitorContext, load_monitor_states, monitor_states, run_monitors
from .nonfinite import advice, check_finite, keep_last_good
from .report import Reporter, epoch_end
from .schedule import LRSchedule, check_schedule, check_warmup
from .signals import stop_requests

logger = logging.getLogger("maekit.engine")


class Runner:
    """Drives training from ``start_epoch`` to ``epochs`` (see the module docstring for files).

    Args:
        model: the bare model (not DDP-wrapped); moved to ``device`` and wrapped here.
        optimizer: built by the task on ``model``'s parameters (groups may carry ``lr_scale``).
        train_loader: yields ``(images, targets, num_skipped)``; its ``sampler.set_epoch`` is called.
        step_fn: ``step_fn(model, batch) -> (loss, n_samples)``; receives the wrapped model and the
            batch on ``device``, and runs under autocast.
        epochs, lr, min_lr, warmup_epochs: the schedule; ``lr`` is the actual (scaled) LR.
        accum_iter: micro-batches per optimizer step.
        autocast_dtype / use_grad_scaler: from :func:`~maekit.engine.precision.resolve_amp`.
        clip_grad: max global grad norm, or None.
        save_every: numbered checkpoint when ``epoch % save_every == 0`` (and at the last epoch);
            0 means only the last epoch.
        resume: checkpoint path, ``'auto'`` (latest in output_dir; fresh start if none) or None.
        start_epoch: first epoch when not resuming.
        config: the resolved run configuration; saved as ``config.yaml`` and as ``args``.
        eval_fn: ``eval_fn(bare_model) -> {'acc1': .., 'acc5': .., 'loss': ..}``, run after every
            epoch on all ranks; logged as ``test_<key>``.
        best_metric: eval key to maximise for ``checkpoint-best.pth`` (``'acc1'`` or ``'test_acc1'``).
        extra_state: saved under ``extra`` (e.g. class names).
        dist: from :func:`~maekit.engine.distributed.init_distributed`; default single process.
        device: defaults to ``dist.device``.
        find_unused_parameters: passed to DDP (the reference pretrains with True).
        compile: wrap the (DDP) model in ``torch.compile``; checkpoints keep the plain names.
        handle_signals: catch SIGTERM/SIGINT/SIGUSR1 (main thread only); see ``engine.signals``.
        overwrite: allow a run without ``resume`` into an output_dir holding checkpoints (they and
            log.txt are deleted first); without it such a run is refused (``engine.lock``). None: the
            ``overwrite`` key of ``config`` (the task configs carry ``--overwrite`` there).
        monitors: ``monitor(model, epoch, ctx) -> dict`` after each epoch (engine.monitors).
        reporter: an engine.report.Reporter (TensorBoard / CSV / wandb); default TensorBoard on log_dir.
        resume_keys: the ``config`` keys a resume must not change (``ResumeArgsError`` names them;
            the ``resume_ignore_args`` key of ``config`` allows it); default: every key both record.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: Iterable,
                 step_fn: StepFn, epochs: int, lr: float, min_lr: float = 0.0, warmup_epochs: float = 0.0,
                 output_dir: str | os.PathLike | None = None, accum_iter: int = 1,
                 autocast_dtype: torch.dtype | None = None, use_grad_scaler: bool = False,
                 clip_grad: float | None = None, save_every: int = 1, resume: str | os.PathLike | None = None,
                 start_epoch: int = 0, log_dir: str | os.PathLike | None = None,
                 config: dict[str, Any] | None = None,
                 eval_fn: Callable[[nn.Module], dict[str, float]] | None = None, best_metric: str = "acc1",
                 extra_state: dict[str, Any] | None = None, dist: DistInfo | None = None,
                 device: str | torch.device | None = None, find_unused_parameters: bool = False,
                 compile: bool = False, log_every: int = 20, handle_signals: bool = True, overwrite: bool | None = None,
                 monitors: list | None = None, reporter: Any = None, resume_keys: Sequence[str] | None = None):
        if device is None:
            device = dist.device if dist is not None else next(model.parameters()).device
        self.device = torch.device(device)
        self.dist = dist or DistInfo(device=self.device)
        self.model_without_ddp = model.to(self.device)
        self.model = self._wrap(model, find_unused_parameters, compile)
        self.optimizer, self.train_loader, self.step_fn = optimizer, train_loader, step_fn
        self.epochs, self.accum_iter = int(epochs), max(int(accum_iter), 1)
        self.schedule = LRSchedule(base_lr=lr, min_lr=min_lr, epochs=epochs, warmup_epochs=warmup_epochs)
        self.autocast_dtype, self.clip_grad = autocast_dtype, clip_grad
        self.scaler = torch.amp.GradScaler(self.device.type) if use_grad_scaler else None
        self.output_dir = Path(output_dir) if output_dir else None
        self.save_every, self.resume, self.log_dir = int(save_every or 0), resume, log_dir
        self.config, self.eval_fn, self.extra_state = dict(config or {}), eval_fn, dict(extra_state or {})
        self.best_metric = best_metric if best_metric.startswith("test_") else f"test_{best_metric}"
        self.best_value: float | None = None
        self.start_epoch, self.start_step = int(start_epoch), 0
        self.partial: EpochStats | None = None
        self.log_every, self.handle_signals = log_every, handle_signals
        self.n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.stop_signal: int | None = None
        self._resumed = False
        _check_settings(clip_grad=clip_grad, epochs=epochs, accum_iter=accum_iter)
        self.overwrite = bool(self.config.get("overwrite")) if overwrite is None else bool(overwrite)
        self.resumed_from: Path | None = None
        self.monitors, self.reporter = list(monitors or []), reporter
        self.resume_keys = resume_keys

    def _wrap(self, model: nn.Module, find_unused: bool, compile: bool) -> nn.Module:
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)
        return torch.compile(model) if compile else model

    @property
    def is_main(self) -> bool:
        return self.dist.rank == 0

    # ------------------------------------------------------------------ fit
    def fit(self) -> dict[str, Any]:
        """Train; returns the last epoch's log dict.

        Holds ``output_dir/.maekit.lock`` while running (``engine.lock``).

        Raises:
            TrainingInterrupted: after saving, on SIGTERM / SIGINT / SIGUSR1.
            TrainingDiverged: NaN/inf loss (NonFiniteLossError), parameters or clipped gradients
                (NonFiniteParametersError); nothing is written for the failed epoch, and the
                message says what to try.
            UsageError / RunFolderError / DataError: settings, data or run folder that would make
                the run a silent no-op (``engine.schedule``, ``engine.loop``, ``engine.lock``).
        """
        self.lock = take_output_dir(self.output_dir, resume=self.resume, overwrite=self.overwrite,
                                    is_main=self.is_main)
        try:
            return self._fit()
        except TrainingDiverged as e:
            tip = advice(self.output_dir if self.is_main else None, amp_dtype=self.autocast_dtype,
                         clip_grad=self.clip_grad, use_scaler=self.scaler is not None)
            e.args = (f"{e.args[0] if e.args else e}. To try: {tip}",)
            raise
        finally:
            self.lock.release()

    def _fit(self) -> dict[str, Any]:
        self.stop_signal = None
        self.load_resume()
        if self.resume == "auto" and self.resumed_from is not None and self.start_epoch >= self.epochs:
            # a requeued job whose run had finished (perhaps signalled during its last save): done
            logger.warning("the run in %s is complete (%s finished epoch %d of --epochs %d): nothing to do; "
                           "raise --epochs to train longer", self.output_dir, self.resumed_from.name,
                           self.start_epoch - 1, self.epochs)
            return {}
        check_schedule(start_epoch=self.start_epoch, epochs=self.epochs, resumed_from=self.resumed_from)
        check_batches(self.train_loader, self.accum_iter)
        caller_threads = torch.get_num_threads()  # restored after the run: a library call leaves it as it was
        threads = apply_thread_policy(self.model_without_ddp, self.train_loader, self.device)
        if threads is not None:
            logger.info("CPU threads: %d (MAEKIT_NUM_THREADS or OMP_NUM_THREADS to choose)", threads)
        self._announce()
        save_config(self.output_dir, self.config, enabled=self.is_main, keys=self.resume_keys)
        json_log = JsonLogWriter(self.output_dir, enabled=self.is_main)
        # Lines of epochs this run is about to (re)do: a resumed run's repeated epoch, or an earlier
        # run's log left in a folder without checkpoints (a new run must not append to it).
        json_log.drop_from_epoch(self.start_epoch)
        tb = self.reporter if self.reporter is not None else Reporter(log_dir=self.log_dir, enabled=self.is_main)
        t0, last = time.time(), {}
        try:
            with stop_requests(self._on_signal, enabled=self.handle_signals):
                for epoch in range(self.start_epoch, self.epochs):
                    last = self._run_epoch(epoch, json_log, tb)
        finally:
            tb.close()
            torch.set_num_threads(caller_threads)
        logger.info("Training time %s", datetime.timedelta(seconds=int(time.time() - t0)))
        return last

    def _announce(self) -> None:
        logger.info("actual lr: %.2e", self.schedule.base_lr)
        logger.info("accumulate grad iterations: %d", self.accum_iter)
        batch = getattr(self.train_loader, "batch_size", None)
        if batch:
            logger.info("effective batch size: %d", batch * self.accum_iter * self.dist.world_size)
        logger.info("Start training for %d epochs (from epoch %d)", self.epochs, self.start_epoch)
        check_warmup(warmup_epochs=self.schedule.warmup_epochs, epochs=self.epochs)

    def _run_epoch(self, epoch: int, json_log: JsonLogWriter, tb: Reporter) -> dict[str, Any]:
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        first = epoch == self.start_epoch
        stats = train_one_epoch(
            self.model, self.train_loader, self.optimizer, self.step_fn, epoch=epoch, schedule=self.schedule,
            device=self.device, accum_iter=self.accum_iter, autocast_dtype=self.autocast_dtype,
            scaler=self.scaler, clip_grad=self.clip_grad, start_step=self.start_step if first else 0,
            stats=self.partial if first else None, should_stop=lambda: self.stop_signal is not None,
            tb=tb if tb.active else None, log_every=self.log_every)
        # A stop requested during the epoch's last batch: save before evaluation and monitors (they
        # may be long, and their DataLoader workers may have died of the same group signal). The
        # checkpoint says "all batches done"; the resumed run evaluates, logs and saves the epoch.
        late_stop = (self.eval_fn is not None or self.monitors) and not stats.interrupted \
            and self._stop_agreed()
        if stats.interrupted or late_stop:
            path = self.save(epoch - 1, step_in_epoch=stats.next_step, partial=stats)
            raise TrainingInterrupted(self.stop_signal or signal.SIGTERM, path)
        check_epoch_data(n_samples=stats.n_samples, skipped_files=stats.skipped_files, epoch=epoch)
        log = self._epoch_log(epoch, stats, tb)
        improved = self._update_best(log)
        json_log.write(log)  # before the checkpoint: a kill in between is undone by drop_from_epoch on resume
        tb.log_epoch(log)
        keep_last_good(self.output_dir, log, enabled=self.is_main)  # a loss rising 10x: keep the last good one
        self.save(epoch, numbered=self._numbered(epoch), best=improved)
        tb.add_scalars({f"perf/{k}": v for k, v in log.items() if k.startswith("test_")}, epoch_end(epoch))
        tb.flush()
        self._stop_after_save(epoch)
        return log

    def _stop_agreed(self) -> bool:
        """Whether a stop was requested on any rank. Collective: every rank must call it."""
        return sum_over_ranks([float(self.stop_signal is not None)])[0] > 0

    def _stop_after_save(self, epoch: int) -> None:
        """A signal that arrived during eval / saving: every rank must agree, or one would hang. After
        the last epoch's save the run is complete: it ends as finished (exit 0), not interrupted."""
        if not self._stop_agreed():
            return
        signum = self.stop_signal or signal.SIGTERM
        if epoch + 1 < self.epochs:
            raise TrainingInterrupted(signum, self._last_path())
        logger.warning("%s arrived after the last epoch was saved: the run is complete",
                       signal.Signals(signum).name)

    def _epoch_log(self, epoch: int, stats: EpochStats, tb: Reporter) -> dict[str, Any]:
        logger.info("Epoch: [%d] Total time: %s  Averaged stats: lr: %.6f  loss: %.4f  img/s: %.1f  skipped: %d",
                    epoch, datetime.timedelta(seconds=int(stats.elapsed)), stats.lr, stats.loss,
                    stats.images_per_sec, stats.skipped_files)
        log: dict[str, Any] = {"train_lr": stats.lr, "train_loss": stats.loss,
                               "train_images_per_sec": stats.images_per_sec, "skipped_files": stats.skipped_files,
                               "train_seconds": stats.elapsed}
        if self.eval_fn is not None:
            metrics = self.eval_fn(self.model_without_ddp)
            log.update({(k if k.startswith("test_") else f"test_{k}"): v for k, v in metrics.items()})
        log.update(epoch=epoch, n_parameters=self.n_parameters)
        run_monitors(self.monitors, self.model_without_ddp, epoch, MonitorContext(
            self.output_dir, self.dist, tb, self.epochs, self.device, self.autocast_dtype, log))
        return log

    def _update_best(self, log: dict[str, Any]) -> bool:
        value = log.get(self.best_metric)
        if value is None:
            return False
        improved = self.best_value is None or value > self.best_value
        if improved:
            self.best_value = float(value)
        logger.info("Max %s: %.2f", self.best_metric, self.best_value)
        return improved

    def _numbered(self, epoch: int) -> bool:
        return epoch + 1 == self.epochs or (self.save_every > 0 and epoch % self.save_every == 0)

    # ------------------------------------------------------------ checkpoints
    def checkpoint_state(self, epoch: int, step_in_epoch: int = 0, partial: EpochStats | None = None) -> dict:
        """The checkpoint dict. Collective: every rank must call it (RNG states are gathered)."""
        rng = all_gather_objects(capture_rng_state())
        return {
            "model": self.model_without_ddp.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": int(epoch),
            "step_in_epoch": int(step_in_epoch),
            "partial_epoch": partial.state_dict() if partial is not None else None,
            "args": to_plain(self.config),
            "rng": rng,
            "world_size": self.dist.world_size,
            "schedule": {"lr": self.schedule.base_lr, "min_lr": self.schedule.min_lr, "epochs": self.epochs,
                         "warmup_epochs": self.schedule.warmup_epochs, "accum_iter": self.accum_iter},
            "best": {"name": self.best_metric, "value": self.best_value},
            "extra": to_plain(self.extra_state),
            "monitors": monitor_states(self.monitors),
        }

    def _last_path(self) -> Path | None:
        return self.output_dir / LAST_NAME if self.output_dir else None

    def save(self, epoch: int, *, step_in_epoch: int = 0, partial: EpochStats | None = None,
             numbered: bool = False, best: bool = False) -> Path | None:
        """Write ``checkpoint-last.pth`` (+ numbered / best copies) on rank 0. Collective.

        Raises:
            NonFiniteParametersError: the weights hold NaN/inf; nothing is written.
        """
        # every rank holds the same weights: all raise together
        check_finite(self.model_without_ddp, when=f"at epoch {epoch}", then=": not saving them")
        state = self.checkpoint_state(epoch, step_in_epoch, partial)
        if not self.is_main or self.output_dir is None:
            return self._last_path()
        last = save_checkpoint(self.output_dir / LAST_NAME, state)
        if numbered:
            copy_checkpoint(last, self.output_dir / f"checkpoint-{epoch}.pth")
        if best:
            copy_checkpoint(last, self.output_dir / BEST_NAME)
        return last

    def load_resume(self) -> None:
        """Apply ``resume``: model (strict), then optimizer, scaler, epoch, RNG and best metric if present."""
        if not self.resume or self._resumed:
            return
        self._resumed = True  # idempotent: a task may call this before fit() to learn start_epoch
        found = self._resume_source()
        if found is None:
            return
        path, ckpt = found
        weights = ckpt.get("model")  # load_checkpoint returns dicts only
        if not isinstance(weights, dict):
            raise ValueError(f"{path}: not a training checkpoint (no 'model' state dict to resume from); "
                             "to start from pretrained weights use --finetune (classifiers) instead of --resume")
        # a checkpoint saved from a DDP-wrapped model: drop the wrapper's prefix
        if weights and all(k.startswith("module.") for k in weights):
            weights = {k[len("module."):]: v for k, v in weights.items()}
        check_resume_args(ckpt.get("args"), self.config, path=path, ignore=bool(self.config.get("resume_ignore_args")),
                          keys=self.resume_keys)
        try:
            self.model_without_ddp.load_state_dict(weights)
        except RuntimeError:  # strict: another architecture or size
            raise ValueError(f"{path} does not fit this model (resume loads strictly): "
                             f"{describe_mismatch(self.model_without_ddp.state_dict(), weights)}. --resume continues a "
                             f"run of this same model; to start from other weights use --init (pretraining) or "
                             f"--finetune (classifiers), which adapt them") from None
        logger.info("Resume checkpoint %s", path)
        self.resumed_from = path
        if "optimizer" in ckpt and "epoch" in ckpt:
            self._resume_training_state(ckpt)
            logger.info("With optim & sched! (epoch %d, batch %d)", self.start_epoch, self.start_step)

    def _resume_source(self) -> tuple[Path, dict] | None:
        """(path, checkpoint) that ``resume`` names: ``'auto'`` (the newest in output_dir that loads,
        None when there is none), a run folder (its newest), or a checkpoint file."""
        auto = str(self.resume) == "auto"
        folder = self.output_dir if auto else Path(self.resume)
        if auto and folder is None:
            raise ValueError("resume='auto' needs an output_dir to look in")
        if not auto and not folder.is_dir():
            return folder, load_checkpoint(folder)
        found = load_newest_checkpoint(folder)  # skips files that do not load, saying why
        if found is None and auto:
            logger.info("No checkpoint in %s: starting from scratch", folder)
        elif found is None:
            raise FileNotFoundError(f"--resume {folder}: a folder without training checkpoints (checkpoint-*.pth); "
                                    "--resume continues a run. To start from a model folder's weights use --init "
                                    "(pretraining) or --finetune (classifiers)")
        return found

    def _resume_training_state(self, ckpt: dict) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        same_world = ckpt.get("world_size", self.dist.world_size) == self.dist.world_size
        self.start_step = int(ckpt.get("step_in_epoch") or 0)
        if self.start_step and not same_world:
            logger.warning("checkpoint was saved mid-epoch with another world size: redoing epoch %d",
                           self.start_epoch)
            self.start_step = 0
        partial = ckpt.get("partial_epoch")
        self.partial = EpochStats.from_state_dict(partial) if (partial and self.start_step) else None
        best = ckpt.get("best") or {}
        if best.get("name") == self.best_metric and best.get("value") is not None:
            self.best_value = float(best["value"])
        self._restore_rng(ckpt.get("rng"))
        load_monitor_states(self.monitors, ckpt.get("monitors"))

    def _restore_rng(self, rng: Any) -> None:
        if isinstance(rng, list) and len(rng) == self.dist.world_size:
            restore_rng_state(rng[self.dist.rank])
        elif rng is not None:
            logger.warning("RNG state saved for %d rank(s), this run has %d; keeping this run's seeds",
                           len(rng) if isinstance(rng, list) else 1, self.dist.world_size)

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum: int) -> None:
        """Handler body (``engine.signals``): record the request; a second Ctrl+C stops at once."""
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl+C: stop now, without saving
        self.stop_signal = signum
        logger.warning("Received %s: finishing the current step, then saving %s",
                       signal.Signals(signum).name, LAST_NAME)


def _check_settings(*, clip_grad: float | None, epochs: int, accum_iter: int) -> None:
    """Refuse values that would make training a silent no-op or go uphill."""
    if clip_grad is not None and not (isinstance(clip_grad, (int, float)) and math.isfinite(clip_grad)
                                      and clip_grad > 0):
        raise UsageError(f"--clip_grad must be a positive number (the largest gradient norm allowed), got "
                         f"{clip_grad!r}; leave it out to train without clipping")
    if int(epochs) < 1:
        raise UsageError(f"--epochs must be at least 1, got {epochs}: nothing would be trained")
    if int(accum_iter) < 1:
        raise UsageError(f"--accum_iter must be at least 1, got {accum_iter}")

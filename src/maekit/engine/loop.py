"""The one training loop, ``train_one_epoch`` (docs/REFERENCE_RECIPES.md C.1); ``runner.Runner`` drives the epochs.

The loop knows nothing about MAE: a task hands it ``step_fn(model, batch) -> (loss, n_samples)``,
where ``batch = (images, targets, num_skipped)`` is already on the device and ``loss`` is a 0-d
tensor (the mean over the batch). Differences from the reference engine, all deliberate:

- DDP ``no_sync()`` on the non-final micro-steps of an accumulation window (the reference
  all-reduces on every micro-step; the summed gradients are the same).
- bf16 / fp16 / fp32 autocast (``engine.precision``); a GradScaler only for fp16.
- Ranks agree every micro-step, through two tiny CPU (gloo) all-reduces, on "some batch is empty",
  "stop requested" and "loss non-finite", so they never diverge: a non-finite loss raises
  :class:`NonFiniteLossError` on every rank (the reference calls ``sys.exit(1)`` on one rank), and
  an all-bad batch (0 images) on any rank is skipped by all ranks.
- Train loss is weighted by ``n_samples`` and summed over ranks; skipped files are counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from torch.nn.utils import clip_grad_norm_
from torch.utils.data import DataLoader, IterableDataset

from ..errors import DataError, TrainingDiverged, UsageError
from .checkpoint import capture_rng_state, restore_rng_state
from .distributed import is_dist, sum_over_ranks
from .logs import Progress
from .metrics import autocast_context
from .nonfinite import check_finite
from .schedule import adjust_learning_rate

StepFn = Callable[[nn.Module, tuple], "tuple[torch.Tensor, int]"]


class NonFiniteLossError(TrainingDiverged):
    """The loss became NaN or infinite; nothing after the last saved checkpoint was written."""

    def __init__(self, value: float, epoch: int, step: int):
        self.value, self.epoch, self.step = value, epoch, step
        super().__init__(f"Loss is {value} at epoch {epoch}, step {step}; stopping training "
                         "(checkpoints on disk are left as they were)")


class TrainingInterrupted(Exception):
    """SIGTERM / SIGINT arrived; ``checkpoint`` (or None without output_dir) holds the saved state.

    ``exit_code`` is the shell convention 128 + signal number (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, checkpoint=None):
        self.signum, self.checkpoint, self.exit_code = signum, checkpoint, 128 + int(signum)
        super().__init__(f"training interrupted by signal {signum}; state saved to {checkpoint}")


@dataclass
class EpochStats:
    """Running sums of one epoch, already summed over ranks (identical on every rank).

    ``next_step`` is the index of the first batch not yet done; ``interrupted`` is True when the
    epoch stopped early on a signal (then ``next_step < len(loader)``).
    """

    loss_sum: float = 0.0
    n_samples: int = 0
    skipped_files: int = 0
    lr_sum: float = 0.0
    steps: int = 0
    elapsed: float = 0.0
    next_step: int = 0
    interrupted: bool = False

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.n_samples, 1)

    @property
    def lr(self) -> float:
        return self.lr_sum / max(self.steps, 1)

    @property
    def images_per_sec(self) -> float:
        return self.n_samples / self.elapsed if self.elapsed > 0 else 0.0

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> EpochStats:
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls) if f.name in state})


def iterate_from(loader: Iterable, start: int) -> Iterable:
    """Iterate ``loader`` from batch ``start`` on, without loading the batches before it.

    For a map-style ``DataLoader`` (bare, or inside a ``maekit.data.DeviceLoader``) the batch
    sampler is replayed (indices only, cheap) and a new loader with the same settings runs the
    rest; other iterables are sliced (their skipped
    batches are loaded and dropped).
    """
    if start <= 0:
        return loader
    # Creating a DataLoader iterator draws a seed from the global torch RNG. The RNG state restored
    # from a mid-epoch checkpoint already includes that draw, so keep it out of the model's stream.
    rng = torch.get_rng_state()
    # maekit.data.DeviceLoader wraps the DataLoader and finishes replayed raw batches itself.
    wrapper = loader if hasattr(loader, "iter_batches") and isinstance(getattr(loader, "loader", None),
                                                                       DataLoader) else None
    dl = wrapper.loader if wrapper is not None else loader
    if isinstance(dl, DataLoader) and not isinstance(dl.dataset, IterableDataset):
        rest = list(itertools.islice(iter(dl.batch_sampler), start, None))
        workers = dl.num_workers
        # maekit's loader class shuts its workers down at interpreter exit; any other: a plain DataLoader
        replay = getattr(dl, "replay_class", DataLoader)
        it = iter(replay(dl.dataset, batch_sampler=rest, num_workers=workers,
                         collate_fn=dl.collate_fn, pin_memory=dl.pin_memory, timeout=dl.timeout,
                         worker_init_fn=dl.worker_init_fn, generator=dl.generator,
                         multiprocessing_context=dl.multiprocessing_context if workers else None,
                         prefetch_factor=dl.prefetch_factor if workers else None,
                         pin_memory_device=dl.pin_memory_device))
        if wrapper is not None:
            it = wrapper.iter_batches(it)
    else:
        it = itertools.islice(iter(loader), start, None)
    torch.set_rng_state(rng)
    return it


def _to_device(batch: tuple, device: torch.device) -> tuple:
    images = batch[0].to(device, non_blocking=True)
    targets = batch[1].to(device, non_blocking=True) if isinstance(batch[1], torch.Tensor) else batch[1]
    return type(batch)(images, targets, *batch[2:]) if hasattr(batch, "_fields") else (images, targets, *batch[2:])


def _average_grads(params: list[torch.Tensor]) -> None:
    # Used only when the last micro-step of a window was skipped, so DDP never all-reduced it.
    world = torch_dist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch_dist.all_reduce(p.grad)
        p.grad.div_(world)


class _EpochRun:
    """State of one ``train_one_epoch`` call, split into small steps."""

    def __init__(self, model, optimizer, step_fn, *, epoch, schedule, device, accum_iter, autocast_dtype,
                 scaler, clip_grad, should_stop, tb, n_iters, stats):
        self.model, self.optimizer, self.step_fn = model, optimizer, step_fn
        self.epoch, self.schedule, self.device, self.accum_iter = epoch, schedule, device, accum_iter
        self.autocast_dtype, self.scaler, self.clip_grad = autocast_dtype, scaler, clip_grad
        self.should_stop, self.tb, self.n_iters, self.stats = should_stop, tb, n_iters, stats
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.ddp = is_dist() and hasattr(model, "no_sync")
        self.accumulated = False  # a backward ran since the last optimizer step
        self.lr = self.last_loss = 0.0

    def run(self, loader: Iterable, start: int, log_every: int) -> EpochStats:
        st = self.stats
        st.next_step, st.interrupted = start, False
        self.model.train(True)
        self.optimizer.zero_grad(set_to_none=True)
        progress = Progress(self.n_iters, epoch=self.epoch, start=start, log_every=log_every)
        t0, elapsed0 = time.perf_counter(), st.elapsed
        # Captured before the iterator exists: creating it draws a worker seed from the global RNG.
        self._mark_window_start()
        it = None
        try:
            for i in range(start, self.n_iters):
                if i % self.accum_iter == 0 and i > start:
                    self._mark_window_start()
                # The stop flag is read before the batch is fetched, never after: fetching draws the
                # augmentation randomness (num_workers 0), and after a group SIGTERM the workers
                # may be gone. Inside a window the unfinished window is dropped (RNG, sums rewound).
                if sum_over_ranks([float(self.should_stop())])[0]:
                    self._rewind(i - i % self.accum_iter)
                    break
                if it is None:
                    it = iter(iterate_from(loader, start))
                try:
                    batch = next(it)
                except StopIteration:
                    break
                except Exception:
                    if not self.should_stop():
                        raise
                    # A stop request arrived during the fetch and took the DataLoader workers with
                    # it (a signal to the whole process group): stop as if it came before the fetch.
                    self._rewind(i - i % self.accum_iter)
                    break
                self._micro_step(i, batch)
                st.elapsed = elapsed0 + time.perf_counter() - t0
                progress.update(i, loss=self.last_loss, loss_avg=st.loss, lr=self.lr,
                                images_per_sec=st.images_per_sec)
        finally:
            progress.close()
        # Gradients of trailing micro-batches (len % accum_iter) are discarded, as in the reference.
        self.optimizer.zero_grad(set_to_none=True)
        return st

    def _mark_window_start(self) -> None:
        self.window_start_stats = dataclasses.replace(self.stats)
        self.window_start_rng = capture_rng_state()

    def _micro_step(self, i: int, batch: tuple) -> None:
        """One micro-batch (its window's start was marked and the stop flag read before the fetch)."""
        acc, st = self.accum_iter, self.stats
        if i % acc == 0:
            adjust_learning_rate(self.optimizer, self.schedule(i / self.n_iters + self.epoch))
            self.lr = max(g["lr"] for g in self.optimizer.param_groups)
        update = (i + 1) % acc == 0
        # Agree before the forward: DDP's forward itself may run collectives, so either every rank
        # runs it or none does.
        any_empty, skipped = sum_over_ranks([float(len(batch[0]) == 0), float(batch[2])])
        st.skipped_files += int(skipped)
        st.lr_sum, st.steps = st.lr_sum + self.lr, st.steps + 1
        if not any_empty:
            self._forward_backward(i, batch, sync=update)
        if update:
            self._optimizer_step(i, last_skipped=bool(any_empty))
            if self.tb is not None:
                x = int((i / self.n_iters + self.epoch) * 1000)
                self.tb.add_scalars({"train_loss": self.last_loss, "lr": self.lr}, x)
        st.next_step = i + 1

    def _forward_backward(self, i: int, batch: tuple, sync: bool) -> None:
        # Non-final micro-steps run under DDP's no_sync (forward included: DDP decides at forward
        # time); the final one all-reduces the summed gradients of the window.
        ctx = self.model.no_sync() if (self.ddp and not sync) else contextlib.nullcontext()
        with ctx:
            with autocast_context(self.device, self.autocast_dtype):
                loss, n = self.step_fn(self.model, _to_device(batch, self.device))
            loss_value, n = float(loss.detach()), int(n)
            nonfinite, loss_sum, n_sum = sum_over_ranks([float(not math.isfinite(loss_value)), loss_value * n,
                                                         float(n)])
            if nonfinite:
                raise NonFiniteLossError(loss_value if not math.isfinite(loss_value) else math.nan, self.epoch, i)
            loss = loss / self.accum_iter
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self.accumulated = True
        self.stats.loss_sum += loss_sum
        self.stats.n_samples += int(n_sum)
        self.last_loss = loss_sum / max(n_sum, 1.0)

    def _rewind(self, window_start: int) -> None:
        restore_rng_state(self.window_start_rng)
        elapsed = self.stats.elapsed
        vars(self.stats).update(vars(self.window_start_stats))
        self.stats.elapsed, self.stats.next_step, self.stats.interrupted = elapsed, window_start, True

    def _optimizer_step(self, i: int, last_skipped: bool) -> None:
        if not self.accumulated:  # every micro-batch of the window was empty
            return
        if last_skipped and self.ddp:
            _average_grads(self.params)
        grad_norm = None
        if self.scaler is not None:
            if self.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                clip_grad_norm_(self.params, self.clip_grad)  # inf grads: the scaler skips the step
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.clip_grad is not None:
                grad_norm = clip_grad_norm_(self.params, self.clip_grad)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.accumulated = False
        # Parameters are identical on every rank after a DDP step, so every rank reaches the same
        # verdict without a collective. One fused reduction and one sync per optimizer step.
        check_finite(self.model, self.params, grad_norm=grad_norm,
                     when=f"after the optimizer step at epoch {self.epoch}, step {i}",
                     then=" although the loss was finite; stopping without saving")


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    step_fn: StepFn,
    *,
    epoch: int,
    schedule: Callable[[float], float],
    device: torch.device | str,
    accum_iter: int = 1,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad: float | None = None,
    start_step: int = 0,
    stats: EpochStats | None = None,
    should_stop: Callable[[], bool] | None = None,
    tb: Any = None,  # engine.report.Reporter (add_scalars, active)
    log_every: int = 20,
) -> EpochStats:
    """Train one epoch with the reference semantics (docs/REFERENCE_RECIPES.md C.1).

    The LR is set at every micro-step ``i`` with ``i % accum_iter == 0`` to
    ``schedule(epoch + i / len(loader))`` (times each group's ``lr_scale``); the loss is divided by
    ``accum_iter`` and the optimizer steps when ``(i + 1) % accum_iter == 0``.

    Args:
        model: the (possibly DDP-wrapped) model handed to ``step_fn``.
        loader: yields ``(images, targets, num_skipped)``; must have ``len``.
        schedule: ``epoch_float -> lr``, e.g. :class:`~maekit.engine.schedule.LRSchedule`.
        start_step: first batch to run (resuming inside an epoch; earlier batches are skipped).
        stats: sums carried over from the interrupted part of this epoch.
        should_stop: polled before every micro-batch; once True on any rank, all ranks stop at the
            same batch: at a window start they stop before it, on a window's last batch they finish
            the optimizer step first, elsewhere they drop the unfinished window (RNG and sums rewound
            to its start). ``stats.next_step`` is then where to resume; ``stats.interrupted`` is set.
        tb: TensorBoard writer for per-step ``train_loss`` / ``lr``.

    Raises:
        NonFiniteLossError: the loss (before division by accum_iter) is NaN/inf on some rank.
    """
    run = _EpochRun(model, optimizer, step_fn, epoch=epoch, schedule=schedule, device=torch.device(device),
                    accum_iter=max(int(accum_iter), 1), autocast_dtype=autocast_dtype, scaler=scaler,
                    clip_grad=clip_grad, should_stop=should_stop or (lambda: False), tb=tb,
                    n_iters=len(loader), stats=stats if stats is not None else EpochStats())
    return run.run(loader, start_step, log_every)


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


def check_epoch_data(*, n_samples: int, skipped_files: int, epoch: int) -> None:
    """An epoch that trained on no sample at all: every image failed to decode (or none came)."""
    if n_samples > 0:
        return
    if skipped_files:
        raise DataError(f"every image of epoch {epoch} failed to decode ({skipped_files} files skipped, 0 "
                        "trained on): check the data folder (the warnings above name the files)")
    raise DataError(f"epoch {epoch} trained on no sample at all: check the data")

"""Cheap checks that the weights are still numbers, and what to tell the user when they are not.

A finite loss does not prove finite weights: the last optimizer step of an epoch can overflow
them, and a checkpoint of NaN weights makes ``--resume auto`` fail at once. So after every
optimizer step (at the accumulation boundary) and before every save, the parameters are checked
with one fused reduction (``torch._foreach_norm``: NaN and inf propagate into the norms) and a
single host sync. The gradients are
checked through the norm ``clip_grad_norm_`` already returns (no extra work).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import TrainingDiverged
from .checkpoint import LAST_NAME, checkpoint_candidates, copy_checkpoint

logger = logging.getLogger("maekit.engine")
GOOD_NAME = "checkpoint-good.pth"
RISE = 10.0  # an epoch loss this many times the lowest before it: diverging, not noise


class NonFiniteParametersError(TrainingDiverged):
    """Parameters (or, when clipping, gradients) became NaN/inf; nothing was saved after that."""


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when no tensor holds a NaN or inf: one fused L2-norm launch per group, one sync.

    A finite tensor whose norm overflows (values beyond ~1e19 in fp32) also reads as not finite:
    weights that large have diverged as surely as NaN ones (:func:`nonfinite_names` tells which).
    """
    ts = [t.detach() for t in tensors if t is not None and t.numel() > 0]
    if not ts:
        return True
    try:
        norms = torch._foreach_norm(ts)
    except (RuntimeError, TypeError, NotImplementedError):  # a dtype / device without the fused kernel
        norms = [torch.linalg.vector_norm(t) for t in ts]
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for n in norms:
        by_device.setdefault(n.device, []).append(n.float())
    return all(bool(torch.isfinite(torch.stack(v).sum())) for v in by_device.values())


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor]], limit: int = 3) -> str:
    """``'a (NaN/inf), b (|x| > 1e19)'`` for the first ``limit`` bad tensors (after a failed check)."""
    bad = []
    for name, t in named:
        t = t.detach()
        if not bool(torch.isfinite(t).all()):
            bad.append(f"{name} (NaN/inf)")
        elif not bool(torch.isfinite(torch.linalg.vector_norm(t.float()))):
            bad.append(f"{name} (values beyond 1e19)")
        if len(bad) == limit:
            break
    return ", ".join(bad) or "unknown tensors"


def check_finite(model: nn.Module, params: Iterable[torch.Tensor] | None = None, *, when: str, then: str,
                 grad_norm: torch.Tensor | None = None) -> None:
    """Raise :class:`NonFiniteParametersError` when ``params`` (default: ``model``'s) or ``grad_norm``
    hold NaN/inf; the message says ``when``, names the bad tensors of ``model`` (unwrapped from DDP
    and ``torch.compile``), then says ``then``."""
    grads_bad = grad_norm is not None and not bool(torch.isfinite(grad_norm))
    if not grads_bad and all_finite(model.parameters() if params is None else params):
        return
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    what = f"gradients (norm {float(grad_norm)})" if grads_bad else "parameters"
    names = nonfinite_names(model.named_parameters())
    raise NonFiniteParametersError(f"non-finite {what} {when} ({names}){then} "
                                   "(checkpoints on disk are left as they were)")


def healthy_epochs(records: list[dict[str, Any]]) -> list[int]:
    """Epochs whose ``train_loss`` was finite and at most :data:`RISE` times the lowest of the
    healthy epochs before it (the first finite one is healthy)."""
    good, lowest = [], math.inf
    for r in records:
        loss = r.get("train_loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss) and (lowest is math.inf or loss <= RISE * lowest):
            good.append(int(r.get("epoch", -1)))
            lowest = min(lowest, loss)
    return good


def keep_last_good(output_dir: str | Path | None, record: dict[str, Any], *, enabled: bool = True) -> Path | None:
    """Before ``checkpoint-last.pth`` is overwritten by the epoch of ``record``: when that epoch's
    loss rose by orders of magnitude (not in :func:`healthy_epochs`) while the checkpoint on disk is
    of a healthy epoch, keep that one as ``checkpoint-good.pth`` (a hard link), so a divergence
    never leaves only diverging weights to resume from. Returns the kept file, if any."""
    if not enabled or output_dir is None:
        return None
    out = Path(output_dir)
    last, log = out / LAST_NAME, out / "log.txt"
    if not last.is_file() or not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.startswith("{")]
    epoch = int(record.get("epoch", -1))
    healthy = healthy_epochs([r for r in records if int(r.get("epoch", -1)) <= epoch])
    if epoch in healthy or epoch - 1 not in healthy:
        return None
    copy_checkpoint(last, out / GOOD_NAME)
    logger.warning("epoch %d: train_loss %.4g rose over %gx the lowest so far: kept the checkpoint of epoch %d as "
                   "%s (resume from it if the run diverges)", epoch, record.get("train_loss"), RISE, epoch - 1,
                   GOOD_NAME)
    return out / GOOD_NAME


def advice(output_dir: str | Path | None, *, amp_dtype: torch.dtype | None, clip_grad: float | None,
           use_scaler: bool) -> str:
    """What to try after a divergence, naming the newest numbered checkpoint to resume from."""
    tips = ["lower the learning rate (--blr or --lr)"]
    if clip_grad is None:
        tips.append("clip gradients (--clip_grad 1.0)")
    if amp_dtype == torch.float16 or use_scaler:
        tips.append("use --amp bf16 instead of fp16 where the hardware has it")
    tips.append(_resume_tip(output_dir))
    return "; ".join(tips)


def _resume_tip(output_dir: str | Path | None) -> str:
    good = Path(output_dir) / GOOD_NAME if output_dir else None
    found = checkpoint_candidates(good.parent) if good else []  # last, numbered (newest first), ...
    if good and good.is_file():
        return (f"then resume from {good}, the last checkpoint whose loss was finite and not rising "
                f"(--resume {good}; checkpoint-last.pth already holds diverging weights)")
    if found and found[0].name == LAST_NAME:
        hint = f" (or --resume {found[1]})" if len(found) > 1 and found[1].name != "checkpoint.pth" else ""
        return f"then resume from the last good state with --resume auto{hint}"
    return "start again (no checkpoint was written)"

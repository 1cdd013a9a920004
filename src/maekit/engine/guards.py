"""Small-scale guards: warnings for recipes that cannot work at the size they are run at, and the
resume-arguments check. The reference recipe stays the default; these only speak up.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("maekit.engine")

# Options that change what a resumed run computes; a resume with other values is refused unless
# --resume_ignore_args (epochs may grow: extending a run is the usual reason to resume).
TRAJECTORY_KEYS = (
    "model", "input_size", "patch_size", "in_chans", "norm_pix_loss", "mask_ratio", "sparse_stages",
    "model_args", "drop_path", "global_pool", "nb_classes", "batch_size", "accum_iter", "eff_batch_size",
    "lr", "blr", "min_lr", "warmup_epochs", "weight_decay", "layer_decay", "clip_grad", "augment",
    "smoothing", "mixup", "cutmix", "mean", "std", "task",
)

# LARS: the update of a weight tensor is lr * trust * ||w|| / ||g|| * g, so each step moves it by
# at most about lr * trust_coefficient of its own norm (before momentum).
LARS_TRUST = 0.001
MIN_RELATIVE_MOVE = 1.0  # the head must be able to move by about its own norm over the run


def lars_budget(*, lr: float, steps: int, trust_coefficient: float = LARS_TRUST, momentum: float = 0.9) -> float:
    """Upper bound on the relative change of a weight tensor after ``steps`` LARS steps at ``lr``
    (momentum amplifies a constant direction by up to ``1 / (1 - momentum)``)."""
    return lr * trust_coefficient * steps / (1.0 - momentum)


def check_lars_budget(*, lr: float, blr: float | None, eff_batch_size: int, steps: int,
                      trust_coefficient: float = LARS_TRUST, momentum: float = 0.9) -> str | None:
    """Warn when LARS cannot move the linear head in the whole run; returns the message (or None).

    Sizes the bound with the peak ``lr`` (warmup and the cosine decay only shrink it). At the
    reference (lr = 0.1 * 16384 / 256 = 6.4, 90 epochs of ImageNet) the bound is ~10^4x the need.
    """
    budget = lars_budget(lr=lr, steps=steps, trust_coefficient=trust_coefficient, momentum=momentum)
    if budget >= MIN_RELATIVE_MOVE:
        return None
    need_lr = MIN_RELATIVE_MOVE * (1.0 - momentum) / (trust_coefficient * max(steps, 1))
    suggest = need_lr * 256 / max(eff_batch_size, 1)
    msg = (f"linear probe: LARS moves each weight by at most ~{trust_coefficient:g} x lr per step; with lr "
           f"{lr:.3g} (effective batch {eff_batch_size}) and {steps} steps the head can change by at most "
           f"{100 * budget:.2g}% of its norm, so accuracy will stay near chance. Use --blr {suggest:.3g} "
           f"or more (lr {need_lr:.3g}), a larger batch, or more epochs.")
    if blr is None:
        msg = msg.replace(f"Use --blr {suggest:.3g} or more (lr {need_lr:.3g})", f"Use --lr {need_lr:.3g} or more")
    logger.warning(msg)
    return msg


def check_warmup(*, warmup_epochs: float, epochs: int) -> str | None:
    """Warn when the lr never leaves warmup (``warmup_epochs >= epochs``)."""
    if epochs <= 0 or warmup_epochs < epochs:
        return None
    msg = (f"warmup_epochs ({warmup_epochs:g}) >= epochs ({epochs}): the learning rate never reaches its peak "
           f"and the cosine decay never starts; use --warmup_epochs {max(epochs // 10, 1)} or fewer for a "
           f"{epochs}-epoch run")
    logger.warning(msg)
    return msg


class ResumeArgsError(ValueError):
    """A resume whose options differ from the checkpoint's (names the differences)."""


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def args_differences(stored: dict | None, current: dict, keys=TRAJECTORY_KEYS) -> dict[str, tuple]:
    """``{key: (stored, current)}`` for the ``keys`` present in both that differ."""
    if not isinstance(stored, dict):
        return {}
    diff = {}
    for key in keys:
        if key in stored and key in current and _norm(stored[key]) != _norm(current[key]):
            if key == "input_size" and _norm(stored[key]) in ([_norm(current[key])], _norm(current[key])):
                continue
            diff[key] = (stored[key], current[key])
    return diff


def check_resume_args(stored: dict | None, current: dict, *, path: Any, ignore: bool = False) -> dict[str, tuple]:
    """Refuse (``ResumeArgsError``) a resume whose options differ from the checkpoint's, unless ``ignore``.

    Returns the differences (logged as a warning when ignored).
    """
    diff = args_differences(stored, current)
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


def archive_config(output_dir: str | os.PathLike | None, new_config: dict, *, enabled: bool = True) -> Path | None:
    """Before ``config.yaml`` is overwritten with a different configuration, append the old one to
    ``config-history.yaml`` (a YAML list, oldest first, each with the time it was replaced)."""
    if not output_dir or not enabled:
        return None
    current = Path(output_dir) / "config.yaml"
    if not current.is_file():
        return None
    try:
        old = yaml.safe_load(current.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        old = {"unreadable_config_yaml": current.read_text(encoding="utf-8", errors="replace")}
    if not args_differences(old, new_config) and not args_differences(new_config, old):
        return None
    history = current.with_name("config-history.yaml")
    entries = yaml.safe_load(history.read_text(encoding="utf-8")) if history.is_file() else None
    entries = entries if isinstance(entries, list) else []
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    entries.append({"replaced_at": stamp, "config": old})
    history.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    return history

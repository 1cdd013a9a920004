"""Optimiser parameter groups, the LR scaling rule, AdamW and LARS (docs/REFERENCE_RECIPES.md C.1 - C.4, C.6).

The group builders reproduce the references exactly, including the group ORDER, because the
order is what an optimizer ``state_dict`` is keyed by: an official checkpoint's optimizer state
only resumes into groups built the same way.
"""

from __future__ import annotations

import logging
from typing import Iterable

import torch
import torch.nn as nn

logger = logging.getLogger("maekit.engine")


def effective_batch_and_lr(
    batch_size: int, accum_iter: int, world_size: int, blr: float, lr: float | None = None
) -> tuple[int, float]:
    """The reference linear scaling rule.

    Returns:
        (eff_batch, lr) with ``eff_batch = batch_size * accum_iter * world_size`` and
        ``lr = blr * eff_batch / 256`` unless an absolute ``lr`` is given.
    """
    eff_batch = batch_size * accum_iter * world_size
    return eff_batch, (lr if lr is not None else blr * eff_batch / 256)


def param_groups_weight_decay(
    model: nn.Module, weight_decay: float, skip_list: Iterable[str] = ()
) -> list[dict]:
    """timm 0.3.2 ``add_weight_decay`` as used by the MAE pretraining script.

    Returns:
        ``[{'params': no_decay, 'weight_decay': 0.0}, {'params': decay, 'weight_decay': wd}]``.
        No decay for 1-D params, names ending ``.bias`` and names in ``skip_list``; decay for the
        rest, including ``cls_token`` / ``mask_token``. Frozen params are left out.
    """
    skip = set(skip_list)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 or name.endswith(".bias") or name in skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Layer index of every parameter for layer decay, from the model's timm ``group_matcher``.

    maekit models group as the references do (docs/REFERENCE_RECIPES.md C.3 for ViT, C.6 for
    ConvViT): the stem (``cls_token``, ``pos_embed``, ``patch_embed*``; ConvViT also stages 1-2)
    -> 0, attention block ``k`` -> k + 1, everything else (``norm``, ``fc_norm``, ``head``) -> the
    last id.

    Returns:
        ({parameter name: id}, num_layers) where num_layers is the last id (``len(blocks) + 1``).
    """
    from timm.models import group_parameters

    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        raise ValueError(f"{type(model).__name__} has no group_matcher(), so layer-wise lr decay cannot tell "
                         "its layers; use a maekit or timm model")
    ids = {name: int(i) for name, i in group_parameters(model, matcher(coarse=False), reverse=True).items()}
    return ids, max(ids.values())


def param_groups_layer_decay(model: nn.Module, *, weight_decay: float, layer_decay: float,
                             num_layers: int | None = None,
                             no_weight_decay: Iterable[str] = ()) -> list[dict]:
    """MAE ``param_groups_lrd`` (BEiT-style layer-wise LR decay).

    Args:
        num_layers: ``len(blocks) + 1`` for ViT, ``len(blocks3) + 1`` for ConvViT; taken from
            the model (:func:`layer_ids`) and, when given, checked against it.
        no_weight_decay: names without decay besides the 1-D params (reference:
            ``model.no_weight_decay()`` = {pos_embed, cls_token}).

    Returns:
        Groups in first-seen order of their names ``layer_{id}_{decay|no_decay}``, each
        ``{'lr_scale': layer_decay ** (num_layers - id), 'weight_decay': wd or 0, 'params': [...]}``.
        (The names are not stored in the groups, as in the reference; see
        :func:`layer_decay_group_names`.)
    """
    return list(_layer_decay_groups(model, weight_decay=weight_decay, layer_decay=layer_decay,
                                    num_layers=num_layers, no_weight_decay=no_weight_decay).values())


def layer_decay_group_names(model: nn.Module, **kwargs) -> dict[str, list[str]]:
    """``{'layer_{id}_{decay|no_decay}': [param names]}`` for :func:`param_groups_layer_decay` (same
    keyword arguments)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {k: [name_of[id(p)] for p in g["params"]] for k, g in _layer_decay_groups(model, **kwargs).items()}


def _layer_decay_groups(model: nn.Module, *, weight_decay: float, layer_decay: float,
                        num_layers: int | None = None,
                        no_weight_decay: Iterable[str] = ()) -> dict[str, dict]:
    ids, last = layer_ids(model)
    if num_layers is not None and num_layers != last:
        raise ValueError(f"num_layers={num_layers} but the model's group_matcher gives {last} layers")
    skip = set(no_weight_decay)
    scales = [layer_decay ** (last - i) for i in range(last + 1)]
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind, wd = ("no_decay", 0.0) if p.ndim == 1 or name in skip else ("decay", weight_decay)
        group = {"lr_scale": scales[ids[name]], "weight_decay": wd, "params": []}
        groups.setdefault(f"layer_{ids[name]}_{kind}", group)["params"].append(p)
    return groups


def build_adamw(
    param_groups: Iterable, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` as in the references: pretrain betas (0.9, 0.95), fine-tune (0.9, 0.999).

    Weight decay comes from the groups; groups without the key get 0 (not torch's 0.01 default).
    ``fused`` (default: on) uses torch's single-kernel AdamW: the same update to float rounding,
    and on a 2-core CPU 7x faster than the default multi-tensor one for MAE-B's 112M parameters
    (0.07 s instead of 0.5 s a step, a quarter of a bf16 training step; benchmarks/RESULTS.md).
    Parameters may move to another device after construction (the fused kernel runs on CPU
    and CUDA).
    """
    groups = list(param_groups)
    if fused is None:
        params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=0.0, fused=bool(fused))


class LARS(torch.optim.Optimizer):
    """LARS of MoCo v3 / MAE ``util/lars.py`` (linear probing).

    For each param with a gradient g: if ``p.ndim > 1``: ``g += wd * p`` then
    ``g *= trust_coefficient * ||p|| / ||g||`` when both norms are > 0 (1-D params: no decay, no
    trust ratio). Then ``mu = momentum * mu + g`` and ``p -= lr * mu``. State key ``mu``.

    ``timm.optim.Lars`` is not the same: it adapts 1-D params too, adds an eps, uses dampening
    and stores ``momentum_buffer``, so official LARS optimizer states would not resume into it.
    """

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                        trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    p_norm, d_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(p_norm)
                    q = torch.where(p_norm > 0.0,
                                    torch.where(d_norm > 0, g["trust_coefficient"] * p_norm / d_norm, one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


# LARS: the update of a weight tensor is lr * trust * ||w|| / ||g|| * g, so each step moves it by
# at most about lr * trust_coefficient of its own norm (before momentum).
LARS_TRUST = 0.001
MIN_RELATIVE_MOVE = 1.0  # the head must be able to move by about its own norm over the run


def check_lars_budget(*, lr: float, blr: float | None, eff_batch_size: int, steps: int,
                      trust_coefficient: float = LARS_TRUST, momentum: float = 0.9) -> str | None:
    """Warn when LARS cannot move the linear head in the whole run; returns the message (or None).

    Sizes the bound with the peak ``lr`` (warmup and the cosine decay only shrink it). At the
    reference (lr = 0.1 * 16384 / 256 = 6.4, 90 epochs of ImageNet) the bound is ~10^4x the need.
    """
    # the most a weight tensor can change, relative to its norm, in ``steps`` steps at ``lr`` (momentum
    # amplifies a constant direction by up to 1 / (1 - momentum))
    budget = lr * trust_coefficient * steps / (1.0 - momentum)
    if budget >= MIN_RELATIVE_MOVE:
        return None
    need_lr = MIN_RELATIVE_MOVE * (1.0 - momentum) / (trust_coefficient * max(steps, 1))
    suggest = need_lr * 256 / max(eff_batch_size, 1)
    use = f"--lr {need_lr:.3g} or more" if blr is None else f"--blr {suggest:.3g} or more (lr {need_lr:.3g})"
    msg = (f"linear probe: LARS moves each weight by at most ~{trust_coefficient:g} x lr per step; with lr "
           f"{lr:.3g} (effective batch {eff_batch_size}) and {steps} steps the head can change by at most "
           f"{100 * budget:.2g}% of its norm, so accuracy will stay near chance. Use {use}, a larger batch, "
           "or more epochs.")
    logger.warning(msg)
    return msg

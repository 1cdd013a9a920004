"""``maekit pretrain --init SOURCE``: continue pretraining from the weights of any source (issue 13 item 5).

``SOURCE`` is anything :func:`maekit.hub.resolve` reads: official ``_full`` / encoder-only files,
PASSL, MindFormers, transformers ViTMAE / ViT folders, maekit folders and training checkpoints,
registered ``name.tag`` weights, URLs. The model is the source's (its pretraining model when the
source is a classifier; the shape flags apply as in :mod:`maekit.tasks.arch_from_source`), its
encoder and decoder are loaded when the source has them, and a report says what was initialised
and what was not. Unlike ``--resume``, nothing of a training state comes along: the optimizer,
the lr schedule and the epoch count start fresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .arch_from_source import apply_source_arch, arch_of, read_source

log = logging.getLogger("maekit.tasks")

_CLASSIFIER_KEYS = ("head.", "fc_norm.")  # a classifier's own parts: no place in a pretraining model


@dataclass
class InitReport:
    """What ``--init`` did to each tensor of the model (state-dict keys)."""

    source: str
    model_name: str
    loaded: list[str] = field(default_factory=list)  # set from the source
    random: list[str] = field(default_factory=list)  # left at their random initialisation
    rebuilt: list[str] = field(default_factory=list)  # fixed sin-cos tables built for this model's grid
    ignored: list[str] = field(default_factory=list)  # source tensors with no place in the model

    def lines(self) -> list[str]:
        """The report, one line per kind (what the log shows)."""
        out = [(f"--init {self.source}: {self.model_name} initialised from it: {_groups(self.loaded)} "
                f"({len(self.loaded)} tensors)")]
        if self.random:
            why = " (the source has no decoder)" if any(k.startswith(("decoder_", "mask_token")) for k in self.random) \
                else ""
            out.append(f"--init: NOT initialised, random{why}: {_groups(self.random)} ({len(self.random)} tensors)")
        if self.rebuilt:
            out.append(f"--init: fixed sin-cos tables built for this input size, not copied: {_groups(self.rebuilt)}")
        if self.ignored:
            out.append(f"--init: source tensors not used (a classifier's parts): {_groups(self.ignored)}")
        out.append("--init: the optimizer, lr schedule and epochs start fresh (--resume continues a run's state)")
        return out


def _groups(keys: list[str]) -> str:
    """``['blocks.0.x', 'blocks.1.y', 'norm.weight']`` -> ``'blocks (2), norm'``: modules, blocks counted."""
    seen: dict[str, set[str]] = {}
    for key in keys:
        parts = key.split(".")
        seen.setdefault(parts[0], set()).add(parts[1] if len(parts) > 2 and parts[1].isdigit() else "")
    return ", ".join(f"{name} ({len(ids)})" if ids != {""} else name for name, ids in seen.items()) or "nothing"


def load_init_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> InitReport:
    """Load ``state_dict`` (official names, fitted by :mod:`maekit.convert`) into pretraining model
    ``model``: the encoder must fit; a missing decoder, or the final norm of a global-pool
    classifier, stays random; a classifier's head / fc_norm are left out. Returns the report."""
    from ..weights import load_pretraining_weights

    own = model.state_dict()
    sd = {k: v for k, v in state_dict.items() if not k.startswith(_CLASSIFIER_KEYS)}
    report = InitReport(source, model.model_name, ignored=sorted(set(state_dict) - set(sd)))
    for key in [k for k in own if k.startswith("norm.") and k not in sd and report.ignored]:
        sd[key] = own[key]  # a global-pool classifier has fc_norm instead: keep the model's own norm
        report.random.append(key)
    decoder = load_pretraining_weights(model, sd, label=source, allow_missing_decoder=True)
    report.random += decoder
    for key in own:
        if key in report.random:
            continue
        if key in sd and sd[key].shape == own[key].shape:
            report.loaded.append(key)
        elif key.endswith("pos_embed"):  # fixed tables of another grid are skipped by the loader
            report.rebuilt.append(key)
        else:
            report.random.append(key)
    return report


def init_pretrain_model(cfg: Any, build: Callable[[Any], nn.Module]) -> tuple[nn.Module, Any, InitReport]:
    """The pretraining model of ``cfg.init`` with its weights: ``(model, cfg with the architecture
    filled in, report)``. ``build(cfg)`` builds the model a config describes (``pretrain_model``)."""
    from ..hub import resolve

    source = cfg.init
    resolved = read_source(lambda s: resolve(s, weights=True), source, "--init")  # read once: config and weights
    arch = arch_of(resolved.config, pretraining=True)
    recorded_npl = arch.model_args.pop("norm_pix_loss", None)
    arch.model_args.pop("sparse_stages", None)  # an execution choice, not part of the weights
    cfg = apply_source_arch(cfg, arch, source=source, flag="--init")
    if recorded_npl is not None and bool(recorded_npl) != cfg.norm_pix_loss:
        if cfg.norm_pix_loss:  # explicitly asked: the loss target is the run's choice
            log.info("--norm_pix_loss: the run uses normalised pixel targets; %s was trained without", source)
        else:
            cfg = cfg.replace(norm_pix_loss=True)
            log.info("--norm_pix_loss from --init (%s): the source was trained with normalised pixel targets",
                     source)
    model = build(cfg)
    report = load_init_weights(model, dict(resolved.state_dict or {}), source=resolved.label)
    for line in report.lines():
        log.info("%s", line)
    return model, cfg, report


__all__ = ["InitReport", "init_pretrain_model", "load_init_weights"]

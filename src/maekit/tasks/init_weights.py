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
from typing import Any

from torch import nn

from .arch_from_source import apply_source_arch, arch_of, read_source

log = logging.getLogger("maekit.tasks")


def init_pretrain_model(cfg: Any, build: Callable[[Any], nn.Module]) -> tuple[nn.Module, Any, Any]:
    """The pretraining model of ``cfg.init`` with its weights: ``(model, cfg with the architecture
    filled in, report)`` (the loader's :class:`maekit.hub.load.LoadReport`). ``build(cfg)`` builds
    the model a config describes (``pretrain_model``)."""
    from ..hub.load import load_weights_into, resolve

    source = cfg.init
    # read once: config and weights (the run's model_args give what the weights cannot show: num_heads ...)
    resolved = read_source(lambda s: resolve(s, weights=True, stated=cfg.model_args), source, "--init")
    arch = arch_of(resolved.config, pretraining=True)
    recorded_npl = arch["norm_pix_loss"]
    cfg = apply_source_arch(cfg, arch, source=source, flag="--init")
    if recorded_npl is not None and bool(recorded_npl) != cfg.norm_pix_loss:
        if cfg.norm_pix_loss:  # explicitly asked: the loss target is the run's choice
            log.info("--norm_pix_loss: the run uses normalised pixel targets; %s was trained without", source)
        else:
            cfg = cfg.replace(norm_pix_loss=True)
            log.info("--norm_pix_loss from --init (%s): the source was trained with normalised pixel targets",
                     source)
    model = build(cfg)
    report = read_source(lambda sd: load_weights_into(model, sd, label=resolved.label, for_training=True),
                         dict(resolved.state_dict or {}), "--init")
    for line in report.lines("--init"):
        log.info("%s", line)
    log.info("--init: the optimizer, lr schedule and epochs start fresh (--resume continues a run's state)")
    return model, cfg, report


__all__ = ["init_pretrain_model"]

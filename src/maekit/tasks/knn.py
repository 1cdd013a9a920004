"""``maekit knn``: weighted k-NN accuracy of any model's frozen features on labelled images.

The same evaluation as the pretraining monitor (``--knn_data_path``; :mod:`maekit.engine.knn`):
bank = the train split, queries = the val split (or every 10th image held out when there is no
val split), unmasked pooled features, cosine similarity, ``--knn_k`` neighbours weighted by
``exp(similarity / --knn_temperature)`` (defaults: :class:`~maekit.tasks.config.KnnConfig`). The model is
anything :func:`maekit.load_model` reads: registered name, model folder, training checkpoint,
official / PASSL / MindFormers / timm / HF file, URL. Under torchrun the images are sharded.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn

from ..data import resolve_mean_std
from ..engine.distributed import DistInfo
from ..engine.knn import knn_accuracy
from ..engine.monitors import LabelledFeatures, MonitorContext
from .common import RunContext, image_size, start_run, write_json
from .config import KnnConfig
from .monitoring import knn_datasets

log = logging.getLogger("maekit.tasks")


def knn_evaluate(model: nn.Module, cfg: KnnConfig, ctx: RunContext | None = None) -> dict[str, Any]:
    """k-NN of ``model`` on ``cfg.data_path`` with the k-NN, data and loader options of ``cfg``, on
    ``ctx``'s device, precision and ranks (default: this process's CPU): ``{'knn_top1', 'knn_top5',
    'bank_images', 'query_images', ...}``."""
    ctx = ctx or RunContext(DistInfo(device=torch.device("cpu")), None, False)
    in_chans, data_path, k, temperature = int(model.in_chans), cfg.data_path, cfg.knn_k, cfg.knn_temperature
    mean, std = resolve_mean_std(in_chans, cfg.mean, cfg.std)
    bank, queries = knn_datasets(data_path, img_size=model.img_size, in_chans=in_chans, mean=mean, std=std,
                                 train_split=cfg.train_split, val_split=cfg.val_split, flag="--data_path")
    feats = LabelledFeatures(bank, queries, bank_per_class=cfg.knn_bank_per_class or None,
                             max_queries=cfg.knn_max_queries or None, batch_size=cfg.batch_size,
                             num_workers=cfg.num_workers)
    log.info("k-NN (k=%d, T=%g) of %s on %s: %s", k, temperature, _name(model), data_path, feats.describe())
    monitor = MonitorContext(None, ctx.dist, None, device=ctx.device, autocast_dtype=ctx.autocast_dtype)
    bank_f, bank_y, query_f, query_y = feats.get(model.to(ctx.device), 0, monitor)
    acc = knn_accuracy(bank_f, bank_y, query_f, query_y, num_classes=feats.num_classes, k=k,
                       temperature=temperature)
    return {"model": _name(model), "data_path": str(data_path), "knn_top1": acc["top1"], "knn_top5": acc["top5"],
            "k": k, "temperature": temperature, "bank_images": len(bank_y), "query_images": len(query_y),
            "num_classes": feats.num_classes, "feature_dim": int(bank_f.shape[1])}


def _name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_name", None) or getattr(model, "model_name", type(model).__name__))


def run_knn(cfg: KnnConfig) -> int:
    """``maekit knn`` from a :class:`~maekit.tasks.config.KnnConfig`: prints the result, writes
    ``output_dir/knn.json`` (rank 0)."""
    from ..hub import load_model

    ctx = start_run(device=cfg.device, seed=0, amp=cfg.amp)
    overrides = {"img_size": image_size(cfg.input_size)} if cfg.input_size else {}
    t0 = time.time()
    model = load_model(cfg.model, download=not cfg.no_download, **overrides)
    h, w = model.img_size
    log.info("knn: %s from %s (input %dx%d, patch %s%s)", model.model_name, cfg.model, h, w, model.patch_size,
             ", --input_size given" if overrides else ", as the source records")
    result = knn_evaluate(model, cfg, ctx)
    result.update(source=str(cfg.model), seconds=round(time.time() - t0, 1))
    if ctx.dist.rank == 0:
        print(f"k-NN (k={cfg.knn_k}, T={cfg.knn_temperature:g}) of {cfg.model} on {cfg.data_path}: "
              f"top-1 {result['knn_top1']:.2f}%  top-5 {result['knn_top5']:.2f}%  "
              f"({result['bank_images']} bank / {result['query_images']} query images)")
    if path := write_json(cfg.output_dir, "knn.json", result, rank=ctx.dist.rank):
        print(f"wrote {path}")
    return 0

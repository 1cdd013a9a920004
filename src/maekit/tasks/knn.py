"""``maekit knn``: weighted k-NN accuracy of any model's frozen features on labelled images.

The same evaluation as the pretraining monitor (``--knn_data_path``; :mod:`maekit.engine.knn`):
bank = the train split, queries = the val split (or every 10th image held out when there is no
val split), unmasked pooled features, cosine similarity, ``--knn_k`` neighbours weighted by
``exp(similarity / --knn_temperature)`` (defaults: :class:`~maekit.tasks.config.KnnConfig`). The model is
anything :func:`maekit.load_model` reads: registered name, model folder, training checkpoint,
official / PASSL / MindFormers / timm / HF file, URL. Under torchrun the images are sharded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from torch import nn

from ..data import resolve_mean_std
from ..engine.knn import knn_accuracy
from ..engine.monitors import LabelledFeatures, MonitorContext
from .common import image_size, start_run
from .config import KnnConfig
from .monitoring import knn_datasets

log = logging.getLogger("maekit.tasks")


def knn_evaluate(model: nn.Module, data_path: str, *, k: int = KnnConfig.default("knn_k"),
                 temperature: float = KnnConfig.default("knn_temperature"),
                 bank_per_class: int | None = None, max_queries: int | None = None,
                 batch_size: int = KnnConfig.default("batch_size"),
                 num_workers: int = 0, mean=None, std=None, device: Any = "cpu", autocast_dtype=None,
                 dist=None, train_split=None, val_split=None) -> dict[str, Any]:
    """k-NN of ``model`` on ``data_path``: ``{'knn_top1', 'knn_top5', 'bank_images', 'query_images', ...}``."""
    from ..engine.distributed import DistInfo

    in_chans = int(model.in_chans)
    mean, std = resolve_mean_std(in_chans, mean, std)
    bank, queries = knn_datasets(data_path, img_size=model.img_size, in_chans=in_chans, mean=mean, std=std,
                                 train_split=train_split, val_split=val_split, flag="--data_path")
    feats = LabelledFeatures(bank, queries, bank_per_class=bank_per_class or None, max_queries=max_queries or None,
                             batch_size=batch_size, num_workers=num_workers)
    log.info("k-NN (k=%d, T=%g) of %s on %s: %s", k, temperature, _name(model), data_path, feats.describe())
    ctx = MonitorContext(None, dist or DistInfo(device=device), None, device=device, autocast_dtype=autocast_dtype)
    bank_f, bank_y, query_f, query_y = feats.get(model.to(device), 0, ctx)
    acc = knn_accuracy(bank_f, bank_y, query_f, query_y, num_classes=feats.num_classes, k=k, temperature=temperature)
    return {"model": _name(model), "data_path": str(data_path), "knn_top1": acc["top1"], "knn_top5": acc["top5"],
            "k": k, "temperature": temperature, "bank_images": len(bank_y), "query_images": len(query_y),
            "num_classes": feats.num_classes, "feature_dim": int(bank_f.shape[1])}


def _name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_name", None) or getattr(model, "model_name", type(model).__name__))


def run_knn(cfg: Any) -> int:
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
    result = knn_evaluate(model, cfg.data_path, k=cfg.knn_k, temperature=cfg.knn_temperature,
                          bank_per_class=cfg.knn_bank_per_class, max_queries=cfg.knn_max_queries,
                          batch_size=cfg.batch_size,
                          num_workers=cfg.num_workers, mean=cfg.mean, std=cfg.std, device=ctx.device,
                          autocast_dtype=ctx.autocast_dtype, dist=ctx.dist, train_split=cfg.train_split,
                          val_split=cfg.val_split)
    result.update(source=str(cfg.model), seconds=round(time.time() - t0, 1))
    if ctx.dist.rank == 0:
        print(f"k-NN (k={cfg.knn_k}, T={cfg.knn_temperature:g}) of {cfg.model} on {cfg.data_path}: "
              f"top-1 {result['knn_top1']:.2f}%  top-5 {result['knn_top5']:.2f}%  "
              f"({result['bank_images']} bank / {result['query_images']} query images)")
        if cfg.output_dir:
            os.makedirs(cfg.output_dir, exist_ok=True)
            path = os.path.join(cfg.output_dir, "knn.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
            print(f"wrote {path}")
    return 0

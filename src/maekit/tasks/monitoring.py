"""Monitors of a pretraining run (wired by ``maekit pretrain``): k-NN accuracy, an online linear
probe, reconstructions of fixed images and the loss / k-NN curves, every few epochs.

The generic monitors live in :mod:`maekit.engine.monitors`; the MAE-specific ones (reconstruction
grids) and the data wiring (which images, which transform) are here. Building them draws nothing
from the training RNG streams (state saved and restored), so a run with monitors trains exactly
like one without.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..data import build_eval_transform, resolve_dataset
from ..engine.checkpoint import capture_rng_state, restore_rng_state
from ..engine.knn import dataset_targets, frozen_eval
from ..engine.monitors import KnnMonitor, LabelledFeatures, MonitorContext, OnlineProbe, is_due
from ..viz import panels_grid, plot_curves, read_log, reconstruct
from .common import task_dataset
from .config import DemoConfig, MaskOptions, PretrainConfig

log = logging.getLogger("maekit.tasks")
RECON_IMAGES = 8


# What a short run's reconstructions look like (issue 21 item 11), from the runs the docs show:
# docs/tutorials/pretrain.md (6 epochs on 500 digits: still noise) and docs/get-started.md (the demo).
SHORT_RUN_NOTE = (
    "reconstructions of a short run look like noise, then blur: an MAE fills in removed patches slowly. "
    "In the runs the docs show, mae_vit_tiny_patch16 on builtin:digits still draws noise after 6 epochs "
    "on 500 images, and maekit demo reaches blurred but recognisable digits after %d epochs on 1437 "
    "images (reconstruction loss 0.453); the paper's ImageNet runs train 800 to 1600 epochs")


def reconstruction_grid(model: nn.Module, images: torch.Tensor, noise: torch.Tensor, options: MaskOptions, *,
                        mean: Sequence[float], std: Sequence[float]) -> tuple[Any, float]:
    """(PIL grid of original | masked | reconstruction | reconstruction + visible, enlarged for
    viewing when small; mean loss over the removed patches) of ``images`` (N, C, H, W) masked by
    ``noise`` (N, L) and ``options`` (:meth:`~maekit.tasks.config.MaskOptions.masking`)."""
    with frozen_eval(model):
        panels = reconstruct(model, images, noise=noise.to(images.device), **options.masking())
    grid = panels_grid(panels, mean=mean, std=std)
    if grid.width < 512:  # small images (digits): enlarge for viewing, nearest neighbour
        scale = max(512 // grid.width, 1)
        grid = grid.resize((grid.width * scale, grid.height * scale), resample=0)
    return grid, float(panels.loss.mean())


class ReconstructionMonitor:
    """Four-panel grid (original | masked | reconstruction | reconstruction + visible) of fixed
    images with a fixed mask, every ``every`` epochs: ``output_dir/reconstructions/epoch_XXXX.png``
    and the image ``reconstructions`` in TensorBoard / wandb (rank 0 only). Logs ``recon_loss``
    (loss over the removed patches of these images). ``options``: the run's masking."""

    name = "reconstructions"

    def __init__(self, images: torch.Tensor, *, every: int, options: MaskOptions, mean: Sequence[float],
                 std: Sequence[float], num_patches: int, seed: int = 0):
        self.images, self.every, self.options, self.mean, self.std = images, every, options, mean, std
        self.noise = torch.rand(images.shape[0], num_patches, generator=torch.Generator().manual_seed(seed))

    def __call__(self, model: nn.Module, epoch: int, ctx: MonitorContext) -> dict[str, float]:
        if not ctx.is_main or not is_due(epoch, self.every, ctx.epochs):
            return {}
        grid, loss = reconstruction_grid(model, self.images.to(ctx.device), self.noise, self.options,
                                         mean=self.mean, std=self.std)
        if ctx.output_dir:
            folder = Path(ctx.output_dir) / "reconstructions"
            folder.mkdir(parents=True, exist_ok=True)
            grid.save(folder / f"epoch_{epoch:04d}.png")
        if hasattr(ctx.reporter, "add_image"):
            ctx.reporter.add_image("reconstructions", grid, epoch)
        return {"recon_loss": loss}


class CurvesMonitor:
    """Refreshes ``loss_curve.png`` (and ``knn_curve.png`` once k-NN numbers exist) in output_dir
    each epoch, from ``log.txt`` plus this epoch's record. Run it last."""

    name = "curves"

    def __call__(self, model: nn.Module, epoch: int, ctx: MonitorContext) -> dict[str, float]:
        if not ctx.is_main or not ctx.output_dir:
            return {}
        out = Path(ctx.output_dir)
        path = out / "log.txt"
        records = [r for r in (read_log(path) if path.is_file() else []) if r.get("epoch", -1) < epoch]
        records.append({**ctx.log, "epoch": epoch})
        plot_curves(records, out / "loss_curve.png", title="pretraining loss")
        if any("knn_top1" in r for r in records):
            plot_curves(records, out / "knn_curve.png", keys=("knn_top1", "knn_top5"), title="k-NN accuracy (%)")
        return {}


def knn_datasets(data_path: str, *, img_size, in_chans: int, mean, std, train_split=None,
                 val_split=None, flag: str = "--knn_data_path") -> tuple[Dataset, Dataset]:
    """(bank, queries) of a labelled source: its train and val splits; without a val split, every
    10th image of each class of the train split is held out as a query."""
    tf = build_eval_transform(img_size, in_chans=in_chans, mean=mean, std=std)
    root = Path(str(data_path))
    if train_split is None and root.is_dir() and not (root / "train").is_dir():
        train_split = "."  # a plain folder of class folders (relative to data_path: not joined twice)
    splits = {"train_split": train_split, "val_split": val_split}
    try:
        bank = _indexable(resolve_dataset(data_path, "train", labelled=True, transform=tf, in_chans=in_chans,
                                          **splits))
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"{flag} {data_path}: needs labelled images (class folders, an ImageNet-style "
                         f"root with train/ and val/, or builtin:digits): {e}") from e
    try:
        queries = _indexable(resolve_dataset(data_path, "val", labelled=True, transform=tf, in_chans=in_chans,
                                             **splits))
    except FileNotFoundError:
        targets, counts, held, kept = dataset_targets(bank), {}, [], []
        for i, t in enumerate(targets):
            counts[t] = counts.get(t, 0) + 1
            (held if counts[t] % 10 == 0 else kept).append(i)
        if not held:
            raise ValueError(f"{flag} {data_path}: no val/ split and too few images to hold out queries")
        log.info("k-NN: %s has no val split; holding out %d of %d images as queries", data_path, len(held),
                 len(targets))
        return Subset(bank, kept), Subset(bank, held)
    bank_classes, query_classes = getattr(bank, "classes", None), getattr(queries, "classes", None)
    if bank_classes is not None and query_classes is not None and list(bank_classes) != list(query_classes):
        raise ValueError(f"{flag} {data_path}: the train and val splits have different classes "
                         f"({list(bank_classes)[:8]} vs {list(query_classes)[:8]}); k-NN would score them as the same")
    return bank, queries


def _indexable(dataset: Dataset) -> Dataset:
    """Labelled tar shards read into memory once (a k-NN set is indexed per class; a stream is not)."""
    return dataset.in_memory() if hasattr(dataset, "in_memory") else dataset


def fixed_images(cfg: Any, train_dataset: Any = None, *, img_size, in_chans: int, mean, std,
                 n: int = RECON_IMAGES) -> torch.Tensor:
    """(n, C, H, W) normalised: the first validation images of ``cfg.data_path``, else its first
    training images, else those of ``train_dataset`` (any dataset object: the Trainer's)."""
    tf = build_eval_transform(img_size, in_chans=in_chans, mean=mean, std=std, crop_pct=1.0)
    source: Any = None
    for split, given in (("val", None), ("train", None), ("train", train_dataset)):
        try:
            source = task_dataset(cfg, split, given, transform=tf, in_chans=in_chans, img_size=img_size,
                                  labelled=False)
            break
        except (FileNotFoundError, ValueError, TypeError):
            continue
    images = [it[0] for it in _first_items(source, n * 2) if it is not None][:n]
    if not images:
        raise ValueError(f"no decodable image in {cfg.data_path} for the reconstruction monitor")
    return torch.stack(images)


def _first_items(source: Any, n: int) -> list:
    if source is None:
        return []
    try:
        return [source[i] for i in range(min(len(source), n))]
    except (TypeError, NotImplementedError):  # iterable-only sources (tar shards, streams)
        return list(itertools.islice(iter(source), n))


def build_pretrain_monitors(cfg: PretrainConfig, model: nn.Module, *, mean, std,
                            train_dataset: Any = None) -> list:
    """Monitors from the pretrain options (``knn_data_path``, ``knn_every``, ``knn_k``,
    ``knn_temperature``, ``knn_bank_per_class``, ``knn_max_queries``, ``online_probe``,
    ``recon_every``, the masking, ``seed``, and ``batch_size`` / ``num_workers`` for the feature
    passes, capped at 256 / 4). ``train_dataset``: the run's dataset object, if any (the
    reconstructions' images when ``data_path`` has none). A run shorter than the demo's logs
    what its reconstructions will look like (:data:`SHORT_RUN_NOTE`)."""
    rng = capture_rng_state()  # dataset transforms / inits below must not move the training streams
    try:
        monitors: list = []
        img_size, in_chans = model.img_size, model.in_chans
        if cfg.knn_data_path:
            bank, queries = knn_datasets(cfg.knn_data_path, img_size=img_size, in_chans=in_chans, mean=mean, std=std)
            feats = LabelledFeatures(bank, queries, bank_per_class=cfg.knn_bank_per_class,
                                     max_queries=cfg.knn_max_queries, batch_size=min(cfg.batch_size, 256),
                                     num_workers=min(cfg.num_workers, 4))
            monitors.append(KnnMonitor(feats, every=cfg.knn_every, k=cfg.knn_k, temperature=cfg.knn_temperature))
            if cfg.online_probe:
                monitors.append(OnlineProbe(feats, every=cfg.knn_every, seed=cfg.seed))
        elif cfg.online_probe:
            raise ValueError("--online_probe trains on labelled images: give them with --knn_data_path")
        if cfg.recon_every:
            images = fixed_images(cfg, train_dataset, img_size=img_size, in_chans=in_chans, mean=mean,
                                  std=std)
            monitors.append(ReconstructionMonitor(images, every=cfg.recon_every, options=cfg, mean=mean,
                                                  std=std, num_patches=model.num_patches, seed=cfg.seed))
            if cfg.epochs < DemoConfig.default("epochs"):
                log.info("note: " + SHORT_RUN_NOTE, DemoConfig.default("epochs"))
        monitors.append(CurvesMonitor())
        return monitors
    finally:
        restore_rng_state(rng)

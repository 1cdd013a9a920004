"""``maekit demo``: the main job on built-in data, end to end on a CPU in a few minutes.

1. Pretrain a small MAE on ``builtin:digits`` (scikit-learn's handwritten digits, upsampled).
2. Linear-probe the frozen encoder with the reference protocol (BatchNorm + linear head, LARS),
   and, as the control, the same encoder at its initialisation (same shape, same init, no
   pretraining).
3. Write ``reconstruction.png`` (original | masked | reconstruction | reconstruction + visible),
   ``loss_curve.png``, and ``report.json`` / ``report.md`` with both probe accuracies.

Every step goes through the same task code as ``maekit pretrain`` / ``maekit linprobe``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from ..data import DIGITS_TRAIN_SIZE, resolve_mean_std
from ..models import classifier_name
from ..viz import plot_curves, read_log
from .classify import run_linprobe
from .config import DemoConfig, KnnConfig, LinprobeConfig, PretrainConfig
from .knn import knn_evaluate
from .monitoring import SHORT_RUN_NOTE, fixed_images, reconstruction_grid
from .pretrain import pretrain_model, run_pretrain

log = logging.getLogger("maekit.tasks")


def _shape(cfg: DemoConfig) -> dict:
    """The model options of every step (ConvMAE keeps its own patch sizes)."""
    convmae = cfg.model.startswith("convmae")
    return {"input_size": cfg.input_size, "patch_size": None if convmae else cfg.patch_size}


def _common(cfg: DemoConfig) -> dict:
    return {"data_path": "builtin:digits", "device": cfg.device, "num_workers": cfg.num_workers, "seed": cfg.seed,
            "amp": "none"}


def pretraining_options(cfg: DemoConfig) -> dict:
    """The demo's options that are ``maekit pretrain``'s (model, size, schedule, masking ...), by name."""
    names = {f.name for f in dataclasses.fields(PretrainConfig)} - {"output_dir"}
    return {k: v for k, v in cfg.to_dict().items() if k in names}


def pretrain_config(cfg: DemoConfig, out: Path) -> PretrainConfig:
    """The pretraining step (resumable: a second ``maekit demo`` continues where a killed one stopped)."""
    return PretrainConfig.from_dict({**pretraining_options(cfg), **_shape(cfg), **_common(cfg),
                                     "output_dir": str(out), "save_every": cfg.epochs, "resume": "auto"})


def linprobe_config(cfg: DemoConfig, checkpoint: Path | str, out: Path) -> LinprobeConfig:
    """A linear probe of ``checkpoint``'s encoder (mean-pooled, as the small model needs); ``""``: of the
    model given to :func:`run_linprobe`."""
    return LinprobeConfig(model=classifier_name(cfg.model), **_shape(cfg), finetune=str(checkpoint),
                          epochs=cfg.probe_epochs, warmup_epochs=1, batch_size=cfg.probe_batch_size, blr=cfg.probe_blr,
                          global_pool=True, output_dir=str(out), save_every=0, overwrite=True, **_common(cfg))


def save_reconstructions(cfg: PretrainConfig, model: torch.nn.Module, out_png: Path) -> float:
    """Reconstruction grid of the pretraining monitor's fixed images (the first test digits) with the
    official demo's mask seed, 2; returns their mean loss over removed patches."""
    mean, std = resolve_mean_std(model.in_chans)
    images = fixed_images(cfg, img_size=model.img_size, in_chans=model.in_chans, mean=mean, std=std)
    noise = torch.rand(len(images), model.num_patches, generator=torch.Generator().manual_seed(2))
    grid, loss = reconstruction_grid(model, images, noise, cfg, mean=mean, std=std)
    grid.save(out_png)
    return loss


def write_report(out: Path, report: dict, options: dict) -> None:
    """``report.json`` (``report`` and the pretraining ``options``) and ``report.md``."""
    (out / "report.json").write_text(json.dumps({**options, **report}, indent=2) + "\n", encoding="utf-8")
    pre, rnd = report["probe_top1_pretrained"], report["probe_top1_untrained"]
    knn_pre, knn_rnd = report["knn_top1_pretrained"], report["knn_top1_untrained"]
    shown = ", ".join(f"{k} {v}" for k, v in options.items())
    md = [
        "# maekit demo report", "",
        f"Model `{options['model']}` pretrained for {options['epochs']} epochs on `builtin:digits` "
        f"({report['train_images']} images) in {report['pretrain_seconds']:.0f} s of training (all its "
        f"epochs, also across a resume). Options: {shown}.", "",
        "| frozen encoder | linear probe top-1 (BatchNorm + linear head, LARS) | k-NN top-1 (k=20, T=0.07) |",
        "|---|---|---|",
        f"| MAE-pretrained encoder | **{pre:.2f}%** | **{knn_pre:.2f}%** |",
        f"| same encoder at initialisation (untrained) | {rnd:.2f}% | {knn_rnd:.2f}% |", "",
        "Both on the test split; the k-NN bank is the whole train split.", "",
        f"Final pretraining loss {report['final_train_loss']:.4f}; reconstruction loss on 8 test digits "
        f"{report['test_reconstruction_loss']:.4f}.", "",
        "![reconstructions](reconstruction.png)", "", "![loss](loss_curve.png)", "",
    ]
    if options["epochs"] < DemoConfig.default("epochs"):
        md.insert(-4, f"Note: {SHORT_RUN_NOTE % DemoConfig.default('epochs')}.\n")
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")


def run_demo(args: DemoConfig) -> int:
    """The whole demo (module docstring); returns the exit code."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # 1. the untrained control: the pretraining model exactly as initialised
    pcfg = pretrain_config(args, out / "pretrain")
    torch.manual_seed(args.seed)
    init = pretrain_model(pcfg)
    # 2. pretrain (--resume auto: a second `maekit demo` continues where a killed one stopped, and
    #    the Runner finds a finished pretraining complete and trains nothing)
    last = run_pretrain(pcfg)
    ckpt = out / "pretrain" / "checkpoint-last.pth"
    # 3. probes
    pre = run_linprobe(linprobe_config(args, ckpt, out / "probe_pretrained"))
    rnd = run_linprobe(linprobe_config(args, "", out / "probe_untrained"), model=init)  # its encoder, in memory
    # 4. pictures and report
    records = read_log(out / "pretrain" / "log.txt")
    # every epoch's own time from the log, so a resumed demo reports the whole pretraining
    pretrain_seconds = sum(r.get("train_seconds", 0.0) for r in records)
    plot_curves(records, out / "loss_curve.png", title=f"{args.model} on builtin:digits")
    pretrained = pretrain_model(pcfg, ckpt)
    rec_loss = save_reconstructions(pcfg, pretrained, out / "reconstruction.png")
    knn = KnnConfig(data_path="builtin:digits", num_workers=0)  # the whole train split as the bank
    knn_pre, knn_rnd = (knn_evaluate(m, knn)["knn_top1"] for m in (pretrained, init))
    report = {
        "train_images": DIGITS_TRAIN_SIZE, "pretrain_seconds": round(pretrain_seconds, 1),
        "final_train_loss": records[-1]["train_loss"] if records else last.get("train_loss"),
        "test_reconstruction_loss": rec_loss,
        "probe_top1_pretrained": pre.get("test_acc1"), "probe_top1_untrained": rnd.get("test_acc1"),
        "knn_top1_pretrained": knn_pre, "knn_top1_untrained": knn_rnd,
        "total_seconds": round(time.time() - t0, 1),
    }
    write_report(out, report, pretraining_options(args))
    print(f"\nlinear probe top-1: pretrained {report['probe_top1_pretrained']:.2f}% vs untrained "
          f"{report['probe_top1_untrained']:.2f}%\nk-NN top-1: pretrained {knn_pre:.2f}% vs untrained {knn_rnd:.2f}%"
          f"\nwrote {out}/reconstruction.png, loss_curve.png, report.json, report.md")
    return 0

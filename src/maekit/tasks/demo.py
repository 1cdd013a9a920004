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

import json
import logging
import time
from pathlib import Path

import torch

from ..data import DIGITS_TRAIN_SIZE, DigitsDataset, build_eval_transform, resolve_mean_std
from ..engine.checkpoint import load_checkpoint, save_checkpoint
from ..errors import CheckpointError
from ..hub.load import load_weights_into
from ..models import classifier_name
from ..viz import panels_grid, plot_curves, read_log, reconstruct
from .classify import run_linprobe
from .config import DemoConfig, LinprobeConfig, PretrainConfig
from .knn import knn_evaluate
from .pretrain import build_pretrain_model, run_pretrain

log = logging.getLogger("maekit.tasks")


def _shape(cfg: DemoConfig) -> dict:
    """The model options of every step (ConvMAE keeps its own patch sizes)."""
    convmae = cfg.model.startswith("convmae")
    return {"input_size": cfg.input_size, "patch_size": None if convmae else cfg.patch_size}


def _common(cfg: DemoConfig) -> dict:
    return {"data_path": "builtin:digits", "device": cfg.device, "num_workers": cfg.num_workers, "seed": cfg.seed,
            "amp": "none"}


def pretrain_config(cfg: DemoConfig, out: Path) -> PretrainConfig:
    """The pretraining step (resumable: a second ``maekit demo`` continues where a killed one stopped)."""
    return PretrainConfig(model=cfg.model, **_shape(cfg), mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss,
                          epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, blr=cfg.blr, batch_size=cfg.batch_size,
                          output_dir=str(out), save_every=cfg.epochs, resume="auto", **_common(cfg))


def linprobe_config(cfg: DemoConfig, checkpoint: Path, out: Path) -> LinprobeConfig:
    """A linear probe of ``checkpoint``'s encoder (mean-pooled, as the small model needs)."""
    return LinprobeConfig(model=classifier_name(cfg.model), **_shape(cfg), finetune=str(checkpoint),
                          epochs=cfg.probe_epochs, warmup_epochs=1, batch_size=cfg.probe_batch_size, blr=cfg.probe_blr,
                          global_pool=True, output_dir=str(out), save_every=0, overwrite=True, **_common(cfg))


def _pretraining_done(folder: Path, epochs: int) -> bool:
    """True when ``folder`` holds the last epoch's checkpoint (a finished earlier demo)."""
    last = folder / "checkpoint-last.pth"
    if not last.is_file():
        return False
    try:
        return int(load_checkpoint(last).get("epoch", -1)) >= epochs - 1
    except (OSError, ValueError, RuntimeError, CheckpointError):  # unreadable: let --resume auto fall back and say why
        return False


def _pretrained(args, checkpoint: Path) -> torch.nn.Module:
    model = build_pretrain_model(model=args.model, input_size=[args.input_size],
                                 patch_size=None if args.model.startswith("convmae") else args.patch_size,
                                 norm_pix_loss=args.norm_pix_loss)
    load_weights_into(model, checkpoint, require_decoder=True)
    return model


def save_reconstructions(args, checkpoint: Path, out_png: Path, n: int = 8) -> float:
    """Reconstruction grid of ``n`` test digits; returns their mean loss over removed patches."""
    model = _pretrained(args, checkpoint)
    mean, std = resolve_mean_std(3)
    test = DigitsDataset("test", transform=build_eval_transform(args.input_size, crop_pct=1.0), size=args.input_size)
    imgs = torch.stack([test[i][0] for i in range(n)])
    panels = reconstruct(model.eval(), imgs, mask_ratio=args.mask_ratio,
                         noise=torch.rand(n, model.num_patches, generator=torch.Generator().manual_seed(2)))
    grid = panels_grid(panels, mean=mean, std=std)
    grid = grid.resize((grid.width * 3, grid.height * 3), resample=0)  # digits are tiny; enlarge for viewing
    grid.save(out_png)
    return float(panels.loss.mean())


def write_report(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    pre, rnd = report["probe_top1_pretrained"], report["probe_top1_untrained"]
    knn_pre, knn_rnd = report["knn_top1_pretrained"], report["knn_top1_untrained"]
    md = [
        "# maekit demo report", "",
        f"Model `{report['model']}` pretrained for {report['epochs']} epochs on `builtin:digits` "
        f"({report['train_images']} images, {report['input_size']} px, mask ratio {report['mask_ratio']}) "
        f"in {report['pretrain_seconds']:.0f} s of training (all its epochs, also across a resume).", "",
        "| frozen encoder | linear probe top-1 (BatchNorm + linear head, LARS) | k-NN top-1 (k=20, T=0.07) |",
        "|---|---|---|",
        f"| MAE-pretrained encoder | **{pre:.2f}%** | **{knn_pre:.2f}%** |",
        f"| same encoder at initialisation (untrained) | {rnd:.2f}% | {knn_rnd:.2f}% |", "",
        "Both on the test split; the k-NN bank is the whole train split.", "",
        f"Final pretraining loss {report['final_train_loss']:.4f}; reconstruction loss on 8 test digits "
        f"{report['test_reconstruction_loss']:.4f}.", "",
        "![reconstructions](reconstruction.png)", "", "![loss](loss_curve.png)", "",
    ]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")


def run_demo(args: DemoConfig) -> int:
    """The whole demo (module docstring); returns the exit code."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # 1. the untrained control: the pretraining model exactly as initialised
    torch.manual_seed(args.seed)
    init = build_pretrain_model(model=args.model, input_size=[args.input_size],
                                patch_size=None if args.model.startswith("convmae") else args.patch_size)
    # with its identity, as every maekit checkpoint: the probe reads its architecture, nothing assumed
    save_checkpoint(out / "untrained.pth", {"model": init.state_dict(), "extra": {
        "model_name": init.model_name, "model_args": dict(init.model_args)}})
    # 2. pretrain (resumable: a second `maekit demo` continues where a killed one stopped, and
    #    skips a finished pretraining: the Runner refuses a run with no epoch left to train)
    done = _pretraining_done(out / "pretrain", args.epochs)
    last = {} if done else run_pretrain(pretrain_config(args, out / "pretrain"))
    ckpt = out / "pretrain" / "checkpoint-last.pth"
    # 3. probes
    pre = run_linprobe(linprobe_config(args, ckpt, out / "probe_pretrained"))
    rnd = run_linprobe(linprobe_config(args, out / "untrained.pth", out / "probe_untrained"))
    # 4. pictures and report
    records = read_log(out / "pretrain" / "log.txt")
    # every epoch's own time from the log, so a resumed demo reports the whole pretraining
    pretrain_seconds = sum(r.get("train_seconds", 0.0) for r in records)
    plot_curves(records, out / "loss_curve.png", title=f"{args.model} on builtin:digits")
    rec_loss = save_reconstructions(args, ckpt, out / "reconstruction.png")
    knn_pre, knn_rnd = (knn_evaluate(m, "builtin:digits", device="cpu")["knn_top1"]
                        for m in (_pretrained(args, ckpt), init))
    report = {
        "model": args.model, "epochs": args.epochs, "input_size": args.input_size, "mask_ratio": args.mask_ratio,
        "train_images": DIGITS_TRAIN_SIZE, "pretrain_seconds": round(pretrain_seconds, 1),
        "final_train_loss": records[-1]["train_loss"] if records else last.get("train_loss"),
        "test_reconstruction_loss": rec_loss,
        "probe_top1_pretrained": pre.get("test_acc1"), "probe_top1_untrained": rnd.get("test_acc1"),
        "knn_top1_pretrained": knn_pre, "knn_top1_untrained": knn_rnd,
        "total_seconds": round(time.time() - t0, 1),
    }
    write_report(out, report)
    print(f"\nlinear probe top-1: pretrained {report['probe_top1_pretrained']:.2f}% vs untrained "
          f"{report['probe_top1_untrained']:.2f}%\nk-NN top-1: pretrained {knn_pre:.2f}% vs untrained {knn_rnd:.2f}%"
          f"\nwrote {out}/reconstruction.png, loss_curve.png, report.json, report.md")
    return 0

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

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import torch

from ..data import DIGITS_TRAIN_SIZE, DigitsDataset, build_eval_transform, resolve_mean_std
from ..engine.checkpoint import load_checkpoint, save_checkpoint
from ..viz import panels_grid, plot_curves, read_log, reconstruct
from ..weights import extract_state_dict
from . import entry, options
from .common import classifier_name
from .pretrain import build_pretrain_model

log = logging.getLogger("maekit.tasks")


def demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maekit demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = options.load_yaml_defaults("demo.yaml")
    p.add_argument("--model", default=d["model"], help="pretraining model (mae_* or convmae_*)")
    p.add_argument("--input_size", type=int, default=d["input_size"], help="digit image size (upsampled)")
    p.add_argument("--patch_size", type=int, default=d["patch_size"], help="MAE patch size (ignored for ConvMAE)")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="pretraining epochs")
    p.add_argument("--warmup_epochs", type=int, default=d["warmup_epochs"])
    p.add_argument("--blr", type=float, default=d["blr"])
    p.add_argument("--batch_size", type=int, default=d["batch_size"])
    p.add_argument("--mask_ratio", type=float, default=d["mask_ratio"])
    p.add_argument("--norm_pix_loss", action="store_true", default=d["norm_pix_loss"])
    p.add_argument("--probe_epochs", type=int, default=d["probe_epochs"])
    p.add_argument("--probe_batch_size", type=int, default=d["probe_batch_size"])
    p.add_argument("--probe_blr", type=float, default=d["probe_blr"], help="linear-probe base lr (LARS)")
    p.add_argument("--output_dir", default="demo_output")
    p.add_argument("--device", default="auto")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p


def _size_args(args) -> list[str]:
    convmae = args.model.startswith("convmae")
    return ["--input_size", str(args.input_size)] + ([] if convmae else ["--patch_size", str(args.patch_size)])


def _common(args) -> list[str]:
    return ["--data_path", "builtin:digits", "--device", args.device, "--num_workers", str(args.num_workers),
            "--seed", str(args.seed), "--amp", "none"]


def pretrain_argv(args, out: Path) -> list[str]:
    return ["--model", args.model, *_size_args(args), "--mask_ratio", str(args.mask_ratio),
            *(["--norm_pix_loss"] if args.norm_pix_loss else []), "--epochs", str(args.epochs),
            "--warmup_epochs", str(args.warmup_epochs), "--blr", str(args.blr), "--batch_size",
            str(args.batch_size), "--output_dir", str(out), "--save_every", str(args.epochs), "--resume", "auto",
            *_common(args)]


def linprobe_argv(args, checkpoint: Path, out: Path) -> list[str]:
    return ["--model", classifier_name(args.model), *_size_args(args), "--finetune", str(checkpoint),
            "--epochs", str(args.probe_epochs), "--warmup_epochs", "1", "--batch_size", str(args.probe_batch_size),
            "--blr", str(args.probe_blr),
            "--global_pool", "--output_dir", str(out), "--save_every", "0", *_common(args)]


def _run(command: str, argv: Sequence[str]) -> dict:
    return entry.run_parsed(command, entry.parse(command, argv))


def save_reconstructions(args, checkpoint: Path, out_png: Path, n: int = 8) -> float:
    """Reconstruction grid of ``n`` test digits; returns their mean loss over removed patches."""
    ckpt = load_checkpoint(checkpoint)
    model = build_pretrain_model(model=args.model, input_size=[args.input_size],
                                 patch_size=None if args.model.startswith("convmae") else args.patch_size,
                                 norm_pix_loss=args.norm_pix_loss)
    model.load_state_dict(extract_state_dict(ckpt))
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
    md = [
        "# maekit demo report", "",
        f"Model `{report['model']}` pretrained for {report['epochs']} epochs on `builtin:digits` "
        f"({report['train_images']} images, {report['input_size']} px, mask ratio {report['mask_ratio']}) "
        f"in {report['pretrain_seconds']:.0f} s.", "",
        "| linear probe (frozen encoder, BatchNorm + linear head, LARS) | top-1 on the test split |",
        "|---|---|",
        f"| MAE-pretrained encoder | **{pre:.2f}%** |",
        f"| same encoder at initialisation (untrained) | {rnd:.2f}% |", "",
        f"Final pretraining loss {report['final_train_loss']:.4f}; reconstruction loss on 8 test digits "
        f"{report['test_reconstruction_loss']:.4f}.", "",
        "![reconstructions](reconstruction.png)", "", "![loss](loss_curve.png)", "",
    ]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")


def main(argv: Sequence[str]) -> int:
    args = demo_parser().parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # 1. the untrained control: the pretraining model exactly as initialised
    torch.manual_seed(args.seed)
    init = build_pretrain_model(model=args.model, input_size=[args.input_size],
                                patch_size=None if args.model.startswith("convmae") else args.patch_size)
    save_checkpoint(out / "untrained.pth", {"model": init.state_dict()})
    # 2. pretrain (resumable: a second `maekit demo` continues where a killed one stopped)
    last = _run("pretrain", pretrain_argv(args, out / "pretrain"))
    pretrain_seconds = time.time() - t0
    ckpt = out / "pretrain" / "checkpoint-last.pth"
    # 3. probes
    pre = _run("linprobe", linprobe_argv(args, ckpt, out / "probe_pretrained"))
    rnd = _run("linprobe", linprobe_argv(args, out / "untrained.pth", out / "probe_untrained"))
    # 4. pictures and report
    records = read_log(out / "pretrain" / "log.txt")
    plot_curves(records, out / "loss_curve.png", title=f"{args.model} on builtin:digits")
    rec_loss = save_reconstructions(args, ckpt, out / "reconstruction.png")
    report = {
        "model": args.model, "epochs": args.epochs, "input_size": args.input_size, "mask_ratio": args.mask_ratio,
        "train_images": DIGITS_TRAIN_SIZE, "pretrain_seconds": round(pretrain_seconds, 1),
        "final_train_loss": records[-1]["train_loss"] if records else last.get("train_loss"),
        "test_reconstruction_loss": rec_loss,
        "probe_top1_pretrained": pre.get("test_acc1"), "probe_top1_untrained": rnd.get("test_acc1"),
        "total_seconds": round(time.time() - t0, 1),
    }
    write_report(out, report)
    print(f"\nlinear probe top-1: pretrained {report['probe_top1_pretrained']:.2f}% vs untrained "
          f"{report['probe_top1_untrained']:.2f}%\nwrote {out}/reconstruction.png, loss_curve.png, report.json, report.md")
    return 0

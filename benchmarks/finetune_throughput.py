"""Fine-tuning step throughput: maekit's ViT-B against timm's ``vit_base_patch16_224``.

A step is the reference fine-tuning step: timm Mixup/CutMix (0.8 / 1.0, smoothing 0.1),
SoftTargetCrossEntropy, drop path 0.1, forward + backward + AdamW (layer-decay groups for ours).
maekit's classifier is built on timm's VisionTransformer, so the expected ratio is about 1.0;
the script guards against the wrapper adding cost (e.g. through the optimizer groups or init).

    python benchmarks/finetune_throughput.py --batch 16 --iters 5 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics

import timm
import torch
from _timing import time_steps  # benchmarks/_timing.py (scripts run from this folder)
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

import maekit
from maekit.engine.optim import build_adamw, param_groups_layer_decay


def timed_steps(model, opt, x, y, mixup, ctx, iters, warmup):
    crit = SoftTargetCrossEntropy()

    def step(net):
        xm, ym = mixup(x, y)
        with ctx():
            return crit(net(xm), ym)

    return time_steps(model, step, iters, warmup, opt)


def build(dev: torch.device, **shape):
    """maekit ViT-B and timm's ``vit_base_patch16_224`` (``shape`` overrides both, e.g. depth), their
    optimizers (ours: the reference layer-decay groups, fused) and the reference Mixup/CutMix."""
    ours = maekit.create_model("vit_base_patch16", num_classes=1000, drop_path_rate=0.1, **shape).to(dev).train()
    theirs = timm.create_model("vit_base_patch16_224", num_classes=1000, global_pool="avg",
                               drop_path_rate=0.1, **shape).to(dev).train()
    opt_ours = build_adamw(param_groups_layer_decay(ours, weight_decay=0.05, layer_decay=0.65,
                                                    num_layers=len(ours.blocks) + 1,
                                                    no_weight_decay=ours.no_weight_decay()), lr=1e-4)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-4, weight_decay=0.05)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=1000)
    return ours, theirs, opt_ours, opt_theirs, mixup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    ours, theirs, opt_ours, opt_theirs, mixup = build(dev)
    x = torch.randn(args.batch, 3, 224, 224, device=dev)
    y = torch.randint(0, 1000, (args.batch,), device=dev)
    res = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
           "timm": timm.__version__, "device": str(dev), "batch": args.batch}
    for prec in args.precision:
        ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if prec == "bf16" else contextlib.nullcontext
        t_ours, t_theirs = [], []
        for _ in range(args.rounds):
            t_ours += timed_steps(ours, opt_ours, x, y, mixup, ctx, args.iters, args.warmup)
            t_theirs += timed_steps(theirs, opt_theirs, x, y, mixup, ctx, args.iters, args.warmup)
        a, b = args.batch / statistics.median(t_ours), args.batch / statistics.median(t_theirs)
        res[prec] = {"maekit_img_s": round(a, 2), "timm_img_s": round(b, 2), "ratio": round(a / b, 3)}
        print(f"{prec}: maekit ViT-B {a:.2f} img/s | timm ViT-B {b:.2f} img/s | ratio {a / b:.3f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

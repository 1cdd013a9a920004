"""Training throughput of maekit's MAE against transformers' ViTMAEForPreTraining.

Both models get the same configuration (MAE-B/16 by default), the same batch and the same
masking noise; a step is forward + backward + AdamW update. Runs alternate between the two
models so that drifting machine load affects both alike. Prints images/s and the ratio
(ours / transformers) for each precision, in two settings:

- ``same-optimizer``: both use torch's default AdamW (multi-tensor): the models alone;
- ``training-step``: each as its library trains it: maekit's engine (reference weight-decay
  groups, fused AdamW) against transformers' model with ``torch.optim.AdamW`` defaults.

    python benchmarks/pretrain_throughput.py --batch 16 --iters 6 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics

import torch
from _timing import time_steps  # benchmarks/_timing.py (scripts run from this folder)


def build_pair(name: str, img_size: int, **overrides):
    """maekit's ``name`` and a transformers ViTMAEForPreTraining of the same shape."""
    import maekit

    ours = maekit.create_model(name, img_size=img_size, **overrides)
    return ours, vitmae_like(ours)


def vitmae_like(ours):
    """transformers ViTMAEForPreTraining with the shape of maekit MAE ``ours`` (SDPA attention)."""
    import transformers

    img_size = ours.img_size[0]
    blk, dec = ours.blocks[0], ours.decoder_blocks
    cfg = transformers.ViTMAEConfig(
        hidden_size=ours.cls_token.shape[-1], num_hidden_layers=len(ours.blocks),
        num_attention_heads=blk.attn.num_heads, intermediate_size=blk.mlp.fc1.out_features,
        decoder_hidden_size=ours.mask_token.shape[-1], decoder_num_hidden_layers=len(dec),
        decoder_num_attention_heads=dec[0].attn.num_heads, decoder_intermediate_size=dec[0].mlp.fc1.out_features,
        image_size=img_size, patch_size=ours.patch_size, layer_norm_eps=1e-6, mask_ratio=0.75,
        attn_implementation="sdpa",
    )
    return transformers.ViTMAEForPreTraining(cfg)


def make_optimizer(model, native: bool):
    if native:  # what `maekit pretrain` builds
        from maekit.engine.optim import build_adamw, param_groups_weight_decay

        return build_adamw(param_groups_weight_decay(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95),
                             weight_decay=0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mae_vit_base_patch16")
    ap.add_argument("--img_size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per model")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--settings", nargs="+", default=["same-optimizer", "training-step"],
                    choices=["same-optimizer", "training-step"])
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    torch.manual_seed(0)
    dev = torch.device(args.device)
    ours, theirs = (m.to(dev).train() for m in build_pair(args.model, args.img_size))
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=dev)
    noise = torch.rand(args.batch, ours.num_patches, device=dev)
    results = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
               "torch": torch.__version__, "device": str(dev), "batch": args.batch, "model": args.model}
    for prec in args.precision:
        ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if prec == "bf16" else contextlib.nullcontext

        def step_ours(m, ctx=ctx):
            with ctx():
                return m(x, mask_ratio=0.75, noise=noise).loss

        def step_theirs(m, ctx=ctx):
            with ctx():
                return m(pixel_values=x, noise=noise).loss

        for setting in args.settings:
            opt_ours = make_optimizer(ours, native=setting == "training-step")
            opt_theirs = make_optimizer(theirs, native=False)
            t_ours, t_theirs = [], []
            for _ in range(args.rounds):
                t_ours += time_steps(ours, step_ours, args.iters, args.warmup, opt_ours)
                t_theirs += time_steps(theirs, step_theirs, args.iters, args.warmup, opt_theirs)
            ips_ours = args.batch / statistics.median(t_ours)
            ips_theirs = args.batch / statistics.median(t_theirs)
            results[f"{prec}/{setting}"] = {"maekit_img_s": round(ips_ours, 2),
                                            "transformers_img_s": round(ips_theirs, 2),
                                            "ratio": round(ips_ours / ips_theirs, 3)}
            print(f"{prec} {setting}: maekit {ips_ours:.2f} img/s | transformers ViTMAE {ips_theirs:.2f} img/s | "
                  f"ratio {ips_ours / ips_theirs:.3f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

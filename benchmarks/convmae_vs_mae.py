"""Training-step throughput of ConvMAE-B against MAE-B (forward + backward, no optimiser).

ConvMAE runs its two convolutional stages densely over masked positions (the reference); with
``sparse_stages=True`` it computes them on the visible positions only, which is exact (see
``maekit.models.convmae``). This script times the three at mask ratio 0.75::

    python benchmarks/convmae_vs_mae.py --batch 4 --iters 3 --device cpu
    python benchmarks/convmae_vs_mae.py --batch 64 --iters 20 --device cuda

It prints img/s per model and precision (fp32; bf16 autocast where the device supports it)
and the ratio to MAE-B at the same precision.
"""

from __future__ import annotations

import argparse
import time

import torch

from maekit.models import create_model

MODELS = {
    "mae_b": ("mae_vit_base_patch16", {}),
    "convmae_b": ("convmae_convvit_base_patch16", {}),
    "convmae_b_sparse": ("convmae_convvit_base_patch16", {"sparse_stages": True}),
}


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                torch.ones(2, 2) @ torch.ones(2, 2)
            return True
        except RuntimeError:
            return False
    return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, imgs, iters: int, warmup: int, dtype: torch.dtype | None) -> float:
    """Seconds per training step (forward + backward), median of ``iters`` after ``warmup``."""
    device = imgs.device
    times = []
    for i in range(warmup + iters):
        model.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(imgs, mask_ratio=0.75).loss
        loss.backward()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {list(MODELS)}")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32,bf16")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    imgs = torch.randn(args.batch, 3, args.img, args.img, device=device)
    precisions = []
    for p in args.precisions.split(","):
        if p == "fp32":
            precisions.append(("fp32", None))
        elif p == "bf16" and bf16_supported(device):
            precisions.append(("bf16", torch.bfloat16))
        elif p == "bf16":
            print(f"bf16 autocast not supported on {device}; skipped")
    print(f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"batch {args.batch}, {args.img}px, mask 0.75, median of {args.iters} steps after "
          f"{args.warmup} warm-up")
    results: dict[tuple[str, str], float] = {}
    for key in args.models.split(","):
        name, kw = MODELS[key]
        model = create_model(name, img_size=args.img, **kw).to(device).train()
        for pname, dtype in precisions:
            sec = time_steps(model, imgs, args.iters, args.warmup, dtype)
            results[(key, pname)] = args.batch / sec
            base = results.get(("mae_b", pname))
            ratio = f"  x{results[(key, pname)] / base:.2f} of MAE-B" if base else ""
            print(f"{key:18s} {pname:5s} {sec * 1000:9.1f} ms/step {args.batch / sec:8.2f} img/s{ratio}",
                  flush=True)
        del model
    for pname, _ in precisions:
        if ("convmae_b", pname) in results and ("convmae_b_sparse", pname) in results:
            gain = results[("convmae_b_sparse", pname)] / results[("convmae_b", pname)]
            print(f"{pname}: sparse_stages=True gives x{gain:.2f} the throughput of dense ConvMAE-B")
    if device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

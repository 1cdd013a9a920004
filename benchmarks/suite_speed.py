"""Speed sections of the GPU suite (``gpu_suite.py``): synthetic-input training throughput.

Each function returns one JSON-ready dict. The timed step is ``_timing.time_steps`` (forward,
backward, optimizer update, CUDA sync); the models and optimizers come from the stand-alone
benchmark scripts, so the suite and the scripts measure the same thing.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
from _timing import time_steps
from pretrain_throughput import build_pair, make_optimizer

# name, full-size batch on one H200 (bf16; MAE-H's activations are ~3x MAE-B's per image)
MAE_CASES = {"mae_b": ("mae_vit_base_patch16", 256), "mae_l": ("mae_vit_large_patch16", 256),
             "mae_h": ("mae_vit_huge_patch14", 128)}
# --smoke: every code path at a width that costs milliseconds (shared with memory.py)
SMOKE_MAE = dict(patch_size=8, embed_dim=64, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                 decoder_num_heads=2)
SMOKE_CONV = dict(img_size=32, embed_dim=(16, 24, 32), depth=(1, 1, 1), num_heads=2, decoder_embed_dim=16,
                  decoder_depth=1, decoder_num_heads=2)
SMOKE_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=2)
MAE_B_GFLOP = 58.7  # per image per training step at 224 px, mask 0.75 (PERFORMANCE notes, section 2)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def img_per_s(model, step, opt, batch: int, iters: int, warmup: int) -> float:
    return batch / statistics.median(time_steps(model, step, iters, warmup, opt))


def _mae_step(ctx, x, noise, hf: bool):
    def step(m):
        with ctx():
            return (m(pixel_values=x, noise=noise) if hf else m(x, mask_ratio=0.75, noise=noise)).loss
    return step


def pretrain_case(case: str, dev: torch.device, *, smoke: bool, iters: int, warmup: int, compile_backend: str,
                  with_compile: bool, precision: str = "bf16") -> dict:
    """maekit MAE eager and compiled against transformers ViTMAE (eager), same batch and noise.
    Also the compile check: the compiled model's first loss against eager's on the same weights."""
    name, batch = MAE_CASES[case]
    batch = 4 if smoke else batch
    torch.manual_seed(0)
    ours, theirs = build_pair(name, 32 if smoke else 224, **(SMOKE_MAE if smoke else {}))
    ours, theirs = ours.to(dev).train(), theirs.to(dev).train()
    img = ours.img_size[0]
    x = torch.randn(batch, 3, img, img, device=dev)
    noise = torch.rand(batch, ours.num_patches, device=dev)
    ctx = autocast(dev, precision)
    out = {"batch": batch, "precision": precision, "model": name}
    if with_compile:
        compiled = torch.compile(ours, backend=compile_backend)
        with torch.no_grad(), ctx():
            eager_loss = ours(x, mask_ratio=0.75, noise=noise).loss.float().item()
        t0 = time.perf_counter()
        with ctx():
            comp = compiled(x, mask_ratio=0.75, noise=noise).loss
        comp.backward()  # compiles the backward graph too
        ours.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out["compile_s"] = round(time.perf_counter() - t0, 1)
        out["compile_check"] = {"eager_loss": eager_loss, "compiled_loss": comp.float().item(),
                                "rel_diff": abs(comp.float().item() - eager_loss) / max(abs(eager_loss), 1e-12),
                                "backend": compile_backend}
        opt = make_optimizer(ours, native=True)
        out["maekit_compile_img_s"] = round(img_per_s(compiled, _mae_step(ctx, x, noise, False), opt, batch, iters,
                                                      warmup), 2)
        del compiled, opt
    opt = make_optimizer(ours, native=True)
    out["maekit_eager_img_s"] = round(img_per_s(ours, _mae_step(ctx, x, noise, False), opt, batch, iters, warmup), 2)
    opt_t = make_optimizer(theirs, native=False)
    out["transformers_eager_img_s"] = round(img_per_s(theirs, _mae_step(ctx, x, noise, True), opt_t, batch, iters,
                                                      warmup), 2)
    out["ratio_eager"] = round(out["maekit_eager_img_s"] / out["transformers_eager_img_s"], 3)
    if "maekit_compile_img_s" in out:
        out["ratio_compile_vs_transformers_eager"] = round(out["maekit_compile_img_s"] /
                                                           out["transformers_eager_img_s"], 3)
    if case == "mae_b" and not smoke:
        best = max(out["maekit_eager_img_s"], out.get("maekit_compile_img_s", 0.0))
        out["tflop_s"] = round(best * MAE_B_GFLOP / 1e3, 1)
    return out


def convmae_case(dev: torch.device, *, smoke: bool, iters: int, warmup: int, precision: str = "bf16") -> dict:
    """ConvMAE-B dense (reference) against ``sparse_stages=True`` (exact), same batch and noise."""
    from maekit.models import create_model

    batch = 4 if smoke else 128
    kw = SMOKE_CONV if smoke else {}
    ctx = autocast(dev, precision)
    res = {"batch": batch, "precision": precision}
    for key, sparse in (("dense_img_s", False), ("sparse_img_s", True)):
        torch.manual_seed(0)
        model = create_model("convmae_convvit_base_patch16", sparse_stages=sparse, **kw).to(dev).train()
        img = model.img_size[0]
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, img, img, generator=g).to(dev)
        noise = torch.rand(batch, model.num_patches, generator=g).to(dev)
        res[key] = round(img_per_s(model, _mae_step(ctx, x, noise, False), make_optimizer(model, native=True),
                                   batch, iters, warmup), 2)
        del model
    res["sparse_speedup"] = round(res["sparse_img_s"] / res["dense_img_s"], 3)
    return res


def finetune_case(dev: torch.device, *, smoke: bool, iters: int, warmup: int, precision: str = "bf16") -> dict:
    """ViT-B fine-tuning step (Mixup/CutMix, drop path, layer decay) against timm's ViT-B."""
    from finetune_throughput import build, timed_steps

    batch = 4 if smoke else 256
    torch.manual_seed(0)
    ours, theirs, opt_ours, opt_theirs, mixup = build(dev, **(SMOKE_VIT if smoke else {}))
    img = 32 if smoke else 224
    x = torch.randn(batch, 3, img, img, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    ctx = autocast(dev, precision)
    a = batch / statistics.median(timed_steps(ours, opt_ours, x, y, mixup, ctx, iters, warmup))
    b = batch / statistics.median(timed_steps(theirs, opt_theirs, x, y, mixup, ctx, iters, warmup))
    return {"batch": batch, "precision": precision, "maekit_img_s": round(a, 2), "timm_img_s": round(b, 2),
            "ratio": round(a / b, 3)}


def memory_case(dev: torch.device, *, smoke: bool, cases: list[str], precision: str = "bf16") -> dict:
    """``memory.py`` rows: activation and peak memory per image, plain and checkpointed, with peers."""
    import memory

    batch = 4 if smoke else 64
    rows = memory.run(cases, batch, dev, precision, smoke, log=lambda *_: None)
    return {"batch": batch, "precision": precision, "rows": rows, "markdown": memory.markdown(rows),
            "method": "cuda.max_memory_allocated" if dev.type == "cuda" else "torch.profiler profile_memory"}

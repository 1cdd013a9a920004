"""Training-step memory of maekit against its peers, with and without activation checkpointing.

For each case (MAE-B/L/H pretraining against transformers' ViTMAEForPreTraining of the same
configuration, ViT-B fine-tuning against timm's ``vit_base_patch16_224``) and each setting
(plain, ``set_grad_checkpointing(True)`` / transformers' ``gradient_checkpointing_enable``),
one untimed step creates the gradients and the AdamW state, then one measured step reports:

* ``static_mib``: weights + buffers + AdamW state + the input batch, held before the step;
* ``activation_mib_per_img``: what the forward pass leaves allocated for the backward pass
  (memory after forward - memory before), divided by the batch;
* ``peak_mib``: the highest memory allocated during forward + backward + optimizer update,
  weights and optimizer state included (M8 of the performance notes uses peak - static).

How memory is read:

* CUDA: ``torch.cuda.memory_allocated`` / ``max_memory_allocated`` (the caching allocator's
  exact count of live tensor bytes; reserved-but-free cache is not counted).
* CPU: ``torch.profiler`` with ``profile_memory=True`` records every allocation and free of
  the CPU tensor allocator with its size and time; the running sum of those events is the same
  "live tensor bytes" curve as CUDA's counter, so both devices report the same quantity. Peak
  RSS was rejected: glibc keeps freed blocks, threads have arenas and other processes share
  the machine, so it measures the allocator's history rather than the step.

Models are built one at a time (MAE-H with AdamW state is ~10 GB in fp32), each case in the
same process with the same batch and masking noise. Example::

    python benchmarks/memory.py --cases mae_b vit_b --batch 8
    python benchmarks/memory.py --cases mae_b mae_l mae_h vit_b --batch 256 --precision bf16 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere, import as a module too
from pretrain_throughput import vitmae_like

MIB = 2**20
# case -> (kind, maekit model, peer library, peer model name)
CASES = {
    "mae_b": ("pretrain", "mae_vit_base_patch16", "transformers", None),
    "mae_l": ("pretrain", "mae_vit_large_patch16", "transformers", None),
    "mae_h": ("pretrain", "mae_vit_huge_patch14", "transformers", None),
    "vit_b": ("finetune", "vit_base_patch16", "timm", "vit_base_patch16_224"),
}
# --smoke shapes: the same code paths at a size that runs in a second on a CPU
SMOKE_ARGS = {"pretrain": dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, decoder_embed_dim=32,
                                decoder_depth=1, decoder_num_heads=2),
              "finetune": dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)}


def build(case: str, library: str, smoke: bool = False) -> torch.nn.Module:
    """The maekit model of ``case`` (``library='maekit'``) or its peer, in train mode."""
    import maekit

    kind, name, _, peer_name = CASES[case]
    kw = SMOKE_ARGS[kind] if smoke else {}
    if kind == "pretrain":
        ours = maekit.create_model(name, **kw)
        return (ours if library == "maekit" else vitmae_like(ours)).train()
    if library == "maekit":
        return maekit.create_model(name, num_classes=1000, drop_path_rate=0.1, **kw).train()
    import timm

    return timm.create_model(peer_name, num_classes=1000, global_pool="avg", drop_path_rate=0.1, **kw).train()


def is_transformers(model: torch.nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.")


def enable_checkpointing(model: torch.nn.Module) -> None:
    if is_transformers(model):  # renamed activation_checkpointing_enable in recent transformers
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:  # maekit and timm
        model.set_grad_checkpointing(True)


def make_step(model: torch.nn.Module, kind: str, batch: int, device: torch.device, seed: int = 0):
    """``step() -> loss`` on a fixed synthetic batch (same images and noise for every library)."""
    g = torch.Generator().manual_seed(seed)
    hf = is_transformers(model)
    img = (model.config.image_size,) * 2 if hf else (getattr(model, "img_size", None) or model.patch_embed.img_size)
    img = tuple(img) if not isinstance(img, int) else (img, img)
    x = torch.randn(batch, 3, *img, generator=g).to(device)
    if kind == "pretrain":
        p = model.config.patch_size if hf else model.patch_size
        noise = torch.rand(batch, (img[0] // p) * (img[1] // p), generator=g).to(device)
        if hf:
            return lambda: model(pixel_values=x, noise=noise).loss, (x, noise)
        return lambda: model(x, mask_ratio=0.75, noise=noise).loss, (x, noise)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    return lambda: torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1), (x, y)


def tensor_bytes(*objs) -> int:
    """Bytes of distinct storages among the tensors in ``objs`` (modules, optimizers, tensors)."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()

    for o in objs:
        if isinstance(o, torch.nn.Module):
            for t in itertools.chain(o.parameters(), o.buffers()):
                add(t)
        elif isinstance(o, torch.optim.Optimizer):
            for st in o.state.values():
                for t in st.values():
                    add(t)
        else:
            add(o)
    return total


def _cpu_curve(prof) -> list[tuple[int, int]]:
    """(time ns, live bytes relative to the start) after each CPU allocation event."""
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = list(itertools.accumulate(b for _, b in events))
    return [(t, b) for (t, _), b in zip(events, live)]


def step_memory(model, step, opt, device: torch.device, autocast_dtype=None) -> dict:
    """Bytes before the step (``base``), after forward (``after_forward``) and at the peak,
    relative to ``base``; the step is forward + backward + ``opt.step()`` + ``zero_grad``."""
    ctx = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else contextlib.nullcontext

    def run(mark_forward=None):
        with ctx():
            loss = step()
        if mark_forward:
            mark_forward()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    run()  # creates the optimizer state (and compiles kernels)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        after = {}
        run(lambda: after.setdefault("fwd", torch.cuda.memory_allocated(device)))
        torch.cuda.synchronize(device)
        return {"after_forward": after["fwd"] - base, "peak": torch.cuda.max_memory_allocated(device) - base}
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with record_function("maekit_bench_step"):
            run()
    curve = _cpu_curve(prof)
    fwd_end = _forward_end_ns(prof)  # the forward pass's live bytes: the curve just before backward
    after_fwd = next((b for t, b in reversed(curve) if t < fwd_end), 0) if fwd_end else 0
    return {"after_forward": after_fwd, "peak": max((b for _, b in curve), default=0)}


def _forward_end_ns(prof) -> int | None:
    """Start time of the first autograd (backward) op: the forward pass is over by then."""
    starts = [e.start_ns() for e in prof.profiler.kineto_results.events()
              if e.name().startswith("autograd::engine::evaluate_function")]
    return min(starts) if starts else None


def measure(case: str, library: str, checkpointing: bool, batch: int, device: torch.device,
            precision: str = "fp32", smoke: bool = False) -> dict:
    """One row of the table (sizes in MiB)."""
    from maekit.engine.optim import build_adamw, param_groups_weight_decay

    kind = CASES[case][0]
    torch.manual_seed(0)
    model = build(case, library, smoke).to(device)
    if checkpointing:
        enable_checkpointing(model)
    # The same optimizer for every library (maekit's: fused AdamW where torch has it, no
    # multi-tensor temporaries), so the figures differ by the model only.
    opt = build_adamw(param_groups_weight_decay(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    step, inputs = make_step(model, kind, batch, device)
    dtype = torch.bfloat16 if precision == "bf16" else None
    mem = step_memory(model, step, opt, device, dtype)
    static = tensor_bytes(model, opt, *inputs)
    row = {"case": case, "library": library, "checkpointing": checkpointing, "batch": batch,
           "precision": precision, "static_mib": round(static / MIB, 1),
           "activation_mib_per_img": round(mem["after_forward"] / MIB / batch, 2),
           "peak_mib": round((static + mem["peak"]) / MIB, 1),
           "peak_minus_static_mib_per_img": round(mem["peak"] / MIB / batch, 2)}
    del model, opt, step, inputs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def run(cases, batch: int, device: torch.device, precision: str = "fp32", smoke: bool = False,
        log=print) -> list[dict]:
    """Every case x {maekit, peer} x {plain, checkpointed}."""
    rows = []
    for case in cases:
        for library in ("maekit", CASES[case][2]):
            for ckpt in (False, True):
                row = measure(case, library, ckpt, batch, device, precision, smoke)
                rows.append(row)
                log(f"{case:6s} {library:12s} ckpt={ckpt!s:5s} static {row['static_mib']:9.1f} MiB | "
                    f"activations {row['activation_mib_per_img']:8.2f} MiB/img | peak {row['peak_mib']:9.1f} MiB")
    return rows


def markdown(rows: list[dict]) -> str:
    """Table with the checkpointing saving per (case, library)."""
    out = ["| case | library | checkpointing | batch | activations MiB/img | peak - static MiB/img | peak MiB |",
           "|---|---|---|---|---|---|---|"]
    plain = {(r["case"], r["library"]): r for r in rows if not r["checkpointing"]}
    for r in rows:
        note = ""
        if r["checkpointing"] and (r["case"], r["library"]) in plain:
            p = plain[(r["case"], r["library"])]
            if p["activation_mib_per_img"]:
                note = f" ({r['activation_mib_per_img'] / p['activation_mib_per_img']:.0%} of plain)"
        out.append(f"| {r['case']} | {r['library']} | {'yes' if r['checkpointing'] else 'no'} | {r['batch']} | "
                   f"{r['activation_mib_per_img']}{note} | {r['peak_minus_static_mib_per_img']} | {r['peak_mib']} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["mae_b", "vit_b"], choices=list(CASES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (32 px, 2 blocks): checks the script")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    rows = run(args.cases, args.batch, dev, args.precision, args.smoke)
    print(markdown(rows))
    if args.json:
        meta = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                "torch": torch.__version__, "device": str(dev),
                "method": "cuda.max_memory_allocated" if dev.type == "cuda" else "torch.profiler profile_memory"}
        Path(args.json).write_text(json.dumps({**meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

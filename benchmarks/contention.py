"""A tiny training run alone and beside N busy PyTorch jobs: default thread policy vs one thread.

    python benchmarks/contention.py [--jobs 2] [--steps 20] [--batch 32] [--size 32]

Each cell runs ``--steps`` pretraining steps of a one-block MAE in a fresh process (its own thread
setting: torch's default, maekit's policy ``engine.distributed.apply_thread_policy``, or
``OMP_NUM_THREADS=1``)
and reports images/s. Beside N jobs, a fair share of the machine is ``cores / (N + 1)`` cores, so
the fair throughput is ``alone x min(1, cores / (N + 1))``; the slowdown printed is
``fair / measured`` (1.0: the run gets exactly its share; above: the contention costs more than
the cores it lost). The busy jobs are PyTorch matmul loops with torch's default threads (what
another user's job does). The figures depend on whatever else runs on the machine: say so next to
them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_RUN = r"""
import json, os, sys, time, torch
sys.path.insert(0, os.environ["MAEKIT_SRC"])
from maekit.models import create_model
from maekit.engine.distributed import apply_thread_policy
steps, batch, size = map(int, sys.argv[1:4])
model = create_model("mae_vit_tiny_patch16", img_size=size, patch_size=8, depth=1, decoder_depth=1)
loader = torch.utils.data.DataLoader(list(range(batch)), batch_size=batch)
if sys.argv[4] == "policy":
    apply_thread_policy(model, loader, "cpu")
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.rand(batch, 3, size, size)
for i in range(steps + 3):
    if i == 3:
        t0 = time.perf_counter()
    loss = model(x).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
print(json.dumps({"img_s": steps * batch / (time.perf_counter() - t0), "threads": torch.get_num_threads()}))
"""
_BUSY = "import torch\na = torch.rand(512, 512)\nwhile True:\n    a = (a @ a).clamp_(-1, 1)\n"


def run_cell(steps: int, batch: int, size: int, mode: str) -> dict:
    env = dict(os.environ, MAEKIT_SRC=os.path.join(os.path.dirname(__file__), "..", "src"))
    env.pop("OMP_NUM_THREADS", None)
    env.pop("MAEKIT_NUM_THREADS", None)
    if mode == "one":
        env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", _RUN, str(steps), str(batch), str(size), mode], env=env,
                         capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2, help="busy PyTorch jobs beside the run")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"{time.strftime('%Y-%m-%d %H:%M')} cores {cores}, load {os.getloadavg()[0]:.1f}, "
          f"batch {args.batch}x3x{args.size}x{args.size}, {args.steps} steps")
    modes = ("torch", "policy", "one")
    alone = {mode: run_cell(args.steps, args.batch, args.size, mode) for mode in modes}
    busy = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(args.jobs)]
    try:
        time.sleep(2)
        beside = {mode: run_cell(args.steps, args.batch, args.size, mode) for mode in modes}
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    share = min(1.0, cores / (args.jobs + 1))
    print(f"{'threads':<22} {'alone img/s':>12} {'beside ' + str(args.jobs) + ' img/s':>14} {'slowdown vs fair':>17}")
    for mode, name in (("torch", "torch default"), ("policy", "maekit policy"), ("one", "OMP_NUM_THREADS=1")):
        fair = alone[mode]["img_s"] * share
        print(f"{name + ' (' + str(beside[mode]['threads']) + ')':<22} {alone[mode]['img_s']:>12.1f} "
              f"{beside[mode]['img_s']:>14.1f} {fair / beside[mode]['img_s']:>17.2f}")


if __name__ == "__main__":
    main()

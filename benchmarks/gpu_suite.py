"""The GPU suite: every speed, memory and correctness figure of maekit on one machine, one command.

    bash benchmarks/gpu_suite.sh                 # on a GPU machine: budgeted for < 8 minutes on one H200
    bash benchmarks/gpu_suite.sh --smoke         # CPU, tiny shapes (the test suite runs it); its time is
                                                 # mostly the four `maekit pretrain` process start-ups

Writes ``<out>/gpu_suite.json`` and ``<out>/gpu_suite.md`` (default ``benchmarks/out/``). Sections,
each ``{"status": "ok" | "skipped" | "failed", ...}`` so a missing figure always says why:

* ``pretrain.mae_b|mae_l|mae_h``: synthetic img/s in bf16, maekit eager and ``torch.compile``
  against transformers' ViTMAEForPreTraining (eager) of the same configuration, same process;
* ``convmae``: ConvMAE-B dense against ``--sparse_stages``;
* ``finetune``: ViT-B fine-tuning step against timm's ViT-B;
* ``data``: ``maekit pretrain`` on real JPEG files written here (CPU decode with workers, and
  ``--fast_decode``; GPU decode when ``--decode gpu`` exists), img/s and fraction of the
  synthetic MAE-B speed;
* ``memory``: activation and peak memory per image, plain and checkpointed, with the peers;
* ``nccl``: two processes under torchrun when two GPUs are visible;
* ``checks.amp`` (bf16 and fp16 + GradScaler against fp32, 20 steps), ``checks.sigterm_resume``
  (SIGTERM mid-epoch, ``--resume auto``, same weights as a straight run), ``checks.compile``
  (compiled loss = eager loss).

A time budget (``--budget_s``, default 440 s) skips the remaining optional parts, recorded as
skipped, rather than overrunning. Exit status 1 when a check failed or a section raised.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite_checks as checks
import suite_speed as speed

SECTIONS = ["pretrain.mae_b", "pretrain.mae_l", "pretrain.mae_h", "convmae", "finetune", "data", "memory", "nccl",
            "checks.amp", "checks.sigterm_resume", "checks.compile"]


class Suite:
    """Runs sections in order, each guarded: an exception is recorded, the rest still runs."""

    def __init__(self, args, dev: torch.device):
        self.args, self.dev, self.t0, self.results = args, dev, time.perf_counter(), {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self, key: str, fn, *, optional: bool = True, need_s: float = 0.0) -> dict:
        if self.args.sections and key not in self.args.sections:
            res = {"status": "skipped", "reason": "not selected (--sections)"}
        elif optional and self.elapsed() + need_s > self.args.budget_s:
            res = {"status": "skipped", "reason": f"time budget ({self.args.budget_s:.0f} s) reached after "
                                                  f"{self.elapsed():.0f} s"}
        else:
            t = time.perf_counter()
            print(f"[{self.elapsed():6.1f}s] {key} ...", flush=True)
            try:
                res = fn()
                res = {"status": "skipped", "reason": res["skipped"]} if "skipped" in res else {"status": "ok", **res}
            except Exception as e:  # recorded in the JSON; the suite goes on
                res = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()[-3000:]}
            res["wall_s"] = round(time.perf_counter() - t, 1)
            if res.get("passed") is False:
                res["status"] = "failed"
            print(f"[{self.elapsed():6.1f}s] {key}: {res['status']} {summary(res)}", flush=True)
        if res["status"] == "skipped" and "wall_s" not in res:
            print(f"[{self.elapsed():6.1f}s] {key}: skipped ({res['reason']})", flush=True)
        self.results[key] = res
        self.write()  # after every section: a run killed from outside still leaves what it measured
        return res

    def report(self) -> dict:
        sections = {k: self.results.get(k, {"status": "skipped", "reason": "not reached (run stopped)"})
                    for k in SECTIONS}
        return {"meta": {**meta(self.args, self.dev), "elapsed_s": round(self.elapsed(), 1)}, "sections": sections}

    def write(self) -> dict:
        report, out = self.report(), Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_suite.json").write_text(json.dumps(report, indent=2))
        (out / "gpu_suite.md").write_text(markdown(report))
        return report


def summary(res: dict) -> str:
    keys = ("maekit_eager_img_s", "maekit_compile_img_s", "transformers_eager_img_s", "dense_img_s", "sparse_img_s",
            "maekit_img_s", "timm_img_s", "max_abs_weight_diff", "rel_diff", "reason", "error")
    return " ".join(f"{k}={res[k]}" for k in keys if k in res)


def meta(args, dev: torch.device) -> dict:
    import timm
    import transformers

    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": gpu or f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "gpus_visible": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "torch": torch.__version__, "cuda": torch.version.cuda, "timm": timm.__version__,
            "transformers": transformers.__version__, "smoke": args.smoke,
            "budget_s": None if args.budget_s == float("inf") else args.budget_s,
            "iters": args.iters, "warmup": args.warmup, "compile_backend": args.compile_backend,
            "command": " ".join(["gpu_suite.py", *sys.argv[1:]])}


def run_all(args) -> dict:
    dev = torch.device(args.device)
    suite = Suite(args, dev)
    with tempfile.TemporaryDirectory(prefix="maekit_gpu_suite_") as tmp:
        _run_sections(suite, args, dev, Path(tmp))
    return suite.write()


def _run_sections(suite: Suite, args, dev: torch.device, tmp: Path) -> None:
    common = dict(smoke=args.smoke, iters=args.iters, warmup=args.warmup)
    jpegs = checks.write_jpegs(tmp / "resume_data", 24 if args.smoke else 64, (48, 64), workers=2)
    # Correctness first: cheap, and what must never regress.
    suite.run("checks.amp", lambda: checks.amp_check(dev, smoke=args.smoke), optional=False)
    suite.run("checks.sigterm_resume", lambda: checks.sigterm_check(tmp / "sigterm", dev, jpegs, smoke=args.smoke), optional=False)
    for case, need in (("mae_b", 0), ("mae_l", 40), ("mae_h", 50)):
        # Compiling L and H costs a minute or more each: only when the budget leaves room for it and
        # for the sections after (about 180 s), and never in --smoke.
        with_compile = case == "mae_b" or (not args.smoke and suite.elapsed() + need + 90 + 180 < args.budget_s)
        res = suite.run(f"pretrain.{case}", lambda c=case, w=with_compile: speed.pretrain_case(
            c, dev, compile_backend=args.compile_backend, with_compile=w, **common), need_s=need)
        if res["status"] == "ok" and not with_compile:
            res["compile_skipped"] = "--smoke compiles MAE-B only" if args.smoke else "time budget"
        if case == "mae_b":
            suite.run("checks.compile", lambda r=res: checks.compile_check(r), optional=False)
    suite.run("convmae", lambda: speed.convmae_case(dev, **common), need_s=30)
    suite.run("finetune", lambda: speed.finetune_case(dev, **common), need_s=30)
    synthetic = suite.results["pretrain.mae_b"].get("maekit_eager_img_s")
    suite.run("data", lambda: checks.data_pipeline(tmp / "data", dev, smoke=args.smoke, synthetic_img_s=synthetic),
              need_s=60)
    mem_cases = ["mae_b", "vit_b"] if args.smoke else ["mae_b", "mae_l", "mae_h", "vit_b"]
    suite.run("memory", lambda: speed.memory_case(dev, smoke=args.smoke, cases=mem_cases), need_s=40)
    suite.run("nccl", lambda: checks.nccl_run(tmp / "nccl", None, smoke=args.smoke), need_s=60)


def markdown(report: dict) -> str:
    m, s = report["meta"], report["sections"]
    lines = [f"# maekit GPU suite: {m['device']}, {m['date']}", "",
             (f"torch {m['torch']} (CUDA {m['cuda']}), timm {m['timm']}, transformers {m['transformers']}; "
              f"{'SMOKE (tiny shapes, figures meaningless)' if m['smoke'] else 'full-size models'}; "
              f"{m['elapsed_s']} s."), "",
             "| section | status | figures |", "|---|---|---|"]
    for key, res in s.items():
        figs = {k: v for k, v in res.items() if k not in ("status", "traceback", "rows", "markdown", "losses",
                                                          "fp32_losses", "wall_s")}
        text = ", ".join(f"{k}: {_short(v)}" for k, v in figs.items())
        lines.append(f"| {key} | {res['status']} | {text} |")
    if s["memory"].get("markdown"):
        lines += ["", "## Memory per image", "", s["memory"]["markdown"]]
    return "\n".join(lines) + "\n"


def _short(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items() if k != "losses") + "}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (checks the suite itself)")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"), help="folder for JSON + markdown")
    ap.add_argument("--iters", type=int, default=None, help="timed steps per measurement (default 20; smoke 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; smoke 1)")
    ap.add_argument("--budget_s", type=float, default=None, help="skip optional parts past this (default 440; smoke: none)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=None,
                    help="run only these (e.g. a rerun of what the budget skipped); the others are recorded skipped")
    ap.add_argument("--compile_backend", default=None, help="torch.compile backend (default inductor; smoke eager)")
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    args.iters = args.iters or (2 if args.smoke else 20)
    args.warmup = args.warmup or (1 if args.smoke else 5)
    # --smoke is about coverage: no budget unless asked for (a skipped section would hide a broken one).
    args.budget_s = args.budget_s or (float("inf") if args.smoke else 440.0)
    # Inductor's CPU compile alone outlasts the smoke budget; the eager backend still runs dynamo.
    args.compile_backend = args.compile_backend or ("eager" if args.smoke else "inductor")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_suite: --device cuda but torch sees no CUDA device; run with --smoke on a CPU", file=sys.stderr)
        return 2
    if args.smoke:
        # Tiny ops on a shared CPU: one thread each. Several OpenMP threads spin-waiting on a loaded
        # machine made a 32 px step 30x slower (9 s instead of 0.3 s) here.
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    report = run_all(args)
    out = Path(args.out)
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'} ({report['meta']['elapsed_s']} s)")
    return 1 if any(r["status"] == "failed" for r in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())

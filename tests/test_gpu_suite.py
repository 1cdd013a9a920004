"""The GPU suite's smoke mode runs end to end on the CPU and writes every field, so the one
command a maintainer runs on a GPU machine cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import python_env

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {"pretrain.mae_b", "pretrain.mae_l", "pretrain.mae_h", "convmae", "finetune", "data", "memory", "nccl",
            "checks.amp", "checks.sigterm_resume", "checks.compile"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    # --smoke has no time budget (a section skipped for time would hide a broken one); on a loaded
    # 2-core machine it can take minutes, hence the wrapper's timeout raised from its default.
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--smoke", "--out", str(out)],
                         env=dict(python_env(), PYTHON=sys.executable, SUITE_TIMEOUT="1400"),
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads((out / "gpu_suite.json").read_text())
    data["_markdown"] = (out / "gpu_suite.md").read_text()
    return data


@pytest.mark.slow
def test_every_section_is_there_and_ran_or_says_why(report):
    s = report["sections"]
    assert set(s) == SECTIONS
    assert {"date", "device", "torch", "smoke", "elapsed_s", "gpus_visible"} <= set(report["meta"])
    assert report["meta"]["smoke"] is True
    for key, res in s.items():
        assert res["status"] in ("ok", "skipped"), (key, res)
        if res["status"] == "skipped":
            assert res["reason"], key
    # On the CPU only the GPU-only parts may be skipped.
    assert {k for k, r in s.items() if r["status"] == "skipped"} <= {"nccl"}
    assert "GPU" in s["nccl"]["reason"]
    for key in ("pretrain.mae_b", "pretrain.mae_l", "pretrain.mae_h"):
        r = s[key]
        assert r["maekit_eager_img_s"] > 0 and r["transformers_eager_img_s"] > 0 and r["ratio_eager"] > 0
    assert s["pretrain.mae_b"]["maekit_compile_img_s"] > 0
    assert s["convmae"]["dense_img_s"] > 0 and s["convmae"]["sparse_img_s"] > 0
    assert s["finetune"]["maekit_img_s"] > 0 and s["finetune"]["timm_img_s"] > 0
    assert s["data"]["cpu_decode"]["img_s"] > 0 and 0 < s["data"]["cpu_decode"]["fraction_of_synthetic"]
    assert "skipped" in s["data"]["gpu_decode"]
    fast = s["data"]["cpu_fast_decode"]
    assert fast.get("img_s", 0) > 0 or fast["skipped"]
    assert "| checks.amp | ok |" in report["_markdown"]


@pytest.mark.slow
def test_checks_really_ran(report):
    s = report["sections"]
    amp = s["checks.amp"]
    assert amp["passed"] and amp["bf16"]["max_rel_diff"] <= amp["tolerance_rel"]["bf16"]
    assert len(amp["fp32_losses"]) == 20 and "CUDA" in amp["fp16"]["skipped"]
    sig = s["checks.sigterm_resume"]
    assert sig["exit_code"] == 143 and sig["step_in_epoch"] > 0 and sig["max_abs_weight_diff"] == 0.0
    comp = s["checks.compile"]
    assert comp["passed"] and comp["rel_diff"] <= comp["tolerance_rel"]


@pytest.mark.slow
def test_memory_rows_and_checkpointing_saves_memory(report):
    rows = report["sections"]["memory"]["rows"]
    libs = {(r["case"], r["library"], r["checkpointing"]) for r in rows}
    assert libs == {(c, lib, ck) for c, lib in (("mae_b", "maekit"), ("mae_b", "transformers"), ("vit_b", "maekit"),
                                                  ("vit_b", "timm")) for ck in (False, True)}
    by = {(r["case"], r["library"], r["checkpointing"]): r for r in rows}
    for case, lib in (("mae_b", "maekit"), ("vit_b", "maekit")):
        plain, ckpt = by[(case, lib, False)], by[(case, lib, True)]
        assert ckpt["activation_mib_per_img"] < plain["activation_mib_per_img"]
        assert ckpt["static_mib"] == plain["static_mib"]

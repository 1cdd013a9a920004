"""The command line as users type it: reference command lines, help, bench, list-models."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from conftest import PY, python_env, run_cli
from maekit.tasks import entry
from maekit.tasks.config import TASK_CONFIGS


def test_official_and_passl_command_lines_parse_unchanged():
    # PRETRAIN.md (official), then PASSL's README (adds --device gpu)
    pre = entry.parse("pretrain", "--batch_size 64 --model mae_vit_large_patch16 --norm_pix_loss --mask_ratio 0.75 "
                      "--epochs 800 --warmup_epochs 40 --blr 1.5e-4 --weight_decay 0.05 --data_path /in".split())
    assert (pre.model, pre.norm_pix_loss, pre.epochs, pre.blr, pre.lr) == ("mae_vit_large_patch16", True, 800,
                                                                           1.5e-4, None)
    passl = entry.parse("pretrain", "--accum_iter 1 --batch_size 128 --model mae_vit_base_patch16 --norm_pix_loss "
                        "--mask_ratio 0.75 --epochs 1600 --warmup_epochs 40 --blr 1.5e-4 --weight_decay 0.05 "
                        "--data_path /in --output_dir out --device gpu".split())
    assert passl.device == "gpu" and passl.accum_iter == 1
    ft = entry.parse("finetune", "--batch_size 32 --model vit_base_patch16 --finetune ck.pth --epochs 100 --blr 5e-4 "
                     "--layer_decay 0.65 --weight_decay 0.05 --drop_path 0.1 --reprob 0.25 --mixup 0.8 "
                     "--cutmix 1.0 --dist_eval --data_path /in".split())
    assert ft.global_pool and ft.layer_decay == 0.65 and ft.dist_eval and ft.min_lr == 1e-6
    assert not entry.parse("finetune", ["--cls_token"]).global_pool
    lp = entry.parse("linprobe", "--batch_size 512 --model vit_base_patch16 --cls_token --finetune ck.pth "
                     "--epochs 90 --blr 0.1 --weight_decay 0.0 --dist_eval --data_path /in".split())
    assert not lp.global_pool and lp.warmup_epochs == 10
    ev = entry.parse("finetune", "--eval --resume mae_finetuned_vit_base.pth --model vit_base_patch16 "
                     "--batch_size 16 --data_path /in".split())
    assert ev.eval and ev.resume == "mae_finetuned_vit_base.pth"
    # torchrun / torch.distributed.launch pass --local_rank / --local-rank
    assert entry.parse("pretrain", ["--local-rank=0"]).local_rank == 0


def test_packaged_recipes_resolve():
    args = entry.parse("pretrain", ["--config", "pretrain/mae_vit_base"])
    assert (args.model, args.epochs, args.batch_size * args.accum_iter * 8) == ("mae_vit_base_patch16", 1600, 4096)
    ft = entry.parse("finetune", ["--config", "finetune/vit_base_patch16"])
    assert (ft.blr, ft.layer_decay, ft.mixup, ft.cutmix) == (5e-4, 0.65, 0.8, 1.0)


def test_help_usage_and_unknown_command(capsys):
    assert run_cli() == 2
    assert "pretrain" in capsys.readouterr().out
    assert run_cli("pretrian") == 2
    assert "did you mean pretrain" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run_cli("pretrain", "-h")
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--mask_ratio", "--norm_pix_loss", "--accum_iter", "--blr", "--resume", "--amp", "--augment"):
        assert flag in text


def test_list_models_and_bench(capsys):
    assert run_cli("list-models", "convmae_*") == 0
    assert capsys.readouterr().out.split() == ["convmae_convvit_base_patch16", "convmae_convvit_base_patch16_dec512d8b",
                                               "convmae_convvit_small_patch16"]
    assert run_cli("bench", "--model", "mae_vit_tiny_patch16", "--input_size", "32", "--batch_size", "4",
                   "--steps", "1", "--warmup", "0", "--amp", "none", "--device", "cpu", "--json") == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["images_per_sec"] > 0 and res["precision"] == "float32"


# ----------------------------------------------------------------------------- one config flow
def test_help_needs_no_torch_and_shows_each_default_once():
    """`maekit <command> -h` builds its parser from tasks/config.py alone (why it answers at once)."""
    code = ("import sys, contextlib, io\nfrom maekit.cli import main\n"
            "for cmd in ('pretrain', 'finetune', 'linprobe', 'eval', 'predict', 'visualize', 'demo', 'bench', 'run'):\n"
            "    buf = io.StringIO()\n"
            "    with contextlib.redirect_stdout(buf):\n"
            "        try:\n            main([cmd, '-h'])\n        except SystemExit as e:\n            assert e.code == 0\n"
            "    text = buf.getvalue()\n"
            "    assert '(default: None)' not in text and '``' not in text and text.count('(default: 0.75)') <= 1, cmd\n"
            "    print(cmd, len(text))\n"
            "heavy = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=python_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 9


def test_every_option_has_help_and_one_default_in_help(capsys):
    with pytest.raises(SystemExit):
        run_cli("finetune", "-h")
    text = capsys.readouterr().out
    assert "--layer_decay LAYER_DECAY" in text and "layer-wise lr decay (default: 0.75)" in text
    assert "--cls_token" in text and "use the cls token\n" in text.replace("  ", "")  # fine-tune pools by default
    for cls in TASK_CONFIGS.values():
        for f in dataclasses.fields(cls):
            meta = f.metadata
            assert meta.get("hidden") or meta.get("help"), (cls.__name__, f.name)


def test_eval_and_predict_take_the_shape_flags_of_finetune():
    shape = ["--input_size", "48", "--patch_size", "4", "--in_chans", "1"]
    ev = entry.parse("eval", ["--resume", "ck.pth", *shape, "--num_classes", "3"])
    assert (ev.input_size, ev.patch_size, ev.in_chans, ev.nb_classes) == ([48], 4, 1, 3)
    pr = entry.parse("predict", ["--model", "mae_vit_tiny_patch16", "--input", "a.png", *shape, "--top_k", "2"])
    assert (pr.input_size, pr.patch_size, pr.in_chans, pr.topk) == ([48], 4, 1, 2)
    from maekit.tasks.common import config_overrides

    assert config_overrides(pr) == {"img_size": 48, "patch_size": 4, "in_chans": 1}


def test_predict_with_shape_flags_end_to_end(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    assert run_cli("predict", "--model", "mae_vit_tiny_patch16", "--no_download", "--input", tmp_path / "red.png",
                   "--input_size", "32", "--patch_size", "8", "--output_dir", tmp_path / "out", "--json",
                   "--device", "cpu") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["mask_ratio"] == 0.75 and Image.open(rows[0]["files"]["reconstruction"]).size == (32, 32)


def test_config_yaml_aliases_sections_and_clear_errors(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("model: vit_tiny_patch16\nimg_size: 48\nnum_classes: 5\noptimisation:\n  blr: 2.0e-3\n"
                    "drop_path_rate: 0.2\nmodel_args: {depth: 2}\n")
    cfg = entry.parse("finetune", ["--config", str(good), "--drop_path", "0.3"])
    assert (cfg.input_size, cfg.nb_classes, cfg.blr, cfg.drop_path, cfg.model_args) == ([48], 5, 2e-3, 0.3, {"depth": 2})
    for text, message in (("blr: null\n", "blr: a value is required"),
                          ("batch_size: eight\n", "batch_size: expected int"),
                          ("input_size: [1, 2, 3]\n", "input_size takes one or two numbers"),
                          ("mask_ratio: 1.5\n", "mask_ratio must be in"),
                          ("batch_size: 0\n", "batch_size must be >= 1"),
                          ("mask_ration: 0.5\n", "did you mean mask_ratio"),
                          ("amp: half\n", "amp: choose one of")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        assert run_cli("pretrain", "--config", bad, "--output_dir", tmp_path / "o") == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (text, err)


def test_same_option_same_default_everywhere_unless_the_reference_differs():
    differ = {"model", "input_size", "batch_size", "epochs", "blr", "min_lr", "warmup_epochs", "weight_decay",
              "global_pool", "save_every", "dist_eval", "seed", "output_dir", "device", "num_workers", "resume"}
    seen: dict[str, tuple] = {}
    for name, cls in TASK_CONFIGS.items():
        if name in ("demo", "bench"):  # a tiny model on digits, a throughput probe: their own defaults
            continue
        for f in dataclasses.fields(cls):
            if f.name in differ:
                continue
            default = cls.default(f.name)
            if f.name in seen:
                assert seen[f.name][1] == default, (f.name, seen[f.name], (name, default))
            seen.setdefault(f.name, (name, default))


def test_training_arguments_are_the_task_options():
    from maekit.api import TrainingArguments
    from maekit.tasks.config import FinetuneConfig, PretrainConfig

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    for cls in (PretrainConfig, FinetuneConfig):
        assert {f.name for f in dataclasses.fields(cls) if not f.metadata.get("hidden")} <= names
    with pytest.raises(ValueError, match="blr: a value is required|mixup_mode: choose one of"):
        TrainingArguments(mixup_mode="row")


def test_log_lines_follow_the_current_stdout(monkeypatch):
    """The CLI's log handlers write to whatever sys.stdout / sys.stderr is now: a handler bound to a
    stream that was replaced and closed (pytest's capture, a notebook) would print 'Logging error'."""
    import io
    import logging

    from maekit.engine.logs import setup_logging

    old = io.StringIO()
    monkeypatch.setattr("sys.stdout", old)
    setup_logging()
    old.close()
    new = io.StringIO()
    monkeypatch.setattr("sys.stdout", new)
    logging.getLogger("maekit.test").info("hello from a later run")
    assert "hello from a later run" in new.getvalue()

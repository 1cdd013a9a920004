"""The command line as users type it: reference command lines, help, bench, list-models."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from maekit.tasks import entry


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

"""Official PyTorch files of every kind (docs/REFERENCE_RECIPES.md D.1-D.3), made here with torch.save."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

import maekit
from maekit.hub import load_model
from maekit.convert import (
    ConversionError,
    convert,
    detect_format,
    fold_linprobe_head,
    read_checkpoint,
    load_state_dict,
)

TINY = dict(img_size=32, patch_size=8, depth=2)


def _mae():
    torch.manual_seed(0)
    return maekit.create_model("mae_vit_tiny_patch16", **TINY)


def _vit(**kw):
    torch.manual_seed(0)
    return maekit.create_model("vit_tiny_patch16", **TINY, **kw)


def _same(a, b):
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _linprobe_sd(model, n_classes: int = 4) -> dict:
    """The official linear-probe layout: head = Sequential(BatchNorm1d(affine=False, eps=1e-6), Linear)."""
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    d = model.embed_dim
    sd.update(
        {
            "head.0.running_mean": torch.randn(d),
            "head.0.running_var": torch.rand(d) + 0.5,
            "head.0.num_batches_tracked": torch.tensor(100),
            "head.1.weight": torch.randn(n_classes, d),
            "head.1.bias": torch.randn(n_classes),
        }
    )
    return sd


def test_encoder_only_pretrain_file(tmp_path):
    mae = _mae()
    enc = {k: v for k, v in mae.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    torch.save({"model": enc}, tmp_path / "mae_pretrain_vit_tiny.pth")
    assert detect_format(tmp_path / "mae_pretrain_vit_tiny.pth") == "official"
    _same(load_state_dict(tmp_path / "mae_pretrain_vit_tiny.pth"), enc)
    report = convert(tmp_path / "mae_pretrain_vit_tiny.pth", tmp_path / "out")
    assert report.model_name == "mae_vit_tiny_patch16"
    assert any("encoder-only" in n for n in report.notes)
    ck = read_checkpoint(tmp_path / "out")
    model = load_model(ck.label)
    assert torch.equal(model.blocks[0].attn.qkv.weight, mae.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("kind", ["full", "visualize"])
def test_full_pretrain_files(tmp_path, kind):
    mae = _mae()
    torch.save({"model": mae.state_dict()}, tmp_path / f"{kind}.pth")
    _same(load_state_dict(tmp_path / f"{kind}.pth"), mae.state_dict())


@pytest.mark.parametrize("global_pool", [True, False])
def test_finetuned_files(tmp_path, global_pool):
    vit = _vit(num_classes=10, global_pool=global_pool)
    torch.save({"model": vit.state_dict()}, tmp_path / "ft.pth")
    report = convert(tmp_path / "ft.pth", tmp_path / "out")
    assert report.model_name == "vit_tiny_patch16"
    expected = {
        **TINY,
        "num_classes": 10,
        **({} if global_pool else {"global_pool": False}),
    }  # True: preset default
    assert report.model_args == expected
    _same(load_state_dict(tmp_path / "out"), vit.state_dict())


def test_linprobe_file(tmp_path):
    vit = _vit(num_classes=4, global_pool=False).eval()
    sd = _linprobe_sd(vit)
    torch.save({"model": sd}, tmp_path / "lin.pth")
    # lossless formats keep head.0 / head.1 as they are
    for dst in ("lin.pdparams", "lin2.pth"):
        report = convert(tmp_path / "lin.pth", tmp_path / dst)
        assert any("linear-probe" in n for n in report.notes)
    back = load_state_dict(tmp_path / "lin.pdparams")
    assert sorted(back) == sorted(sd)
    for k in sd:
        if k != "head.0.num_batches_tracked":  # Paddle has no counter: it comes back as 0
            assert torch.equal(back[k], sd[k]), k
    # a model with a plain Linear head gets the BatchNorm folded in, with the same eval outputs
    ck = read_checkpoint(tmp_path / "lin.pth")
    model = load_model(ck.label).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = vit.forward_head(vit.forward_features(x), pre_logits=True)
        bn = torch.nn.BatchNorm1d(vit.embed_dim, affine=False, eps=1e-6).eval()
        bn.running_mean.copy_(sd["head.0.running_mean"])
        bn.running_var.copy_(sd["head.0.running_var"])
        ref = torch.nn.functional.linear(bn(feats), sd["head.1.weight"], sd["head.1.bias"])
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    folded, note = fold_linprobe_head(sd)
    assert "head.weight" in folded and "head.0.running_mean" not in folded and note


def test_training_checkpoint_with_namespace_args(tmp_path):
    mae = _mae()
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    mae(torch.randn(2, 3, 32, 32)).loss.backward()
    opt.step()
    args = argparse.Namespace(
        model="mae_vit_tiny_patch16",
        norm_pix_loss=True,
        input_size=32,
        batch_size=64,
        blr=1.5e-4,
        output_dir="./out",
        device="cuda",
    )
    ckpt = {
        "model": mae.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 799,
        "scaler": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
            "_growth_tracker": 0,
        },
        "args": args,
    }
    torch.save(ckpt, tmp_path / "checkpoint-799.pth")
    _same(load_state_dict(tmp_path / "checkpoint-799.pth"), mae.state_dict())
    report = convert(tmp_path / "checkpoint-799.pth", tmp_path / "out")
    # the args say norm_pix_loss=True: it comes back as a model argument
    assert report.model_args["norm_pix_loss"] is True
    assert any("epoch 799" in n for n in report.notes)


def test_ddp_prefix_and_bare_state_dict(tmp_path):
    mae = _mae()
    torch.save({f"module.{k}": v for k, v in mae.state_dict().items()}, tmp_path / "ddp.pth")
    _same(load_state_dict(tmp_path / "ddp.pth"), mae.state_dict())
    torch.save({"state_dict": mae.state_dict()}, tmp_path / "sd.pth")
    _same(load_state_dict(tmp_path / "sd.pth"), mae.state_dict())


def test_legacy_torch_format(tmp_path):
    mae = _mae()
    torch.save({"model": mae.state_dict()}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert detect_format(tmp_path / "old.pth") == "official"
    _same(load_state_dict(tmp_path / "old.pth"), mae.state_dict())


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_official_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": _mae().state_dict(), "extra": _Evil(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="never runs code"):
        load_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


def test_convmae_official_files(tmp_path):
    torch.manual_seed(0)
    model = maekit.create_model(
        "convmae_convvit_small_patch16", img_size=32, depth=[1, 1, 2], decoder_depth=1
    )
    enc = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith(("decoder_", "mask_token", "stage1_output_decode", "stage2_output_decode"))
    }
    torch.save({"model": enc}, tmp_path / "convmae_enc.pth")  # the released ConvMAE-B file is encoder-only
    report = convert(tmp_path / "convmae_enc.pth", tmp_path / "out")
    assert report.model_name == "convmae_convvit_small_patch16"
    assert report.model_args == {"img_size": 32, "depth": [1, 1, 2]}
    _same(load_state_dict(tmp_path / "out"), enc)
    # the same encoder builds a ConvViT classifier (fine-tuning start)
    r2 = convert(
        tmp_path / "convmae_enc.pth",
        tmp_path / "cls",
        model="convvit_small_patch16",
        num_classes=3,
        img_size=32,
        depth=[1, 1, 2],
    )
    assert r2.model_name == "convvit_small_patch16"

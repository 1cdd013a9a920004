"""maekit.convert: round trips through every format, detection, model inference, CLI, safety."""

from __future__ import annotations

import json
import os

import pytest
import torch

import maekit
from maekit.hub import load_model
from maekit.convert import (
    ConversionError,
    cli,
    convert,
    arch_spec,
    detect_format,
    infer_model,
    read_checkpoint,
    load_state_dict,
    save_state_dict,
)
from maekit.models import canonical_name

TINY = dict(img_size=32, patch_size=8, depth=2)
CONV_TINY = dict(img_size=32, depth=[1, 1, 2], decoder_depth=1)
FILE_OF = {
    "official": "m.pth",
    "passl": "m.pdparams",
    "mindformers": "m.ckpt",
    "timm": "m.safetensors",
    "hf": "hf_dir",
    "maekit": "mk_dir",
}


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every tensor distinct values (the init leaves LayerNorms at 1 / 0, biases at 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _model(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return _perturb(maekit.create_model(name, **kw))


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def _round_trip(model, fmt: str, tmp_path) -> tuple[dict, dict]:
    src = save_state_dict(
        model.state_dict(), tmp_path / "src", "maekit", model_name=model.model_name, config=model.model_args
    )
    mid = tmp_path / FILE_OF[fmt]
    r1 = convert(src, mid, to_format=fmt)
    assert detect_format(mid) == fmt
    r2 = convert(mid, tmp_path / "back")
    assert r2.from_format == fmt and r2.to_format == "maekit"
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    return load_state_dict(tmp_path / "back"), {"cfg": cfg, "r1": r1, "r2": r2}


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", ["maekit", "official", "passl", "mindformers", "hf"])
def test_mae_round_trip_bit_exact(tmp_path, fmt):
    model = _model("mae_vit_tiny_patch16", **TINY)
    sd, info = _round_trip(model, fmt, tmp_path)
    _assert_same(sd, model.state_dict())
    assert canonical_name(info["cfg"]["model_name"]) == model.model_name
    assert info["cfg"]["model_args"] == model.model_args


def test_mae_round_trip_timm_keeps_encoder(tmp_path):
    model = _model("mae_vit_tiny_patch16", **TINY)
    sd, info = _round_trip(model, "timm", tmp_path)
    enc = {k: v for k, v in model.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    _assert_same(sd, enc)
    assert any("decoder" in n for n in info["r1"].notes)


@pytest.mark.parametrize("fmt", ["maekit", "official", "passl", "mindformers", "hf", "timm"])
def test_vit_token_pool_round_trip_bit_exact(tmp_path, fmt):
    model = _model("vit_tiny_patch16", num_classes=5, global_pool=False, **TINY)
    sd, info = _round_trip(model, fmt, tmp_path)
    _assert_same(sd, model.state_dict())
    args = info["cfg"]["model_args"]
    assert args["num_classes"] == 5 and args["global_pool"] is False
    rebuilt = maekit.create_model(info["cfg"]["model_name"], **args)
    rebuilt.load_state_dict(sd, strict=True)


@pytest.mark.parametrize("fmt", ["maekit", "official", "passl", "mindformers", "timm"])
def test_vit_global_pool_round_trip_bit_exact(tmp_path, fmt):
    model = _model("vit_tiny_patch16", num_classes=5, **TINY)
    sd, info = _round_trip(model, fmt, tmp_path)
    _assert_same(sd, model.state_dict())


def test_vit_global_pool_to_hf_is_refused(tmp_path):
    model = _model("vit_tiny_patch16", num_classes=5, **TINY)
    with pytest.raises(ConversionError, match="fc_norm"):
        save_state_dict(
            model.state_dict(), tmp_path / "hf", "hf", model_name=model.model_name, config=model.model_args
        )
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("name", ["convmae_convvit_small_patch16", "convvit_small_patch16"])
@pytest.mark.parametrize("fmt", ["maekit", "official", "passl"])
def test_convmae_round_trip_bit_exact(tmp_path, name, fmt):
    kw = dict(CONV_TINY) if name.startswith("convmae") else dict(img_size=32, depth=[1, 1, 2], num_classes=4)
    model = _model(name, **kw)
    sd, info = _round_trip(model, fmt, tmp_path)
    _assert_same(sd, model.state_dict())
    assert info["cfg"]["model_args"] == model.model_args


@pytest.mark.parametrize("fmt", ["mindformers", "hf", "timm"])
def test_convmae_to_vit_only_formats_is_refused(tmp_path, fmt):
    model = _model("convmae_convvit_small_patch16", **CONV_TINY)
    with pytest.raises(ConversionError, match="ConvMAE"):
        save_state_dict(
            model.state_dict(),
            tmp_path / FILE_OF[fmt],
            fmt,
            model_name=model.model_name,
            config=model.model_args,
        )
    assert not (tmp_path / FILE_OF[fmt]).exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["maekit", "official", "mindformers", "passl"])
def test_half_precision_round_trip(tmp_path, fmt, dtype):
    model = _model("mae_vit_tiny_patch16", **TINY)
    sd = {k: v.to(dtype) for k, v in model.state_dict().items()}
    path = save_state_dict(
        sd, tmp_path / FILE_OF[fmt], fmt, model_name=model.model_name, config=model.model_args
    )
    _assert_same(load_state_dict(path), sd)


def test_shared_and_non_contiguous_tensors(tmp_path):
    model = _model("mae_vit_tiny_patch16", **TINY)
    sd = dict(model.state_dict())
    base = torch.randn(192, 192)
    sd["blocks.0.attn.proj.weight"] = base.t()  # non-contiguous view
    sd["blocks.1.attn.proj.weight"] = base.t()  # shares storage with the one above
    sd["blocks.0.attn.proj.bias"] = torch.randn(2, 192)[1]  # view with an offset
    for fmt in ("maekit", "timm", "hf"):
        path = save_state_dict(
            sd, tmp_path / FILE_OF[fmt], fmt, model_name=model.model_name, config=model.model_args
        )
        back = load_state_dict(path)
        for k in ("blocks.0.attn.proj.weight", "blocks.1.attn.proj.weight", "blocks.0.attn.proj.bias"):
            assert torch.equal(back[k], sd[k])


# ----------------------------------------------------------------------------- inference
def _meta_sd(name: str, **kw) -> dict:
    with torch.device("meta"):
        return maekit.create_model(name, **kw).state_dict()


@pytest.mark.parametrize(
    "name,expect",
    [
        ("mae_vit_base_patch16", "mae_vit_base_patch16"),
        ("mae_vit_large_patch16", "mae_vit_large_patch16"),
        ("mae_vit_huge_patch14", "mae_vit_huge_patch14"),
        ("vit_large_patch16", "vit_large_patch16"),
        ("convmae_convvit_base_patch16", "convmae_convvit_base_patch16"),
        ("convvit_base_patch16", "convvit_base_patch16"),
    ],
)
def test_infer_paper_models(name, expect):
    got, args, notes = infer_model(_meta_sd(name))
    assert got == expect and args == {}
    assert any("num_heads" in n for n in notes)


def test_infer_encoder_only_and_finetuned_variants():
    sd = _meta_sd("mae_vit_base_patch16")
    enc = {k: v for k, v in sd.items() if not k.startswith(("decoder_", "mask_token"))}
    assert infer_model(enc)[:2] == ("mae_vit_base_patch16", {})
    cls = _meta_sd("vit_base_patch16", global_pool=False, num_classes=100)
    assert infer_model(cls)[:2] == ("vit_base_patch16", {"global_pool": False, "num_classes": 100})
    conv_enc = {
        k: v
        for k, v in _meta_sd("convmae_convvit_base_patch16").items()
        if not k.startswith(("decoder_", "mask_token", "stage"))
    }
    assert infer_model(conv_enc)[:2] == ("convmae_convvit_base_patch16", {})


def test_infer_non_standard_width_refuses_to_guess_heads():
    sd = _meta_sd(
        "mae_vit_base_patch16",
        embed_dim=256,
        depth=3,
        num_heads=4,
        decoder_embed_dim=96,
        decoder_num_heads=3,
        decoder_depth=1,
    )
    # width 256 / decoder width 96: no preset fixes the head counts, so they are refused, never guessed
    with pytest.raises(ConversionError, match=r"num_heads \(attention heads of the encoder, width 256\).*--num_heads"):
        infer_model(sd)
    with pytest.raises(ConversionError, match=r"decoder_num_heads .*width 96.*decoder_num_heads=N"):
        infer_model(sd, num_heads=4)
    name, args, notes = infer_model(sd, num_heads=4, decoder_num_heads=3)
    assert args["embed_dim"] == 256 and args["num_heads"] == 4 and args["decoder_num_heads"] == 3
    assert any("num_heads=4 (given)" in n for n in notes)
    name2, args2, _ = infer_model(sd, num_heads=8, decoder_num_heads=3)
    assert args2["num_heads"] == 8


def test_infer_non_square_image():
    model = maekit.create_model("mae_vit_tiny_patch16", img_size=(32, 64), patch_size=8, depth=1)
    name, args, _ = infer_model(model.state_dict())  # the fixed sin-cos table tells the grid
    assert args["img_size"] == [32, 64]
    cls = _model("vit_tiny_patch16", img_size=(32, 64), patch_size=8, depth=1, num_classes=3)
    with pytest.raises(ConversionError, match="img_size"):
        infer_model(cls.state_dict())
    assert infer_model(cls.state_dict(), img_size=(32, 64))[1]["img_size"] == [32, 64]


def test_infer_rejects_foreign_weights():
    with pytest.raises(ConversionError, match="patch_embed"):
        infer_model({"fc.weight": torch.zeros(2, 2)})


def test_wrong_model_is_a_clear_error_and_writes_nothing(tmp_path):
    model = _model("mae_vit_tiny_patch16", **TINY)
    src = save_state_dict(model.state_dict(), tmp_path / "a.pth", "official")
    with pytest.raises(ConversionError, match="shape mismatch"):
        convert(src, tmp_path / "out", model="mae_vit_small_patch16", **TINY)
    with pytest.raises(ConversionError, match="do not fit"):
        save_state_dict(
            model.state_dict(),
            tmp_path / "x.pth",
            "official",
            model_name="mae_vit_small_patch16",
            config=TINY,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth"]


def test_model_flag_picks_a_sibling_family(tmp_path):
    """MAE weights -> a ViT classifier (the fine-tuning start): decoder dropped, head fresh."""
    model = _model("mae_vit_tiny_patch16", **TINY)
    src = save_state_dict(model.state_dict(), tmp_path / "a.pth", "official")
    with pytest.raises(ConversionError, match="shape mismatch"):
        convert(src, tmp_path / "vit", model="vit_tiny_patch16", num_classes=7)  # preset: 224 px, 12 blocks
    report = convert(src, tmp_path / "vit", model="vit_tiny_patch16", num_classes=7, **TINY)
    assert report.model_args["num_classes"] == 7 and report.model_args["depth"] == 2
    assert any("dropped" in n for n in report.notes)
    ck = read_checkpoint(tmp_path / "vit")
    with pytest.warns(UserWarning, match="no classification head"):  # the folder has no head weights
        vit = load_model(ck.label)
    assert torch.equal(vit.blocks[1].attn.qkv.weight, model.blocks[1].attn.qkv.weight)


def test_load_checkpoint_builds_the_model(tmp_path):
    model = _model("mae_vit_tiny_patch16", norm_pix_loss=True, **TINY)
    path = save_state_dict(
        model.state_dict(), tmp_path / "hf", "hf", model_name=model.model_name, config=model.model_args
    )
    ck = read_checkpoint(path)
    assert ck.format == "hf" and ck.config.model_args["norm_pix_loss"] is True
    built = load_model(ck.label).eval()
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        torch.testing.assert_close(built(x, noise=noise).loss, model.eval()(x, noise=noise).loss)


# ----------------------------------------------------------------------------- detection / bad input
def test_detect_every_format(tmp_path):
    model = _model("mae_vit_tiny_patch16", **TINY)
    for fmt in ("maekit", "official", "passl", "mindformers", "hf", "timm"):
        p = save_state_dict(
            model.state_dict(),
            tmp_path / FILE_OF[fmt],
            fmt,
            model_name=model.model_name,
            config=model.model_args,
        )
        assert detect_format(p) == fmt
        if fmt in ("maekit", "hf"):
            assert detect_format(p / "model.safetensors") == fmt
            assert detect_format(p / "config.json") == fmt
    # names say nothing: a PASSL pickle called .pth is still PASSL
    os.replace(tmp_path / "m.pdparams", tmp_path / "renamed.pth")
    assert detect_format(tmp_path / "renamed.pth") == "passl"


@pytest.mark.parametrize("content", [b"", b"hello world, not a checkpoint", bytes(range(256)) * 4])
def test_unknown_content_is_a_clear_error(tmp_path, content):
    p = tmp_path / "weird.pth"
    p.write_bytes(content)
    with pytest.raises(ConversionError, match="weird.pth"):
        load_state_dict(p)


@pytest.mark.parametrize("fmt", ["official", "passl", "mindformers", "timm", "maekit"])
def test_truncated_files_are_clear_errors(tmp_path, fmt):
    model = _model("mae_vit_tiny_patch16", **TINY)
    p = save_state_dict(
        model.state_dict(), tmp_path / FILE_OF[fmt], fmt, model_name=model.model_name, config=model.model_args
    )
    f = p / "model.safetensors" if p.is_dir() else p
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated|corrupted") as e:
        load_state_dict(p, format=fmt)
    assert str(f.parent if p.is_dir() else f) in str(e.value) or str(f) in str(e.value)


def test_file_of_another_kind_is_a_clear_error(tmp_path):
    model = _model("mae_vit_tiny_patch16", **TINY)
    p = save_state_dict(model.state_dict(), tmp_path / "m.ckpt", "mindformers")
    for fmt in ("official", "passl", "timm"):
        with pytest.raises(ConversionError, match="m.ckpt"):
            load_state_dict(p, format=fmt)
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match="not an MAE"):
        convert(tmp_path / "other.pth", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    model = _model("mae_vit_tiny_patch16", **TINY)
    import maekit.convert.maekit_format as mk

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mk, "save_file", boom)
    with pytest.raises(OSError):
        save_state_dict(
            model.state_dict(),
            tmp_path / "out",
            "maekit",
            model_name=model.model_name,
            config=model.model_args,
        )
    assert list(tmp_path.iterdir()) == []


def test_overwriting_a_model_folder_keeps_other_files(tmp_path):
    model = _model("mae_vit_tiny_patch16", **TINY)
    out = tmp_path / "out"
    save_state_dict(model.state_dict(), out, "maekit", model_name=model.model_name, config=model.model_args)
    (out / "README.md").write_text("notes")
    model2 = _model("mae_vit_tiny_patch16", **TINY)
    with torch.no_grad():
        model2.cls_token.fill_(3.0)
    save_state_dict(model2.state_dict(), out, "maekit", model_name=model.model_name, config=model.model_args)
    assert (out / "README.md").read_text() == "notes"
    assert torch.equal(load_state_dict(out)["cls_token"], model2.cls_token.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ----------------------------------------------------------------------------- CLI
def test_cli(tmp_path, capsys):
    model = _model("mae_vit_tiny_patch16", **TINY)
    src = save_state_dict(model.state_dict(), tmp_path / "a.pth", "official")
    assert cli.main([str(src), str(tmp_path / "b.ckpt"), "--num_heads", "3", "--norm_pix_loss"]) == 0
    out = capsys.readouterr().out
    assert "official" in out and "mindformers" in out and "mae_vit_tiny_patch16" in out
    assert cli.main([str(tmp_path / "b.ckpt"), str(tmp_path / "c"), "--to", "maekit", "-q"]) == 0
    _assert_same(load_state_dict(tmp_path / "c"), model.state_dict())
    assert cli.main([str(tmp_path / "missing.pth"), str(tmp_path / "d")]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_module_runs(tmp_path):
    import subprocess
    import sys

    model = _model("vit_tiny_patch16", num_classes=3, **TINY)
    src = save_state_dict(model.state_dict(), tmp_path / "a.pth", "official")
    proc = subprocess.run(
        [sys.executable, "-m", "maekit.convert.cli", str(src), str(tmp_path / "b.pdparams")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "passl" in proc.stdout


def test_arch_spec_reports_architecture():
    spec = arch_spec("mae_vit_base_patch16")
    assert (spec.family, spec.embed_dim, spec.num_heads, spec.decoder_num_heads) == ("mae", 768, 12, 16)
    assert spec.shapes["decoder_pred.weight"] == (768, 512)


def test_hostile_files_are_refused_with_a_message(tmp_path, capsys):
    import pickle
    import struct

    import numpy as np

    from conftest import run_cli

    deep = tmp_path / "deep.safetensors"  # a header nested 100000 deep: json recursion, not a real file
    header = ('{"a":' * 100000 + "1" + "}" * 100000).encode()
    deep.write_bytes(struct.pack("<Q", len(header)) + header)
    objects = tmp_path / "objects.pdparams"  # a harmless object array where weights should be
    objects.write_bytes(pickle.dumps({"w": np.array([{"a": 1}, "x"], dtype=object)}, protocol=4))
    assert run_cli("convert", deep, tmp_path / "a") == 2
    assert "deep.safetensors: cannot tell the format" in capsys.readouterr().err
    assert run_cli("convert", objects, tmp_path / "b") == 2
    assert "entry 'w' is an array of object (not numbers): not a weights file" in capsys.readouterr().err

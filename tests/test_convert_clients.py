"""Converted files used by the real clients: transformers and timm, both directions."""

from __future__ import annotations

import json

import pytest
import torch

import maekit
from maekit.hub import load_model
from maekit.convert import (
    ConversionError,
    convert,
    detect_format,
    read_checkpoint,
    load_state_dict,
    save_state_dict,
)

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

TINY = dict(img_size=32, patch_size=8, depth=2)
HF_TINY = dict(
    hidden_size=192,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=768,
    image_size=32,
    patch_size=8,
)
HUB_NAMES = (
    "vit.embeddings.cls_token",
    "vit.encoder.layer.0.attention.attention.query.weight",
    "vit.encoder.layer.1.output.dense.bias",
    "decoder.decoder_layers.0.intermediate.dense.weight",
)


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos_embed" not in name and "position_embeddings" not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


# ----------------------------------------------------------------------------- transformers
def test_hf_folder_uses_hub_names_and_mae_config(tmp_path):
    torch.manual_seed(0)
    mae = maekit.create_model("mae_vit_tiny_patch16", norm_pix_loss=True, **TINY)
    folder = save_state_dict(
        mae.state_dict(), tmp_path / "hf", "hf", model_name=mae.model_name, config=mae.model_args
    )
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architectures"] == ["ViTMAEForPreTraining"] and cfg["model_type"] == "vit_mae"
    assert cfg["layer_norm_eps"] == 1e-6 and cfg["norm_pix_loss"] is True
    assert (cfg["num_attention_heads"], cfg["decoder_num_attention_heads"], cfg["decoder_hidden_size"]) == (
        3,
        4,
        128,
    )
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert set(HUB_NAMES) <= keys
    # one weights file on its own, or saved with torch.save, still reads as HF
    alone = tmp_path / "vitmae.safetensors"
    alone.write_bytes((folder / "model.safetensors").read_bytes())
    assert detect_format(alone) == "hf"
    sd = load_state_dict(alone)
    assert all(torch.equal(sd[k], v) for k, v in mae.state_dict().items())
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), tmp_path / "hf_names.pth")
    assert sorted(load_state_dict(tmp_path / "hf_names.pth")) == sorted(mae.state_dict())


@pytest.mark.parametrize("eps", [1e-12, 1e-6])
def test_read_folder_saved_by_transformers(tmp_path, eps):
    """transformers 5 writes the decoder as ``decoder.decoder_encoder.layer.j``; eps comes back."""
    torch.manual_seed(0)
    cfg = transformers.ViTMAEConfig(
        **HF_TINY,
        decoder_hidden_size=128,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=512,
        layer_norm_eps=eps,
        norm_pix_loss=True,
    )
    ref = _perturb(transformers.ViTMAEForPreTraining(cfg)).eval()
    ref.save_pretrained(tmp_path / "hf")
    assert detect_format(tmp_path / "hf") == "hf"
    ck = read_checkpoint(tmp_path / "hf")
    assert ck.config.model_name == "mae_vit_tiny_patch16"
    assert ck.config.model_args.get("layer_norm_eps", 1e-6) == eps and ck.config.model_args["norm_pix_loss"] is True
    ours = load_model(ck.label).eval()
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        a, b = ours(x, noise=noise), ref(pixel_values=x, noise=noise)
    torch.testing.assert_close(a.pred, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-5)


def test_read_in_memory_names_and_pytorch_bin(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTMAEConfig(
        **HF_TINY,
        decoder_hidden_size=128,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=512,
        layer_norm_eps=1e-6,
    )
    ref = _perturb(transformers.ViTMAEForPreTraining(cfg))
    folder = tmp_path / "bin"
    folder.mkdir()
    cfg.save_pretrained(folder)
    torch.save(ref.state_dict(), folder / "pytorch_model.bin")  # transformers-5 in-memory names
    assert detect_format(folder) == "hf" and detect_format(folder / "pytorch_model.bin") == "hf"
    sd = load_state_dict(folder)
    hub = load_state_dict(save_state_dict(sd, tmp_path / "again", "hf"))
    assert sorted(sd) == sorted(hub) and all(torch.equal(sd[k], hub[k]) for k in sd)


def test_vitmae_model_folder_is_an_encoder(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTMAEConfig(**HF_TINY, layer_norm_eps=1e-6)
    transformers.ViTMAEModel(cfg).save_pretrained(tmp_path / "enc")
    report = convert(tmp_path / "enc", tmp_path / "out")
    assert report.model_name == "mae_vit_tiny_patch16"
    assert any("encoder-only" in n for n in report.notes)


def test_vit_classifier_both_ways(tmp_path):
    torch.manual_seed(0)
    ours = _perturb(maekit.create_model("vit_tiny_patch16", num_classes=5, global_pool=False, **TINY)).eval()
    folder = save_state_dict(
        ours.state_dict(), tmp_path / "cls", "hf", model_name=ours.model_name, config=ours.model_args
    )
    ref = transformers.ViTForImageClassification.from_pretrained(folder).eval()
    assert ref.config.num_labels == 5 and ref.config.layer_norm_eps == 1e-6
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ref(pixel_values=x).logits, ours(x), atol=1e-5, rtol=1e-5)
    ref.save_pretrained(tmp_path / "by_hf")
    ck = read_checkpoint(tmp_path / "by_hf")
    assert ck.config.model_name == "vit_tiny_patch16" and ck.config.model_args["global_pool"] is False
    with torch.no_grad():
        torch.testing.assert_close(load_model(ck.label).eval()(x), ours(x), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- timm
@pytest.mark.parametrize("global_pool", [True, False])
def test_timm_pretrained_file_loads_classifier_strictly(tmp_path, global_pool):
    torch.manual_seed(0)
    ours = _perturb(
        maekit.create_model("vit_tiny_patch16", num_classes=5, global_pool=global_pool, **TINY)
    ).eval()
    path = save_state_dict(
        ours.state_dict(),
        tmp_path / "cls.safetensors",
        "timm",
        model_name=ours.model_name,
        config=ours.model_args,
    )
    ref = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path), num_classes=5),
        num_classes=5,
        global_pool="avg" if global_pool else "token",
        **TINY,
    ).eval()
    ref_sd, file_sd = ref.state_dict(), load_state_dict(path)
    assert sorted(ref_sd) == sorted(file_sd)  # nothing missing, nothing left over
    assert all(torch.equal(ref_sd[k], file_sd[k]) for k in ref_sd)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), ours(x), atol=1e-5, rtol=1e-5)


def test_timm_pretrained_file_loads_mae_encoder(tmp_path):
    torch.manual_seed(0)
    mae = _perturb(maekit.create_model("mae_vit_tiny_patch16", **TINY)).eval()
    path = save_state_dict(
        mae.state_dict(),
        tmp_path / "enc.safetensors",
        "timm",
        model_name=mae.model_name,
        config=mae.model_args,
    )
    ref = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path), num_classes=0),
        num_classes=0,
        **TINY,
    ).eval()
    assert sorted(ref.state_dict()) == sorted(load_state_dict(path))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ref.forward_features(x), mae.forward_features(x), atol=1e-5, rtol=1e-5)


def test_import_timm_weights(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = _perturb(timm.create_model("vit_tiny_patch16_224", num_classes=7, **TINY)).eval()
    save_file(ref.state_dict(), tmp_path / "timm.safetensors")
    assert detect_format(tmp_path / "timm.safetensors") == "timm"
    ck = read_checkpoint(tmp_path / "timm.safetensors")
    assert ck.config.model_name == "vit_tiny_patch16" and ck.config.model_args["global_pool"] is False
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(ck.label).eval()(x), ref(x), atol=1e-5, rtol=1e-5)
    # as an MAE encoder: the head goes, the decoder starts fresh
    report = convert(tmp_path / "timm.safetensors", tmp_path / "mae", model="mae_vit_tiny_patch16", **TINY)
    assert any("dropped" in n for n in report.notes)
    # timm-only parts are refused clearly
    reg = timm.create_model("vit_tiny_patch16_224", num_classes=0, reg_tokens=4, **TINY)
    save_file(reg.state_dict(), tmp_path / "reg.safetensors")
    with pytest.raises(ConversionError, match="reg_token"):
        load_state_dict(tmp_path / "reg.safetensors")

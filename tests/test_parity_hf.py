"""Parity with the reference clients: transformers' ViTMAE and timm's ViT, on the same weights.

The weights go through ``maekit.convert`` (HF folder) or straight into timm (same key names),
then both implementations run on the same images and the same masking noise.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import maekit
from maekit.convert import save_state_dict

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

TINY = dict(img_size=32, patch_size=8, depth=2)


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Random LayerNorm affine and biases: the init leaves them at 1 / 0, which would hide layout errors."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) or name.endswith(".bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _hf_pretraining(model: torch.nn.Module, tmp_path, attn: str | None = None):
    folder = save_state_dict(
        model.state_dict(), tmp_path / "hf", "hf", model_name=model.model_name, config=model.model_args
    )
    kw = {"attn_implementation": attn} if attn else {}
    hf_model = transformers.ViTMAEForPreTraining.from_pretrained(folder, **kw).eval()
    return hf_model


def _compare_mae(model, hf_model, batch: int = 2, atol: float = 1e-5) -> None:
    cfg = hf_model.config
    assert cfg.layer_norm_eps == 1e-6
    assert cfg.norm_pix_loss == model.norm_pix_loss
    torch.manual_seed(1)
    imgs = torch.randn(batch, model.in_chans, *model.img_size)
    noise = torch.rand(batch, model.num_patches)
    model.eval()
    with torch.no_grad():
        ours = model(imgs, mask_ratio=0.75, noise=noise)
        ref = hf_model(pixel_values=imgs, noise=noise)
    torch.testing.assert_close(ours.mask, ref.mask, atol=0, rtol=0)
    torch.testing.assert_close(ours.ids_restore, ref.ids_restore, atol=0, rtol=0)
    torch.testing.assert_close(ours.pred, ref.logits, atol=atol, rtol=1e-5)
    torch.testing.assert_close(ours.loss, ref.loss, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_hf_vitmae_parity_tiny(tmp_path, norm_pix_loss):
    torch.manual_seed(0)
    model = maekit.create_model("mae_vit_tiny_patch16", norm_pix_loss=norm_pix_loss, **TINY)
    _perturb(model)
    _compare_mae(model, _hf_pretraining(model, tmp_path))


def test_hf_vitmae_parity_eager_attention(tmp_path):
    torch.manual_seed(0)
    model = maekit.create_model("mae_vit_tiny_patch16", **TINY)
    _perturb(model)
    _compare_mae(model, _hf_pretraining(model, tmp_path, attn="eager"))


def test_hf_vitmae_encoder_parity_tiny(tmp_path):
    """ViTMAEModel (encoder only): same visible-token features as our forward_encoder."""
    torch.manual_seed(0)
    model = maekit.create_model("mae_vit_tiny_patch16", **TINY).eval()
    _perturb(model)
    enc = {k: v for k, v in model.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    folder = save_state_dict(
        enc, tmp_path / "enc", "hf", model_name=model.model_name, config=model.model_args
    )
    # the export keeps every patch (mask_ratio 0.0, test below); masked here to compare the masking too
    hf_enc = transformers.ViTMAEModel.from_pretrained(folder, mask_ratio=0.75).eval()
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        latent, mask, _ = model.forward_encoder(imgs, 0.75, noise)
        ref = hf_enc(pixel_values=imgs, noise=noise)
    torch.testing.assert_close(latent, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mask, ref.mask)


@pytest.mark.slow
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_hf_vitmae_parity_base(tmp_path, norm_pix_loss):
    torch.manual_seed(0)
    model = maekit.create_model("mae_vit_base_patch16", norm_pix_loss=norm_pix_loss)
    _perturb(model)
    _compare_mae(model, _hf_pretraining(model, tmp_path), batch=2, atol=2e-5)


# ----------------------------------------------------------------------------- timm
def _timm_vit(name: str, strict_sd: dict, **kw) -> torch.nn.Module:
    m = timm.create_model(name, pretrained=False, **kw).eval()
    m.load_state_dict(strict_sd, strict=True)
    return m


@pytest.mark.parametrize("global_pool", [True, False])
def test_timm_classifier_parity_tiny(global_pool):
    torch.manual_seed(0)
    ours = maekit.create_model("vit_tiny_patch16", num_classes=5, global_pool=global_pool, **TINY).eval()
    _perturb(ours)
    ref = _timm_vit(
        "vit_tiny_patch16_224",
        ours.state_dict(),
        num_classes=5,
        global_pool="avg" if global_pool else "token",
        **TINY,
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_timm_loads_mae_encoder_strict_apart_from_head():
    torch.manual_seed(0)
    mae = maekit.create_model("mae_vit_tiny_patch16", **TINY).eval()
    _perturb(mae)
    enc = {k: v for k, v in mae.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    ref = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, global_pool="token", **TINY
    )
    result = ref.load_state_dict(enc, strict=True)  # num_classes=0: no head, so strict holds
    assert not result.missing_keys and not result.unexpected_keys
    ref10 = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY)
    result = ref10.load_state_dict(enc, strict=False)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"] and not result.unexpected_keys
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            mae.forward_features(x), ref.eval().forward_features(x), atol=1e-5, rtol=1e-5
        )


@pytest.mark.slow
@pytest.mark.parametrize("global_pool", [True, False])
def test_timm_classifier_parity_base(global_pool):
    torch.manual_seed(0)
    ours = maekit.create_model("vit_base_patch16", num_classes=7, global_pool=global_pool).eval()
    _perturb(ours)
    ref = _timm_vit(
        "vit_base_patch16_224",
        ours.state_dict(),
        num_classes=7,
        global_pool="avg" if global_pool else "token",
    )
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=2e-5, rtol=1e-5)


def test_hf_export_runs_in_a_transformers_pipeline(tmp_path):
    """The HF export carries preprocessor_config.json: AutoImageProcessor and pipeline() take it as is."""
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline

    from maekit.convert import save_state_dict
    from maekit.models import create_model

    torch.manual_seed(0)
    vit = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=2, num_classes=3, global_pool=False).eval()
    out = save_state_dict(vit.state_dict(), tmp_path / "hf", "hf", vit.model_name, vit.model_args)
    proc = AutoImageProcessor.from_pretrained(out)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    pixels = proc(img, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        ours = vit(pixels)[0].softmax(-1)
    top = pipeline("image-classification", model=str(out), device="cpu")(img, top_k=1)[0]
    assert top["label"] == f"LABEL_{int(ours.argmax())}" and abs(top["score"] - float(ours.max())) < 1e-5


SAMPLE = Path(maekit.__file__).parent / "app" / "static" / "samples" / "chelsea.jpg"  # 266 x 400 photo


def test_hf_classifier_export_crops_as_maekit_in_transformers_pipeline(tmp_path):
    """The HF export of a classifier preprocesses like maekit's eval transform in transformers' own
    pipeline: shorter side to size / 0.875, centre crop (BitImageProcessor). The former
    ViTImageProcessor export squashed the whole photo: its top-1 differed by about 1e-2 here."""
    from transformers import AutoImageProcessor, pipeline

    from maekit.api.processor import AutoImageProcessor as MaekitProcessor

    torch.manual_seed(0)
    vit = maekit.create_model("vit_tiny_patch16", num_classes=3, global_pool=False, **TINY).eval()
    with torch.no_grad():
        vit.head.weight.normal_(0, 0.01)  # outputs that depend on the image, not on 1/255 of resampling
    out = save_state_dict(vit.state_dict(), tmp_path / "hf", "hf", vit.model_name, vit.model_args)
    ours = maekit.pipeline("image-classification", model=vit)(str(SAMPLE), top_k=3)
    theirs = pipeline("image-classification", model=str(out), device="cpu")(str(SAMPLE), top_k=3)
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert max(abs(t["score"] - o["score"]) for t, o in zip(theirs, ours)) < 1e-4
    # the geometry is maekit's to the pixel (transformers' PIL backend; its default torchvision one
    # resamples within 1/255), and maekit reads the exported file back as the same crop
    pixels = MaekitProcessor.from_pretrained(vit)(str(SAMPLE))["pixel_values"]
    pil = AutoImageProcessor.from_pretrained(out, backend="pil")(Image.open(SAMPLE), return_tensors="pt")
    assert torch.equal(pil["pixel_values"], pixels)
    assert torch.equal(MaekitProcessor.from_pretrained(out)(str(SAMPLE))["pixel_values"], pixels)


def test_hf_encoder_export_gives_unmasked_features(tmp_path):
    """An MAE without its decoder exports as ViTMAEModel with mask_ratio 0.0: transformers keeps every
    patch, the cls token is forward_features' (patch tokens in a random order unless ``noise`` is
    given; ``noise=arange`` keeps the spatial order: all of forward_features)."""
    from transformers import pipeline

    torch.manual_seed(0)
    mae = maekit.create_model("mae_vit_tiny_patch16", **TINY).eval()
    _perturb(mae)
    enc = {k: v for k, v in mae.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    out = save_state_dict(enc, tmp_path / "enc", "hf", model_name=mae.model_name, config=mae.model_args)
    hf_enc = transformers.ViTMAEModel.from_pretrained(out).eval()
    assert hf_enc.config.mask_ratio == 0.0
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = mae.forward_features(imgs)
        ref = hf_enc(pixel_values=imgs, noise=torch.arange(16.0).expand(2, 16)).last_hidden_state
        shuffled = hf_enc(pixel_values=imgs).last_hidden_state
    torch.testing.assert_close(ref, ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled[:, 0], ours[:, 0], atol=1e-5, rtol=1e-5)
    feats = pipeline("image-feature-extraction", model=str(out), device="cpu")(str(SAMPLE), return_tensors=True)
    pixels = transformers.AutoImageProcessor.from_pretrained(out)(Image.open(SAMPLE), return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(feats[0, 0], mae.forward_features(pixels["pixel_values"])[0, 0],
                                   atol=1e-5, rtol=1e-5)

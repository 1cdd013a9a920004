"""Foundation models: exact values from the spec, round trips, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import maekit
from maekit.models import get_2d_sincos_pos_embed, patchify, random_masking_indices, unpatchify
from maekit.models.masking import masked_mse_loss
from maekit.hub.load import load_weights_into

TINY = dict(img_size=32, patch_size=8, depth=2, decoder_depth=1)


def tiny_mae(**kw):
    return maekit.create_model("mae_vit_tiny_patch16", **{**TINY, **kw})


# ----------------------------------------------------------------- sin-cos table
def _closed_form(dim, gh, gw):
    """Official util/pos_embed.py written out with NumPy float64 (x code first)."""
    e = dim // 2
    omega = 1.0 / 10000 ** (np.arange(e // 2, dtype=np.float64) / (e / 2.0))
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    def code(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    table = np.concatenate([code(cols.astype(np.float64)), code(rows.astype(np.float64))], axis=1)
    return np.concatenate([np.zeros((1, dim)), table], axis=0)


@pytest.mark.parametrize("dim,grid", [(768, (14, 14)), (64, (3, 5)), (1280, (16, 16))])
def test_sincos_table_matches_closed_form(dim, grid):
    ours = get_2d_sincos_pos_embed(dim, grid, cls_token=True)
    assert ours.dtype == torch.float32 and ours.shape == (grid[0] * grid[1] + 1, dim)
    np.testing.assert_allclose(ours.numpy(), _closed_form(dim, *grid), atol=1e-6)
    # Patch (row 0, col 1): first channel is sin(x * omega_0) = sin(1); the y half starts with sin(0).
    assert ours[2, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)
    assert ours[2, dim // 2].item() == 0.0


def test_pos_embeds_fixed_in_state_dict():
    m = tiny_mae()
    assert not m.pos_embed.requires_grad and not m.decoder_pos_embed.requires_grad
    assert "pos_embed" in m.state_dict() and "decoder_pos_embed" in m.state_dict()
    torch.testing.assert_close(m.pos_embed[0], get_2d_sincos_pos_embed(192, (4, 4), True))
    assert torch.all(m.pos_embed[0, 0] == 0)


# ------------------------------------------------------------- patchify
@pytest.mark.parametrize("c,h,w,p", [(3, 32, 48, 8), (1, 16, 32, 4), (4, 24, 24, 8)])
def test_patchify_roundtrip_nonsquare_and_channels(c, h, w, p):
    x = torch.randn(2, c, h, w)
    patches = patchify(x, p)
    assert patches.shape == (2, (h // p) * (w // p), p * p * c)
    torch.testing.assert_close(unpatchify(patches, p, (h // p, w // p), c), x, rtol=0, atol=0)


def test_patchify_element_order_is_reference():
    # element index inside a patch = (row * p + col) * C + channel; patches row-major.
    c, p = 3, 2
    x = torch.arange(1 * c * 4 * 4, dtype=torch.float32).reshape(1, c, 4, 4)
    patches = patchify(x, p)
    for pi in range(p):
        for qi in range(p):
            for ch in range(c):
                # patch 1 = grid row 0, grid col 1
                assert patches[0, 1, (pi * p + qi) * c + ch] == x[0, ch, pi, p + qi]


# ------------------------------------------------------------- masking
def test_masking_semantics_floor_and_restore():
    noise = torch.rand(3, 196)
    ids_keep, mask, ids_restore = random_masking_indices(3, 196, 0.75, noise)
    assert ids_keep.shape == (3, 49)  # int(196 * 0.25)
    assert mask.sum(1).tolist() == [147.0] * 3
    # kept = the 49 smallest noise values; mask 0 there
    expected_keep = torch.argsort(noise, 1)[:, :49]
    assert torch.equal(ids_keep, expected_keep)
    assert torch.all(mask.gather(1, ids_keep) == 0)
    assert torch.equal(torch.argsort(torch.argsort(noise, 1), 1), ids_restore)
    _, mask_h, _ = random_masking_indices(1, 256, 0.75)
    assert int((mask_h == 0).sum()) == 64


def test_forward_outputs_and_noise_reproduces():
    m = tiny_mae().eval()
    x = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    a, b = m(x, noise=noise), m(x, noise=noise)
    assert a.pred.shape == (2, 16, 8 * 8 * 3) and a.mask.shape == (2, 16) and a.ids_restore.shape == (2, 16)
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    torch.testing.assert_close(a.pred, b.pred, rtol=0, atol=0)
    loss, pred, mask = a  # the reference's tuple
    assert pred is a.pred and mask is a.mask


def test_loss_is_masked_mean_with_unbiased_norm_pix():
    m = tiny_mae(norm_pix_loss=True).eval()
    x = torch.randn(2, 3, 32, 32)
    out = m(x, mask_ratio=0.5, noise=torch.rand(2, 16))
    target = m.patchify(x)
    mu, var = target.mean(-1, keepdim=True), target.var(-1, unbiased=True, keepdim=True)
    per = ((out.pred - (target - mu) / (var + 1e-6) ** 0.5) ** 2).mean(-1)
    torch.testing.assert_close(out.loss, (per * out.mask).sum() / out.mask.sum())


def test_mask_ratio_zero_is_finite_mean_over_all_patches():
    m = tiny_mae().eval()
    x = torch.randn(2, 3, 32, 32)
    out = m(x, mask_ratio=0.0)
    assert torch.isfinite(out.loss) and out.mask.sum() == 0
    torch.testing.assert_close(out.loss, ((out.pred - m.patchify(x)) ** 2).mean())
    assert masked_mse_loss(out.pred, m.patchify(x), out.mask, False).isfinite()


def test_every_trainable_param_gets_grad():
    m = tiny_mae()
    m(torch.randn(2, 3, 32, 32)).loss.backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_forward_features_is_unmasked_spatial():
    m = tiny_mae().eval()
    x = torch.randn(1, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (1, 17, 192)
    # with mask_ratio 0 and identity-order noise the encoder sees the same sequence
    latent, _, _ = m.forward_encoder(x, 0.0, noise=torch.arange(16, dtype=torch.float32)[None])
    torch.testing.assert_close(feats, latent, atol=1e-5, rtol=1e-5)


def test_nonsquare_single_channel_model():
    m = tiny_mae(img_size=(16, 48), in_chans=1)
    out = m(torch.randn(2, 1, 16, 48))
    assert out.pred.shape == (2, 12, 64) and m.unpatchify(out.pred).shape == (2, 1, 16, 48)


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("shape,match", [
    ((2, 3, 48, 32), "32x32"), ((2, 1, 32, 32), "3-channel"), ((3, 32, 32), "shape"),
])
def test_bad_images_raise_value_error(shape, match):
    with pytest.raises(ValueError, match=match):
        tiny_mae()(torch.randn(*shape))


def test_bad_noise_and_sizes():
    m = tiny_mae()
    with pytest.raises(ValueError, match=r"noise must have shape \(N, L\) = \(2, 16\)"):
        m(torch.randn(2, 3, 32, 32), noise=torch.rand(2, 15))
    with pytest.raises(ValueError, match="not divisible"):
        tiny_mae(img_size=30)
    with pytest.raises(ValueError, match="mask_ratio"):
        m(torch.randn(1, 3, 32, 32), mask_ratio=1.0)


# ------------------------------------------------------------- registry
def test_registry_names_and_unknown_name():
    names = maekit.list_models()
    for n in ["mae_vit_base_patch16", "mae_vit_large_patch16", "mae_vit_huge_patch14",
              "mae_vit_base_patch16_dec512d8b", "mae_vit_tiny_patch16", "mae_vit_small_patch16",
              "vit_base_patch16", "maevit_base_patch16", "vit_base_p16", "mae_vit_base_p16", "vit_huge_patch14"]:
        assert n in names
    assert maekit.list_models("mae_vit_*_patch14") == ["mae_vit_huge_patch14"]
    with pytest.raises(ValueError, match="did you mean.*mae_vit_base_patch16"):
        maekit.create_model("mae_vit_bsae_patch16")
    with pytest.raises(ValueError, match="cannot build"):
        maekit.create_model("mae_vit_tiny_patch16", no_such_arg=1)


def _count(name, **kw):
    m = maekit.create_model(name, **kw)
    return sum(p.numel() for p in m.parameters())


def test_param_counts_base():
    assert _count("mae_vit_base_patch16") == 111_907_840
    assert _count("vit_base_patch16", num_classes=1000) == 86_567_656


@pytest.mark.slow
def test_param_counts_large_huge():
    with torch.device("meta"):
        assert _count("mae_vit_large_patch16") == 329_541_888
        assert _count("vit_large_patch16") == 304_326_632
        assert _count("mae_vit_huge_patch14") == 657_074_508
        assert _count("vit_huge_patch14") == 632_045_800


def test_official_state_dict_keys_and_shapes():
    with torch.device("meta"):
        sd = maekit.create_model("mae_vit_base_patch16").state_dict()
    expect = {
        "cls_token": (1, 1, 768), "pos_embed": (1, 197, 768), "patch_embed.proj.weight": (768, 3, 16, 16),
        "blocks.11.attn.qkv.weight": (2304, 768), "blocks.0.mlp.fc2.weight": (768, 3072), "norm.bias": (768,),
        "mask_token": (1, 1, 512), "decoder_pos_embed": (1, 197, 512), "decoder_embed.weight": (512, 768),
        "decoder_blocks.7.attn.qkv.weight": (1536, 512), "decoder_blocks.0.mlp.fc1.weight": (2048, 512),
        "decoder_norm.weight": (512,), "decoder_pred.weight": (768, 512), "decoder_pred.bias": (768,),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert len(sd) == 4 + 12 * 12 + 2 + 4 + 8 * 12 + 2 + 2  # no extra keys


def test_init_matches_reference_recipe():
    m = maekit.create_model("mae_vit_base_patch16")
    w = m.blocks[0].attn.qkv.weight
    bound = math.sqrt(6 / (768 + 2304))  # xavier on the fused (3D, D) matrix
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    pw = m.patch_embed.proj.weight
    pbound = math.sqrt(6 / (768 + 3 * 16 * 16))  # xavier on the flattened conv
    assert pw.abs().max() <= pbound and pw.abs().max() > 0.9 * pbound
    assert torch.all(m.blocks[0].attn.qkv.bias == 0) and torch.all(m.norm.weight == 1)
    assert 0.015 < m.mask_token.std().item() < 0.025


# ------------------------------------------------------------- classifiers + loading
def test_classifier_pooling_modes():
    avg = maekit.create_model("vit_tiny_patch16", img_size=32, depth=2, num_classes=5, global_pool=True)
    tok = maekit.create_model("vit_tiny_patch16", img_size=32, depth=2, num_classes=5, global_pool=False)
    assert "fc_norm.weight" in avg.state_dict() and "norm.weight" not in avg.state_dict()
    assert "norm.weight" in tok.state_dict() and "fc_norm.weight" not in tok.state_dict()
    assert avg(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_load_weights_into_classifier_report_resize_and_head_init():
    pre = tiny_mae(img_size=32, patch_size=8)  # 4x4 grid
    clf = maekit.create_model("vit_tiny_patch16", img_size=48, patch_size=8, depth=2, num_classes=7)  # 6x6
    report = load_weights_into(clf, {"model": pre.state_dict()}, for_training=True)
    assert report.pos_embed_resized == ((4, 4), (6, 6))
    assert sorted(report.random) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert "decoder_pred.weight" not in report.ignored and "norm.weight" in report.ignored
    torch.testing.assert_close(clf.blocks[1].attn.qkv.weight, pre.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(clf.pos_embed[:, :1], pre.pos_embed[:, :1])
    assert report.head_reinitialised and clf.head.weight.std().item() < 1e-4
    assert torch.all(clf.head.bias == 0)


def test_load_weights_into_classifier_refuses_wrong_checkpoint():
    clf = maekit.create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=2, num_classes=3)
    other = maekit.create_model("mae_vit_small_patch16", img_size=32, patch_size=8, depth=2, decoder_depth=1)
    with pytest.raises(ValueError, match="do not fit"):
        load_weights_into(clf, other.state_dict())
    with pytest.raises(ValueError, match="does not hold this model's encoder"):
        load_weights_into(clf, {"model": {"foo.weight": torch.zeros(3)}})

"""ConvMAE / ConvViT: reference shapes and counts (docs/REFERENCE_RECIPES.md A.8, D.3), block-wise masking,
isolation of the visible tokens, the exact sparse path, any size / channels, classifier API."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import maekit
from maekit.models import create_model, get_2d_sincos_pos_embed, patchify
from maekit.models.convmae import MaskedAutoencoderConvViT, upsample_mask

SMALL = "convmae_convvit_small_patch16"
PRETRAIN_ONLY = ("decoder_", "mask_token", "stage1_output_decode", "stage2_output_decode")


def small(**kw):
    return create_model(SMALL, **{"img_size": 64, **kw})


@pytest.fixture(scope="module")
def model64():
    torch.manual_seed(0)
    return small().eval()


def on_meta(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


# ------------------------------------------------------------------ reference names (D.3)
def _vit_block(prefix, d, hidden):
    return {
        f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
        f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
        f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
        f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
        f"{prefix}.mlp.fc1.weight": (hidden, d), f"{prefix}.mlp.fc1.bias": (hidden,),
        f"{prefix}.mlp.fc2.weight": (d, hidden), f"{prefix}.mlp.fc2.bias": (d,),
    }


def _cblock(prefix, c):
    return {
        f"{prefix}.norm1.weight": (c,), f"{prefix}.norm1.bias": (c,),
        f"{prefix}.conv1.weight": (c, c, 1, 1), f"{prefix}.conv1.bias": (c,),
        f"{prefix}.attn.weight": (c, 1, 5, 5), f"{prefix}.attn.bias": (c,),
        f"{prefix}.conv2.weight": (c, c, 1, 1), f"{prefix}.conv2.bias": (c,),
        f"{prefix}.norm2.weight": (c,), f"{prefix}.norm2.bias": (c,),
        f"{prefix}.mlp.fc1.weight": (4 * c, c, 1, 1), f"{prefix}.mlp.fc1.bias": (4 * c,),
        f"{prefix}.mlp.fc2.weight": (c, 4 * c, 1, 1), f"{prefix}.mlp.fc2.bias": (c,),
    }


def reference_encoder_keys():
    """The ConvMAE-B encoder of docs/REFERENCE_RECIPES.md D.3 (shared by pretraining and fine-tuning)."""
    keys = {
        "patch_embed1.proj.weight": (256, 3, 4, 4), "patch_embed1.proj.bias": (256,),
        "patch_embed1.norm.weight": (256,), "patch_embed1.norm.bias": (256,),
        "patch_embed2.proj.weight": (384, 256, 2, 2), "patch_embed2.proj.bias": (384,),
        "patch_embed2.norm.weight": (384,), "patch_embed2.norm.bias": (384,),
        "patch_embed3.proj.weight": (768, 384, 2, 2), "patch_embed3.proj.bias": (768,),
        "patch_embed3.norm.weight": (768,), "patch_embed3.norm.bias": (768,),
        "patch_embed4.weight": (768, 768), "patch_embed4.bias": (768,),
        "pos_embed": (1, 196, 768),
    }
    for k in range(2):
        keys.update(_cblock(f"blocks1.{k}", 256))
        keys.update(_cblock(f"blocks2.{k}", 384))
    for k in range(11):
        keys.update(_vit_block(f"blocks3.{k}", 768, 3072))
    return keys


def reference_pretrain_keys():
    keys = reference_encoder_keys()
    keys.update({
        "stage1_output_decode.weight": (768, 256, 4, 4), "stage1_output_decode.bias": (768,),
        "stage2_output_decode.weight": (768, 384, 2, 2), "stage2_output_decode.bias": (768,),
        "norm.weight": (768,), "norm.bias": (768,),
        "decoder_embed.weight": (512, 768), "decoder_embed.bias": (512,),
        "mask_token": (1, 1, 512), "decoder_pos_embed": (1, 196, 512),
        "decoder_norm.weight": (512,), "decoder_norm.bias": (512,),
        "decoder_pred.weight": (768, 512), "decoder_pred.bias": (768,),
    })
    for j in range(8):
        keys.update(_vit_block(f"decoder_blocks.{j}", 512, 2048))
    return keys


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["convmae_convvit_base_patch16", "convmae_convvit_base_patch16_dec512d8b"])
def test_pretrain_state_dict_is_the_reference(name):
    assert shapes(on_meta(name)) == reference_pretrain_keys()


@pytest.mark.parametrize("global_pool,norm_key", [(True, "fc_norm"), (False, "norm")])
def test_finetune_state_dict_is_the_reference(global_pool, norm_key):
    expected = reference_encoder_keys()
    expected.update({f"{norm_key}.weight": (768,), f"{norm_key}.bias": (768,),
                     "head.weight": (1000, 768), "head.bias": (1000,)})
    assert shapes(on_meta("convvit_base_patch16", global_pool=global_pool)) == expected


def test_parameter_counts_match_the_reference():
    pre = on_meta("convmae_convvit_base_patch16")
    assert sum(p.numel() for p in pre.parameters()) == 115_041_408
    assert sum(p.numel() for p in pre.parameters() if p.requires_grad) == 114_790_528  # frozen sin-cos
    ft = on_meta("convvit_base_patch16", num_classes=1000)
    assert sum(p.numel() for p in ft.parameters()) == 85_374_824
    assert ft.pos_embed.requires_grad


def test_registered_names():
    names = maekit.list_models("conv*")
    for n in ("convmae_convvit_base_patch16", "convmae_convvit_base_patch16_dec512d8b",
              "convvit_base_patch16", "convmae_convvit_small_patch16", "convvit_small_patch16"):
        assert n in names
    canonical = maekit.models.canonical_name("convmae_convvit_base_patch16")
    assert canonical == "convmae_convvit_base_patch16_dec512d8b"


def test_reference_constructor_arguments():
    with torch.device("meta"):
        ref = MaskedAutoencoderConvViT(img_size=[224, 56, 28], patch_size=[4, 2, 2],
                                       embed_dim=[256, 384, 768], depth=[2, 2, 11], num_heads=12,
                                       mlp_ratio=[4, 4, 4])
        ours = MaskedAutoencoderConvViT(img_size=(224, 224), patch_size=16, mlp_ratio=4)
    assert shapes(ref) == shapes(ours) == reference_pretrain_keys()
    assert (ref.img_size, ref.patch_size, ref.grid_size, ref.num_patches) == ((224, 224), 16, (14, 14), 196)
    with pytest.raises(ValueError, match="not consistent"):
        MaskedAutoencoderConvViT(img_size=[224, 56, 14], embed_dim=[8, 8, 8], depth=[1, 1, 1], num_heads=1)
    with pytest.raises(ValueError, match="divisible"):
        MaskedAutoencoderConvViT(img_size=100, embed_dim=[8, 8, 8], depth=[1, 1, 1], num_heads=1)
    with pytest.raises(ValueError, match="per stage"):
        MaskedAutoencoderConvViT(img_size=32, embed_dim=[8, 8], depth=[1, 1, 1], num_heads=1)


def test_initialisation_follows_the_reference(model64):
    m = model64
    assert not m.pos_embed.requires_grad and not m.decoder_pos_embed.requires_grad
    torch.testing.assert_close(m.pos_embed[0], get_2d_sincos_pos_embed(384, (4, 4)))  # no cls row
    torch.testing.assert_close(m.decoder_pos_embed[0], get_2d_sincos_pos_embed(256, (4, 4)))
    lns = [mod for mod in m.modules() if isinstance(mod, nn.LayerNorm)]
    assert all((ln.weight == 1).all() and (ln.bias == 0).all() for ln in lns)
    eps = {ln.eps for name, ln in m.named_modules() if isinstance(ln, nn.LayerNorm)
           and name.startswith(("patch_embed", "blocks1", "blocks2"))}
    assert eps == {1e-5} and m.norm.eps == 1e-6 and m.blocks3[0].norm1.eps == 1e-6
    assert all((mod.bias == 0).all() for mod in m.modules() if isinstance(mod, nn.Linear))
    # patch_embed3: xavier as a Linear (bound sqrt(6 / (fan_in + fan_out))); other convs PyTorch's default
    w3 = m.patch_embed3.proj.weight
    fan_in = w3[0].numel()
    assert 1.2 / math.sqrt(fan_in) < w3.abs().max() <= math.sqrt(6 / (fan_in + w3.shape[0]))
    w2 = m.patch_embed2.proj.weight
    assert w2.abs().max() <= 1 / math.sqrt(w2[0].numel())
    assert 0.01 < m.mask_token.std() < 0.03


# ------------------------------------------------------------------ block-wise masking
def reference_upsample(mask, side, f):
    """The official reshape / repeat / permute of B.5 (square grids only)."""
    n = mask.shape[0]
    return (mask.reshape(-1, side, side).unsqueeze(-1).repeat(1, 1, 1, f * f).reshape(-1, side, side, f, f)
            .permute(0, 1, 3, 2, 4).reshape(n, side * f, side * f).unsqueeze(1))


@pytest.mark.parametrize("grid", [(14, 14), (3, 5)])
def test_stage_masks_are_nearest_upsampling(grid):
    torch.manual_seed(0)
    with torch.device("meta"):
        m = create_model(SMALL, img_size=(grid[0] * 16, grid[1] * 16))
    mask = (torch.rand(2, grid[0] * grid[1]) > 0.5).float()
    m1, m2 = m.stage_masks(mask)
    m3 = mask.reshape(2, 1, *grid)
    torch.testing.assert_close(m1, F.interpolate(m3, scale_factor=4, mode="nearest"), rtol=0, atol=0)
    torch.testing.assert_close(m2, F.interpolate(m3, scale_factor=2, mode="nearest"), rtol=0, atol=0)
    if grid[0] == grid[1]:
        torch.testing.assert_close(m1, reference_upsample(mask, grid[0], 4), rtol=0, atol=0)
        torch.testing.assert_close(m2, reference_upsample(mask, grid[0], 2), rtol=0, atol=0)
    assert torch.equal(upsample_mask(mask, grid, 1), m3)


def reference_forward(m, imgs, noise, mask_ratio=0.75):
    """The official ConvMAE forward (B.5, A.8) written out with NCHW functional ops on the
    model's weights; square grids (the reference hard-codes them)."""
    n, side = imgs.shape[0], m.grid_size[0]
    length = side * side
    keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(n, length)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    vis1, vis2 = 1 - reference_upsample(mask, side, 4), 1 - reference_upsample(mask, side, 2)

    def ln_nchw(norm, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias,
                            norm.eps).permute(0, 3, 1, 2)

    def patch_embed(pe, x):
        return F.gelu(ln_nchw(pe.norm, F.conv2d(x, pe.proj.weight, pe.proj.bias, stride=pe.proj.stride)))

    def cblock(b, x, vis):
        y = vis * F.conv2d(ln_nchw(b.norm1, x), b.conv1.weight, b.conv1.bias)
        y = F.conv2d(y, b.attn.weight, b.attn.bias, padding=2, groups=y.shape[1])
        x = x + F.conv2d(y, b.conv2.weight, b.conv2.bias)
        h = F.gelu(F.conv2d(ln_nchw(b.norm2, x), b.mlp.fc1.weight, b.mlp.fc1.bias))
        return x + F.conv2d(h, b.mlp.fc2.weight, b.mlp.fc2.bias)

    def gather(t):
        return torch.gather(t, 1, ids_keep.unsqueeze(-1).repeat(1, 1, t.shape[-1]))

    x = patch_embed(m.patch_embed1, imgs)
    for b in m.blocks1:
        x = cblock(b, x, vis1)
    s1 = F.conv2d(x, m.stage1_output_decode.weight, m.stage1_output_decode.bias, stride=4)
    s1 = s1.flatten(2).permute(0, 2, 1)
    x = patch_embed(m.patch_embed2, x)
    for b in m.blocks2:
        x = cblock(b, x, vis2)
    s2 = F.conv2d(x, m.stage2_output_decode.weight, m.stage2_output_decode.bias, stride=2)
    s2 = s2.flatten(2).permute(0, 2, 1)
    x = patch_embed(m.patch_embed3, x).flatten(2).permute(0, 2, 1)
    x = F.linear(x, m.patch_embed4.weight, m.patch_embed4.bias) + m.pos_embed
    x, s1, s2 = gather(x), gather(s1), gather(s2)
    for b in m.blocks3:
        x = b(x)
    x = m.norm(x + s1 + s2)
    x = m.decoder_embed(x)
    x = torch.cat([x, m.mask_token.repeat(n, length - keep, 1)], dim=1)
    x = torch.gather(x, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2])) + m.decoder_pos_embed
    for b in m.decoder_blocks:
        x = b(x)
    pred = m.decoder_pred(m.decoder_norm(x))
    target = patchify(imgs, 16)
    if m.norm_pix_loss:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    return loss, pred, mask


@pytest.mark.parametrize("sparse", [False, True])
def test_forward_equals_the_reference_formula(sparse):
    torch.manual_seed(0)
    m = small(depth=[2, 2, 2], norm_pix_loss=True, sparse_stages=sparse)
    imgs, noise = torch.randn(2, 3, 64, 64), torch.rand(2, 16)
    with torch.no_grad():
        out = m(imgs, noise=noise)
        loss, pred, mask = reference_forward(m, imgs, noise)
    assert torch.equal(out.mask, mask)
    torch.testing.assert_close(out.pred, pred, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ratio", [0.75, 0.6, 0.9, 0.5, 0.0])
def test_mask_ratio_keeps_floor_of_visible_tokens(model64, ratio):
    imgs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        latent, mask, ids_restore = model64.forward_encoder(imgs, ratio)
    keep = int(16 * (1 - ratio))
    assert latent.shape == (2, keep, 384)
    assert mask.shape == (2, 16) and (mask.sum(1) == 16 - keep).all()
    assert torch.equal(torch.sort(ids_restore, 1).values, torch.arange(16).expand(2, -1))


@pytest.mark.parametrize("sparse", [False, True])
def test_pixels_under_removed_patches_do_not_reach_visible_tokens(model64, sparse, monkeypatch):
    model64.sparse_stages = sparse
    try:
        torch.manual_seed(1)
        imgs = torch.randn(2, 3, 64, 64)
        noise = torch.rand(2, 16)
        with torch.no_grad():
            latent, mask, _ = model64.forward_encoder(imgs, 0.75, noise)
            removed = F.interpolate(mask.reshape(2, 1, 4, 4), scale_factor=16, mode="nearest").bool()
            changed = torch.where(removed, 5 * torch.randn_like(imgs), imgs)
            latent2, mask2, _ = model64.forward_encoder(changed, 0.75, noise)
            assert torch.equal(mask, mask2)
            torch.testing.assert_close(latent2, latent, rtol=0, atol=1e-5)
            # the check can fail: a visible pixel does move the latent ...
            moved = imgs.clone()
            moved[~removed.expand_as(imgs)] += 1.0
            assert (model64.forward_encoder(moved, 0.75, noise)[0] - latent).abs().max() > 1e-2
            if not sparse:
                # ... and so does a masked pixel once the masked convolution is switched off
                monkeypatch.setattr(model64, "stage_masks", lambda m: (torch.zeros(2, 1, 16, 16),
                                                                        torch.zeros(2, 1, 8, 8)))
                leak = model64.forward_encoder(changed, 0.75, noise)[0]
                assert (leak - model64.forward_encoder(imgs, 0.75, noise)[0]).abs().max() > 1e-3
    finally:
        model64.sparse_stages = False


def test_same_noise_is_deterministic(model64):
    imgs = torch.randn(2, 3, 64, 64)
    noise = torch.rand(2, 16)
    with torch.no_grad():
        a, b = model64(imgs, noise=noise), model64(imgs, noise=noise)
        c = model64(imgs, noise=noise.flip(1))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.pred, b.pred) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.ids_restore, b.ids_restore)
    assert not torch.equal(a.mask, c.mask)
    # kept tokens are the smallest-noise ones
    assert torch.equal(a.mask == 0, noise < noise.sort(1).values[:, 4:5])


def test_forward_features_is_the_unmasked_encoder(model64):
    imgs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model64.forward_features(imgs)
        latent, mask, _ = model64.forward_encoder(imgs, 0.0, noise=torch.arange(16.0).expand(2, -1))
    assert feats.shape == (2, 16, 384) and mask.sum() == 0
    torch.testing.assert_close(latent, feats, rtol=1e-5, atol=1e-5)


def test_patchify_layout_and_roundtrip(model64):
    imgs = torch.randn(2, 3, 64, 64)
    x = model64.patchify(imgs)
    assert torch.equal(x, patchify(imgs, 16)) and x.shape == (2, 16, 768)
    assert torch.equal(model64.unpatchify(x), imgs)


def test_input_validation(model64):
    with pytest.raises(ValueError, match="3-channel"):
        model64(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="64x64"):
        model64(torch.randn(1, 3, 32, 64))


# ------------------------------------------------------------------ any size / channels, exact sparse path
def test_non_square_single_channel_trains_one_step():
    torch.manual_seed(0)
    m = small(img_size=(96, 160), in_chans=1, depth=[1, 1, 2], norm_pix_loss=True).train()
    assert m.grid_size == (6, 10) and m.num_patches == 60 and m.patch_size == 16
    imgs = torch.randn(2, 1, 96, 160)
    assert torch.equal(m.unpatchify(m.patchify(imgs)), imgs)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    out = m(imgs)
    assert out.pred.shape == (2, 60, 256) and out.mask.shape == (2, 60) and out.mask.sum() == 2 * 45
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    before = m.blocks1[0].attn.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, m.blocks1[0].attn.weight)
    assert torch.isfinite(m(imgs).loss)


def test_sparse_stages_equal_the_dense_reference_path():
    torch.manual_seed(0)
    m = small(img_size=(64, 96), in_chans=2, depth=[2, 2, 2], norm_pix_loss=True).train()
    imgs, noise = torch.randn(3, 2, 64, 96), torch.rand(3, 24)
    results = []
    for sparse in (False, True):
        m.sparse_stages = sparse
        m.zero_grad()
        out = m(imgs, noise=noise)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}))
    (dense, gd), (sparse, gs) = results
    torch.testing.assert_close(sparse.loss, dense.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sparse.pred, dense.pred, rtol=1e-4, atol=1e-5)
    assert torch.equal(sparse.mask, dense.mask)
    for name, g in gd.items():
        scale = g.abs().max().clamp_min(1e-12)
        assert ((gs[name] - g).abs().max() / scale) < 1e-4, name


def test_sparse_stages_under_bf16_autocast():
    torch.manual_seed(0)
    m = small(img_size=32, depth=[1, 1, 1])
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        dense = m(imgs, noise=noise).loss
        m.sparse_stages = True
        sparse = m(imgs, noise=noise).loss
    assert torch.isfinite(sparse) and abs(sparse.item() - dense.item()) < 0.05 * abs(dense.item())


# ------------------------------------------------------------------ fine-tuning model
def test_finetune_model_loads_the_pretrained_encoder(model64):
    enc = {k: v for k, v in model64.state_dict().items() if not k.startswith(PRETRAIN_ONLY)}
    ft = create_model("convvit_small_patch16", img_size=64, num_classes=7)
    res = ft.load_state_dict(enc, strict=False)
    assert sorted(res.missing_keys) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert sorted(res.unexpected_keys) == ["norm.bias", "norm.weight"]
    tok = create_model("convvit_small_patch16", img_size=64, num_classes=7, global_pool=False)
    res = tok.load_state_dict(enc, strict=False)
    assert sorted(res.missing_keys) == ["head.bias", "head.weight"] and not res.unexpected_keys
    for k, v in enc.items():
        assert torch.equal(tok.state_dict()[k], v), k


def test_convvit_interface():
    torch.manual_seed(0)
    m = create_model("convvit_small_patch16", img_size=(32, 48), in_chans=1, num_classes=5, depth=[1, 1, 2],
                     drop_path_rate=0.1).eval()
    x = torch.randn(2, 1, 32, 48)
    feats = m.forward_features(x)
    assert feats.shape == (2, 6, 384) and m.num_patches == 6 and m.grid_size == (2, 3)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 384)
    torch.testing.assert_close(m(x), m.head(m.fc_norm(feats.mean(1))))
    assert m.global_pool == "avg" and m.embed_dim == 384 and m.num_classes == 5 and m.num_prefix_tokens == 0
    assert m.no_weight_decay() == {"pos_embed", "cls_token"}
    assert isinstance(m.norm, nn.Identity)
    # stochastic depth: linspace over the 4 blocks of the three stages in order
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0
             for b in [*m.blocks1, *m.blocks2, *m.blocks3]]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 4).tolist())
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and m.head.out_features == 3
    with pytest.raises(ValueError):
        m.reset_classifier(3, global_pool="token")
    # linear probe: the task code swaps the head for BatchNorm1d + Linear
    m.head = nn.Sequential(nn.BatchNorm1d(384, affine=False, eps=1e-6), nn.Linear(384, 4))
    assert m(x).shape == (2, 4)
    # token pooling (reference quirk): norm, then the first patch token
    t = create_model("convvit_small_patch16", img_size=32, num_classes=0, global_pool=False,
                     depth=[1, 1, 1]).eval()
    x3 = torch.randn(2, 3, 32, 32)
    assert isinstance(t.fc_norm, nn.Identity) and isinstance(t.head, nn.Identity)
    torch.testing.assert_close(t(x3), t.forward_features(x3)[:, 0])


def test_convvit_layer_decay_groups_follow_the_reference():
    from timm.optim._param_groups import group_parameters

    m = create_model("convvit_small_patch16", img_size=32, num_classes=3, depth=[1, 1, 3])
    ids = group_parameters(m, m.group_matcher(coarse=False), reverse=True)
    for name, layer in ids.items():
        if name.startswith(("patch_embed", "blocks1.", "blocks2.", "pos_embed")):
            assert layer == 0, name
        elif name.startswith("blocks3."):
            assert layer == int(name.split(".")[1]) + 1, name
        else:
            assert layer == 4, name


# ------------------------------------------------------------------ full size
@pytest.mark.slow
def test_convmae_base_forward_at_224():
    torch.manual_seed(0)
    m = create_model("convmae_convvit_base_patch16", norm_pix_loss=True)
    with torch.no_grad():
        out = m(torch.randn(1, 3, 224, 224), noise=torch.rand(1, 196))
    assert out.pred.shape == (1, 196, 768) and out.mask.sum() == 147 and torch.isfinite(out.loss)

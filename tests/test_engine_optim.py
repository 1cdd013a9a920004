"""Engine optimiser pieces: LR rule, schedule, weight-decay / layer-decay groups, LARS, AMP choice."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import maekit
from maekit.engine import (LARS, LRSchedule, adjust_learning_rate, build_adamw, effective_batch_and_lr,
                           layer_decay_group_names, layer_ids, lr_at, param_groups_layer_decay,
                           param_groups_weight_decay, resolve_amp)
from maekit.models.vit import VisionTransformer


def closed_form(e, base, min_lr, epochs, warmup):
    if e < warmup:
        return base * e / warmup
    return min_lr + (base - min_lr) * 0.5 * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup)))


def test_effective_batch_and_lr():
    assert effective_batch_and_lr(64, 1, 64, 1.5e-4) == (4096, 1.5e-4 * 16)
    assert effective_batch_and_lr(32, 4, 8, 5e-4) == (1024, 5e-4 * 4)
    assert effective_batch_and_lr(32, 4, 8, 5e-4, lr=0.01) == (1024, 0.01)


def test_lr_at_warmup_then_cosine():
    kw = dict(base_lr=1.0, min_lr=0.1, epochs=10, warmup_epochs=2)
    assert lr_at(0.0, **kw) == 0.0
    assert lr_at(1.0, **kw) == pytest.approx(0.5)
    assert lr_at(2.0, **kw) == pytest.approx(1.0)
    assert lr_at(6.0, **kw) == pytest.approx(0.55)
    assert lr_at(10.0, **kw) == pytest.approx(0.1)
    for e in [0.13, 1.7, 2.5, 7.25, 9.9]:
        assert lr_at(e, **kw) == pytest.approx(closed_form(e, 1.0, 0.1, 10, 2), abs=1e-12)


def test_adjust_learning_rate_uses_lr_scale():
    p1, p2 = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p1], "lr_scale": 0.25}, {"params": [p2]}], lr=1.0)
    assert adjust_learning_rate(opt, 0.8) == 0.8
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.8]


class ToyMAE(nn.Module):
    """Names like the MAE pretraining model, tiny shapes."""

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4), requires_grad=False)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, 4, 2, 2)
        self.norm = nn.LayerNorm(4)
        self.decoder_embed = nn.Linear(4, 3)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 3))


def test_weight_decay_groups_match_reference_order_and_members():
    m = ToyMAE()
    groups = param_groups_weight_decay(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    assert [g["weight_decay"] for g in groups] == [0.0, 0.05]
    assert [names[id(p)] for p in groups[0]["params"]] == [
        "patch_embed.proj.bias", "norm.weight", "norm.bias", "decoder_embed.bias"]
    # cls_token and mask_token (3-D) are decayed; frozen pos_embed is left out entirely. Order is
    # named_parameters() order (a module's own parameters before its children's).
    assert [names[id(p)] for p in groups[1]["params"]] == [
        "cls_token", "mask_token", "patch_embed.proj.weight", "decoder_embed.weight"]


class ToyViTB(nn.Module):
    """The official ViT-B/16 fine-tune parameter NAMES (12 blocks, global pool), tiny shapes."""

    def __init__(self, depth=12, d=4):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, d))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, 2, 2)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            b = nn.Module()
            b.norm1, b.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            b.attn = nn.Module()
            b.attn.qkv, b.attn.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            b.mlp = nn.Module()
            b.mlp.fc1, b.mlp.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
            self.blocks.append(b)
        self.fc_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    group_matcher = VisionTransformer.group_matcher  # the layer ids come from the model's matcher


def test_layer_decay_groups_vit_base():
    m = ToyViTB()
    kw = dict(weight_decay=0.05, layer_decay=0.65, num_layers=13, no_weight_decay={"pos_embed", "cls_token"})
    groups = param_groups_layer_decay(m, **kw)
    named = layer_decay_group_names(m, **kw)
    assert list(named) == ["layer_0_no_decay", "layer_0_decay"] + [
        f"layer_{k}_{t}" for k in range(1, 13) for t in ("no_decay", "decay")] + ["layer_13_no_decay", "layer_13_decay"]
    assert named["layer_0_no_decay"] == ["cls_token", "pos_embed", "patch_embed.proj.bias"]
    assert named["layer_0_decay"] == ["patch_embed.proj.weight"]
    assert named["layer_12_decay"] == [f"blocks.11.{n}.weight" for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert named["layer_13_no_decay"] == ["fc_norm.weight", "fc_norm.bias", "head.bias"]
    assert named["layer_13_decay"] == ["head.weight"]
    by_name = dict(zip(named, groups))
    assert by_name["layer_0_decay"]["lr_scale"] == pytest.approx(0.65 ** 13)
    assert 0.65 ** 13 == pytest.approx(0.0037, abs=1e-4)
    assert by_name["layer_12_decay"]["lr_scale"] == pytest.approx(0.65)
    assert by_name["layer_13_decay"]["lr_scale"] == 1.0
    assert by_name["layer_5_decay"]["lr_scale"] == pytest.approx(0.65 ** 8)
    assert all(g["weight_decay"] == (0.05 if k.endswith("_decay") and "no_decay" not in k else 0.0)
               for k, g in by_name.items())
    assert set(groups[0]) == {"lr_scale", "weight_decay", "params"}


def test_layer_decay_skips_frozen_and_layer_ids():
    m = ToyViTB(depth=2)
    m.pos_embed.requires_grad_(False)
    named = layer_decay_group_names(m, weight_decay=0.1, layer_decay=0.5, num_layers=3)
    assert "pos_embed" not in sum(named.values(), [])
    with pytest.raises(ValueError, match="num_layers=4 but"):
        layer_decay_group_names(m, weight_decay=0.1, layer_decay=0.5, num_layers=4)
    with torch.device("meta"):
        vit = maekit.create_model("vit_base_patch16", global_pool=False)
        convvit = maekit.create_model("convvit_base_patch16")
    ids, n = layer_ids(vit)
    assert n == 13
    assert ids["blocks.10.attn.qkv.weight"] == 11
    assert ids["patch_embed.proj.weight"] == 0 and ids["cls_token"] == 0
    assert ids["norm.weight"] == 13 and ids["head.weight"] == 13
    ids, n = layer_ids(convvit)
    assert n == 12
    for name, want in [("patch_embed4.weight", 0), ("patch_embed1.norm.bias", 0), ("blocks1.0.conv1.weight", 0),
                       ("blocks2.1.mlp.fc1.bias", 0), ("pos_embed", 0), ("blocks3.0.attn.qkv.weight", 1),
                       ("blocks3.10.norm2.bias", 11), ("fc_norm.weight", 12), ("head.weight", 12)]:
        assert ids[name] == want, name


def test_lars_one_step_matches_hand_formula():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4))
    b = nn.Parameter(torch.randn(3))
    gw, gb = torch.randn(3, 4), torch.randn(3)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = LARS([w, b], lr=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    for step in range(2):
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
    # Hand computation, two steps.
    mu_w, mu_b, pw, pb = torch.zeros_like(w0), torch.zeros_like(b0), w0.clone(), b0.clone()
    for _ in range(2):
        d = gw + 0.1 * pw
        d = d * (0.001 * pw.norm() / d.norm())
        mu_w = 0.9 * mu_w + d
        pw = pw - 0.5 * mu_w
        mu_b = 0.9 * mu_b + gb  # 1-D: no decay, no trust ratio
        pb = pb - 0.5 * mu_b
    torch.testing.assert_close(w.detach(), pw)
    torch.testing.assert_close(b.detach(), pb)
    assert set(opt.state[w]) == {"mu"}


def test_build_adamw_and_schedule_object():
    p = nn.Parameter(torch.zeros(2))
    opt = build_adamw([{"params": [p], "weight_decay": 0.05}], lr=1e-3, betas=(0.9, 0.95))
    assert opt.param_groups[0]["betas"] == (0.9, 0.95) and opt.param_groups[0]["weight_decay"] == 0.05
    s = LRSchedule(base_lr=2.0, min_lr=0.0, epochs=4, warmup_epochs=1)
    assert s(0.5) == lr_at(0.5, base_lr=2.0, min_lr=0.0, epochs=4, warmup_epochs=1) == 1.0


def test_resolve_amp():
    assert resolve_amp("none", "cpu") == (None, False)
    assert resolve_amp("auto", "cpu") == (None, False)
    assert resolve_amp("bf16", "cpu") == (torch.bfloat16, False)
    with pytest.raises(ValueError, match="fp16"):
        resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown amp mode 'fp8'"):
        resolve_amp("fp8", "cpu")
    if torch.cuda.is_available():
        dtype, scaler = resolve_amp("auto", "cuda")
        assert (dtype, scaler) in [(torch.bfloat16, False), (torch.float16, True)]
        assert resolve_amp("fp16", "cuda") == (torch.float16, True)

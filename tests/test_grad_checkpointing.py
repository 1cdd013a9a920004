"""Activation checkpointing (``set_grad_checkpointing``) changes memory, never the maths.

Each model is built twice from the same seed; one copy recomputes its block activations in the
backward pass. Same images, same masking noise, same drop-path RNG: the loss and every gradient
must match the plain model to fp32 round-off (in practice bit for bit on the CPU).
"""

from __future__ import annotations

import pytest
import torch

from maekit.models import create_model

SMALL_CONV = dict(embed_dim=(16, 24, 32), depth=(1, 1, 2), num_heads=2, decoder_embed_dim=16,
                  decoder_depth=1, decoder_num_heads=2)

CASES = {
    "mae": ("mae_vit_tiny_patch16", dict(img_size=32, patch_size=8, depth=2, decoder_depth=2)),
    "convmae_dense": ("convmae_convvit_small_patch16", dict(img_size=32, **SMALL_CONV)),
    "convmae_sparse": ("convmae_convvit_small_patch16", dict(img_size=32, sparse_stages=True, **SMALL_CONV)),
    "vit": ("vit_tiny_patch16", dict(img_size=32, patch_size=8, depth=2, num_classes=5, drop_path_rate=0.2)),
    "convvit": ("convvit_small_patch16", dict(img_size=32, embed_dim=(16, 24, 32), depth=(1, 1, 2), num_heads=2,
                                              num_classes=5, drop_path_rate=0.2)),
}


def _loss_and_grads(name: str, kw: dict, checkpointing: bool):
    torch.manual_seed(0)
    model = create_model(name, **kw).train()
    if checkpointing:
        model.set_grad_checkpointing(True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 32, 32, generator=g)
    if getattr(model, "is_pretraining", hasattr(model, "decoder_blocks")):
        noise = torch.rand(3, model.num_patches, generator=g)
        loss = model(x, mask_ratio=0.75, noise=noise).loss
    else:
        target = torch.tensor([0, 3, 4])
        torch.manual_seed(2)  # drop path draws here: both runs see the same draws
        loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return model, loss.detach(), grads


@pytest.mark.parametrize("case", list(CASES))
def test_checkpointed_model_has_the_same_loss_and_gradients(case):
    name, kw = CASES[case]
    plain, loss0, g0 = _loss_and_grads(name, kw, checkpointing=False)
    ckpt, loss1, g1 = _loss_and_grads(name, kw, checkpointing=True)
    assert ckpt.grad_checkpointing is True and not getattr(plain, "grad_checkpointing", False)
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    trainable = {n for n, p in plain.named_parameters() if p.requires_grad}
    assert set(g0) == set(g1) == trainable  # every trainable parameter got a gradient in both
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-6, atol=1e-7, msg=lambda m, n=n: f"{n}: {m}")


def test_checkpointing_really_recomputes():
    """The checkpointed forward keeps fewer saved tensors (so the option is not a no-op)."""
    name, kw = CASES["mae"]

    def saved(checkpointing: bool) -> int:
        torch.manual_seed(0)
        model = create_model(name, **kw).train()
        model.set_grad_checkpointing(checkpointing)
        count = 0

        def pack(t):
            nonlocal count
            count += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(2, 3, 32, 32), mask_ratio=0.75).loss.backward()
        return count

    assert saved(True) < 0.7 * saved(False)


def test_no_checkpointing_without_autograd():
    """Under no_grad (evaluation) the checkpointed model runs plainly and gives the same output."""
    name, kw = CASES["vit"]
    torch.manual_seed(0)
    model = create_model(name, **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model.set_grad_checkpointing(True)
        out = model(x)
    assert torch.equal(ref, out)


def test_cli_grad_checkpointing_trains_the_same_weights(digit_folders, tmp_path):
    """``maekit pretrain --grad_checkpointing`` reaches the same weights as the plain run."""
    from conftest import run_cli

    def train(out, *extra):
        assert run_cli("pretrain", "--model", "mae_vit_tiny_patch16", "--input_size", "32", "--patch_size", "8",
                       "--data_path", digit_folders / "unlabelled", "--output_dir", out, "--batch_size", "16",
                       "--epochs", "1", "--warmup_epochs", "0", "--num_workers", "0", "--amp", "none",
                       "--device", "cpu", *extra) == 0
        return torch.load(out / "checkpoint-last.pth", map_location="cpu", weights_only=True)["model"]

    plain = train(tmp_path / "plain")
    ckpt = train(tmp_path / "ckpt", "--grad_checkpointing")
    assert "grad_checkpointing: true" in (tmp_path / "ckpt" / "config.yaml").read_text()
    init = create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8).state_dict()
    assert not torch.equal(plain["blocks.0.attn.qkv.weight"], init["blocks.0.attn.qkv.weight"])  # it trained
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")

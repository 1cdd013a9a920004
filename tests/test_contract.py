"""The model contract, for every registered architecture (``list_models(include_aliases=False)``).

Each model is built with tiny overrides (one block per stage, narrow widths, 32 px) so that a case
takes well under a second; full-size parameter counts are tested in test_models / test_convmae.
"""

from __future__ import annotations

import pytest
import torch

import maekit
from maekit.convert import load_state_dict, save_state_dict
from maekit.models import ModelConfig, classifier_name, create_model, is_pretraining_model, list_models

TINY = {
    "mae": dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16,
                decoder_depth=1, decoder_num_heads=2),
    "vit": dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3),
    "convmae": dict(img_size=32, embed_dim=[8, 16, 32], depth=[1, 1, 1], num_heads=2, decoder_embed_dim=16,
                    decoder_depth=1, decoder_num_heads=2),
    "convvit": dict(img_size=32, embed_dim=[8, 16, 32], depth=[1, 1, 1], num_heads=2, num_classes=3),
}
# Formats that hold each family completely (timm holds only a ViT; transformers has no ConvMAE, and its
# ViT classifier pools the cls token, so the ViT case is built with global_pool=False for it).
FORMATS = {
    "mae": ("maekit", "official", "passl", "mindformers", "hf"),
    "vit": ("maekit", "official", "passl", "mindformers", "timm", "hf"),
    "convmae": ("maekit", "official", "passl"),
    "convvit": ("maekit", "official", "passl"),
}
SUFFIX = {"official": "m.pth", "passl": "m.pdparams", "mindformers": "m.ckpt", "timm": "m.safetensors",
          "hf": "hf_dir", "maekit": "maekit_dir"}
NAMES = list_models(include_aliases=False)


def family(name: str) -> str:
    conv = "convvit" in name
    return ("convmae" if conv else "mae") if is_pretraining_model(name) else ("convvit" if conv else "vit")


def tiny(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **TINY[family(name)], **extra)


def run(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Deterministic output: the prediction (fixed mask) of a pretraining model, the logits of a classifier."""
    if model.is_pretraining:
        noise = torch.linspace(0, 1, model.num_patches).expand(x.shape[0], -1)
        return model(x, mask_ratio=0.75, noise=noise).pred
    return model(x)


@pytest.mark.parametrize("name", NAMES)
def test_model_says_what_it_is(name):
    model = tiny(name)
    assert model.family == family(name) and model.is_pretraining == is_pretraining_model(name)
    assert model.config == ModelConfig(name, TINY[family(name)]) and model.model_name == name
    assert model.img_size == (32, 32) and model.in_chans == 3 and model.patch_size in (8, 16)
    assert model.classifier_name == classifier_name(name)
    with torch.device("meta"):  # the classifier an encoder goes into: same family sibling, no decoder
        assert not create_model(model.classifier_name).is_pretraining
    if not model.is_pretraining:
        assert model.num_classes == 3
    arch = model.architecture()
    assert arch["family"] == model.family and arch["img_size"] == (32, 32)
    groups = model.group_matcher()
    assert set(groups) == {"stem", "blocks"}


@pytest.mark.parametrize("name", [n for n in NAMES if is_pretraining_model(n)])
def test_forward_masks_the_reference_ratio_by_default(name):
    """The documented ``forward(imgs, mask_ratio=0.75)`` default is the commands' one (MASK_RATIO):
    the same masks as ``--mask_ratio``'s default, drawn from the same noise."""
    import inspect

    from maekit.tasks.config import MASK_RATIO, PretrainConfig

    model = tiny(name)
    assert inspect.signature(model.forward).parameters["mask_ratio"].default == MASK_RATIO
    assert PretrainConfig.default("mask_ratio") == MASK_RATIO
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, model.num_patches)
    assert torch.equal(model(x, noise=noise).mask, model(x, mask_ratio=MASK_RATIO, noise=noise).mask)


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_every_parameter_gets_a_gradient(name):
    model = tiny(name).train()
    x = torch.randn(2, 3, 32, 32)
    if model.is_pretraining:
        out = model(x, mask_ratio=0.75)
        assert out.pred.shape == (2, model.num_patches, model.patch_size ** 2 * 3)
        loss = out.loss
    else:
        logits = model(x)
        assert logits.shape == (2, 3)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert missing == []


@pytest.mark.parametrize("name", NAMES)
def test_save_pretrained_round_trip(tmp_path, name):
    model = tiny(name).eval()
    if not model.is_pretraining:
        model.class_names = ["a", "b", "c"]
    folder = model.save_pretrained(tmp_path / "m")
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = run(model, x)
        for loaded in (maekit.AutoModel.from_pretrained(folder), maekit.load_model(folder),
                       type(model).from_pretrained(folder)):
            assert type(loaded) is type(model) and loaded.config == model.config
            assert torch.equal(run(loaded, x), want)


@pytest.mark.parametrize("name", NAMES)
def test_conversion_round_trip_is_exact(tmp_path, name):
    for fmt in FORMATS[family(name)]:
        model = tiny(name, **({"global_pool": False} if fmt == "hf" and family(name) == "vit" else {}))
        sd = model.state_dict()
        path = save_state_dict(sd, tmp_path / fmt / SUFFIX[fmt], fmt, model.model_name, model.model_args)
        back = load_state_dict(path)
        assert sorted(back) == sorted(sd), fmt
        bad = [k for k in sd if back[k].dtype != sd[k].dtype or not torch.equal(back[k], sd[k])]
        assert bad == [], (fmt, bad)

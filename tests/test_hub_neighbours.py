"""The Hub and timm as neighbours (issue 13): timm Hub repositories and ``timm:name.tag`` sources read through
timm's own cache, checked against timm's own loader on the same cache; sources by Hub id in the
commands (``convert``, ``finetune --finetune``, ``knn --model``, ``pipeline``)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, TINY_MAE_ARGS, run_cli

import maekit

TIMM_NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # a real timm name with a Hub repository


@pytest.fixture
def timm_repo(tmp_path, hf_cache):
    """timm's Hub repository for TIMM_NAME, written by timm itself (``save_for_hf``: the layout of
    ``timm/<name>.<tag>``), with non-initial weights, in the offline Hub cache."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAME, pretrained=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_for_hf(model, str(tmp_path / "timm_repo"), safe_serialization=True)
    hf_cache(f"timm/{TIMM_NAME}", tmp_path / "timm_repo")
    return model


def test_timm_names_and_timm_repos_load_like_timm_loads_them(timm_repo):
    import timm

    reference = timm.create_model(TIMM_NAME, pretrained=True).eval()  # timm's own loader, same cache
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = reference(x)
        assert torch.equal(want, timm_repo(x))
        for source in (f"timm:{TIMM_NAME}", f"hf-hub:timm/{TIMM_NAME}"):
            ours = maekit.load_model(source)
            assert ours.model_name == "vit_tiny_patch16" and ours.num_classes == 1000, source
            torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=1e-5)
    with pytest.warns(UserWarning, match="randomly initialised"):
        five = maekit.load_model(f"timm:{TIMM_NAME}", num_classes=5)
    assert torch.equal(five.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)


def test_a_pretraining_source_with_num_classes_gives_its_classifier(tmp_path):
    """``load_model(source, num_classes=K)`` of MAE weights (official encoder-only or full file, a
    timm encoder folder) is the classifier of the same encoder, with a new head."""
    torch.manual_seed(0)
    mae = maekit.create_model("mae_vit_tiny_patch16", **TINY_MAE_ARGS).eval()
    encoder = {k: v for k, v in mae.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    torch.save({"model": encoder}, tmp_path / "enc.pth")
    torch.save({"model": mae.state_dict()}, tmp_path / "full.pth")
    sources = [tmp_path / "enc.pth", tmp_path / "full.pth", maekit.hub.export_model(mae, tmp_path / "timm", "timm")]
    for source in sources:
        with pytest.warns(UserWarning, match="head .* randomly initialised"):
            vit = maekit.load_model(source, num_classes=3)
        assert vit.model_name == "vit_tiny_patch16" and vit.num_classes == 3, source
        assert vit.model_args["depth"] == 2 and not any(k.startswith("decoder") for k in vit.model_args)
        assert torch.equal(vit.blocks[1].mlp.fc2.weight, mae.blocks[1].mlp.fc2.weight), source


def test_bad_timm_names_say_what_is_wrong(hf_cache):
    with pytest.raises(ValueError, match="timm has no pretrained weights of that name"):
        maekit.load_model("timm:vit_nope_patch16")
    with pytest.raises(ValueError, match=r"Invalid pretrained tag \(nope\)"):
        maekit.load_model("timm:vit_tiny_patch16_224.nope")
    with pytest.raises(FileNotFoundError, match=rf"timm:{TIMM_NAME} \(timm's Hub repository\): .*not in the "
                                                r"Hugging Face cache .*HF_HUB_OFFLINE=1 forbids downloads"):
        maekit.load_model(f"timm:{TIMM_NAME}")  # nothing cached, offline
    with pytest.raises(FileNotFoundError, match=r"^no such file or folder: runs/checkpoint-9.pth$"):
        maekit.load_model("runs/checkpoint-9.pth")  # a path, not a Hub id


def test_convert_takes_timm_names_and_hub_ids(tmp_path, timm_repo, capsys):
    import timm

    out = tmp_path / "official.pth"
    assert run_cli("convert", f"timm:{TIMM_NAME}", out) == 0
    sd = torch.load(out, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(sd["head.weight"], timm_repo.head.weight)
    # a transformers folder from a Hub id, then back to a timm folder that timm loads alone
    assert run_cli("convert", f"hf-hub:timm/{TIMM_NAME}", tmp_path / "hf", "--to", "hf") == 0
    assert run_cli("convert", tmp_path / "hf", tmp_path / "timm_again", "--to", "timm") == 0
    again = timm.create_model(f"local-dir:{tmp_path / 'timm_again'}", pretrained=True).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(again(x), timm_repo(x), atol=1e-4, rtol=1e-4)
    capsys.readouterr()
    assert run_cli("convert", "hf-hub:org/absent", tmp_path / "x.pth") == 1  # offline, not in the cache: an environment failure, exit 1 as in every command
    assert "not in the Hugging Face cache" in capsys.readouterr().err


def test_class_names_travel_to_transformers_and_back(tmp_path):
    """A labelled classifier's HF export has id2label from its class names; pipeline() answers with
    them and our top-1; reading the folder back gives the names again."""
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline

    torch.manual_seed(0)
    vit = maekit.create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=3,
                              global_pool=False).eval()
    vit.class_names = ["cat", "dog", "owl"]
    out = maekit.hub.export_model(vit, tmp_path / "hf", "hf")
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog", "2": "owl"}
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    pixels = AutoImageProcessor.from_pretrained(out)(img, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = vit(pixels)[0].softmax(-1)
    top = pipeline("image-classification", model=str(out), device="cpu")(img, top_k=1)[0]
    assert top["label"] == vit.class_names[int(probs.argmax())] and abs(top["score"] - float(probs.max())) < 1e-5
    assert maekit.load_model(out).class_names == ["cat", "dog", "owl"]


@pytest.fixture
def tiny_mae_on_the_hub(tmp_path, hf_cache):
    torch.manual_seed(0)
    mae = maekit.create_model("mae_vit_tiny_patch16", **TINY_MAE_ARGS)
    hf_cache("org/tiny-mae", mae.save_pretrained(tmp_path / "mae"))
    return mae


def test_commands_take_hub_ids(tmp_path, digit_folders, tiny_mae_on_the_hub, hf_cache, capsys):
    assert run_cli("finetune", "--finetune", "hf-hub:org/tiny-mae", "--data_path", digit_folders, "--output_dir",
                   tmp_path / "ft", "--batch_size", "24", "--epochs", "1", "--warmup_epochs", "0", *FAST) == 0
    out = capsys.readouterr().out
    assert "architecture from --finetune (hf-hub:org/tiny-mae)" in out and "loaded 28 tensors" in out
    extra = torch.load(tmp_path / "ft" / "checkpoint-last.pth", map_location="cpu", weights_only=False)["extra"]
    assert extra["model_name"] == "vit_tiny_patch16" and extra["model_args"]["depth"] == 2
    # the fine-tuned classifier as a Hub repository: eval --resume takes its id (weights, labels, shape)
    tuned = maekit.load_model(tmp_path / "ft" / "checkpoint-last.pth")
    hf_cache("org/tiny-ft", tuned.save_pretrained(tmp_path / "tuned"))
    assert run_cli("eval", "--resume", "hf-hub:org/tiny-ft", "--data_path", digit_folders, *FAST) == 0
    assert "Accuracy of the network on the 30 validation images" in capsys.readouterr().out
    assert run_cli("knn", "--model", "hf-hub:org/tiny-mae", "--data_path", digit_folders, *FAST) == 0
    out = capsys.readouterr().out
    assert "mae_vit_tiny_patch16 from hf-hub:org/tiny-mae (input 32x32, patch 8, as the source records)" in out
    assert "k-NN (k=20" in out
    feats = maekit.pipeline("image-feature-extraction", model="hf-hub:org/tiny-mae")
    assert feats(str(next((digit_folders / "val").rglob("*.png")))).shape[-1] == 192


def test_facebook_vit_mae_base_by_its_hub_id_equals_transformers(hf_cache, tmp_path):
    """The README line ``maekit.load_model("facebook/vit-mae-base")``: a ViTMAE repository written by
    transformers itself (tiny config, its own defaults such as layer_norm_eps=1e-12) under that id
    in the offline Hub cache; transformers loads the same id from the same cache, and both give the
    same reconstruction and loss for the same masking noise."""
    import transformers

    config = transformers.ViTMAEConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3,
                                       intermediate_size=768, image_size=32, patch_size=8, decoder_hidden_size=128,
                                       decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
                                       decoder_intermediate_size=512)
    torch.manual_seed(0)
    transformers.ViTMAEForPreTraining(config).save_pretrained(tmp_path / "vit-mae-base")
    hf_cache("facebook/vit-mae-base", tmp_path / "vit-mae-base")
    theirs = transformers.ViTMAEForPreTraining.from_pretrained("facebook/vit-mae-base").eval()
    ours = maekit.AutoModel.from_pretrained("facebook/vit-mae-base")
    assert ours.model_name == "mae_vit_tiny_patch16" and ours.model_args["layer_norm_eps"] == 1e-12
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        want, got = theirs(pixel_values=x, noise=noise), ours(x, noise=noise)
    torch.testing.assert_close(got.pred, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-6, rtol=1e-5)
    # its classifier goes on to timm, whose ViT has eps 1e-6 only: written with a note, outputs ~1e-5 apart
    import timm

    with pytest.warns(UserWarning, match="head of vit_tiny_patch16 is randomly initialised"):
        vit = maekit.load_model("facebook/vit-mae-base", num_classes=3)
    assert vit.model_args["layer_norm_eps"] == 1e-12
    vit.save_pretrained(tmp_path / "vit")
    report = maekit.convert.convert(tmp_path / "vit", tmp_path / "vit_timm", to_format="timm")
    assert any("LayerNorm eps 1e-12 written as timm's 1e-6" in n for n in report.notes)
    theirs = timm.create_model(f"local-dir:{tmp_path / 'vit_timm'}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), vit(x), atol=1e-4, rtol=1e-4)


def test_a_models_normalisation_travels_with_it(tmp_path, hf_cache):
    """A model trained on other statistics (grayscale scans, say): the mean / std / crop its folder
    records are what predict / visualize / the app use (they build pipelines on the loaded module),
    what save_pretrained writes back, and what the timm and transformers exports carry."""
    import timm
    from transformers import AutoImageProcessor as HFProcessor

    mean, std = [0.3, 0.3, 0.3], [0.2, 0.2, 0.2]
    vit = maekit.create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=2,
                              global_pool=False)
    vit.preprocessing = {"image_mean": mean, "image_std": std, "crop_pct": 0.95}
    folder = vit.save_pretrained(tmp_path / "ours")
    hf_cache("org/scans", folder)
    for source in (folder, "hf-hub:org/scans"):
        loaded = maekit.load_model(source)
        proc = maekit.pipeline("image-classification", loaded).image_processor  # a module, as the app passes
        assert list(proc.image_mean) == mean and list(proc.image_std) == std and proc.crop_pct == 0.95, source
        again = json.loads((loaded.save_pretrained(tmp_path / "again") / "preprocessor_config.json").read_text())
        assert (again["image_mean"], again["image_std"], again["crop_pct"]) == (mean, std, 0.95)
    timm_dir = maekit.hub.export_model(loaded, tmp_path / "timm", "timm")
    cfg = timm.create_model(f"local-dir:{timm_dir}", pretrained=True).pretrained_cfg
    assert list(cfg["mean"]) == mean and list(cfg["std"]) == std and cfg["crop_pct"] == 0.95
    assert list(maekit.load_model(timm_dir).preprocessor_config()["image_mean"]) == mean
    hf_dir = maekit.hub.export_model(loaded, tmp_path / "hf", "hf")
    assert list(HFProcessor.from_pretrained(hf_dir).image_mean) == mean
    assert maekit.load_model(hf_dir).preprocessor_config()["image_std"] == std
    back = maekit.convert.convert(timm_dir, tmp_path / "back")  # maekit convert -> a maekit folder
    written = json.loads((tmp_path / "back" / "preprocessor_config.json").read_text())
    assert back.dst.endswith("back") and written["image_mean"] == mean and written["crop_pct"] == 0.95


def test_our_processor_reads_a_transformers_preprocessor_like_transformers(tmp_path):
    """A transformers ``ViTImageProcessor`` file (an MAE's HF export) resizes the whole image (no
    centre crop), a ``BitImageProcessor`` one (a classifier's) resizes the shorter side and centre-crops:
    ours reads each the same way, equal to transformers' own pixels up to one grey level (it rounds to
    uint8)."""
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor as HFProcessor

    vit = maekit.create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=2, global_pool=False)
    mae = maekit.create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8, depth=1, decoder_depth=1)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    for model, mode in ((mae, "resize"), (vit, "crop")):
        folder = maekit.hub.export_model(model, tmp_path / mode, "hf")
        ours = maekit.AutoImageProcessor.from_pretrained(folder)
        assert ours.resize_mode == mode and ours.size == (32, 32)
        want = HFProcessor.from_pretrained(folder)(img, return_tensors="pt")["pixel_values"]
        got = ours(img, return_tensors="pt")["pixel_values"]
        assert got.shape == want.shape == (1, 3, 32, 32)
        assert float((got - want).abs().max()) <= 1 / 255 / 0.224 + 1e-4

"""Auto classes, save/from_pretrained, the image processor and the predict / visualize commands."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from maekit.api import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    DecoderNotLoadedWarning,
    ImageProcessor,
    MAEConfig,
    from_pretrained,
    save_pretrained,
)
from maekit.models import create_model

TINY_MAE = dict(img_size=32, patch_size=8, depth=2, decoder_depth=1)
TINY_VIT = dict(img_size=32, patch_size=8, depth=2, num_classes=4)
TINY_CONV = dict(img_size=64, embed_dim=[16, 32, 64], depth=[1, 1, 1], num_heads=2)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    monkeypatch.setenv("MAEKIT_OFFLINE", "1")
    monkeypatch.setenv("MAEKIT_HOME", str(tmp_path / "cache"))


@pytest.fixture
def images(tmp_path):
    from skimage import data

    paths = {}
    for name, arr, suffix in (("astronaut", data.astronaut()[:301, :257], ".jpg"),
                              ("camera", data.camera()[:99], ".png"), ("logo", data.logo(), ".png")):
        paths[name] = tmp_path / f"{name}{suffix}"
        Image.fromarray(arr).save(paths[name])
    return paths


# ---------------------------------------------------------------------------- config
def test_config_prints_and_aliases():
    cfg = AutoConfig.from_pretrained("mae_vit_base_p16")
    assert cfg.model_name == "mae_vit_base_patch16_dec512d8b"
    assert cfg.weights == "mae_vit_base_patch16.pretrain"
    assert (cfg.hidden_size, cfg.embed_dim, cfg.num_hidden_layers, cfg.image_size) == (768, 768, 12, 224)
    assert cfg.norm_pixel_loss is True and cfg.decoder_hidden_size == 512 and cfg.num_channels == 3
    text = repr(cfg)
    assert text.startswith("MAEConfig {") and json.loads(text[len("MAEConfig "):])["resolved"]["depth"] == 12
    cfg.image_size = 448
    assert cfg.model_args["img_size"] == 448 and cfg.img_size == 448
    assert MAEConfig.from_dict(cfg.to_dict()) == cfg
    assert AutoConfig.from_pretrained("vit_base_p16").num_labels == 1000
    with pytest.raises(AttributeError):
        _ = cfg.no_such_field
    with pytest.raises(ValueError, match="unknown model"):
        AutoConfig.from_pretrained("mae_vit_gigantic_patch16")
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        AutoConfig.from_pretrained("no_such.pth")


def test_from_config_builds_random_model():
    cfg = MAEConfig("mae_vit_tiny_patch16", TINY_MAE, num_channels=1)
    model = AutoModel.from_config(cfg)
    assert model.in_chans == 1 and model.model_args["in_chans"] == 1 and not model.training
    assert AutoModel.from_config(cfg.to_dict()).patch_size == 8


# ---------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("name, args", [("mae_vit_tiny_patch16", {**TINY_MAE, "norm_pix_loss": True}),
                                        ("convmae_convvit_small_patch16",
                                         {**TINY_CONV, "decoder_embed_dim": 32, "decoder_depth": 1})])
def test_save_and_load_round_trip_pretraining(tmp_path, name, args):
    torch.manual_seed(0)
    model = create_model(name, **args).eval()
    out = save_pretrained(model, tmp_path / "m")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    loaded = AutoModel.from_pretrained(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.model_args == model.model_args
    size = args["img_size"]
    x, noise = torch.randn(2, 3, size, size), torch.rand(2, model.num_patches)
    with torch.no_grad():
        a, b = model(x, noise=noise), loaded(x, noise=noise)
    assert torch.equal(a.pred, b.pred) and torch.equal(a.loss, b.loss) and torch.equal(a.mask, b.mask)
    assert loaded.norm_pix_loss == model.norm_pix_loss
    proc = AutoImageProcessor.from_pretrained(tmp_path / "m")
    assert proc.size == (size, size) and proc.resize_mode == "resize"


def test_save_and_load_round_trip_classifier_with_class_names(tmp_path):
    model = create_model("vit_tiny_patch16", **TINY_VIT).eval()
    model.class_names = ["cat", "dog", "bird", "fish"]
    save_pretrained(model, tmp_path / "cls")
    loaded = from_pretrained(str(tmp_path / "cls"))
    assert loaded.class_names == ["cat", "dog", "bird", "fish"]
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    # model.save_pretrained survives deepcopy and pickling (the config travels with the model).
    for m in (loaded, copy.deepcopy(loaded), pickle.loads(pickle.dumps(loaded))):
        m.save_pretrained(tmp_path / "again")
        assert torch.equal(from_pretrained(tmp_path / "again")(x), model(x))
    assert json.loads((tmp_path / "again" / "config.json").read_text())["class_names"][1] == "dog"


def test_from_pretrained_official_pth_files(tmp_path):
    torch.manual_seed(0)
    model = create_model("mae_vit_tiny_patch16", **TINY_MAE).eval()
    sd = model.state_dict()
    torch.save({"model": sd}, tmp_path / "full.pth")
    loaded = AutoModel.from_pretrained(tmp_path / "full.pth")
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    assert torch.equal(loaded(x, noise=noise).pred, model(x, noise=noise).pred)
    encoder = {k: v for k, v in sd.items() if not k.startswith(("decoder_", "mask_token"))}
    torch.save({"model": encoder}, tmp_path / "enc.pth")
    with pytest.warns(DecoderNotLoadedWarning):
        AutoModel.from_pretrained(tmp_path / "enc.pth")
    # A pretraining file into a classifier: encoder loaded, head re-initialised (with a warning).
    vit = create_model("vit_tiny_patch16", **TINY_VIT)
    from maekit.hub import load_weights_into as load_weights

    with pytest.warns(UserWarning, match="head"):
        load_weights(vit, sd, label="full.pth")
    assert torch.equal(vit.blocks[1].mlp.fc1.weight, model.blocks[1].mlp.fc1.weight)


def test_load_errors_are_clear(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        AutoModel.from_pretrained(tmp_path / "junk.pth")
    other = create_model("vit_tiny_patch16", **TINY_VIT).state_dict()
    model = create_model("mae_vit_tiny_patch16", **TINY_MAE)
    from maekit.hub import load_weights_into as load_weights

    with pytest.raises(ValueError, match="do not fit"):
        load_weights(model, other, label="vit weights")


# ---------------------------------------------------------------------------- processor
def test_processor_inputs(images):
    proc = ImageProcessor(48, num_channels=3)
    one = proc(images["astronaut"])["pixel_values"]
    assert one.shape == (1, 3, 48, 48) and one.dtype == torch.float32
    batch = proc([images["astronaut"], str(images["camera"]), Image.open(images["logo"])])["pixel_values"]
    assert batch.shape == (3, 3, 48, 48)
    assert torch.allclose(batch[0], one[0])
    arr = np.asarray(Image.open(images["astronaut"]).convert("RGB"))
    assert torch.allclose(proc(arr)["pixel_values"], one, atol=1e-6)  # uint8 HWC = the same image
    as_float = proc(arr.astype(np.float32) / 255)["pixel_values"]  # float path: tensor resize
    assert as_float.shape == (1, 3, 48, 48) and (as_float - one).abs().mean() < 0.05
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    assert torch.allclose(proc(t)["pixel_values"], as_float, atol=1e-5)
    assert proc(torch.stack([t, t]))["pixel_values"].shape == (2, 3, 48, 48)
    gray = ImageProcessor((40, 24), num_channels=1, resize_mode="resize")
    assert gray([images["logo"], arr, t])["pixel_values"].shape == (3, 1, 40, 24)


def test_processor_round_trip_and_modes(tmp_path):
    proc = ImageProcessor(64, num_channels=1, resize_mode="crop", image_mean=0.5, image_std=0.25)
    proc.save_pretrained(tmp_path)
    again = AutoImageProcessor.from_pretrained(tmp_path)
    assert again == proc and again.image_mean == (0.5,) and again.crop_pct == 0.875
    cls = AutoImageProcessor.from_pretrained(create_model("vit_tiny_patch16", **TINY_VIT))
    assert cls.resize_mode == "crop" and cls.size == (32, 32)
    # the evaluation protocol: 256 -> centre crop 224 keeps the central 87.5 %
    img = Image.new("RGB", (256, 256), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 16, 256))  # a blue band the crop removes
    x = ImageProcessor(224)(img)["pixel_values"]
    assert x.shape == (1, 3, 224, 224) and x[0, 2].max() < 0  # no blue left


def test_processor_errors_name_the_input(images, tmp_path):
    proc = ImageProcessor(32)
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        proc(tmp_path / "nowhere.jpg")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        proc([images["astronaut"], bad])
    with pytest.raises(ValueError, match="unsupported image input"):
        proc(42)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        proc(np.full((8, 8, 3), 200.0, dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="OFFLINE"):
        proc("https://example.invalid/cat.jpg")


# ---------------------------------------------------------------------------- CLI
def test_cli_predict_and_visualize(tmp_path, images, capsys, monkeypatch):
    from maekit.cli import main

    mae_dir, cls_dir = tmp_path / "mae", tmp_path / "cls"
    save_pretrained(create_model("mae_vit_tiny_patch16", **TINY_MAE), mae_dir)
    vit = create_model("vit_tiny_patch16", **TINY_VIT)
    vit.class_names = ["cat", "dog", "bird", "fish"]
    save_pretrained(vit, cls_dir)

    assert main(["predict", "--model", str(cls_dir), "--input", str(images["astronaut"]),
                 str(images["camera"]), "--topk", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows] == [str(images["astronaut"]), str(images["camera"])]
    preds = rows[0]["predictions"]
    assert len(preds) == 3 and preds[0]["label"] in vit.class_names
    assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)

    assert main(["predict", "--model", str(cls_dir), "--input", str(images["logo"])]) == 0
    text = capsys.readouterr().out
    assert "logo.png" in text and " 1. " in text

    out_dir = tmp_path / "recon"
    assert main(["predict", "--model", str(mae_dir), "--input", str(images["logo"]),
                 "--output_dir", str(out_dir), "--seed", "3", "--mask_ratio", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "loss" in text and (out_dir / "logo_grid.png").is_file()
    assert Image.open(out_dir / "logo_reconstruction.png").size == (32, 32)

    grid = tmp_path / "grid.png"
    assert main(["visualize", "--model", str(mae_dir), "--image", str(images["astronaut"]),
                 "--out", str(grid)]) == 0
    assert str(grid) in capsys.readouterr().out
    assert Image.open(grid).size == (4 * 32 + 5 * 2, 32 + 2 * 2)

    assert main(["visualize", "--model", str(cls_dir), "--image", str(images["astronaut"])]) == 2
    assert "pretraining model" in capsys.readouterr().err
    assert main(["predict", "--model", str(mae_dir), "--input", str(tmp_path / "none.jpg")]) == 2
    assert "none.jpg" in capsys.readouterr().err
    # offline (autouse fixture) and a name with published weights: the message says what to do
    assert main(["predict", "--model", "vit_base_patch16", "--input", str(images["logo"])]) == 2
    assert "MAEKIT_OFFLINE" in capsys.readouterr().err

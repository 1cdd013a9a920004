"""pipeline(): masked image modeling, classification and feature extraction on real photos from disk."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from maekit.api import ImageProcessor, pipeline, save_pretrained
from maekit.api.pipelines import class_names
from maekit.models import create_model

TINY_MAE = dict(img_size=32, patch_size=8, depth=2, decoder_depth=1)
TINY_CONV = dict(img_size=64, embed_dim=[16, 32, 64], depth=[1, 1, 1], num_heads=2)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    monkeypatch.setenv("MAEKIT_OFFLINE", "1")
    monkeypatch.setenv("MAEKIT_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """scikit-image sample photos written to disk: JPEG and PNG, odd sizes, grayscale, RGBA."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    spec = [("astronaut.jpg", data.astronaut()[:333, :201]), ("coffee.png", data.coffee()[5:, 3:]),
            ("chelsea.jpg", data.chelsea()), ("camera_gray.png", data.camera()[:77, :150]),
            ("logo_rgba.png", data.logo()[:123])]
    paths = []
    for name, arr in spec:
        Image.fromarray(arr).save(root / name)
        paths.append(root / name)
    assert Image.open(paths[3]).mode == "L" and Image.open(paths[4]).mode == "RGBA"
    return paths


@pytest.fixture(scope="module")
def mae():
    torch.manual_seed(0)
    return create_model("mae_vit_tiny_patch16", **TINY_MAE, norm_pix_loss=True).eval()


# ---------------------------------------------------------------------------- masked image modeling
def test_masked_image_modeling_outputs(mae, photos, tmp_path):
    pipe = pipeline("masked-image-modeling", model=mae)
    results = pipe(photos, mask_ratio=0.75, seed=0, output_dir=tmp_path / "out")
    assert isinstance(results, list) and len(results) == len(photos)
    for path, r in zip(photos, results, strict=True):
        for key in ("reconstruction", "reconstruction_visible", "masked"):
            assert isinstance(r[key], Image.Image) and r[key].size == (32, 32) and r[key].mode == "RGB"
        assert r["grid"].size == (4 * 32 + 5 * 2, 32 + 4)
        assert r["mask"].shape == (4, 4) and r["mask"].sum() == 12  # 16 patches, 75 % removed
        assert isinstance(r["loss"], float) and r["loss"] > 0
        assert Image.open(r["files"]["grid"]).size == r["grid"].size
        assert r["files"]["grid"].endswith(f"{path.stem}_grid.png")
    single = pipe(photos[0], seed=0)
    assert isinstance(single, dict) and torch.equal(single["mask"], results[0]["mask"])


def test_same_seed_same_mask_other_seed_other_mask(mae, photos):
    pipe = pipeline("masked_image_modeling", model=mae)
    a, b, c = (pipe(photos[:2], seed=s) for s in (5, 5, 6))
    assert all(torch.equal(x["mask"], y["mask"]) for x, y in zip(a, b, strict=True))
    assert a[0]["loss"] == b[0]["loss"]
    assert not torch.equal(a[0]["mask"], c[0]["mask"])
    # a mask does not depend on the batch size
    d = pipeline("masked_image_modeling", model=mae, batch_size=1)(photos[:2], seed=5)
    assert torch.equal(d[1]["mask"], a[1]["mask"])
    # seed=2 draws the official demo's noise (torch.manual_seed(2); torch.rand(N, L))
    torch.manual_seed(2)
    noise = torch.rand(1, mae.num_patches)
    x = ImageProcessor.from_model(mae)(photos[0])["pixel_values"]
    expected = mae(x, mask_ratio=0.75, noise=noise).mask.reshape(4, 4)
    assert torch.equal(pipe(photos[0], seed=2)["mask"], expected)


def test_norm_pix_reconstruction_uses_patch_statistics(mae, photos):
    """Norm-pix predictions are shown with each patch's own mean / std (viz.reconstruct)."""
    pixel = create_model("mae_vit_tiny_patch16", **TINY_MAE).eval()
    pixel.load_state_dict(mae.state_dict())
    a = pipeline("masked_image_modeling", model=mae)(photos[1], seed=1)["reconstruction"]
    b = pipeline("masked_image_modeling", model=pixel)(photos[1], seed=1)["reconstruction"]
    assert a.tobytes() != b.tobytes()
    # What is shown: the prediction mapped back with each ORIGINAL patch's mean and std.
    from maekit.viz import denormalize_patches

    proc = ImageProcessor.from_model(mae)
    x = proc(photos[1])["pixel_values"]
    noise = torch.rand(1, mae.num_patches, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = mae(x, noise=noise).pred
    want = proc.to_pil(mae.unpatchify(denormalize_patches(pred, mae.patchify(x))))[0]
    assert a.tobytes() == want.tobytes()


def test_convmae_and_grayscale_models(photos, tmp_path):
    conv = create_model("convmae_convvit_small_patch16", **TINY_CONV, decoder_embed_dim=32, decoder_depth=1)
    r = pipeline("masked_image_modeling", model=conv)(photos[2], seed=0)
    assert r["reconstruction"].size == (64, 64) and r["mask"].shape == (4, 4)
    gray = create_model("mae_vit_tiny_patch16", **TINY_MAE, in_chans=1)
    save_pretrained(gray, tmp_path / "gray")
    out = pipeline("masked_image_modeling", model=str(tmp_path / "gray"))(photos)
    assert all(o["reconstruction"].mode == "L" for o in out)


# ---------------------------------------------------------------------------- classification
def test_classification_topk(photos):
    vit = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=2, num_classes=7)
    pipe = pipeline("image-classification", model=vit)
    results = pipe(photos, top_k=4)
    assert len(results) == len(photos)
    for preds in results:
        scores = [p["score"] for p in preds]
        assert len(preds) == 4 and scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
        assert all(p["label"] == f"LABEL_{p['index']}" for p in preds)
    assert len(pipe(photos[0], top_k=100)) == 7  # capped at the number of classes
    vit.class_names = list("abcdefg")
    assert pipeline("image_classification", model=vit)(photos[0])[0]["label"] in "abcdefg"


def test_imagenet_labels_for_1000_classes():
    vit = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=1000)
    names = class_names(vit)
    assert len(names) == 1000 and names[0].startswith("tench") and "LABEL" not in names[281]


def test_task_model_mismatch_is_clear(mae):
    vit = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=3)
    with pytest.raises(ValueError, match="pretraining model"):
        pipeline("masked_image_modeling", model=vit)
    with pytest.raises(ValueError, match="classifier"):
        pipeline("image_classification", model=mae)
    with pytest.raises(ValueError, match="unknown task"):
        pipeline("depth_estimation", model=mae)
    with pytest.raises(ValueError, match="unknown argument"):
        pipeline("image_feature_extraction", model=mae)(torch.rand(3, 32, 32), top_k=3)


# ---------------------------------------------------------------------------- features
def test_features_unmasked_deterministic(mae, photos):
    pipe = pipeline("image_feature_extraction", model=mae)
    a, b = pipe(photos), pipe(photos)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) and a[0].shape == (192,)
    x = ImageProcessor.from_model(mae, resize_mode="crop")(photos)["pixel_values"]
    with torch.no_grad():
        tokens = mae.forward_features(x)
    assert torch.allclose(torch.stack(a), tokens[:, 0], atol=1e-6)  # cls token, all 16 patches seen
    full = pipe(photos[0], pool=False)
    assert full.shape == (17, 192) and torch.allclose(full, tokens[0], atol=1e-6)


def test_features_of_classifiers_and_convmae(photos):
    vit = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=2, num_classes=5).eval()
    feats = pipeline("feature-extraction", model=vit)(photos[:2])
    x = ImageProcessor.from_model(vit)(photos[:2])["pixel_values"]
    with torch.no_grad():
        want = vit.forward_head(vit.forward_features(x), pre_logits=True)
    assert torch.allclose(torch.stack(feats), want, atol=1e-6)
    conv = create_model("convvit_small_patch16", **TINY_CONV, num_classes=0)
    assert pipeline("image_feature_extraction", model=conv)(photos[3]).shape == (64,)
    convmae = create_model("convmae_convvit_small_patch16", **TINY_CONV, decoder_embed_dim=32,
                           decoder_depth=1)
    tokens = pipeline("image_feature_extraction", model=convmae, pool=False)(photos[4])
    assert tokens.shape == (16, 64)


@pytest.mark.parametrize("task", ["image_classification", "image_feature_extraction"])
def test_empty_nan_and_negative_inputs_are_refused(task, tmp_path, monkeypatch):
    import io
    import threading
    import http.server

    import numpy as np

    model = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=2)
    pipe = pipeline(task, model)
    for image, words in [(Image.new("RGB", (0, 0)), r"empty \(0x0 pixels\)"),
                         (np.zeros((0, 5, 3), np.uint8), "empty"),
                         (torch.full((3, 32, 32), float("nan")), "NaN or infinite"),
                         ([torch.rand(3, 32, 32), -torch.ones(3, 32, 32)], "image 1 holds negative values")]:
        with pytest.raises(ValueError, match=words):
            pipe(image)
    assert len(pipe(torch.rand(3, 32, 32))) > 0
    # a decompression bomb served by URL: the message, as for the same file on disk
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    body = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    monkeypatch.delenv("MAEKIT_OFFLINE", raising=False)  # a loopback server: nothing leaves the machine
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ValueError, match="cannot decode the image at http"):
            pipe(f"http://127.0.0.1:{server.server_address[1]}/bomb.png")
    finally:
        server.shutdown()

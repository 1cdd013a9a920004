"""Weights by name and the download cache, against a loopback HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import json
import http.server
import threading
import warnings

import pytest
import torch

from maekit.hub import cache as hub
from maekit.hub import table as zoo
from maekit.hub import ChecksumError, WeightsUnavailableError, load_model
from maekit.models import create_model


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes); honours ``Range: bytes=N-`` unless told not to."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        if rng and srv.honor_range:
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("MAEKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MAEKIT_OFFLINE", raising=False)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.honor_range = {}, [], True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/"
    monkeypatch.setenv("MAEKIT_WEIGHTS_URL", srv.base)
    yield srv
    srv.shutdown()
    srv.server_close()


def _payload(n: int = 300_000) -> bytes:
    g = torch.Generator().manual_seed(0)
    return bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist())


def _digests(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- downloads
def test_download_verifies_and_caches(server, tmp_path):
    data = _payload()
    md5, sha = _digests(data)
    server.files["/w/a.pth"] = data
    dest = tmp_path / "cache" / "a.pth"
    out = hub.download(server.base + "w/a.pth", dest, sha256=sha, md5_prefix=md5[:6], progress=False)
    assert out == dest and dest.read_bytes() == data
    assert not dest.with_name("a.pth.part").exists()
    n = len(server.requests)
    hub.download(server.base + "w/a.pth", dest, sha256=sha, progress=False)  # cached: no request
    assert len(server.requests) == n


def test_wrong_checksum_is_refused_and_not_kept(server, tmp_path):
    server.files["/w/b.pth"] = _payload()
    dest = tmp_path / "cache" / "b.pth"
    with pytest.raises(ChecksumError, match="sha256"):
        hub.download(server.base + "w/b.pth", dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not dest.with_name("b.pth.part").exists()
    with pytest.raises(ChecksumError, match="md5"):
        hub.download(server.base + "w/b.pth", dest, md5_prefix="zzzzzz", progress=False)
    assert not dest.exists() and not dest.with_name("b.pth.part").exists()


def test_partial_download_resumes_with_range(server, tmp_path):
    data = _payload()
    md5, sha = _digests(data)
    server.files["/w/c.pth"] = data
    dest = tmp_path / "cache" / "c.pth"
    dest.parent.mkdir(parents=True)
    half = len(data) // 3
    dest.with_name("c.pth.part").write_bytes(data[:half])
    hub.download(server.base + "w/c.pth", dest, sha256=sha, md5_prefix=md5[:6], progress=False)
    assert ("/w/c.pth", f"bytes={half}-") in server.requests
    assert dest.read_bytes() == data


def test_server_ignoring_range_restarts(server, tmp_path):
    data = _payload()
    _, sha = _digests(data)
    server.files["/w/d.pth"] = data
    server.honor_range = False
    dest = tmp_path / "cache" / "d.pth"
    dest.parent.mkdir(parents=True)
    dest.with_name("d.pth.part").write_bytes(b"garbage that is not the start of the file")
    hub.download(server.base + "w/d.pth", dest, sha256=sha, progress=False)
    assert dest.read_bytes() == data


def test_corrupt_cached_file_is_refused(server, tmp_path):
    dest = tmp_path / "cache" / "e.pth"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"placed by hand, but wrong")
    with pytest.raises(ChecksumError):
        hub.download(server.base + "w/e.pth", dest, sha256="1" * 64, progress=False)
    assert not dest.exists()


def test_offline_without_cache_says_what_to_do(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MAEKIT_OFFLINE", "1")
    entry = zoo.lookup("mae_vit_base_patch16")
    with pytest.raises(WeightsUnavailableError) as err:
        hub.fetch_weights(entry, progress=False)
    msg = str(err.value)
    assert "MAEKIT_OFFLINE" in msg and server.base + "pretrain/mae_pretrain_vit_base.pth" in msg
    assert str(tmp_path / "cache" / "weights" / "pretrain" / "mae_pretrain_vit_base.pth") in msg
    assert "place it" in msg
    assert server.requests == []


def test_offline_with_cache_works(server, tmp_path, monkeypatch):
    data = _payload(1000)
    server.files["/w/f.pth"] = data
    dest = tmp_path / "cache" / "f.pth"
    hub.download(server.base + "w/f.pth", dest, sha256=_digests(data)[1], progress=False)
    monkeypatch.setenv("MAEKIT_OFFLINE", "1")
    n = len(server.requests)
    assert hub.download(server.base + "w/f.pth", dest, sha256=_digests(data)[1]).read_bytes() == data
    assert len(server.requests) == n


def test_network_failure_is_a_clear_error(server, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="404"):
        hub.download(server.base + "missing.pth", tmp_path / "cache" / "m.pth", progress=False)


# ---------------------------------------------------------------------------- names
@pytest.fixture
def tiny_entries(server, tmp_path):
    """A tiny MAE served under two weights names: full (with decoder) and encoder only."""
    model = create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8, depth=2, decoder_depth=1,
                         norm_pix_loss=True)
    full = {k: v for k, v in model.state_dict().items()}
    enc = {k: v for k, v in full.items() if not k.startswith(("decoder_", "mask_token"))}
    entries = []
    for tag, sd in (("hubtest_full", full), ("hubtest_encoder", enc)):
        path = tmp_path / f"{tag}.pth"
        torch.save({"model": sd}, path)
        data = path.read_bytes()
        server.files[f"/tiny/{tag}.pth"] = data
        entries.append(zoo.register_weights(zoo.WeightsEntry(
            f"mae_vit_tiny_patch16.{tag}", "mae_vit_tiny_patch16", f"tiny/{tag}.pth",
            "full" if tag.endswith("full") else "encoder",
            dict(img_size=32, patch_size=8, depth=2, decoder_depth=1, norm_pix_loss=True),
            md5_prefix=hashlib.md5(data).hexdigest()[:6]), default=False))
    yield model.eval()
    for e in entries:
        zoo.unregister_weights(e.name)


def test_from_pretrained_by_name_downloads_and_matches(tiny_entries, server):
    from maekit.api import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained("mae_vit_tiny_patch16.hubtest_full")
    assert cfg.norm_pix_loss is True and server.requests == []  # a config needs no download
    model = AutoModel.from_pretrained("mae_vit_tiny_patch16.hubtest_full", progress=False)
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    assert torch.equal(model(x, noise=noise).pred, tiny_entries(x, noise=noise).pred)
    assert ("/tiny/hubtest_full.pth", None) in server.requests
    with pytest.warns(UserWarning, match="decoder"):
        enc = AutoModel.from_pretrained("mae_vit_tiny_patch16.hubtest_encoder", progress=False)
    assert torch.equal(enc.blocks[0].attn.qkv.weight, tiny_entries.blocks[0].attn.qkv.weight)
    # A URL of a table file reuses the entry's checksum.
    by_url = AutoModel.from_pretrained(server.base + "tiny/hubtest_full.pth", progress=False)
    assert torch.equal(by_url(x, noise=noise).pred, tiny_entries(x, noise=noise).pred)


def test_download_command_fills_the_cache_for_offline_runs(tiny_entries, server, monkeypatch, capsys):
    from maekit.cli import main as cli_main

    assert cli_main(["download", "mae_vit_tiny_patch16.hubtest_full"]) == 0
    assert capsys.readouterr().out.strip().endswith("hubtest_full.pth")
    monkeypatch.setenv("MAEKIT_OFFLINE", "1")
    n = len(server.requests)
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    model = load_model("mae_vit_tiny_patch16.hubtest_full", progress=False)
    assert torch.equal(model(x, noise=noise).pred, tiny_entries(x, noise=noise).pred)
    assert len(server.requests) == n
    assert cli_main(["download", "mae_vit_tiny_patch16"]) == 2  # no published weights: says which have
    assert "has no published weights" in capsys.readouterr().err


def test_download_false_builds_without_network(server):
    from maekit.api import AutoModel

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = AutoModel.from_pretrained("mae_vit_base_patch16", download=False)
    assert model.norm_pix_loss is True and server.requests == []


def test_weights_table_names():
    e = zoo.lookup("mae_vit_base_patch16")
    assert e.name == "mae_vit_base_patch16.pretrain" and e.contents == "encoder" and e.md5_prefix == "8cad7c"
    assert zoo.lookup("mae_vit_base_p16") == e  # MindFormers name
    assert zoo.lookup("vit_base_p16").name == "vit_base_patch16.finetuned"
    assert zoo.lookup("vit_large_patch16").md5_prefix == "51f550"
    assert zoo.lookup("mae_vit_huge_patch14.visualize").model_args == {"norm_pix_loss": False}
    assert zoo.lookup("mae_vit_large_patch16.full").path == "pretrain/mae_pretrain_vit_large_full.pth"
    assert zoo.lookup("convmae_convvit_base_patch16") is None  # Google Drive only: no entry
    assert zoo.lookup("mae_vit_tiny_patch16") is None
    assert all(zoo.lookup(n).sha256 is None for n in zoo.list_pretrained())
    with pytest.raises(ValueError, match="visualize"):
        zoo.lookup("mae_vit_base_patch16.nope")
    with pytest.raises(ValueError, match="unknown model"):
        zoo.lookup("mae_vit_gigantic_patch16")


def test_image_url_input(server):
    import io

    from PIL import Image

    from maekit.api import ImageProcessor

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, format="PNG")
    server.files["/img/green.png"] = buf.getvalue()
    x = ImageProcessor(16, resize_mode="resize")(server.base + "img/green.png")["pixel_values"]
    assert x.shape == (1, 3, 16, 16) and x[0, 1].min() > x[0, 0].max()
    with pytest.raises(FileNotFoundError, match="missing.png"):
        ImageProcessor(16)(server.base + "img/missing.png")


# ---------------------------------------------------------------------------- load_model
def _training_checkpoint(path, model, extra_args, class_names=None):
    """What the tasks write: weights under 'model', optimizer / epoch, and the model's identity in 'extra'."""
    extra = {"model_name": model.model_name, "model_args": extra_args}
    if class_names is not None:
        extra["class_names"] = class_names
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 3, "extra": extra}, path)
    return path


def test_load_model_training_checkpoint_with_linear_probe_head(tmp_path):
    import maekit

    args = dict(img_size=32, patch_size=8, depth=1, num_classes=3, global_pool=False)
    torch.manual_seed(0)
    probe = create_model("vit_tiny_patch16", **args)
    bn = torch.nn.BatchNorm1d(probe.embed_dim, affine=False, eps=1e-6)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    probe.head = torch.nn.Sequential(bn, probe.head)  # the official linear-probe head
    path = _training_checkpoint(tmp_path / "checkpoint-3.pth", probe.eval(), args, ["a", "b", "c"])
    model = maekit.load_model(path)
    assert model.model_name == "vit_tiny_patch16" and model.model_args == args
    assert model.class_names == ["a", "b", "c"] and isinstance(model.head, torch.nn.Linear)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), probe(x), atol=1e-5, rtol=1e-5)  # head folded, same outputs
    with pytest.warns(UserWarning, match="head"):
        five = maekit.load_model(path, num_classes=5)
    assert five.num_classes == 5 and five.class_names is None
    assert torch.equal(five.blocks[0].mlp.fc1.weight, model.blocks[0].mlp.fc1.weight)
    assert maekit.load_model(model) is model


def test_load_model_pretraining_checkpoint_and_errors(tmp_path):
    import maekit

    args = dict(img_size=32, patch_size=8, depth=1, decoder_depth=1)
    torch.manual_seed(0)
    mae = create_model("mae_vit_tiny_patch16", **args).eval()
    path = _training_checkpoint(tmp_path / "checkpoint-0.pth", mae, args)
    loaded = maekit.load_model(path)
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, noise=noise).pred, mae(x, noise=noise).pred)
    # The encoder of the same checkpoint into a built classifier at another input size (fine-tuning start).
    from maekit.hub import load_weights_into

    vit = create_model("vit_tiny_patch16", img_size=48, patch_size=8, depth=1, num_classes=2)
    with pytest.warns(UserWarning, match="head"):
        load_weights_into(vit, path)
    assert torch.equal(vit.blocks[0].attn.qkv.weight, mae.blocks[0].attn.qkv.weight)
    assert vit.pos_embed.shape == (1, 37, 192)
    with pytest.raises(ValueError, match="encoder-only file: reconstructions need the decoder"):
        enc = {k: v for k, v in mae.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
        load_weights_into(create_model("mae_vit_tiny_patch16", **args), enc, require_decoder=True)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        maekit.load_model(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="unknown model 'mae_vit_gigantic'"):
        maekit.load_model("mae_vit_gigantic")


# ---------------------------------------------------------------------------- Hugging Face Hub ids
def test_hub_ids_load_maekit_and_transformers_folders(tmp_path, hf_cache):
    import maekit
    from maekit.convert import save_state_dict

    torch.manual_seed(0)
    mae = create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8, depth=1, decoder_depth=1).eval()
    hf_cache("org/tiny-mae", mae.save_pretrained(tmp_path / "ours"))
    save_state_dict(mae.state_dict(), tmp_path / "hf", "hf", mae.model_name, mae.model_args)
    hf_cache("org/tiny-vitmae", tmp_path / "hf")
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    want = mae(x, noise=noise).pred
    for source in ("hf-hub:org/tiny-mae", "org/tiny-mae", "hf-hub:org/tiny-vitmae@main"):
        model = maekit.load_model(source)
        assert model.config.model_args == mae.model_args, source
        assert torch.equal(model(x, noise=noise).pred, want), source
    assert torch.equal(maekit.AutoModel.from_pretrained("hf-hub:org/tiny-mae")(x, noise=noise).pred,
                       maekit.load_model(tmp_path / "ours")(x, noise=noise).pred)
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        maekit.load_model("hf-hub:org/absent")
    with pytest.raises(ValueError, match="not a Hub id"):
        maekit.load_model("hf-hub:no-slash")


def test_a_missing_local_path_that_looks_like_a_hub_id_says_both(hf_cache):
    import maekit

    with pytest.raises(FileNotFoundError, match=r"no such file or folder: runs/ft \(and as a Hub id: .*not in the"):
        maekit.load_model("runs/ft")


def test_timm_export_loads_with_one_timm_line(tmp_path):
    import timm

    import maekit

    torch.manual_seed(0)
    vit = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=2, num_classes=3).eval()
    vit.class_names = ["cat", "dog", "owl"]
    folder = maekit.hub.export_model(vit, tmp_path / "timm_vit", "timm")
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # no other argument
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(theirs(x), vit(x))
    cfg = theirs.pretrained_cfg
    assert cfg["num_classes"] == 3 and tuple(cfg["input_size"]) == (3, 32, 32) and cfg["crop_pct"] == 0.875
    assert tuple(cfg["mean"]) == (0.485, 0.456, 0.406) and cfg["label_names"] == ["cat", "dog", "owl"]
    written = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert not {"tag", "hf_hub_id", "license", "paper_ids"} & set(written)  # not timm's own weights' record
    # transformers runs the timm folder too (TimmWrapper), mean-pooled head and labels included
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    pipe = pipeline("image-classification", model=str(folder), device="cpu")
    with torch.no_grad():
        probs = vit(pipe.image_processor(img, return_tensors="pt")["pixel_values"])[0].softmax(-1)
    top = pipe(img, top_k=1)[0]
    assert top["label"] == vit.class_names[int(probs.argmax())] and abs(top["score"] - float(probs.max())) < 1e-5
    # and back: the timm folder is a source like any other (labels included)
    back = maekit.load_model(folder)
    assert back.class_names == ["cat", "dog", "owl"] and back.model_name == "vit_tiny_patch16"
    with torch.no_grad():
        assert torch.equal(back(x), vit(x))


def test_timm_export_of_an_mae_is_its_encoder_like_timms_mae_weights(tmp_path):
    """An MAE exports its encoder as timm's own ``.mae`` weights are laid out: num_classes=0,
    cls-token pooling after the final norm; timm's features equal the encoder's cls token."""
    import timm

    import maekit

    torch.manual_seed(0)
    mae = create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8, depth=1, decoder_depth=1).eval()
    folder = maekit.hub.export_model(mae, tmp_path / "timm_mae", "timm")
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        latent = mae.forward_encoder(x, mask_ratio=0.0)[0]
        assert theirs.num_classes == 0
        torch.testing.assert_close(theirs(x), latent[:, 0], atol=1e-5, rtol=1e-5)

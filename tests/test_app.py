"""maekit app: a real server in a subprocess on a free loopback port, driven over plain HTTP
(urllib) and by headless Chromium; outputs compared with `maekit visualize` / `maekit predict`
run as commands on the same model folders."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")

from maekit.api import save_pretrained
from maekit.app import feature_pca
from maekit.models import create_model

TINY_MAE = {"img_size": 32, "patch_size": 8, "depth": 2, "decoder_depth": 1}
SAMPLES = Path(__file__).resolve().parents[1] / "src" / "maekit" / "app" / "static" / "samples"


def _env(tmp: Path) -> dict:
    return {**os.environ, "MAEKIT_OFFLINE": "1", "MAEKIT_HOME": str(tmp / "cache"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Two tiny MAEs (norm-pix and pixel targets) and a tiny classifier with class names."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_pretrained(
        create_model("mae_vit_tiny_patch16", **TINY_MAE, norm_pix_loss=True), root / "mae_normpix"
    )
    save_pretrained(create_model("mae_vit_tiny_patch16", **TINY_MAE, norm_pix_loss=False), root / "mae_pix")
    cls = create_model("vit_tiny_patch16", img_size=32, patch_size=8, depth=1, num_classes=7)
    cls.class_names = ["cat", "dog", "cup", "tree", "car", "boat", "sky"]
    save_pretrained(cls, root / "cls")
    return {p.name: p for p in root.iterdir()}


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "chelsea.jpg"
    Image.fromarray(data.chelsea()[7:290, 3:401]).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def server(folders, tmp_path_factory):
    """`maekit app` on port 0 (it binds and prints the URL), small limits to test them."""
    tmp = tmp_path_factory.mktemp("server")
    log = tmp / "server.log"
    limits = "--port 0 --max_upload_mb 1 --max_pixels 2e6 --max_side 1024"
    cmd = [sys.executable, "-m", "maekit", "app", *limits.split()]
    for name in ("mae_normpix", "mae_pix", "cls"):
        cmd += ["--model", str(folders[name])]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(tmp))
    deadline = time.time() + 120
    url = None
    while url is None:
        text = log.read_text()
        if "http://" in text:
            url = text.split("http://", 1)[1].split("/", 1)[0]
        elif proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"maekit app did not start:\n{text}")
        else:
            time.sleep(0.2)
    yield {"url": f"http://{url}", "log": log}
    proc.terminate()
    proc.wait(30)


def _request(url: str, fields: dict | None = None, files: dict | None = None, headers: dict | None = None):
    """(status, headers, body) of a GET, or of a multipart POST when fields / files are given."""
    data = None
    headers = dict(headers or {})
    if fields is not None or files is not None:
        boundary = uuid.uuid4().hex
        parts = []
        for key, value in (fields or {}).items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
            )
        for key, (filename, content) in (files or {}).items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n".encode()
                + content
                + b"\r\n"
            )
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    return _http(url, [data] if data is not None else None, headers)


def _http(url: str, chunks: list[bytes] | None, headers: dict) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a request over a raw socket: a GET, or a POST of ``chunks`` (one
    chunk: with a Content-Length; several: chunked). Sending stops as soon as the server answers: it
    answers an over-limit upload with 413 and closes mid-upload, where urllib fails on the broken
    pipe of its next send without reading the answer that is already in the socket (Linux hands out
    queued data before the reset)."""
    import http.client
    import select

    host, _, path = url.split("//", 1)[1].partition("/")
    hostname, port = host.split(":")
    headers = {"Host": host, "Connection": "close", **headers}
    if chunks is not None:
        one = len(chunks) == 1
        headers.update({"Content-Length": str(len(chunks[0]))} if one else {"Transfer-Encoding": "chunked"})
    head = f"{'GET' if chunks is None else 'POST'} /{path} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    body = chunks[0] if chunks is not None and len(chunks) == 1 else None
    pieces = [b""] if chunks is None else [body] if body is not None else [
        b"%x\r\n%s\r\n" % (len(c), c) for c in chunks] + [b"0\r\n\r\n"]
    with socket.create_connection((hostname, int(port)), timeout=120) as sock:
        try:
            sock.sendall(head.encode())
            for piece in pieces:
                for start in range(0, len(piece), 65536):
                    if select.select([sock], [], [], 0)[0]:
                        raise BrokenPipeError  # answered early: read the answer
                    sock.sendall(piece[start:start + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.headers, response.read()


def _cli(tmp: Path, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "maekit", *args],
        check=False, capture_output=True, text=True, env=_env(tmp), timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _png(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


# ---------------------------------------------------------------------------- page and listing
def test_page_models_and_samples(server):
    status, headers, body = _request(server["url"] + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for control in ('id="mask_ratio"', 'id="seed"', 'id="same_mask"', 'id="upload"', 'src="/static/app.js"'):
        assert control.encode() in body
    assert _request(server["url"] + "/static/app.js")[0] == 200
    models = json.loads(_request(server["url"] + "/api/models")[2])
    assert [m["id"] for m in models] == ["mae_normpix", "mae_pix", "cls"]
    assert [m["norm_pix_loss"] for m in models] == [True, False, None]
    assert models[0]["views"] == ["reconstruct", "features"]
    assert models[2]["views"] == ["classify", "features"]
    assert models[0]["config"]["model_name"] == "mae_vit_tiny_patch16" and models[0]["grid_size"] == [4, 4]
    assert models[2]["num_classes"] == 7 and models[2]["config"]["class_names"][0] == "cat"
    samples = json.loads(_request(server["url"] + "/api/samples")[2])
    assert [s["name"] for s in samples] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    assert _request(server["url"] + samples[0]["url"])[2] == (SAMPLES / "astronaut.jpg").read_bytes()


# ---------------------------------------------------------------------------- parity with the commands
def test_reconstruct_equals_maekit_visualize(server, folders, photo, tmp_path):
    name = "mae_normpix"  # norm-pix targets: the panels need each patch's mean and std back
    fields = {"model": name, "mask_ratio": "0.6", "seed": "5"}
    status, headers, body = _request(
        server["url"] + "/api/reconstruct", fields, {"image": (photo.name, photo.read_bytes())}
    )
    assert status == 200 and headers["Content-Type"] == "image/png", body[:300]
    out = tmp_path / "grid.png"
    args = ["--model", str(folders[name]), "--image", str(photo), "--mask_ratio", "0.6", "--seed", "5"]
    printed = _cli(tmp_path, "visualize", *args, "--out", str(out))
    api, cli = _png(body), np.asarray(Image.open(out).convert("RGB"))
    assert api.shape == cli.shape == (36, 4 * 32 + 5 * 2, 3)
    for k in range(4):  # original | masked | reconstruction | reconstruction + visible
        x = 2 + k * 34
        assert np.array_equal(api[2:34, x : x + 32], cli[2:34, x : x + 32]), f"panel {k} differs"
    assert np.array_equal(api, cli)
    assert f"loss {float(headers['X-Maekit-Loss']):.4f}" in printed
    rows = headers["X-Maekit-Mask"].split("/")
    assert len(rows) == 4 and "".join(rows).count("1") == 16 - int(16 * (1 - 0.6))
    assert headers["X-Maekit-Norm-Pix"] == "true"


def test_reconstruct_of_a_pixel_target_model_equals_the_pipeline(server, folders, photo):
    from maekit.api import AutoModel, pipeline

    status, headers, body = _request(
        server["url"] + "/api/reconstruct",
        {"model": "mae_pix", "seed": "9"},
        {"image": (photo.name, photo.read_bytes())},
    )
    assert status == 200 and headers["X-Maekit-Norm-Pix"] == "false"
    expected = pipeline("masked_image_modeling", AutoModel.from_pretrained(folders["mae_pix"]))(
        str(photo), mask_ratio=0.75, seed=9
    )
    assert np.array_equal(_png(body), np.asarray(expected["grid"]))
    assert float(headers["X-Maekit-Loss"]) == expected["loss"]


def test_same_seed_gives_the_same_mask_for_every_model(server):
    masks = []
    for name, seed in (("mae_normpix", 7), ("mae_pix", 7), ("mae_pix", 8)):
        status, headers, _ = _request(
            server["url"] + "/api/reconstruct", {"model": name, "seed": seed, "sample": "coffee.jpg"}
        )
        assert status == 200
        masks.append(headers["X-Maekit-Mask"])
    assert masks[0] == masks[1] != masks[2]


def test_classify_equals_maekit_predict(server, folders, photo, tmp_path):
    status, headers, body = _request(
        server["url"] + "/api/classify", {"model": "cls"}, {"image": (photo.name, photo.read_bytes())}
    )
    assert status == 200 and headers["Content-Type"] == "application/json", body[:300]
    api = json.loads(body)
    printed = _cli(tmp_path, "predict", "--model", str(folders["cls"]), "--input", str(photo), "--json")
    cli = json.loads(printed[printed.index("[") :])[0]["predictions"]
    assert len(api) == 5 and [p["label"] for p in api] == [p["label"] for p in cli]
    assert [p["index"] for p in api] == [p["index"] for p in cli]
    assert [p["score"] for p in api] == pytest.approx([p["score"] for p in cli], rel=1e-6, abs=1e-7)


def test_features_view_is_the_pca_of_the_pipeline_tokens(server, folders, photo):
    from maekit.api import AutoModel, pipeline

    status, _, body = _request(
        server["url"] + "/api/features", {"model": "mae_pix"}, {"image": (photo.name, photo.read_bytes())}
    )
    assert status == 200, body[:300]
    img = _png(body)
    assert img.shape == (32, 66, 3)
    tokens = pipeline("image_feature_extraction", AutoModel.from_pretrained(folders["mae_pix"]))(
        Image.open(photo), pool=False
    )
    expected = (feature_pca(tokens, (4, 4)) * 255).round().permute(1, 2, 0).numpy()
    shown = img[4::8, 34 + 4 :: 8].astype(float)  # the centre of each 8x8 patch block
    assert np.abs(shown - expected).max() <= 1


def test_feature_pca_separates_two_kinds_of_patch():
    gen = torch.Generator().manual_seed(0)
    kind = torch.tensor([0, 1] * 8)
    tokens = torch.randn(16, 32, generator=gen) * 0.01 + kind[:, None] * torch.linspace(-1, 1, 32)
    cls_token = torch.full((1, 32), 100.0)  # dropped: only the last h * w tokens are patches
    colours = feature_pca(torch.cat([cls_token, tokens]), (4, 4))
    assert colours.shape == (3, 4, 4) and colours.min() >= 0 and colours.max() <= 1
    first = colours[0].flatten()
    assert torch.allclose(first[kind == 0], first[kind == 0][0], atol=0.05)
    assert (first[kind == 0] - first[kind == 1]).abs().min() > 0.9


# ---------------------------------------------------------------------------- bad input: 4xx JSON
def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


BAD_REQUESTS = [  # (route, fields, files, status, words in the message)
    # fmt: off
    ("reconstruct", {}, {"image": ("notes.txt", b"no image\n" * 50)}, 400, "cannot read the upload"),
    ("classify", {}, {"image": ("empty.png", b"")}, 400, "empty"),
    ("reconstruct", {"mask_ratio": "0.5"}, None, 400, "no image"),
    ("reconstruct", {"sample": "../../etc/passwd"}, None, 404, "no sample"),
    ("reconstruct", {"sample": "coffee.jpg", "mask_ratio": "abc"}, None, 422, "mask_ratio"),
    ("reconstruct", {"sample": "coffee.jpg", "mask_ratio": "1.0"}, None, 400, "mask_ratio must be in [0, 1)"),
    ("reconstruct", {"sample": "coffee.jpg", "seed": str(2**70)}, None, 400, "seed must be an integer"),
    ("reconstruct", {"sample": "coffee.jpg", "model": "nope"}, None, 404, "no model 'nope'"),
    ("reconstruct", {"sample": "coffee.jpg", "model": "cls"}, None, 400, "is a classifier"),
    ("classify", {"sample": "coffee.jpg", "model": "mae_pix"}, None, 400, "is a pretraining model"),
    ("classify", {"sample": "coffee.jpg", "top_k": "0"}, None, 400, "top_k"),
    ("reconstruct", {}, {"image": ("huge.png", _png_bytes(Image.new("RGB", (2000, 1500))))}, 413,
     "at most 2 megapixels"),
    ("reconstruct", {}, {"image": ("big.bin", os.urandom(1_300_000))}, 413, "at most 1 MB"),
    ("classify", {}, {"image": ("cut.png", _png_bytes(Image.new("RGB", (64, 64), "red"))[:60])}, 400, "imag"),
    # fmt: on
]


@pytest.mark.parametrize(
    "route,fields,files,status,words",
    BAD_REQUESTS,
    ids=[f"{r[0]}-{r[3]}-{i}" for i, r in enumerate(BAD_REQUESTS)],
)
def test_bad_requests_get_a_4xx_json_message(server, route, fields, files, status, words):
    got, headers, body = _request(f"{server['url']}/api/{route}", fields, files)
    assert got == status, body[:300]
    assert headers["Content-Type"] == "application/json"
    message = json.loads(body)["detail"]
    assert words in message and "Traceback" not in message


def test_unusual_images_are_converted_or_resized_with_a_note(server):
    gray = _png_bytes(Image.new("L", (40, 30), 128))
    status, headers, _ = _request(server["url"] + "/api/reconstruct", {}, {"image": ("g.png", gray)})
    assert status == 200 and "converted from mode L (1 channel) to RGB" in headers["X-Maekit-Notes"]
    wide = _png_bytes(Image.new("RGB", (1100, 300), "blue"))
    status, headers, _ = _request(server["url"] + "/api/classify", {}, {"image": ("w.png", wide)})
    notes = json.loads(headers["X-Maekit-Notes"])
    assert status == 200 and notes == [
        (
            "resized from 1100x300 to 1024x279 before the model's own resize "
            "(limit 1024 px on the longer side, maekit app --max_side)"
        )
    ]


def test_body_without_length_over_the_limit_and_foreign_host_are_refused(server):
    host = server["url"].split("//", 1)[1]
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    # 2.5 MB, chunked: no Content-Length to check up front
    status, _, body = _http(server["url"] + "/api/classify", [head] + [b"x" * 65536] * 40,
                            {"Content-Type": "multipart/form-data; boundary=b"})
    assert status == 413 and "over 1 MB" in json.loads(body)["detail"]
    status, _, body = _request(server["url"] + "/api/models", headers={"Host": "attacker.example"})
    assert status == 403 and "127.0.0.1" in json.loads(body)["detail"]
    assert _request(server["url"] + "/api/models", headers={"Host": host})[0] == 200
    assert "Traceback" not in server["log"].read_text()


def test_cross_origin_writes_are_refused(server):
    host = server["url"].split("//", 1)[1]
    url, sample = server["url"] + "/api/classify", {"model": "cls", "sample": "coffee.jpg"}
    for headers in ({"Origin": "http://evil.com"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        status, _, body = _request(url, sample, headers=headers)
        assert status == 403 and "cross-origin request refused" in json.loads(body)["detail"], headers
    assert _request(url, sample, headers={"Origin": f"http://{host}"})[0] == 200  # the app's own page
    assert _request(url, sample)[0] == 200  # a script (no Origin)
    assert _request(server["url"] + "/api/models", headers={"Origin": "http://evil.com"})[0] == 200  # reads


def test_model_ids_are_named_by_the_user_or_readable(tmp_path):
    from maekit.app.service import _model_id, split_model_arg

    assert split_model_arg("mine=runs/ft/checkpoint-best.pth") == ("mine", "runs/ft/checkpoint-best.pth")
    assert split_model_arg("hf-hub:org/name") == (None, "hf-hub:org/name")
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert split_model_arg(str(odd)) == (None, str(odd))  # an existing path is a path
    assert _model_id("runs/ft/checkpoint-best.pth", set()) == "ft/checkpoint-best"
    assert _model_id("runs/ft/checkpoint-best.pth", {"ft/checkpoint-best"}) == "ft/checkpoint-best-2"
    assert _model_id("weights/mae_pretrain_vit_base.pth", set()) == "mae_pretrain_vit_base"
    assert _model_id("out/model", set()) == "model"


def test_decodes_are_bounded_and_the_page_says_top_k():
    import threading

    from maekit.app import service

    limits = service.Limits(max_decodes=2)
    running, peak, lock = [0], [0], threading.Lock()
    real = service._decode

    def slow_decode(data, lim):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return real(data, lim)

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    service._decode = slow_decode
    try:
        threads = [threading.Thread(target=service.decode_image, args=(buf.getvalue(), limits)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        service._decode = real
    assert peak[0] == 2
    js = (Path(service.__file__).parent / "static" / "app.js").read_text()
    assert "top-${k}" in js and "Math.min(5, model.num_classes" in js and "top-5`" not in js


# ---------------------------------------------------------------------------- concurrency
def test_twenty_concurrent_requests_give_identical_results(server, photo):
    image = {"image": (photo.name, photo.read_bytes())}
    jobs = [
        ("reconstruct", {"model": "mae_normpix", "seed": "3", "mask_ratio": "0.5"}),
        ("reconstruct", {"model": "mae_pix", "seed": "3", "mask_ratio": "0.5"}),
        ("classify", {"model": "cls"}),
        ("features", {"model": "cls"}),
    ] * 5
    serial = {
        (route, fields["model"]): _request(f"{server['url']}/api/{route}", fields, image)[2]
        for route, fields in jobs[:4]
    }
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda job: _request(f"{server['url']}/api/{job[0]}", job[1], image), jobs))
    for (route, fields), (status, _, body) in zip(jobs, results, strict=True):
        assert status == 200, body[:300]
        assert body == serial[(route, fields["model"])], f"{route} {fields['model']} differs under load"


# ---------------------------------------------------------------------------- command-line errors
def test_busy_port_is_a_one_line_message(tmp_path, folders):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "maekit", "app", "--model", str(folders["cls"]), "--port", str(port)],
            check=False, capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------- the page in a browser
@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing and possible, else the test is skipped."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium is not installed and cannot be installed here (not root / no apt-get)")
    r = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=False, capture_output=True,
        text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
    found = shutil.which("chromium")
    if r.returncode != 0 or not found:
        pytest.skip(f"apt-get install chromium failed (no registry?): {r.stderr.strip()[-300:]}")
    return found


def _browser(chromium: str, tmp: Path, *args: str) -> str:
    flags = "--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --window-size=1280,860"
    cmd = [chromium, *flags.split(), f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=15000"]
    cmd += args
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_page_in_headless_chromium(server, chromium, tmp_path):
    """The page loads, fetches the models, runs the first sample through every model and shows the
    controls; the screenshot goes to $MAEKIT_APP_SCREENSHOT when set (docs/images/app_screenshot.png)."""
    shot = tmp_path / "page.png"
    dom = _browser(chromium, tmp_path, "--dump-dom", f"--screenshot={shot}", server["url"] + "/")
    for control in ('id="mask_ratio"', 'id="seed"', 'id="use_mae_normpix"', 'id="use_cls"', "astronaut.jpg"):
        assert control in dom
    assert dom.count('class="result"') == 2 and dom.count('src="blob:') >= 2  # two reconstructions
    assert dom.count("<li>") == 5 and len(re.findall(r"loss \d+\.\d{4}", dom)) == 2  # top-5, the losses
    assert 'class="error"' not in dom.replace('id="error" class="error" role="alert" hidden', "")
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (860, 1280) and img.std() > 20  # a rendered page, not a blank one
    r, g, b = img[:, :310, 0], img[:, :310, 1], img[:, :310, 2]
    accent = (b > 200) & (r < 80) & (g > 80) & (g < 170)  # the slider, checkboxes, chosen sample
    assert accent.sum() > 500 and accent[400:700].sum() > 300, "the controls are not drawn on the left"
    # A request the server refuses: its message is shown on the page, in the model's card and on the left.
    dom = _browser(chromium, tmp_path, "--dump-dom", server["url"] + "/?seed=" + "1" + "0" * 23)
    assert dom.count("seed must be an integer from 0 to 2**63 - 1") == 3  # two cards + the box on the left
    if os.environ.get("MAEKIT_APP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MAEKIT_APP_SCREENSHOT"])

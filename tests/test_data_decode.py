"""Crop-aware reduced JPEG decoding (--fast_decode): same crop geometry, PSNR bound vs the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from maekit.data import (
    RandomResizedCropDecode,
    UnlabeledImageFolder,
    build_linprobe_transform,
    build_pretrain_transform,
    decode_crop,
)
from maekit.data.decode import reduction_factor
from maekit.data.synthetic import photo_like

PSNR_BOUND_DB = 35.0  # stated in docs (decode.py); measured 45-50 dB on these photo-like images


def _psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def camera_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cam") / "photo.jpg"
    photo_like(1200, 1600, seed=3).save(path, quality=92)
    return path


def test_reduction_factor_keeps_crop_at_least_output():
    assert reduction_factor((1800, 2400), (224, 224)) == 8
    assert reduction_factor((1000, 2400), (224, 224)) == 4
    assert reduction_factor((447, 2400), (224, 224)) == 1
    assert reduction_factor((448, 448), (224, 224)) == 2


@pytest.mark.parametrize("box", [(0, 0, 1200, 1600), (100, 300, 900, 1000), (500, 600, 480, 520), (40, 40, 300, 260)])
def test_reduced_decode_stays_within_psnr_of_reference_crop(camera_jpeg, box):
    with Image.open(camera_jpeg) as im:
        full = im.convert("RGB")
    ref = TF.resized_crop(full, *box, [224, 224], interpolation=InterpolationMode.BICUBIC)
    with Image.open(camera_jpeg) as im:
        fast = decode_crop(im, box, (224, 224))
    assert fast.size == ref.size == (224, 224) and fast.mode == "RGB"
    assert _psnr(fast, ref) > PSNR_BOUND_DB


def test_crop_geometry_kept(tmp_path):
    # A dark square at a known place: it lands on the same output pixels as in the reference crop.
    img = Image.new("RGB", (1600, 1200), (230, 230, 230))
    ImageDraw.Draw(img).rectangle((700, 500, 899, 649), fill=(10, 10, 10))
    path = tmp_path / "marker.jpg"
    img.save(path, quality=95)
    box = (300, 400, 800, 1000)  # top, left, h, w: the square spans x 300-499, y 200-349 of the crop
    with Image.open(path) as im:
        assert reduction_factor(box[2:], (100, 100)) == 8
        fast = np.asarray(decode_crop(im, box, (100, 100)).convert("L")) < 120
    ys, xs = np.nonzero(fast)
    # 1000 px -> 100: x 30-49.9; 800 px -> 100: y 25-43.6 (within one output pixel).
    assert abs(xs.min() - 30) <= 1 and abs(xs.max() - 49) <= 1
    assert abs(ys.min() - 25) <= 1 and abs(ys.max() - 43) <= 1


def test_fast_transform_draws_the_same_boxes_as_the_reference(camera_jpeg):
    # Same seed -> same box from the header geometry; outputs match the reference crop closely.
    ref_tf = build_pretrain_transform(64, uint8=True)
    fast_tf = build_pretrain_transform(64, uint8=True, fast_decode=True)
    assert fast_tf.lazy_decode and not ref_tf.lazy_decode
    assert isinstance(fast_tf.transforms[0], RandomResizedCropDecode)
    for seed in range(4):
        torch.manual_seed(seed)
        with Image.open(camera_jpeg) as im:
            a = fast_tf(im)
        torch.manual_seed(seed)
        with Image.open(camera_jpeg) as im:
            b = ref_tf(im.convert("RGB"))
        assert a.shape == b.shape == (3, 64, 64) and a.dtype == torch.uint8
        mse = float(((a.double() - b.double()) ** 2).mean())
        assert 10 * np.log10(255.0**2 / max(mse, 1e-12)) > PSNR_BOUND_DB


def test_fast_decode_through_datasets_grayscale_png_and_corrupt(tmp_path, camera_jpeg):
    (tmp_path / "d").mkdir()
    photo_like(300, 400, seed=1).save(tmp_path / "d" / "a.png")
    (tmp_path / "d" / "b.jpg").write_bytes(camera_jpeg.read_bytes())
    (tmp_path / "d" / "c.jpg").write_bytes(camera_jpeg.read_bytes()[:2000])  # truncated
    ds = UnlabeledImageFolder(tmp_path / "d", transform=build_linprobe_transform(32, in_chans=1, fast_decode=True))
    assert ds[0][0].shape == (1, 32, 32) and ds[1][0].shape == (1, 32, 32)
    with pytest.warns(UserWarning, match="c.jpg"):
        assert ds[2] is None

"""--decode gpu: workers send bytes + drawn box/flip; decode, crop, resize, flip on the device.
Runs without a GPU (decode_jpeg on the CPU device, and the CPU fallback for non-JPEG files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maekit.data import UnlabeledImageFolder, build_loader, build_pretrain_transform
from maekit.data.gpu_decode import EncodedBatch, EncodedCrop, GpuDecodeCrop
from maekit.data.synthetic import photo_like

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    for i in range(5):
        photo_like(120, 160, seed=i).save(root / f"a{i}.jpg", quality=92)
    photo_like(120, 160, seed=9).save(root / "b.png")  # not a JPEG: CPU fallback
    photo_like(120, 160, seed=8).convert("CMYK").save(root / "c.jpg")  # CMYK JPEG: CPU fallback
    return root


def test_worker_side_sends_bytes_for_jpeg_and_pixels_otherwise(folder):
    ds = UnlabeledImageFolder(folder, transform=build_pretrain_transform(32, gpu_decode=True), split=None)
    kinds = [type(ds[i][0]).__name__ for i in range(len(ds))]
    assert kinds == ["EncodedCrop"] * 5 + ["Tensor", "Tensor"]  # a0-a4.jpg, b.png, c.jpg (CMYK)
    item = ds[0][0]
    assert item.data.dtype == torch.uint8 and item.data.numel() == (folder / "a0.jpg").stat().st_size
    top, left, h, w = item.box
    assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 160
    assert ds[5][0].shape == (3, 32, 32) and ds[5][0].dtype == torch.uint8


@pytest.mark.parametrize("workers", [0, 2])
def test_same_boxes_and_flips_as_the_cpu_pipeline(folder, workers):
    cpu = UnlabeledImageFolder(folder, transform=build_pretrain_transform(32, uint8=True), split=None)
    gpu = UnlabeledImageFolder(folder, transform=build_pretrain_transform(32, gpu_decode=True), split=None)
    kw = dict(batch_size=7, train=True, seed=3, mean=MEAN, std=STD, device="cpu")
    a = next(iter(build_loader(cpu, **kw)))
    b = next(iter(build_loader(gpu, num_workers=workers, **kw)))
    assert b[0].shape == a[0].shape == (7, 3, 32, 32) and b[0].dtype == torch.float32
    assert torch.equal(a.mask_seeds, b.mask_seeds)
    # Same region and flip: PIL vs torch bicubic differ by a few levels, a wrong box or flip by far more.
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    diff = ((a[0] - b[0]) * std).abs().mean(dim=(1, 2, 3))
    assert float(diff.max()) < 4.0, diff
    flipped = ((a[0] - b[0].flip(-1)) * std).abs().mean(dim=(1, 2, 3))
    assert float(flipped.min()) > float(diff.max())


def test_encoded_batch_grayscale_and_flip_exact():
    img = photo_like(40, 60, seed=1).convert("L")
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    full = EncodedBatch([EncodedCrop(data, (0, 0, 40, 60), False, (40, 60), 1)]).decode("cpu")
    flip = EncodedBatch([EncodedCrop(data, (0, 0, 40, 60), True, (40, 60), 1)]).decode("cpu")
    assert full.shape == (1, 1, 40, 60) and torch.equal(flip, full.flip(-1))
    assert abs(full.float().mean().item() - np.asarray(img).mean()) < 2.0
    assert isinstance(GpuDecodeCrop((8, 8)).__repr__(), str)


@pytest.mark.parametrize("opts", [{"decode": "gpu"}, {"fast_decode": True}])
def test_pretrain_cli_with_gpu_decode_and_fast_decode(folder, tmp_path, opts, tiny_depth):
    # The flags reach the pipeline end to end (decode gpu runs its CPU-device path here), in-process: a
    # subprocess would only add its start-up.
    import json

    from conftest import run_cli

    flags = [f"--{k}" if v is True else f"--{k}={v}" for k, v in opts.items()]
    assert run_cli("pretrain", "--model", "mae_vit_tiny_patch16", "--input_size", "32", "--patch_size", "8",
                   *tiny_depth["mae"], "--data_path", folder, "--output_dir", tmp_path / "out", "--batch_size", "3",
                   "--epochs", "1", "--warmup_epochs", "0", "--num_workers", "1", "--device", "cpu", "--amp", "none",
                   *flags) == 0
    record = json.loads((tmp_path / "out" / "log.txt").read_text().splitlines()[-1])
    assert record["epoch"] == 0 and np.isfinite(record["train_loss"])


def test_truncated_jpeg_is_skipped_and_counted_like_the_cpu_path(folder, tmp_path):
    """A JPEG cut short parses (its header is whole) but would fail the batch's decode_jpeg call:
    it is skipped and counted as the CPU pipeline does, and the other images arrive."""
    import shutil
    import warnings

    for i in range(3):
        shutil.copy(folder / f"a{i}.jpg", tmp_path / f"a{i}.jpg")
    whole = (folder / "a3.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    kw = dict(batch_size=4, train=True, seed=3, mean=MEAN, std=STD, device="cpu")
    for gpu_decode in (False, True):
        ds = UnlabeledImageFolder(tmp_path, transform=build_pretrain_transform(32, uint8=not gpu_decode,
                                                                                gpu_decode=gpu_decode), split=None)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            batch = next(iter(build_loader(ds, **kw)))
        assert batch.num_skipped == 1 and batch.images.shape == (3, 3, 32, 32), gpu_decode
        assert any("cut.jpg" in str(w.message) for w in seen), gpu_decode

"""maekit.data: folders, channel conversion, bad files, built-in digits, transforms, loaders."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from maekit.data import (
    DIGITS_TEST_SIZE,
    DIGITS_TRAIN_SIZE,
    DigitsDataset,
    ImageClassFolder,
    RandomResizedCropNoRejection,
    UndecodableImageWarning,
    UnlabeledImageFolder,
    build_eval_transform,
    build_finetune_transform,
    build_linprobe_transform,
    build_loader,
    build_pretrain_transform,
    build_sampler,
    collate_skip_none,
    convert_image,
    load_image,
    resolve_dataset,
    resolve_mean_std,
    resolve_split_dir,
    set_epoch,
)


def _save(path, img: Image.Image, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def _rgb(h=12, w=10, color=(200, 100, 50)) -> Image.Image:
    return Image.new("RGB", (w, h), color)


def _corrupt(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(np.random.RandomState(0).randint(0, 256, 512, dtype=np.uint8)))


# ----------------------------------------------------------------------------- folders


def test_unlabelled_flat_any_extension_case_sorted(tmp_path):
    names = ["b.PNG", "a.JPG", "c.jpeg", "d.Bmp", "e.TIFF", "f.tif", "g.WebP"]
    for n in names:
        fmt = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}.get(n.split(".")[1].lower())
        _save(tmp_path / n, _rgb(), format=fmt)
    (tmp_path / "notes.txt").write_text("not an image")
    _save(tmp_path / ".hidden.png", _rgb())
    ds = UnlabeledImageFolder(tmp_path, transform=build_pretrain_transform(8))
    assert [p.name for p in ds.files] == sorted(names)
    for i in range(len(ds)):
        x, t = ds[i]
        assert x.shape == (3, 8, 8) and t == -1


def test_unlabelled_nested_and_reference_layout(tmp_path):
    nested = tmp_path / "nested"
    for rel in ["z.png", "a/b/c/deep.png", "a/x.png", "b/y.png"]:
        _save(nested / rel, _rgb())
    ds = UnlabeledImageFolder(nested)
    assert [p.relative_to(nested).as_posix() for p in ds.files] == [
        "a/b/c/deep.png",
        "a/x.png",
        "b/y.png",
        "z.png",
    ]

    ref = tmp_path / "imagenet"
    for rel in ["train/n01/1.JPEG", "train/n01/2.JPEG", "train/n02/3.JPEG", "val/n01/4.JPEG"]:
        _save(ref / rel, _rgb(), format="JPEG")
    ds = UnlabeledImageFolder(ref)  # prefers ref/train: val images must not leak into pretraining
    assert sorted(p.name for p in ds.files) == ["1.JPEG", "2.JPEG", "3.JPEG"]
    assert len(UnlabeledImageFolder(ref, split=None)) == 4
    assert len(resolve_dataset(ref, "train", labelled=False)) == 3


def test_missing_or_empty_folders_fail_at_construction(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        UnlabeledImageFolder(missing)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="empty"):
        UnlabeledImageFolder(empty)
    with pytest.raises(FileNotFoundError, match="nope"):
        resolve_dataset(missing, "train", labelled=False)


def test_class_folders_labels_and_errors(tmp_path):
    root = tmp_path / "data"
    for rel in [
        "train/dog/1.png",
        "train/cat/2.png",
        "train/cat/3.PNG",
        "train/cat/sub/4.png",
        "val/cat/5.png",
        "val/dog/6.png",
    ]:
        _save(root / rel, _rgb())
    ds = resolve_dataset(root, "train", transform=build_eval_transform(8))
    assert isinstance(ds, ImageClassFolder)
    assert ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1}
    assert ds.targets == [0, 0, 0, 1]
    x, y = ds[3]
    assert x.shape == (3, 8, 8) and y == 1
    assert len(resolve_dataset(root, "val")) == 2

    # Explicit split folders: a name under data_path or an absolute path.
    other = tmp_path / "holdout"
    _save(other / "cat" / "7.png", _rgb())
    _save(other / "dog" / "8.png", _rgb())
    assert resolve_split_dir(root, "val", val_split=str(other)) == other
    assert len(resolve_dataset(root, "val", val_split="val")) == 2
    assert len(resolve_dataset(root, "val", val_split=other)) == 2
    with pytest.raises(FileNotFoundError, match="missing_split"):
        resolve_dataset(root, "train", train_split="missing_split")

    # A class folder without images is an error that names the class and the root.
    (root / "train" / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_class") as err:
        resolve_dataset(root, "train")
    assert "train" in str(err.value)
    # A folder of images with no class sub-folders is not a labelled dataset.
    flat = tmp_path / "flat"
    _save(flat / "a.png", _rgb())
    with pytest.raises(FileNotFoundError, match="flat"):
        ImageClassFolder(flat)
    # No val folder in the reference layout.
    with pytest.raises(FileNotFoundError, match="val"):
        resolve_dataset(flat, "val")


# ----------------------------------------------------------------------------- channels


def test_channel_conversion_of_files(tmp_path):
    # 16-bit grayscale PNG: full 16-bit range maps to 0..255 (PIL alone would clip to white).
    a16 = np.array([[0, 257 * 100, 65535, 1000]], dtype=np.uint16)
    _save(tmp_path / "g16.png", Image.fromarray(a16))
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert np.asarray(load_image(tmp_path / "g16.png", 1)).tolist() == [[0, 100, 255, 4]]
    rgb = np.asarray(load_image(tmp_path / "g16.png", 3))
    assert rgb.shape == (1, 4, 3) and (rgb[..., 0] == rgb[..., 2]).all() and rgb[0, 1, 1] == 100

    # Float TIFF in [0, 1] -> intensities.
    _save(tmp_path / "f.tif", Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)))
    assert np.asarray(load_image(tmp_path / "f.tif", 1)).tolist() == [[0, 128, 255]]

    # Palette PNG with a transparent index: colours kept, alpha dropped for RGB, kept for RGBA.
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putdata([0, 1])
    _save(tmp_path / "pal.png", pal, transparency=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL "palette with transparency" warning either
        out = np.asarray(load_image(tmp_path / "pal.png", 3))
    assert out.tolist() == [[[255, 0, 0], [0, 255, 0]]]
    assert np.asarray(load_image(tmp_path / "pal.png", 4))[0, :, 3].tolist() == [255, 0]

    # RGBA: alpha dropped (like the references' loader), colour under transparency kept.
    _save(tmp_path / "rgba.png", Image.new("RGBA", (3, 2), (10, 20, 30, 0)))
    assert load_image(tmp_path / "rgba.png", 3).getpixel((0, 0)) == (10, 20, 30)
    assert load_image(tmp_path / "rgba.png", 1).mode == "L"

    # CMYK JPEG, LA PNG, grayscale BMP -> every channel count.
    _save(tmp_path / "cmyk.jpg", Image.new("CMYK", (6, 4), (0, 255, 255, 0)), format="JPEG", quality=95)
    _save(tmp_path / "la.png", Image.new("LA", (6, 4), (90, 128)))
    _save(tmp_path / "g.bmp", Image.new("L", (6, 4), 77))
    r, g, b = load_image(tmp_path / "cmyk.jpg", 3).getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60  # cyan=0, magenta=yellow=255 -> red
    assert load_image(tmp_path / "la.png", 3).getpixel((0, 0)) == (90, 90, 90)
    for n, mode in [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")]:
        for f in ["cmyk.jpg", "la.png", "g.bmp", "g16.png", "pal.png"]:
            assert load_image(tmp_path / f, n).mode == mode
    with pytest.raises(ValueError, match="in_chans"):
        convert_image(Image.new("L", (2, 2)), 5)

    # Through a dataset and the transform: tensors with in_chans channels, gray values replicated.
    ds = UnlabeledImageFolder(tmp_path, transform=build_eval_transform(4, mean=0.0, std=1.0), in_chans=3)
    x, _ = ds[[p.name for p in ds.files].index("g.bmp")]
    assert x.shape == (3, 4, 4) and torch.allclose(x, torch.full_like(x, 77 / 255))
    ds1 = UnlabeledImageFolder(tmp_path, transform=build_pretrain_transform(4, in_chans=1), in_chans=1)
    assert all(ds1[i][0].shape == (1, 4, 4) for i in range(len(ds1)))


# ----------------------------------------------------------------------------- bad files


def test_corrupt_file_skipped_warned_and_counted(tmp_path):
    for i in range(5):
        _save(tmp_path / f"ok{i}.png", _rgb())
    _corrupt(tmp_path / "broken.jpg")
    noisy = Image.fromarray(np.random.RandomState(1).randint(0, 256, (32, 32, 3), dtype=np.uint8))
    _save(tmp_path / "full.png", noisy)
    (tmp_path / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:1500])
    (tmp_path / "full.png").unlink()
    ds = UnlabeledImageFolder(tmp_path, transform=build_pretrain_transform(8))
    assert len(ds) == 7
    bad = [i for i, p in enumerate(ds.files) if p.name in ("broken.jpg", "truncated.png")]
    with pytest.warns(UndecodableImageWarning, match="broken.jpg"):
        assert ds[bad[0]] is None
    with pytest.warns(UndecodableImageWarning, match="truncated.png"):
        assert ds[bad[1]] is None

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        batches = list(build_loader(ds, batch_size=4, train=False))
    assert sum(b[2] for b in batches) == 2
    assert sum(b[0].shape[0] for b in batches) == 5
    assert all(b[1].tolist() == [-1] * b[0].shape[0] for b in batches)
    assert {"broken.jpg", "truncated.png"} <= {
        n for w in rec for n in ("broken.jpg", "truncated.png") if n in str(w.message)
    }


def test_corrupt_file_through_worker_process(tmp_path):
    root = tmp_path / "train" / "cls"
    for i in range(3):
        _save(root / f"ok{i}.png", _rgb())
    _corrupt(root / "zz_bad.JPG")
    ds = resolve_dataset(tmp_path, "train", transform=build_eval_transform(8))
    loader = build_loader(ds, batch_size=2, train=False, num_workers=1)
    batches = list(loader)
    assert [b[2] for b in batches] == [0, 1]
    assert [b[0].shape[0] for b in batches] == [2, 1]
    assert loader.persistent_workers


def test_collate_drops_none_and_handles_all_bad_batch():
    item = (torch.ones(3, 4, 4), 7)
    images, targets, skipped, seeds = collate_skip_none([item, None, item, None, None])
    assert images.shape == (2, 3, 4, 4) and targets.tolist() == [7, 7] and skipped == 3 and seeds is None
    assert targets.dtype == torch.int64
    images, targets, skipped, seeds = collate_skip_none([None, None, None])
    assert images.shape[0] == 0 and targets.shape == (0,) and skipped == 3
    seeded = collate_skip_none([(torch.ones(3, 4, 4), 1, 11), None, (torch.ones(3, 4, 4), 2, 12)])
    assert seeded.mask_seeds.tolist() == [11, 12] and seeded.num_skipped == 1  # the seeds are a field


# ----------------------------------------------------------------------------- builtin digits


def test_builtin_digits_split_and_images():
    from sklearn.datasets import load_digits

    tr = resolve_dataset("builtin:digits", "train")
    te = resolve_dataset("builtin:digits", "val")
    assert isinstance(tr, DigitsDataset)
    assert (len(tr), len(te)) == (DIGITS_TRAIN_SIZE, DIGITS_TEST_SIZE) == (1437, 360)
    assert set(tr.indices).isdisjoint(te.indices) and len(set(tr.indices) | set(te.indices)) == 1797
    again = DigitsDataset("test")
    assert np.array_equal(again.indices, te.indices)  # fixed split
    assert tr.classes == [str(i) for i in range(10)] and set(te.targets) == set(range(10))
    y = load_digits().target
    assert tr.targets == y[tr.indices].tolist()

    img, t = tr[0]
    assert img.size == (32, 32) and img.mode == "RGB" and t == tr.targets[0]
    arr = np.asarray(img)
    assert (
        (arr[..., 0] == arr[..., 1]).all() and arr.max() > 200 and arr.min() < 30
    )  # a bright stroke on black
    gray = DigitsDataset("train", in_chans=1, size=(24, 40))[0][0]
    assert gray.mode == "L" and gray.size == (40, 24)

    un = resolve_dataset(
        "builtin:digits",
        "train",
        labelled=False,
        in_chans=1,
        transform=build_pretrain_transform(16, in_chans=1),
    )
    x, t = un[5]
    assert x.shape == (1, 16, 16) and t == -1
    with pytest.raises(ValueError, match="builtin:digits"):
        resolve_dataset("builtin:mnist", "train")


# ----------------------------------------------------------------------------- transforms


def test_eval_transform_resize_and_crop():
    t224 = build_eval_transform(224)
    assert t224.transforms[1].size == 256
    t448 = build_eval_transform(448)
    assert t448.transforms[1].size == 448
    img = _rgb(300, 400)
    assert t224(img).shape == (3, 224, 224)
    assert t448(img).shape == (3, 448, 448)
    assert build_eval_transform((32, 48), in_chans=1)(img).shape == (1, 32, 48)
    assert build_eval_transform((48, 32))(_rgb(10, 100)).shape == (3, 48, 32)
    # Values: a uniform image normalises to (v - mean) / std per channel.
    x = build_eval_transform(16)(_rgb(20, 20, (255, 0, 128)))
    mean, std = resolve_mean_std(3)
    expect = torch.tensor(
        [(255 / 255 - mean[0]) / std[0], (0 - mean[1]) / std[1], (128 / 255 - mean[2]) / std[2]]
    )
    assert torch.allclose(x[:, 8, 8], expect, atol=1e-5)


def test_mean_std_defaults_and_validation():
    assert resolve_mean_std(3) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert resolve_mean_std(1) == ((0.449,), (0.226,))
    assert resolve_mean_std(4, mean=0.5, std=0.25) == ((0.5,) * 4, (0.25,) * 4)
    with pytest.raises(ValueError, match="in_chans=1"):
        build_pretrain_transform(32, in_chans=1, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="std"):
        resolve_mean_std(3, std=(0.2, 0.0, 0.2))


@pytest.mark.parametrize("in_chans", [1, 3, 4])
def test_train_transforms_shapes_non_square(in_chans, seed):
    img = Image.new("RGB", (37, 23), (120, 60, 30))
    size = (16, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # in_chans=4: RandAugment left out
        tfs = [
            build_pretrain_transform(size, in_chans=in_chans),
            build_finetune_transform(size, in_chans=in_chans),
            build_linprobe_transform(size, in_chans=in_chans),
        ]
    for tf in tfs:
        for _ in range(3):
            x = tf(img)
            assert x.shape == (in_chans, 16, 24) and x.dtype == torch.float32


def test_finetune_transform_grayscale_stays_gray(seed):
    tf = build_finetune_transform(16, in_chans=3, re_prob=0.0, mean=0.0, std=1.0)
    for _ in range(10):
        x = tf(Image.new("L", (20, 20), 100))
        assert torch.equal(x[0], x[1]) and torch.equal(
            x[1], x[2]
        )  # RandAugment on replicated gray stays gray


def test_linprobe_crop_no_rejection_loop(seed):
    crop = RandomResizedCropNoRejection(7)
    for hw in [(50, 40), (5, 90), (1, 1)]:
        img = Image.new("RGB", (hw[1], hw[0]))
        for _ in range(20):
            i, j, h, w = crop.get_params(img, crop.scale, crop.ratio)
            assert 1 <= h <= hw[0] and 1 <= w <= hw[1] and i + h <= hw[0] and j + w <= hw[1]
        assert crop(img).size == (7, 7)
    # Aspect 2 at full area on a square image: the TF-style crop clips w and keeps
    # h = round(sqrt(A / 2)) = 71; torchvision's would fall back to a (50, 100) crop.
    img = Image.new("RGB", (100, 100))
    assert RandomResizedCropNoRejection.get_params(img, (1.0, 1.0), (2.0, 2.0))[2:] == (71, 100)
    assert build_linprobe_transform((12, 20))(img).shape == (3, 12, 20)


# ----------------------------------------------------------------------------- loaders


class _Indexed(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(1, 2, 2), i


def test_loader_two_replicas_disjoint_and_set_epoch():
    ds = _Indexed(20)
    seen = []
    for rank in range(2):
        loader = build_loader(ds, batch_size=5, train=True, num_replicas=2, rank=rank, seed=3)
        assert loader.drop_last and len(loader) == 2
        seen.append({int(t) for x, y, n, _ in loader for t in y})
        set_epoch(loader, 0)
        first = [int(t) for _, y, _, _ in loader for t in y]
        set_epoch(loader, 1)
        assert [int(t) for _, y, _, _ in loader for t in y] != first  # reshuffled per epoch
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(20))

    # Evaluation: sequential on every rank, or sharded with dist_eval (padding warned).
    ev = build_loader(ds, batch_size=8, train=False, num_replicas=2, rank=1)
    assert [int(t) for _, y, _, _ in ev for t in y] == list(range(20)) and not ev.drop_last
    with pytest.warns(UserWarning, match="repeats"):
        shards = [
            build_sampler(_Indexed(7), train=False, dist_eval=True, num_replicas=2, rank=r) for r in range(2)
        ]
    assert sorted(list(shards[0]) + list(shards[1])) == [0, 0, 1, 2, 3, 4, 5, 6]

    # Single process: still a DistributedSampler for training (set_epoch everywhere).
    single = build_loader(ds, batch_size=4, train=True)
    assert hasattr(single.sampler, "set_epoch") and single.sampler.num_replicas == 1
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(_Indexed(3), batch_size=4, train=True)
    assert len(build_loader(_Indexed(3), batch_size=4, train=False)) == 1


def test_digits_loader_end_to_end():
    ds = resolve_dataset("builtin:digits", "val", in_chans=1, transform=build_eval_transform(32, in_chans=1))
    images, targets, skipped, seeds = next(iter(build_loader(ds, batch_size=64, train=False)))
    assert seeds is None  # an evaluation loader draws no masks
    assert images.shape == (64, 1, 32, 32) and targets.tolist() == ds.targets[:64] and skipped == 0
    assert os.fspath(ds.root) == "builtin:digits"


def test_finetune_randaugment_never_posterizes_to_zero_bits():
    """timm's PosterizeIncreasing at level 10 asks Pillow for 0 bits, which Pillow >= 11 refuses."""
    import random

    from PIL import Image

    from maekit.data import build_finetune_transform

    tf = build_finetune_transform(32, auto_augment="rand-m10-mstd0.5-inc1", re_prob=0.0)
    ra = [t for t in tf.transforms[1].transforms if hasattr(t, "ops")][0]
    poster = [op for op in ra.ops if "Posterize" in op.name][0]
    assert poster.level_fn(10, poster.hparams) == (1,)
    img = Image.new("RGB", (40, 40), (200, 100, 50))
    random.seed(0)
    for _ in range(200):
        poster(img)  # magnitude noise drives the level to 10 regularly

"""maekit.data pipeline: uint8 batches normalised on the device, per-sample seeds, per-sample mask
noise, workers that ignore SIGTERM, symlink loops, and any dataset object."""

from __future__ import annotations

import os
import random
import signal
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, Subset
from torchvision import transforms as T

from maekit.data import (
    SymlinkLoopWarning,
    UnlabeledImageFolder,
    as_dataset,
    batch_mask_seeds,
    build_eval_transform,
    build_linprobe_transform,
    build_loader,
    build_pretrain_transform,
    find_images,
    resolve_dataset,
    sample_seed,
    set_epoch,
)
from maekit.data.synthetic import write_photo_folder
from maekit.models.masking import per_sample_noise, random_masking_indices

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_photo_folder(root, 12, (60, 80), seed=1)
    return root


def _batches(loader, epoch):
    set_epoch(loader, epoch)
    return [(b.images.clone(), batch_mask_seeds(b).clone()) for b in loader]


# ----------------------------------------------------------------------------- uint8 + device normalise


@pytest.mark.parametrize("builder", ["pretrain", "linprobe", "eval"])
def test_uint8_batches_normalised_on_device_equal_reference(photos, builder):
    build = {"pretrain": build_pretrain_transform, "linprobe": build_linprobe_transform,
             "eval": build_eval_transform}[builder]
    kw = dict(input_size=32, mean=MEAN, std=STD)
    ref_ds = UnlabeledImageFolder(photos, transform=build(**kw))
    u8_ds = UnlabeledImageFolder(photos, transform=build(**kw, uint8=True))
    assert u8_ds[0][0].dtype == torch.uint8 and u8_ds[0][0].shape == (3, 32, 32)
    for nw in (0, 2):
        ref = build_loader(ref_ds, batch_size=4, train=True, seed=5, num_workers=nw)
        u8 = build_loader(u8_ds, batch_size=4, train=True, seed=5, num_workers=nw, device="cpu", mean=MEAN, std=STD)
        got, want = _batches(u8, 1), _batches(ref, 1)
        assert len(got) == 3
        for (x, sx), (y, sy) in zip(got, want):
            assert x.dtype == torch.float32
            torch.testing.assert_close(x, y, rtol=0, atol=2e-6)  # float rounding only
            assert torch.equal(sx, sy)
    # The torchvision reference pipeline itself, on one image.
    with Image.open(sorted(photos.glob("*.jpg"))[0]) as im:
        im = im.convert("RGB")
        want = T.Compose([T.Resize(36, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                          T.Normalize(MEAN, STD)])(im)
    u8_eval = build_eval_transform(32, uint8=True)(im)
    loader = build_loader([(u8_eval, 0)], batch_size=1, train=False, mean=MEAN, std=STD)
    torch.testing.assert_close(next(iter(loader))[0][0], want, rtol=0, atol=2e-6)


def test_uint8_without_mean_std_is_a_clear_error(photos):
    ds = UnlabeledImageFolder(photos, transform=build_eval_transform(16, uint8=True))
    with pytest.raises(ValueError, match="mean/std"):
        next(iter(build_loader(ds, batch_size=2, train=False)))


# ----------------------------------------------------------------------------- per-sample seeds


def test_same_seeds_same_crops_regardless_of_workers_and_world_size(photos):
    ds = UnlabeledImageFolder(photos, transform=build_pretrain_transform(24, uint8=True))
    one = build_loader(ds, batch_size=6, train=True, seed=7, num_workers=0, mean=MEAN, std=STD)
    two = build_loader(ds, batch_size=6, train=True, seed=7, num_workers=2, mean=MEAN, std=STD)
    a, b = _batches(one, 3), _batches(two, 3)
    assert all(torch.equal(x, y) and torch.equal(s, t) for (x, s), (y, t) in zip(a, b))
    assert not torch.equal(a[0][0], _batches(one, 4)[0][0])  # a new epoch draws new crops
    # Two ranks of batch 3 hold the images (same crops) of one rank's batch 6.
    ranks = [build_loader(ds, batch_size=3, train=True, seed=7, num_replicas=2, rank=r, mean=MEAN, std=STD)
             for r in range(2)]
    per_rank = [_batches(r, 3) for r in ranks]
    for step, (x, s) in enumerate(a):
        merged = torch.cat([per_rank[0][step][0], per_rank[1][step][0]])
        seeds = torch.cat([per_rank[0][step][1], per_rank[1][step][1]])
        order = [s.tolist().index(v) for v in seeds.tolist()]
        assert torch.equal(merged, x[order])
    # The global RNGs of the training process are left alone by the per-sample reseeding.
    def draw():
        return torch.rand(3).tolist(), random.random(), float(np.random.rand())

    for reseed in (False, True):
        torch.manual_seed(0), random.seed(0), np.random.seed(0)
        if reseed:
            assert one.dataset[(5, 0)][0].shape == (3, 24, 24)
        got = draw()
        assert not reseed or got == expected
        expected = got


def test_sample_seed_mixes_every_input():
    base = sample_seed(1, 2, 3)
    assert 0 <= base < 2**63 and base == sample_seed(1, 2, 3)
    others = {sample_seed(0, 2, 3), sample_seed(1, 1, 3), sample_seed(1, 2, 4), sample_seed(1, 2, 3, 1)}
    assert base not in others and len(others) == 4


def test_mask_noise_independent_of_batch_composition():
    seeds = torch.tensor([sample_seed(0, 0, i, 1) for i in range(6)])
    full = per_sample_noise(seeds, 49)
    assert full.shape == (6, 49) and full.dtype == torch.float32 and 0 <= full.min() and full.max() < 1
    torch.testing.assert_close(per_sample_noise(seeds[[4, 1]], 49), full[[4, 1]], rtol=0, atol=0)
    assert not torch.equal(full[0], full[1])
    # The mask of sample 4 is the same alone or inside the batch.
    keep_full = random_masking_indices(6, 49, 0.75, noise=full)[0][4]
    keep_alone = random_masking_indices(1, 49, 0.75, noise=per_sample_noise(seeds[4:5], 49))[0][0]
    assert torch.equal(keep_full, keep_alone)


# ----------------------------------------------------------------------------- workers and signals


class _SignalMe(Dataset):
    """Each item sends SIGTERM and SIGINT to the process that loads it."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        return torch.zeros(2), i


def test_workers_ignore_sigterm_and_sigint():
    loader = build_loader(_SignalMe(), batch_size=2, train=False, num_workers=1)
    assert [b.targets.tolist() for b in loader] == [[0, 1], [2, 3]]  # the worker survived its signals
    assert loader.loader.persistent_workers and loader.loader.prefetch_factor == 4


# ----------------------------------------------------------------------------- symlink loops


def test_two_symlink_loops_listed_once_with_one_warning(tmp_path):
    write_photo_folder(tmp_path / "a", 2, (8, 8))
    write_photo_folder(tmp_path / "a" / "b", 1, (8, 8), seed=5)
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "up")  # loop 1
    os.symlink(tmp_path, tmp_path / "a" / "root")  # loop 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = find_images(tmp_path)
    assert len(files) == 3 and len({os.path.realpath(f) for f in files}) == 3
    loops = [w for w in caught if issubclass(w.category, SymlinkLoopWarning)]
    assert len(loops) == 1 and "2 symbolic link(s)" in str(loops[0].message)
    # Class folders use the same listing.
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "again")
    with pytest.warns(SymlinkLoopWarning):
        ds = resolve_dataset(tmp_path, "train", train_split="a")
    assert ds.classes == ["b", "root"]  # "root" links to tmp_path: a class folder like any other
    for c in range(2):
        paths = [os.path.realpath(p) for p, t in ds.samples if t == c]
        assert len(paths) == len(set(paths)) == 3


# ----------------------------------------------------------------------------- any dataset object


class _Stream(IterableDataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


def _user_items():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    pil = Image.fromarray(arr)
    u8 = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    return pil, u8, arr


def test_any_item_kind_gives_the_same_model_input():
    pil, u8, arr = _user_items()
    tf = build_eval_transform(16, mean=MEAN, std=STD)
    want = tf(pil)
    kinds = [pil, (pil, 3), [u8, 3], {"image": pil, "label": 3}, {"img": arr}, u8.float() / 255, u8]
    ds = as_dataset(kinds, transform=tf, input_size=(16, 16))
    for i in range(len(kinds)):
        x, y = ds[i]
        torch.testing.assert_close(x, want, rtol=0, atol=1e-6)
        assert y == (3 if i in (1, 2, 3) else -1)
    ready = as_dataset([(want, 1)], transform=tf, input_size=(16, 16))  # already the model's input
    assert ready[0][0] is want
    with pytest.raises(ValueError, match="image key"):
        as_dataset([{"pixels": pil}], transform=tf)[0]
    with pytest.raises(TypeError, match="not a dataset"):
        as_dataset(42, transform=tf)


def test_iterable_dataset_split_over_ranks_and_workers_equal_steps():
    pil, _, _ = _user_items()
    items = [(pil, i) for i in range(11)]
    tf = build_pretrain_transform(16, uint8=True)
    seen = []
    for rank in range(2):
        ds = as_dataset(_Stream(items), transform=tf, world_size=2, rank=rank, seed=1)
        for nw in (0, 2):
            loader = build_loader(ds, batch_size=2, train=True, num_workers=nw, mean=MEAN, std=STD)
            batches = list(loader)
            assert len(loader) == 2 and len(batches) == 2
            labels = sorted(int(t) for b in batches for y in [b.targets] for t in y)
            if nw == 0:
                seen.append(labels)
                first = {int(t): x for b in batches for x, t in zip(b[0], b[1])}
            else:  # same images, same crops, whatever the worker count
                assert labels == seen[-1]
                assert all(torch.equal(first[int(t)], x) for b in batches for x, t in zip(b[0], b[1]))
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == 4
    with pytest.raises(ValueError, match="len"):
        as_dataset(iter(items), transform=tf)


def test_subset_of_user_items_through_a_training_loader():
    # torch's Subset has __getitems__, which the DataLoader prefers: the wrappers must not expose it.
    pil, _, _ = _user_items()
    ds = as_dataset(Subset([(pil, i) for i in range(8)], range(6)), transform=build_pretrain_transform(16, uint8=True))
    loader = build_loader(ds, batch_size=3, train=True, mean=MEAN, std=STD)
    got = [(b.images.shape, sorted(b.targets.tolist()), b.mask_seeds.shape) for b in loader]
    assert len(got) == 2 and all(s == (3, 3, 16, 16) and m == (3,) for s, _, m in got)
    assert sorted(t for _, ys, _ in got for t in ys) == list(range(6))


@pytest.mark.parametrize("kind", ["list_of_pil", "iterable", "hf_datasets"])
def test_trainer_pretrains_on_any_dataset_object(kind, tmp_path, monkeypatch):
    from conftest import FAST_ARGS, TINY_MAE_ARGS, TINY_MAE_NAME

    from maekit import Trainer, TrainingArguments
    from maekit.models import create_model

    monkeypatch.setenv("MAEKIT_OFFLINE", "1")
    rng = np.random.default_rng(0)
    pils = [Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)) for _ in range(8)]
    if kind == "list_of_pil":
        train = pils
    elif kind == "iterable":
        train = _Stream([(p, i % 2) for i, p in enumerate(pils)])
    else:
        datasets = pytest.importorskip("datasets")
        train = datasets.Dataset.from_dict({"image": pils, "label": [i % 2 for i in range(8)]}).cast_column(
            "image", datasets.Image())
    torch.manual_seed(0)
    model = create_model(TINY_MAE_NAME, **TINY_MAE_ARGS)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), epochs=1, batch_size=4, warmup_epochs=0,
                             print_freq=1000, **FAST_ARGS)
    last = Trainer(task="masked-image-modeling", model=model, train_dataset=train, args=args).train()
    assert np.isfinite(last["train_loss"]) and last["epoch"] == 0

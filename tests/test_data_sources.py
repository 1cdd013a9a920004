"""Data sources other than folders: WebDataset tar shards (``maekit shard``, brace patterns, shard
indexes, splitting over ranks and workers) and Hugging Face ``datasets`` (``hf:``), read with the
real webdataset and datasets clients and trained on through the CLI."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PY, python_env, run_cli
from PIL import Image
from torchvision import transforms as T

wds = pytest.importorskip("webdataset")
datasets = pytest.importorskip("datasets")

from maekit.data import UndecodableImageWarning, build_loader, resolve_dataset, set_epoch
from maekit.data.hf_datasets import HFImageDataset, detect_columns
from maekit.data.shard_dataset import ShardDataset, plan_slot
from maekit.data.shards import is_shard_source, resolve_shards

TINY_MAE = ["--model", "mae_vit_tiny_patch16", "--input_size", "32", "--patch_size", "8"]
FAST = ["--num_workers", "0", "--amp", "none", "--device", "cpu"]


def _image(i: int) -> Image.Image:
    """A 24x20 picture whose red channel is ``i`` everywhere (so any crop still says which it is)."""
    rng = np.random.default_rng(i)
    arr = np.empty((20, 24, 3), np.uint8)
    arr[..., 0] = i
    arr[..., 1:] = rng.integers(0, 255, (20, 24, 2), dtype=np.uint8)
    return Image.fromarray(arr)


def image_id(x: torch.Tensor) -> int:
    """The id of :func:`_image` from a ToTensor() image (C, H, W)."""
    return round(float(x[0, 0, 0]) * 255)


def make_class_folders(root: Path, counts: dict[str, int], start: int = 0) -> dict[int, str]:
    """PNG class folders; returns id -> class name."""
    ids, i = {}, start
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            _image(i).save(root / name / f"img{i:03d}.png")
            ids[i] = name
            i += 1
    return ids


@pytest.fixture
def class_folders(tmp_path) -> tuple[Path, dict[int, str]]:
    root = tmp_path / "photos"
    return root, make_class_folders(root, {"cat": 7, "dog": 5, "eel": 6})


def test_shard_command_writes_original_bytes_labels_and_index(class_folders, tmp_path, capsys):
    src, _ = class_folders
    dst = tmp_path / "shards"
    assert run_cli("shard", src, dst, "--shard_size", "5") == 0
    assert "18 images in 4 shards, 3 classes" in capsys.readouterr().out
    index = json.loads((dst / "shards.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and index["classes"] == ["cat", "dog", "eel"]
    assert [e["nsamples"] for e in index["shardlist"]] == [5, 5, 5, 3]
    # Read back with webdataset itself: every file once, byte for byte, with its class index.
    originals = {p.read_bytes(): p.parent.name for p in src.rglob("*.png")}
    seen = []
    for sample in wds.WebDataset(str(dst / "shard-{000000..000003}.tar"), shardshuffle=False):
        assert originals[sample["png"]] == index["classes"][int(sample["cls"])]
        seen.append(sample["png"])
    assert sorted(seen) == sorted(originals)
    assert is_shard_source(dst) and is_shard_source(dst / "shard-{000000..000003}.tar")
    (src / "backup.tar").write_bytes((dst / "shard-000000.tar").read_bytes())
    assert not is_shard_source(src)  # an image folder with a stray tar stays an image folder
    assert run_cli("shard", src, dst) == 2  # never overwrites shards
    assert "already holds shards" in capsys.readouterr().err


def test_shard_splits_and_eval_pass_reads_every_sample_once(tmp_path):
    src = tmp_path / "imagenet"
    train_ids = make_class_folders(src / "train", {"a": 4, "b": 4})
    val_ids = make_class_folders(src / "val", {"a": 3, "b": 2}, start=100)
    assert run_cli("shard", src, tmp_path / "sh", "--shard_size", "3") == 0
    tf = T.ToTensor()
    val = resolve_dataset(tmp_path / "sh", "val", transform=tf)
    assert isinstance(val, ShardDataset) and len(val) == 5 and val.classes == ["a", "b"]
    got = {image_id(x): val.classes[t] for x, t in val}
    assert got == val_ids
    train = resolve_dataset(tmp_path / "sh", "train", transform=tf)
    assert {image_id(x) for x, _ in train} <= set(train_ids) and len(train) == 8


def test_plan_slots_cover_every_sample_exactly_once():
    for shards in (1, 2, 3, 5, 8):
        for world in (1, 2, 3):
            for workers in (1, 2, 4):
                per_shard = 7
                taken = []
                for r in range(world):
                    for w in range(workers):
                        mine, stride, offset = plan_slot(shards, world, r, workers, w)
                        stream = [(s, k) for s in mine for k in range(per_shard)]
                        taken += [x for j, x in enumerate(stream) if j % stride == offset]
                expected = [(s, k) for s in range(shards) for k in range(per_shard)]
                assert sorted(taken) == expected, (shards, world, workers)


def test_ranks_get_disjoint_shards_equal_length_and_no_rank_runs_dry(class_folders, tmp_path):
    src, _ = class_folders
    assert run_cli("shard", src, tmp_path / "sh", "--shard_size", "4", "--no-labelled") == 0  # 4,4,4,4,2
    index = resolve_shards(tmp_path / "sh")
    assert index.counts == [4, 4, 4, 4, 2] and index.classes is None
    per_rank = []
    for rank in range(2):
        ds = ShardDataset(index, transform=T.ToTensor(), num_replicas=2, rank=rank, seed=3)
        ds.set_batch_size(4)
        assert len(ds) == 8  # 18 // 2 = 9 per rank, whole batches of 4
        loader = build_loader(ds, batch_size=4, train=True, num_workers=2)
        for epoch in range(2):
            set_epoch(loader, epoch)
            batches = [(b.images, b.targets) for b in loader]
            assert len(batches) == len(loader) == 2  # every rank, every epoch
            assert all((t == -1).all() for _, t in batches)
        per_rank.append({image_id(x) for images, _ in batches for x in images})
    assert not per_rank[0] & per_rank[1]


def test_corrupt_member_is_skipped_and_counted_in_pretraining(class_folders, tmp_path, capsys):
    src, _ = class_folders
    shards = tmp_path / "sh"
    assert run_cli("shard", src, shards, "--shard_size", "6") == 0
    # a fourth shard holding a corrupt member (another tool's: maekit shard leaves corrupt files out): 19 samples
    with wds.TarWriter(str(shards / "shard-000003.tar")) as sink:
        sink.write({"__key__": "000000018", "jpg": b"\xff\xd8 not really a jpeg", "cls": b"1"})
    index = json.loads((shards / "shards.json").read_text())
    index["shardlist"].append({"url": "shard-000003.tar", "nsamples": 1})
    (shards / "shards.json").write_text(json.dumps(index))
    with pytest.warns(UndecodableImageWarning, match=r"shard-00000\d\.tar:\d+\.jpg"):
        items = list(resolve_dataset(shards, "train", transform=T.ToTensor(), seed=0))
    assert len(items) == 19 and sum(item is None for item in items) == 1  # one pass: each sample once
    assert sorted(image_id(x) for x, _ in filter(None, items)) == list(range(18))
    # A truncated shard: the images it lost are warned about once and counted as skipped too.
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in shards.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    (cut / "shard-000001.tar").write_bytes((shards / "shard-000001.tar").read_bytes()[:4096])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = list(resolve_dataset(cut, "train", transform=T.ToTensor(), seed=0))
    said = [str(w.message) for w in caught if issubclass(w.category, UndecodableImageWarning)]
    assert sum(bool(re.search(r"shard-000001\.tar: \d of its 6 samples could be read", m)) for m in said) == 1
    good = [image_id(x) for x, _ in filter(None, items)]
    assert len(items) == 19 and len(good) < 18 and len(set(good)) == len(good)  # one pass, losses counted
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndecodableImageWarning)
        assert run_cli("pretrain", *TINY_MAE, "--data_path", shards / "shard-{000000..000003}.tar",
                       "--output_dir", out, "--batch_size", "19", "--epochs", "1", "--warmup_epochs", "0",
                       *FAST) == 0
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert log[0]["epoch"] == 0 and log[0]["skipped_files"] == 1 and np.isfinite(log[0]["train_loss"])


def test_shards_over_http_by_brace_pattern_and_by_index_url(class_folders, tmp_path):
    """Remote shards (webdataset opens http URLs with curl), served from a loopback HTTP server."""
    import functools
    import http.server
    import threading

    src, ids = class_folders
    assert run_cli("shard", src, tmp_path / "sh", "--shard_size", "5") == 0  # 5, 5, 5, 3
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "sh"))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        by_index = resolve_shards(f"{base}/shards.json")
        assert by_index.counts == [5, 5, 5, 3] and by_index.classes == ["cat", "dog", "eel"]
        assert by_index.urls[0] == f"{base}/shard-000000.tar"
        val = ShardDataset(by_index, train=False, transform=T.ToTensor())
        assert {image_id(x): val.classes[t] for x, t in val} == ids
        pattern = f"{base}/shard-{{000000..000003}}.tar"
        with pytest.raises(ValueError, match="--num_samples"):
            resolve_shards(pattern)
        train = resolve_dataset(pattern, "train", labelled=False, transform=T.ToTensor(), num_samples=12)
        train.set_batch_size(4)
        got = [image_id(x) for x, t in train]
        assert len(got) == len(train) == 12 and len(set(got)) == 12 and set(got) <= set(ids)
    finally:
        server.shutdown()
        server.server_close()


def test_shard_source_errors_are_messages(tmp_path, capsys):
    common = [*TINY_MAE, "--output_dir", tmp_path / "o", *FAST]
    assert run_cli("pretrain", "--data_path", tmp_path / "d-{0..3}.tar", *common) == 2
    assert "shard file(s) not found" in capsys.readouterr().err
    assert run_cli("pretrain", "--data_path", "https://example.invalid/d-{0..3}.tar", *common) == 2
    assert "--num_samples" in capsys.readouterr().err
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    assert run_cli("pretrain", "--data_path", bad, *common) == 2
    assert "cannot read shard" in capsys.readouterr().err
    assert run_cli("shard", tmp_path / "nothing", tmp_path / "sh") == 2
    assert "source folder" in capsys.readouterr().err and not (tmp_path / "sh").exists()
    (tmp_path / "blank").mkdir()
    assert run_cli("shard", tmp_path / "blank", tmp_path / "sh") == 2
    assert "no image files" in capsys.readouterr().err
    make_class_folders(tmp_path / "few", {"a": 3})
    assert run_cli("shard", tmp_path / "few", tmp_path / "sh") == 0
    assert run_cli("pretrain", "--data_path", tmp_path / "sh", "--batch_size", "4", *common) == 2
    assert "fewer than batch_size=4" in capsys.readouterr().err
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    with pytest.raises(ValueError, match="hold no image samples"):
        resolve_shards(tmp_path / "empty.tar")


def _hf_dataset(n: int = 16, two_images: bool = False) -> datasets.Dataset:
    feats = {"picture": datasets.Image(), "kind": datasets.ClassLabel(names=["x", "y"]),
             "caption": datasets.Value("string")}
    data = {"picture": [_image(i) for i in range(n)], "kind": [i % 2 for i in range(n)], "caption": ["c"] * n}
    if two_images:
        feats["thumb"] = datasets.Image()
        data["thumb"] = [_image(i) for i in range(n)]
    return datasets.Dataset.from_dict(data, features=datasets.Features(feats))


def test_hf_columns_are_detected_or_named(monkeypatch):
    ds = _hf_dataset(4)
    assert detect_columns(ds.features) == ("picture", "kind")
    item = HFImageDataset(ds, transform=T.ToTensor())
    assert item.classes == ["x", "y"] and image_id(item[3][0]) == 3 and item[3][1] == 1
    two = _hf_dataset(4, two_images=True)
    with pytest.raises(ValueError, match="several image columns.*--image_column"):
        detect_columns(two.features)
    assert detect_columns(two.features, image_column="thumb") == ("thumb", "kind")
    with pytest.raises(ValueError, match="'photo' is not a column"):
        detect_columns(two.features, image_column="photo")
    unl = ds.remove_columns("kind")
    with pytest.raises(ValueError, match="no label column.*--label_column"):
        detect_columns(unl.features)
    assert detect_columns(unl.features, labelled=False) == ("picture", None)


def test_pretrain_and_finetune_from_hf_dataset_saved_to_disk(tmp_path, capsys):
    saved = tmp_path / "saved"
    data = _hf_dataset(16, two_images=True)
    datasets.DatasetDict({"train": data, "test": data.select(range(6))}).save_to_disk(str(saved))
    out = tmp_path / "pre"
    run = [*TINY_MAE, "--data_path", f"hf:{saved}", "--output_dir", out, "--batch_size", "8", "--epochs", "1",
           "--warmup_epochs", "0", *FAST]
    assert run_cli("pretrain", *run) == 2  # two Image columns: ambiguous
    assert "--image_column" in capsys.readouterr().err
    assert run_cli("pretrain", *run, "--image_column", "picture") == 0
    log = json.loads((out / "log.txt").read_text().splitlines()[0])
    assert log["epoch"] == 0 and log["skipped_files"] == 0 and np.isfinite(log["train_loss"])
    ft = tmp_path / "ft"
    assert run_cli("finetune", "--model", "vit_tiny_patch16", "--input_size", "32", "--patch_size", "8",
                   "--data_path", f"hf:{saved}", "--image_column", "thumb", "--val_split", "test",
                   "--finetune", out / "checkpoint-last.pth", "--output_dir", ft, "--batch_size", "8",
                   "--epochs", "1", "--warmup_epochs", "0", *FAST) == 0
    assert "test_acc1" in (ft / "log.txt").read_text()
    ev = tmp_path / "ev"
    assert run_cli("eval", "--resume", ft / "checkpoint-last.pth", "--data_path", f"hf:{saved}", "--split", "test",
                   "--image_column", "thumb", "--output_dir", ev, "--batch_size", "4", *FAST) == 0
    assert capsys.readouterr().out.count("Acc@1") >= 1


def test_hf_imagefolder_matches_class_folders(class_folders, tmp_path, monkeypatch):
    # datasets reads its environment at import: point its config at a temporary cache directly.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    src, ids = class_folders
    ds = resolve_dataset(f"hf:{src}", "train", transform=T.ToTensor())
    assert ds.classes == ["cat", "dog", "eel"] and len(ds) == len(ids)
    assert {image_id(x): ds.classes[t] for x, t in ds} == ids


TORCHRUN_SCRIPT = r"""
import json, sys, torch, torch.distributed as dist
from torchvision import transforms as T
from maekit.data import build_loader, resolve_dataset, set_epoch
from maekit.cli import main

shards, out, pre_out = sys.argv[1:4]
dist.init_process_group("gloo")
ds = resolve_dataset(shards, "train", labelled=False, transform=T.ToTensor(), seed=0)
loader = build_loader(ds, batch_size=2, train=True, num_workers=2)
epochs = []
for epoch in range(2):
    set_epoch(loader, epoch)
    ids = [int(round(float(x[0, 0, 0]) * 255)) for b in loader for x in b.images]
    epochs.append({"ids": ids, "len": len(loader)})
gathered = [None, None]
dist.all_gather_object(gathered, epochs)
if dist.get_rank() == 0:
    json.dump(gathered, open(out, "w"))
# maekit pretrain joins the process group that is already up (a second init would race in gloo).
sys.exit(main(["pretrain", "--model", "mae_vit_tiny_patch16", "--input_size", "32", "--patch_size", "8",
               "--data_path", shards, "--output_dir", pre_out, "--batch_size", "2", "--epochs", "1",
               "--warmup_epochs", "0", "--num_workers", "2", "--amp", "none", "--device", "cpu"]))
"""


@pytest.mark.slow
def test_torchrun_two_ranks_disjoint_samples_equal_steps(class_folders, tmp_path):
    """5 uneven shards (4, 4, 4, 4, 2 images) over 2 gloo ranks x 2 workers each, then a real
    pretraining run on them (unequal step counts would hang DDP)."""
    src, ids = class_folders
    assert run_cli("shard", src, tmp_path / "sh", "--shard_size", "4", "--no-labelled") == 0  # 4,4,4,4,2
    script = tmp_path / "check.py"
    script.write_text(TORCHRUN_SCRIPT)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    res = subprocess.run([PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                          str(script), str(tmp_path / "sh"), str(tmp_path / "ids.json"),
                          str(tmp_path / "pre")], check=False, env=python_env(), capture_output=True, text=True,
                         timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ranks = json.loads((tmp_path / "ids.json").read_text())
    for epoch in range(2):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a["ids"]) == len(b["ids"]) == 8 and a["len"] == b["len"] == 4  # 18 // 2 -> 4 batches of 2
        assert not set(a["ids"]) & set(b["ids"]) and set(a["ids"]) | set(b["ids"]) <= set(ids)
    log = [json.loads(line) for line in (tmp_path / "pre" / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0] and np.isfinite(log[0]["train_loss"])


def test_no_file_selects_a_command_canary(class_folders, tmp_path, capsys):
    """Security: a shards.json, a --config YAML or a run YAML naming a ``pipe:`` source is refused
    and the command never runs (the canary file stays absent); typed by the user it runs."""
    src, _ = class_folders
    assert run_cli("shard", src, tmp_path / "sh", "--shard_size", "9") == 0
    capsys.readouterr()
    canary = tmp_path / "CANARY"
    index = tmp_path / "sh" / "shards.json"
    spec = json.loads(index.read_text())
    first = tmp_path / "sh" / spec["shardlist"][0]["url"]
    spec["shardlist"][0]["url"] = f"pipe:touch {canary}; cat {first}"
    index.write_text(json.dumps(spec))
    common = [*TINY_MAE, "--output_dir", tmp_path / "o", "--epochs", "1", "--batch_size", "2", *FAST]
    assert run_cli("pretrain", "--data_path", tmp_path / "sh", *common) == 2
    assert "runs a shell command" in capsys.readouterr().err
    assert not canary.exists()
    with pytest.raises(ValueError, match="pipe: source"):
        resolve_shards(index)
    for scheme in ("PIPE:touch x", "ais://b/x.tar", "file-x:y"):
        spec["shardlist"][0]["url"] = scheme
        index.write_text(json.dumps(spec))
        with pytest.raises(ValueError, match="source in a file is refused"):
            resolve_shards(index)
    cfg = tmp_path / "opts.yaml"
    cfg.write_text(f"data_path: 'pipe:touch {canary}; cat {first}'\nepochs: 1\n")
    assert run_cli("pretrain", "--config", cfg, *common) == 2
    assert "never selects a command" in capsys.readouterr().err
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(f"train_dataset:\n  data_loader:\n    dataset_dir: 'pipe:touch {canary}'\n")
    assert run_cli("run", "--config", run_yaml, "--run_mode", "train") == 2
    assert "never selects a command" in capsys.readouterr().err
    assert not canary.exists()
    # Typed on the command line, pipe: is the user's own choice and runs.
    typed = f"pipe:touch {canary}; cat {first}"
    assert run_cli("pretrain", "--data_path", typed, "--num_samples", "4", *common) == 0
    assert canary.exists()


def test_a_corrupt_shard_member_is_warned_once_by_its_key_in_one_line(tmp_path):
    import io

    folder = tmp_path / "sh"
    folder.mkdir()
    good = io.BytesIO()
    Image.new("RGB", (8, 8)).save(good, format="PNG")
    with wds.TarWriter(str(folder / "shard-000000.tar")) as sink:
        for k in range(4):
            sink.write({"__key__": f"s{k}", "png": good.getvalue() if k != 2 else b"not a png"})
    (folder / "shards.json").write_text(json.dumps(
        {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": "sh",
         "shardlist": [{"url": "shard-000000.tar", "nsamples": 4}]}))
    ds = ShardDataset(resolve_shards(folder), train=True, shuffle_buffer=0, labelled=False)
    said = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert sum(item is None for item in ds) == 1  # counted every epoch
        said.append([str(w.message) for w in caught if issubclass(w.category, UndecodableImageWarning)])
    assert len(said[0]) == 1 and said[1:] == [[], []]  # said in the first epoch only
    assert "shard-000000.tar:s2.png" in said[0][0] and "BytesIO" not in said[0][0]
    line = warnings.formatwarning(said[0][0], UndecodableImageWarning, "/src/maekit/x.py", 9)
    assert line == f"warning: {said[0][0]}\n"  # no maekit source file and line

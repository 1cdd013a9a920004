"""``maekit knn`` and the sharded feature extraction behind the k-NN monitor (issue 12)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from maekit.cli import main
from maekit.engine.knn import extract_features, knn_accuracy
from maekit.models import create_model

KNN_ARGS = ["--data_path", "builtin:digits", "--bank_per_class", "20", "--max_queries", "100", "--device", "cpu",
            "--num_workers", "0", "--amp", "none"]


def _tiny():
    torch.manual_seed(0)
    return create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8, depth=2, decoder_depth=1)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same weights as a maekit folder, an official .pth and a PASSL .pdparams (converted)."""
    root = tmp_path_factory.mktemp("knn_sources")
    _tiny().save_pretrained(root / "maekit")
    for name, fmt in (("official.pth", "official"), ("passl.pdparams", "passl")):
        assert main(["convert", str(root / "maekit"), str(root / name), "--to", fmt]) == 0
    return root


def _knn(source, out, capsys) -> dict:
    assert main(["knn", "--model", str(source), "--output_dir", str(out), *KNN_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and f"{out}{os.sep}knn.json" in printed
    return json.loads((out / "knn.json").read_text())


def test_knn_command_same_number_on_converted_files(sources, tmp_path, capsys):
    original = _knn(sources / "maekit", tmp_path / "a", capsys)
    assert original["bank_images"] == 200 and original["query_images"] == 100 and original["num_classes"] == 10
    assert original["feature_dim"] == 192 and 10 < original["knn_top1"] <= original["knn_top5"] <= 100
    for name in ("official.pth", "passl.pdparams"):
        converted = _knn(sources / name, tmp_path / name, capsys)
        assert converted["knn_top1"] == original["knn_top1"], name
        assert converted["knn_top5"] == original["knn_top5"], name


def test_knn_command_on_a_folder_without_val_split(tmp_path, capsys):
    from PIL import Image

    for c, colour in enumerate([(250, 10, 10), (10, 250, 10), (10, 10, 250)]):
        folder = tmp_path / "data" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(10):
            shade = tuple(min(255, v + 3 * i) for v in colour)
            Image.new("RGB", (40, 40), shade).save(folder / f"{i}.png")
    model = tmp_path / "model"
    _tiny().save_pretrained(model)
    assert main(["knn", "--model", str(model), "--data_path", str(tmp_path / "data"), "--output_dir",
                 str(tmp_path / "out"), "--device", "cpu", "--num_workers", "0", "--k", "5"]) == 0
    result = json.loads((tmp_path / "out" / "knn.json").read_text())
    # every 10th image of each class is held out: 3 queries, 27 bank images; colours are trivially separable
    assert (result["bank_images"], result["query_images"], result["knn_top1"]) == (27, 3, 100.0)


def test_knn_command_bad_data_is_a_clear_error(tmp_path, capsys):
    model = tmp_path / "model"
    _tiny().save_pretrained(model)
    code = main(["knn", "--model", str(model), "--data_path", str(tmp_path / "nothing"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0 and "nothing" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- 2 ranks
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from maekit.tasks.monitoring import knn_datasets

        bank, _ = knn_datasets("builtin:digits", img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3)
        sub = torch.utils.data.Subset(bank, range(21))  # odd: shards of 11 and 10
        feats, labels = extract_features(_tiny(), sub, batch_size=4)
        torch.save({"feats": feats, "labels": labels}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sharded_extraction_equals_single_process(tmp_path):
    ctx = mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.time() + 300  # generous: spawning two torch processes on a busy 2-core machine
    try:
        while not ctx.join(timeout=1):
            assert time.time() < deadline, "k-NN feature workers hung"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    from maekit.tasks.monitoring import knn_datasets

    bank, _ = knn_datasets("builtin:digits", img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    single, labels = extract_features(_tiny(), torch.utils.data.Subset(bank, range(21)), batch_size=4)
    order = list(range(0, 21, 2)) + list(range(1, 21, 2))  # rank 0's shard, then rank 1's
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["labels"], labels[order])
        assert torch.allclose(got["feats"], single[order], atol=1e-6)
    assert knn_accuracy(single, labels, single, labels, num_classes=10, k=1,
                        temperature=0.07)["top1"] == 100.0


def test_knn_on_labelled_shards_equals_the_folders_and_other_classes_are_refused(digit_folders, tmp_path, capsys):
    model = tmp_path / "model"
    _tiny().save_pretrained(model)
    common = ["--model", str(model), "--device", "cpu", "--num_workers", "0", "--k", "5"]
    assert main(["shard", str(digit_folders / "train"), str(tmp_path / "shards" / "train")]) == 0
    assert main(["shard", str(digit_folders / "val"), str(tmp_path / "shards" / "val")]) == 0
    results = []
    for data in (digit_folders, tmp_path / "shards"):
        assert main(["knn", *common, "--data_path", str(data), "--output_dir", str(tmp_path / data.name)]) == 0
        results.append(json.loads((tmp_path / data.name / "knn.json").read_text()))
    for key in ("bank_images", "query_images", "num_classes", "knn_top1", "knn_top5"):
        assert results[0][key] == results[1][key], key
    other = tmp_path / "other"  # the same train split, a val split with another class
    for split, names in (("train", ("zero", "one", "two")), ("val", ("zero", "one", "three"))):
        for name, source in zip(names, ("zero", "one", "two")):
            (other / split / name).mkdir(parents=True)
            for p in list((digit_folders / split / source).glob("*.png"))[:5]:
                (other / split / name / p.name).write_bytes(p.read_bytes())
    capsys.readouterr()
    assert main(["knn", *common, "--data_path", str(other)]) == 2
    assert "the train and val splits have different classes" in capsys.readouterr().err

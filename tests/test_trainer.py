"""maekit.Trainer / TrainingArguments: train, finetune, evaluate, predict on tiny data (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset

from maekit.api import AutoModel, MAEConfig, Trainer, TrainingArguments
from maekit.data import DigitsDataset, build_eval_transform, build_loader
from conftest import FAST_ARGS, TINY_MAE_ARGS, TINY_MAE_NAME, cli_flags, run_cli
from maekit.models import create_model

FAST = dict(FAST_ARGS, epochs=1, batch_size=8, warmup_epochs=0, print_freq=1000)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("MAEKIT_OFFLINE", "1")
    monkeypatch.setenv("MAEKIT_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    """32 train / 16 val digits as transformed tensors (Subset: no `classes` attribute)."""
    tf = build_eval_transform(32, crop_pct=1.0)
    train = Subset(DigitsDataset("train", transform=tf, size=32), range(32))
    val = Subset(DigitsDataset("val", transform=tf, size=32), range(16))
    return train, val


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "noise.png"
    Image.fromarray((np.random.RandomState(0).rand(40, 48, 3) * 255).astype(np.uint8)).save(path)
    return path


def tiny_mae() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(TINY_MAE_NAME, **TINY_MAE_ARGS)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, digits):
    """A tiny MAE pretrained one epoch by the Trainer (shared by the tests below)."""
    out = tmp_path_factory.mktemp("mim")
    train, val = digits
    trainer = Trainer(task="masked-image-modeling", model=tiny_mae(), train_dataset=train, eval_dataset=val,
                      args=TrainingArguments(output_dir=str(out), blr=1e-3, **FAST))
    last = trainer.train()
    return trainer, last


# ----------------------------------------------------------------------------- TrainingArguments
def test_training_arguments_aliases_and_checks():
    a = TrainingArguments(num_train_epochs=3, per_device_train_batch_size=16, learning_rate=1e-4, image_size=64,
                          drop_path_rate=0.2, norm_pixel_loss=True, mean=0.5)
    assert (a.epochs, a.batch_size, a.lr, a.input_size, a.drop_path, a.norm_pix_loss) == (3, 16, 1e-4, 64, 0.2, True)
    assert a.mean == [0.5] and a.blr is None and a.output_dir == "./output"
    assert a.given()["epochs"] == 3 and "blr" not in a.given()
    assert a.replace(num_train_epochs=5).epochs == 5
    with pytest.raises(ValueError, match="given twice"):
        TrainingArguments(epochs=1, num_train_epochs=2)
    with pytest.raises(ValueError, match="did you mean epochs"):
        TrainingArguments(epoch=1)
    with pytest.raises(ValueError, match="batch_size: expected int"):
        TrainingArguments(batch_size="8")
    with pytest.raises(ValueError, match="norm_pix_loss"):
        TrainingArguments(norm_pix_loss=1)


# ----------------------------------------------------------------------------- masked image modeling
def test_mim_train_writes_the_cli_files(pretrained):
    trainer, last = pretrained
    out = trainer.output_dir
    assert trainer.checkpoint == out / "checkpoint-last.pth"
    for name in ("checkpoint-last.pth", "log.txt", "config.yaml"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert len(records) == 1 and math.isfinite(records[0]["train_loss"])
    assert last["train_loss"] == records[0]["train_loss"]
    ckpt = torch.load(out / "checkpoint-last.pth", weights_only=True)
    assert ckpt["extra"]["model_name"] == "mae_vit_tiny_patch16"
    assert ckpt["extra"]["model_args"]["depth"] == 2  # the module's architecture was trained
    assert ckpt["args"]["data_path"].startswith("<Subset of 32")
    # the resolved task config: TrainingArguments as given, the module's architecture as model_args
    assert ckpt["args"]["blr"] == 1e-3 and ckpt["args"]["mask_ratio"] == 0.75
    assert ckpt["args"]["model_args"] == {"depth": 2, "decoder_depth": 1}
    # the trained model is the Trainer's model now
    assert torch.equal(trainer.model.state_dict()["blocks.0.attn.qkv.weight"], ckpt["model"]["blocks.0.attn.qkv.weight"])


def test_mim_evaluate_is_deterministic(pretrained):
    trainer, _ = pretrained
    first, second = trainer.evaluate(), trainer.evaluate()
    assert set(first) == {"test_loss", "test_n"} and first["test_n"] == 16
    assert math.isfinite(first["test_loss"]) and first["test_loss"] > 0
    assert first == second


def test_reconstruction_eval_fixed_masks_do_not_depend_on_batch_size(digits):
    from maekit.tasks.reconstruction import evaluate_reconstruction

    model = tiny_mae()
    _, val = digits
    runs = {bs: evaluate_reconstruction(model, build_loader(val, batch_size=bs, train=False), device="cpu", seed=0)
            for bs in (3, 16)}
    assert runs[3]["n"] == runs[16]["n"] == 16
    assert runs[3]["loss"] == pytest.approx(runs[16]["loss"], rel=1e-5)
    other = evaluate_reconstruction(model, build_loader(val, batch_size=16, train=False), device="cpu", seed=1)
    assert other["loss"] != pytest.approx(runs[16]["loss"], rel=1e-6)


def test_mim_predict_returns_pipeline_results(pretrained, image):
    trainer, _ = pretrained
    out = trainer.predict(input_data=str(image))
    assert isinstance(out, dict)
    assert isinstance(out["reconstruction"], Image.Image) and out["reconstruction"].size == (32, 32)
    assert isinstance(out["grid"], Image.Image) and isinstance(out["loss"], float)
    assert out["mask"].shape == (4, 4) and float(out["mask"].mean()) == pytest.approx(0.75)
    assert all(Path(p).is_file() for p in out["files"].values())
    assert out["loss"] == trainer.predict(input_data=str(image))["loss"]  # seed 2 by default: same mask
    many = trainer.predict(input_data=[str(image), np.zeros((20, 20, 3), np.uint8)], seed=5)
    assert isinstance(many, list) and len(many) == 2
    rows = json.loads((trainer.output_dir / "masked_image_modeling_result.json").read_text())
    assert [r["input"] for r in rows] == [str(image), "input1"]


def test_resume_training_from_a_run_folder_is_resume(pretrained, digits, tmp_path):
    """resume_training=<run folder> is --resume <run folder>: its newest checkpoint's weights and
    training state, so a 2-epoch run continues at epoch 1."""
    first, _ = pretrained
    trainer = Trainer(task="masked_image_modeling", model=tiny_mae(), train_dataset=digits[0],
                      args=TrainingArguments(output_dir=str(tmp_path), blr=1e-3, **{**FAST, "epochs": 2}))
    last = trainer.train(resume_training=first.output_dir)
    records = [json.loads(line) for line in (tmp_path / "log.txt").read_text().splitlines()]
    assert last["epoch"] == 1 and [r["epoch"] for r in records] == [1]
    assert torch.load(trainer.checkpoint, weights_only=False)["args"]["resume"] == str(first.output_dir)


def test_mim_module_weights_are_the_starting_point(tmp_path, digits):
    module = tiny_mae()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = Trainer(task="masked_image_modeling", model=module, train_dataset=Subset(digits[0], range(16)),
                      args=TrainingArguments(output_dir=str(tmp_path), **{**FAST, "lr": 0.0, "min_lr": 0.0}))
    trainer.train()
    trained = torch.load(tmp_path / "checkpoint-last.pth", weights_only=True)["model"]
    assert not (tmp_path / "initial_weights.pth").exists()  # handed over as a module, not a file
    assert all(torch.equal(trained[k], before[k]) for k in before)  # lr 0: still exactly the module's weights


# ----------------------------------------------------------------------------- Trainer == CLI
@pytest.mark.parametrize("task, command, flag", [("masked_image_modeling", "pretrain", "--init"),
                                                  ("image_classification", "finetune", "--finetune")])
def test_trainer_given_a_path_is_the_cli_given_the_flag(task, command, flag, tmp_path, digit_folders):
    """Trainer(model=path) is `maekit pretrain --init path` / `maekit finetune --finetune path`: the
    same task config, so after one step (one batch of real files) bitwise-equal weights."""
    from maekit.api import save_pretrained

    source = save_pretrained(tiny_mae(), tmp_path / "source")  # a model folder on disk
    mim = task == "masked_image_modeling"
    data = digit_folders / "unlabelled" if mim else digit_folders
    one_step = dict(FAST_ARGS, epochs=1, batch_size=64 if mim else 72, warmup_epochs=0, lr=1e-3,
                    print_freq=1000, **({"recon_every": 0} if mim else {}))
    trainer = Trainer(task=task, model=str(source), train_dataset=str(data),
                      args=TrainingArguments(output_dir=str(tmp_path / "trainer"), **one_step))
    trainer.train()
    assert run_cli(command, flag, source, "--data_path", data, "--output_dir", tmp_path / "cli",
                   *cli_flags(**one_step)) == 0
    ours, cli = (torch.load(tmp_path / run / "checkpoint-last.pth", weights_only=False) for run in ("trainer", "cli"))
    assert ours["args"][flag[2:]] == cli["args"][flag[2:]] == str(source)
    assert ours["extra"]["model_args"] == cli["extra"]["model_args"] and ours["extra"]["model_args"]["depth"] == 2
    assert ours["model"].keys() == cli["model"].keys()
    assert all(torch.equal(ours["model"][k], cli["model"][k]) for k in cli["model"]), "weights differ"
    start = tiny_mae().state_dict()["blocks.0.attn.qkv.weight"]
    assert not torch.equal(ours["model"]["blocks.0.attn.qkv.weight"], start)  # the step moved them


# ----------------------------------------------------------------------------- classification
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, digits, pretrained):
    out = tmp_path_factory.mktemp("cls")
    train, val = digits
    trainer = Trainer(task="image_classification", train_dataset=train, eval_dataset=val,
                      args=TrainingArguments(output_dir=str(out), nb_classes=10, **{**FAST, "lr": 0.0, "min_lr": 0.0}))
    last = trainer.finetune(finetune_checkpoint=pretrained[0].checkpoint)
    return trainer, last


def test_finetune_loads_the_pretrained_encoder(finetuned, pretrained):
    trainer, last = finetuned
    pre = torch.load(pretrained[0].checkpoint, weights_only=True)["model"]
    model = trainer.model
    assert model.model_name == "vit_tiny_patch16"  # the checkpoint's encoder, as a classifier
    assert model.model_args["depth"] == 2 and model.num_classes == 10
    state = model.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.bias", "cls_token"):
        assert torch.equal(state[key], pre[key]), key  # lr 0: exactly the pretrained encoder
    config = (trainer.output_dir / "config.yaml").read_text()
    assert str(pretrained[0].checkpoint) in config
    assert {"test_acc1", "test_acc5", "test_loss"} <= set(last)


def test_classification_evaluate_and_predict(finetuned, image, tmp_path):
    trainer, last = finetuned
    metrics = trainer.evaluate()
    assert set(metrics) == {"test_acc1", "test_acc5", "test_loss"}
    assert all(math.isfinite(v) for v in metrics.values()) and 0 <= metrics["test_acc1"] <= 100
    assert metrics["test_acc1"] == pytest.approx(last["test_acc1"])
    preds = trainer.predict(input_data=[str(image)], top_k=3)
    assert isinstance(preds, list) and len(preds[0]) == 3
    assert set(preds[0][0]) == {"label", "score", "index"} and preds[0][0]["label"] in [str(i) for i in range(10)]
    assert preds[0][0]["score"] >= preds[0][1]["score"]
    folder = trainer.save_pretrained(tmp_path / "saved")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    again = AutoModel.from_pretrained(folder)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(again(x), trainer.model.eval()(x), atol=1e-6)


def test_classification_train_on_folders_from_scratch(tmp_path):
    rng = np.random.RandomState(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.rand(36, 36, 3) * 255).astype(np.uint8)).save(tmp_path / "data" / split / c / f"{i}.png")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), **{**FAST, "batch_size": 4})
    config = MAEConfig("vit_tiny_patch16", {"img_size": 32, "patch_size": 8, "depth": 1})
    trainer = Trainer(task="image-classification", model=config, args=args,
                      train_dataset=tmp_path / "data" / "train", eval_dataset=tmp_path / "data" / "val")
    last = trainer.train()
    assert math.isfinite(last["train_loss"]) and "test_acc1" in last
    assert trainer.model.class_names == ["a", "b"] and trainer.model.model_args["depth"] == 1
    assert trainer.predict(input_data=tmp_path / "data" / "val" / "a")[0][0]["label"] in ("a", "b")


# ----------------------------------------------------------------------------- set-up errors
def test_trainer_set_up_errors(digits, tmp_path):
    train, _ = digits
    args = TrainingArguments(output_dir=str(tmp_path), **FAST)
    with pytest.raises(ValueError, match="pretraining model"):
        Trainer(task="masked_image_modeling", model="vit_tiny_patch16", train_dataset=train, args=args).train()
    with pytest.raises(ValueError, match="'vit_tiny_patch16' is not a pretraining model"):  # args' model: no default
        Trainer(task="masked_image_modeling", train_dataset=train, args=args.replace(model="vit_tiny_patch16")).train()
    with pytest.raises(ValueError, match="give eval_dataset"):
        Trainer(task="image_classification", model="vit_tiny_patch16", train_dataset=train, args=args).train()
    with pytest.raises(ValueError, match="give train_dataset"):
        Trainer(task="masked_image_modeling", model="mae_vit_tiny_patch16", args=args).train()
    with pytest.raises(ValueError, match="unknown task"):
        Trainer(task="segmentation")
    with pytest.raises(ValueError, match="masked_image_modeling or image_classification"):
        Trainer(task="image_feature_extraction")
    assert Trainer(model="mae_vit_tiny_patch16").task == "masked_image_modeling"  # inferred from the model
    assert Trainer(model_name="vit_base_p16").task == "image_classification"
    with pytest.raises(ValueError, match="needs a classifier"):
        Trainer(task="image_classification", model=tiny_mae()).predict(input_data=np.zeros((8, 8, 3), np.uint8))


def test_predict_before_training_uses_the_given_module(tmp_path):
    trainer = Trainer(task="masked_image_modeling", model=tiny_mae(), args=TrainingArguments(output_dir=str(tmp_path)))
    out = trainer.predict(input_data=np.zeros((20, 24, 3), np.uint8), output_dir=None)
    assert isinstance(out["masked"], Image.Image) and math.isfinite(out["loss"])


def test_reconstruction_eval_masks_survive_an_undecodable_file(digits):
    """With the task's per-image mask seeds, an image dropped from a batch (an undecodable file)
    changes no other image's mask: batch sizes 1 and 4 give the same loss over the 15 good images,
    and that loss is the mean of the per-image losses of those images alone."""
    from maekit.tasks.reconstruction import EvalMaskSeeds, evaluate_reconstruction

    class OneBad(torch.utils.data.Dataset):
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            return None if i == 1 else self.base[i]

    model = tiny_mae()
    _, val = digits
    runs = {bs: evaluate_reconstruction(model, build_loader(EvalMaskSeeds(OneBad(val), 0), batch_size=bs,
                                                              train=False), device="cpu", seed=0)
            for bs in (1, 4)}
    assert runs[1]["n"] == runs[4]["n"] == 15
    assert runs[4]["loss"] == pytest.approx(runs[1]["loss"], rel=1e-6)

"""MindFormers-shaped run YAML: the shipped configs, the mapping, errors, and ``maekit run`` in every mode."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from maekit.api import RunConfigWarning, Trainer, load_run_config
from maekit.compat.mindformers import apply_options, resolve_run_config_path
from maekit.cli import main

MAE_YAML = "mae/run_mae_vit_base_p16_224_800ep.yaml"
VIT_YAML = "vit/run_vit_base_p16_224_100ep.yaml"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("MAEKIT_OFFLINE", "1")
    monkeypatch.setenv("MAEKIT_HOME", str(tmp_path / "cache"))


def no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    assert not [w for w in caught if issubclass(w.category, RunConfigWarning)], [str(w.message) for w in caught]
    return out


def write_yaml(tmp_path: Path, data) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


# ----------------------------------------------------------------------------- shipped configs
def test_mae_yaml_fixes_the_reference_bugs():
    path = resolve_run_config_path(MAE_YAML)
    raw = yaml.safe_load(Path(path).read_text())
    assert raw["runner_config"]["epochs"] == 800 and raw["lr_schedule"]["warmup_epochs"] == 40
    norm = next(t for t in raw["train_dataset"]["transforms"] if t["type"] == "Normalize")
    assert norm["mean"][1] == 116.28 and norm["std"][1] == 57.12  # not 118.575 / 62.22
    rc = no_warnings(load_run_config, "configs/" + MAE_YAML)  # MindFormers' relative spelling works too
    a = rc.args
    assert (rc.run_mode, rc.task, rc.model) == ("train", "masked_image_modeling", "mae_vit_base_p16")
    assert (a.epochs, a.warmup_epochs, a.batch_size, a.blr, a.min_lr) == (800, 40, 64, 1.5e-4, 0.0)
    assert a.mean == pytest.approx(IMAGENET_MEAN) and a.std == pytest.approx(IMAGENET_STD)
    assert (a.mask_ratio, a.norm_pix_loss, a.input_size, a.patch_size, a.weight_decay) == (0.75, True, [224], 16, 0.05)
    assert rc.train_dataset == "imageNet-1k/train" and a.model_args == {}
    assert type(a).__name__ == "PretrainConfig" and a.output_dir == "./output" and a.is_given("batch_size")
    assert rc.default_checkpoint is None  # checkpoint_name_or_path is the model's name: its published weights
    for weights in ("mae_vit_base_p16.pretrain", "run/checkpoint-last.pth"):  # tagged names and paths are weights
        option = f"model.model_config.checkpoint_name_or_path={weights}"
        assert load_run_config(MAE_YAML, [option]).default_checkpoint == weights


def test_vit_yaml_maps_the_finetune_recipe():
    rc = no_warnings(load_run_config, VIT_YAML)
    a = rc.args
    assert (rc.run_mode, rc.task, rc.model) == ("finetune", "image_classification", "vit_base_p16")
    assert (a.epochs, a.batch_size, a.blr, a.min_lr, a.warmup_epochs, a.layer_decay) == (100, 32, 5e-4, 1e-6, 5, 0.65)
    assert (a.mixup, a.cutmix, a.mixup_prob, a.mixup_switch_prob, a.smoothing) == (0.8, 1.0, 1.0, 0.5, 0.1)
    assert (a.reprob, a.remode, a.recount, a.aa) == (0.25, "pixel", 1, "rand-m9-mstd0.5-inc1")
    assert (a.drop_path, a.global_pool, a.nb_classes, a.weight_decay) == (0.1, True, 1000, 0.05)
    assert a.mean == pytest.approx(IMAGENET_MEAN) and a.std == pytest.approx(IMAGENET_STD)
    assert not hasattr(a, "mask_ratio") and rc.eval_dataset == "imageNet-1k/val"
    assert type(a).__name__ == "FinetuneConfig"


def test_trainer_reads_a_run_yaml(tmp_path):
    trainer = no_warnings(Trainer, args=MAE_YAML, train_dataset=str(tmp_path))
    assert trainer.task == "masked_image_modeling" and trainer.model_source == "mae_vit_base_p16"
    assert trainer.args.epochs == 800 and trainer.train_dataset == str(tmp_path)


# ----------------------------------------------------------------------------- mapping details
def test_options_set_dotted_keys():
    data = {"a": {"b": 1, "items": [{"x": 1}, {"x": 2}]}, "s": 3}
    out = apply_options(data, ["a.b=2", "a.items.1.x=[1, 2]", "new.deep.key=1e-4", "t=none", "u=True"])
    assert out["a"]["b"] == 2 and out["a"]["items"][1]["x"] == [1, 2] and out["u"] is True
    assert out["new"]["deep"]["key"] == "1e-4" and out["t"] == "none" and data["a"]["b"] == 1  # a copy
    for bad, msg in (("a.b", "key=value"), ("s.x=1", "not a section"), ("a.items.5.x=1", "out of range"),
                     ("a..b=1", "bad option key")):
        with pytest.raises(ValueError, match=msg):
            apply_options(data, [bad])


def test_flags_set_yaml_keys_as_values_and_win_over_options():
    from maekit.cli import parse
    from maekit.compat.mindformers_cli import yaml_options

    options = yaml_options(parse("run", ["--epochs", "2", "--options", "runner_config.epochs=3", "amp=none",
                                         "--device", "cpu", "--train_dataset_dir", "123", "--resume_training"]))
    assert options == {"runner_config.epochs": 2, "amp": "none", "device": "cpu", "resume_training": True,
                       "train_dataset.data_loader.dataset_dir": "123"}
    rc = load_run_config(MAE_YAML, options)
    assert (rc.args.epochs, rc.args.amp, rc.args.device, rc.train_dataset, rc.resume_training) == (
        2, "none", "cpu", "123", True)
    assert {"epochs", "amp", "device"} <= rc.args.typed and "lr" not in rc.args.typed
    with pytest.warns(RunConfigWarning, match="remode, reprob: not an option of masked_image_modeling"):
        load_run_config(MAE_YAML, ["train_dataset.transforms.0={type: RandomErasing, probability: 0.5, mode: const}"])


def test_mask_ratio_from_model_config_else_mask_policy():
    data = yaml.safe_load(Path(resolve_run_config_path(MAE_YAML)).read_text())
    del data["model"]["model_config"]["mask_ratio"]
    assert load_run_config(data, ["train_dataset.mask_policy.mask_ratio=0.6"]).args.mask_ratio == 0.6
    with pytest.warns(RunConfigWarning, match="mask_policy.mask_ratio 0.6 differ; using 0.75"):
        assert load_run_config(MAE_YAML, ["train_dataset.mask_policy.mask_ratio=0.6"]).args.mask_ratio == 0.75
    with pytest.warns(RunConfigWarning, match=r"eval_dataset.mask_policy: unknown key\(s\) \['mask_ratio'\]"):
        load_run_config({**data, "eval_dataset": {"mask_policy": {"mask_ratio": 0.5}}})


def test_mapping_of_lr_architecture_and_maekit_keys(tmp_path):
    rc = load_run_config(MAE_YAML, ["lr_scale=False", "lr_schedule.learning_rate=1e-4", "amp=none",
                                    "model.model_config.hidden_size=192", "model.model_config.num_hidden_layers=2",
                                    "model.model_config.num_attention_heads=3", "context.device_target=CPU",
                                    "lr_scale_factor=512"])
    assert rc.args.lr == 1e-4 and "blr" not in rc.args.typed and rc.args.amp == "none" and rc.args.device == "cpu"
    assert rc.args.model_args == {"embed_dim": 192, "depth": 2, "num_heads": 3}
    scaled = load_run_config(MAE_YAML, ["lr_scale_factor=512"])
    assert scaled.args.blr == pytest.approx(1.5e-4 * 256 / 512)
    vit = load_run_config(VIT_YAML, ["layer_scale=False"])
    assert vit.args.layer_decay == 1.0


def test_warnings_for_unknown_keys_and_the_reference_typo(tmp_path):
    data = yaml.safe_load(Path(resolve_run_config_path(MAE_YAML)).read_text())
    data["runner_config"]["colour"] = 1
    with pytest.warns(RunConfigWarning, match=r"unknown key\(s\) \['colour'\]"):  # in the file: a warning
        load_run_config(data)
    for key in ("runner_config.colour=1", "parallel.data_parallel=8", "model.model_config.qkv_bias=False"):
        with pytest.raises(ValueError, match="does not take effect"):  # on the command line: an error
            load_run_config(MAE_YAML, [key])
    with pytest.warns(RunConfigWarning, match="typo"):
        rc = load_run_config(MAE_YAML, ["train_dataset.transforms.2.mean=[123.675, 118.575, 103.53]",
                                        "train_dataset.transforms.2.std=[58.395, 62.22, 57.375]"])
    assert rc.args.mean[1] == pytest.approx(118.575 / 255)  # used as given, but flagged
    with pytest.warns(RunConfigWarning, match="beta2"):
        load_run_config(MAE_YAML, ["optimizer.beta2=0.999"])


@pytest.mark.parametrize("options, message", [
    (["run_mode=export"], "run_mode must be one of"),
    (["runner_config.epochs=ten"], "runner_config.epochs: expected int"),
    (["runner_config=5"], "runner_config must be a mapping"),
    (["trainer.type=segmentation"], "unknown task"),
    (["trainer.type=image_classification"], "ViTMAEForPreTraining is a masked_image_modeling model"),
    (["lr_schedule.type=polynomial"], "lr_schedule.type 'polynomial' is not available"),
    (["optimizer.type=sgd"], "optimizer.type 'sgd' is not available"),
    (["model.model_config.norm_pix_loss=maybe"], "norm_pix_loss: expected bool"),
    (["train_dataset.transforms.0=Decode"], r"transforms\[0\] must be a mapping"),
    (["amp=half"], "amp"),
])
def test_bad_values_are_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        load_run_config(MAE_YAML, options)


def test_bad_files_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="run config not found"):
        load_run_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_run_config(write_yaml(tmp_path, "runner_config: [1, 2\n"))
    with pytest.raises(ValueError, match="mapping of sections"):
        load_run_config(write_yaml(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ValueError, match="trainer.type"):
        load_run_config(write_yaml(tmp_path, {"runner_config": {"epochs": 1}}))


def test_cli_prints_config_errors_without_traceback(capsys, tmp_path):
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "maekit run: error: run config not found" in err and "Traceback" not in err
    assert main(["run", "--config", VIT_YAML, "--options", "runner_config.epochs=ten"]) == 2
    assert "runner_config.epochs: expected int" in capsys.readouterr().err
    assert main(["run", "--config", VIT_YAML, "--run_mode", "finetune", "--train_dataset_dir", str(tmp_path),
                 "--eval_dataset_dir", str(tmp_path)]) == 2
    assert "needs --load_checkpoint" in capsys.readouterr().err


# ----------------------------------------------------------------------------- maekit run, every mode
@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.RandomState(0)
    for split, n in (("train", 6), ("val", 3)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.rand(36, 36, 3) * 255).astype(np.uint8)).save(root / split / c / f"{i}.png")
    return root


TINY = ["model.model_config.image_size=32", "model.model_config.patch_size=8", "model.model_config.num_hidden_layers=2",
        "runner_config.batch_size=4", "amp=none", "device=cpu", "num_workers=0", "lr_schedule.warmup_epochs=0",
        "print_freq=1000"]
MAE_TINY = ["--options", "trainer.model_name=mae_vit_tiny_patch16", "model.model_config.decoder_num_hidden_layers=1",
            *TINY]
VIT_TINY = ["--options", "trainer.model_name=vit_tiny_patch16", "runner_config.num_classes=2",
            "model.model_config.num_labels=2", *TINY]


def run(*argv) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunConfigWarning)  # the 224 transform sizes of the shipped files
        return main(["run", *map(str, argv)])


def test_maekit_run_every_mode(folders, tmp_path, capsys):
    mim, cls = tmp_path / "mim", tmp_path / "cls"
    # train: MAE pretraining on an unlabelled folder
    assert run("--config", MAE_YAML, "--run_mode", "train", "--train_dataset_dir", folders / "train",
               "--output_dir", mim, "--epochs", 1, *MAE_TINY) == 0
    ckpt = mim / "checkpoint-last.pth"
    assert ckpt.is_file() and (mim / "log.txt").is_file()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["extra"]["model_args"]["depth"] == 2 and saved["extra"]["model_args"]["decoder_depth"] == 1
    assert saved["args"]["epochs"] == 1 and saved["args"]["mean"] == pytest.approx(IMAGENET_MEAN)
    assert "checkpoint:" in capsys.readouterr().out
    # eval: reconstruction loss, twice the same
    outs = []
    for _ in range(2):
        assert run("--config", MAE_YAML, "--run_mode", "eval", "--load_checkpoint", ckpt, "--eval_dataset_dir",
                   folders / "val", "--output_dir", mim, *MAE_TINY) == 0
        outs.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert outs[0] == outs[1] and outs[0]["test_n"] == 6 and math.isfinite(outs[0]["test_loss"])
    # predict: reconstruction pictures
    assert run("--config", MAE_YAML, "--run_mode", "predict", "--load_checkpoint", ckpt, "--predict_data",
               folders / "val" / "cat" / "0.png", "--output_dir", tmp_path / "pred", *MAE_TINY) == 0
    assert (tmp_path / "pred" / "0_grid.png").is_file()
    assert json.loads((tmp_path / "pred" / "masked_image_modeling_result.json").read_text())[0]["loss"] > 0
    capsys.readouterr()
    # finetune: the ViT recipe from the MAE checkpoint (mixup needs an even batch: 4)
    assert run("--config", VIT_YAML, "--run_mode", "finetune", "--load_checkpoint", ckpt, "--train_dataset_dir",
               folders / "train", "--eval_dataset_dir", folders / "val", "--output_dir", cls, "--epochs", 1,
               *VIT_TINY) == 0
    fine = torch.load(cls / "checkpoint-last.pth", weights_only=True)
    assert fine["extra"]["model_name"] == "vit_tiny_patch16" and fine["args"]["finetune"] == str(ckpt)
    assert fine["args"]["mixup"] == 0.8 and fine["args"]["layer_decay"] == 0.65
    assert fine["extra"]["class_names"] == ["cat", "dog"]
    capsys.readouterr()
    # eval: top-1
    assert run("--config", VIT_YAML, "--run_mode", "eval", "--load_checkpoint", cls / "checkpoint-last.pth",
               "--eval_dataset_dir", folders / "val", "--output_dir", cls, *VIT_TINY) == 0
    out = capsys.readouterr().out
    assert "Top1 Accuracy" in out and set(json.loads(out.strip().splitlines()[-1])) == {
        "test_acc1", "test_acc5", "test_loss"}
    # predict: labels from the class folders
    assert run("--config", VIT_YAML, "--run_mode", "predict", "--load_checkpoint", cls / "checkpoint-last.pth",
               "--predict_data", folders / "val" / "dog", "--output_dir", cls, *VIT_TINY) == 0
    rows = json.loads((cls / "image_classification_result.json").read_text())
    assert len(rows) == 3 and {p["label"] for p in rows[0]["predictions"]} == {"cat", "dog"}

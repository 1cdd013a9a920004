"""``pretrain --init`` from any weights, and the architecture read from a checkpoint (issue 13 items 5, 6)."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import FAST, TINY_ARGS, TINY_MAE, TINY_MAE_ARGS, run_cli

import maekit
from maekit.tasks.config import FinetuneConfig, PretrainConfig
from maekit.tasks.init_weights import init_pretrain_model
from maekit.tasks.pretrain import pretrain_model


def _source_mae() -> torch.nn.Module:
    """A tiny MAE with non-initial weights (so that a random decoder cannot match it by chance)."""
    torch.manual_seed(0)
    model = maekit.create_model("mae_vit_tiny_patch16", **TINY_MAE_ARGS)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 32, 32, generator=g), torch.rand(2, 16, generator=g)


def _loss(model, x, noise) -> float:
    with torch.no_grad():
        return float(model.eval()(x, noise=noise).loss)


def _official_full(tmp_path, model):
    """The official ``mae_pretrain_vit_*_full.pth`` layout: ``{'model': state dict}`` under the official names."""
    path = tmp_path / "mae_pretrain_vit_tiny_full.pth"
    torch.save({"model": model.state_dict(), "epoch": 799}, path)
    return path


# ----------------------------------------------------------------------------- item 5: --init
def test_init_from_official_full_file_gives_the_source_loss(tmp_path, caplog):
    src = _source_mae()
    x, noise = _batch()
    path = _official_full(tmp_path, src)
    with caplog.at_level(logging.INFO, logger="maekit.tasks"):
        model, cfg, report = init_pretrain_model(PretrainConfig(init=str(path)), pretrain_model)
    assert (cfg.model, cfg.input_size, cfg.patch_size) == ("mae_vit_tiny_patch16", [32], 8)
    assert cfg.model_args == {"depth": 2, "decoder_depth": 1}
    assert _loss(model, x, noise) == _loss(src, x, noise)
    assert not report.random and not report.ignored
    assert set(report.loaded) == set(src.state_dict())
    assert "initialised from it" in caplog.text and "blocks (2)" in caplog.text and "decoder_blocks (1)" in caplog.text


def test_init_from_transformers_vitmae_folder_gives_its_loss(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.ViTMAEConfig(
        hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768, image_size=32,
        patch_size=8, decoder_hidden_size=128, decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
        decoder_intermediate_size=512, layer_norm_eps=1e-6, norm_pix_loss=True)
    ref = transformers.ViTMAEForPreTraining(hf_cfg).eval()
    ref.save_pretrained(tmp_path / "hf")
    model, cfg, report = init_pretrain_model(PretrainConfig(init=str(tmp_path / "hf")), pretrain_model)
    assert cfg.norm_pix_loss is True and cfg.model == "mae_vit_tiny_patch16" and not report.random
    x, noise = _batch()
    with torch.no_grad():
        expected = float(ref(pixel_values=x, noise=noise).loss)
    assert _loss(model, x, noise) == pytest.approx(expected, abs=1e-6)


def test_init_from_encoder_only_file_reports_the_random_decoder(tmp_path, caplog):
    src = _source_mae()
    enc = {k: v for k, v in src.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    torch.save({"model": enc}, tmp_path / "mae_pretrain_vit_tiny.pth")
    with caplog.at_level(logging.INFO, logger="maekit.tasks"):
        model, _, report = init_pretrain_model(PretrainConfig(init=str(tmp_path / "mae_pretrain_vit_tiny.pth")),
                                               pretrain_model)
    assert "mask_token" in report.random and any(k.startswith("decoder_blocks.") for k in report.random)
    assert set(report.loaded) == set(enc)
    assert torch.equal(model.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    assert "NOT initialised, random (the source has no decoder)" in caplog.text


def test_init_from_a_classifier_leaves_its_head_out(tmp_path):
    torch.manual_seed(0)
    vit = maekit.create_model("vit_tiny_patch16", num_classes=3, global_pool=False, **TINY_ARGS)
    vit.save_pretrained(tmp_path / "vit")
    model, cfg, report = init_pretrain_model(PretrainConfig(init=str(tmp_path / "vit")), pretrain_model)
    assert cfg.model == "mae_vit_tiny_patch16" and report.ignored == ["head.bias", "head.weight"]
    assert torch.equal(model.norm.weight, vit.norm.weight) and "mask_token" in report.random


def test_pretrain_cli_init_starts_from_the_source_weights(tmp_path, digit_folders, capsys):
    """End to end: with lr 0 one epoch leaves the weights alone, so the checkpoint is the source."""
    src = _source_mae()
    path = _official_full(tmp_path, src)
    out = tmp_path / "run"
    assert run_cli("pretrain", "--init", path, "--data_path", digit_folders / "unlabelled", "--output_dir", out,
                   "--batch_size", "16", "--epochs", "1", "--warmup_epochs", "0", "--lr", "0", *FAST) == 0
    ckpt = torch.load(out / "checkpoint-last.pth", map_location="cpu", weights_only=False)
    assert ckpt["extra"]["model_name"] == "mae_vit_tiny_patch16"
    trained = maekit.load_model(out / "checkpoint-last.pth")
    x, noise = _batch()
    assert _loss(trained, x, noise) == _loss(src, x, noise)
    # the requeue-safe form: --init with --resume auto continues the run (its checkpoint wins)
    assert run_cli("pretrain", "--init", path, "--resume", "auto", "--data_path", digit_folders / "unlabelled",
                   "--output_dir", out, "--batch_size", "16", "--epochs", "2", "--warmup_epochs", "0", "--lr", "0",
                   *FAST) == 0
    assert torch.load(out / "checkpoint-last.pth", map_location="cpu", weights_only=False)["epoch"] == 1
    # a contradicting shape flag is refused with both values
    code = run_cli("pretrain", "--init", path, "--patch_size", "4", "--data_path", digit_folders / "unlabelled",
                   "--output_dir", tmp_path / "bad", "--epochs", "1", *FAST)
    err = capsys.readouterr().err
    assert code != 0 and "--patch_size 4" in err and "patch_size 8" in err


def test_trainer_takes_init(tmp_path, digit_folders):
    from maekit import Trainer, TrainingArguments

    src = _source_mae()
    path = _official_full(tmp_path, src)
    args = TrainingArguments(init=str(path), output_dir=str(tmp_path / "t"), epochs=1, warmup_epochs=0, lr=0.0,
                             batch_size=16, num_workers=0, amp="none", device="cpu")
    Trainer(task="masked_image_modeling", train_dataset=str(digit_folders / "unlabelled"), args=args).train()
    x, noise = _batch()
    assert _loss(maekit.load_model(tmp_path / "t" / "checkpoint-last.pth"), x, noise) == _loss(src, x, noise)


def test_init_of_a_missing_source_names_the_flag(tmp_path):
    from maekit.tasks.validate import ConfigError

    with pytest.raises(ConfigError, match="--init .*nothing.pth: no such file"):
        init_pretrain_model(PretrainConfig(init=str(tmp_path / "nothing.pth")), pretrain_model)


# ----------------------------------------------------------------------------- item 6: architecture from the source
@pytest.fixture(scope="module")
def tiny_pretrain_run(tmp_path_factory, digit_folders):
    """A one-epoch pretraining run of a one-block tiny MAE (the depth through --config's model_args)."""
    out = tmp_path_factory.mktemp("pre")
    (out / "tiny.yaml").write_text("model_args: {depth: 1, decoder_depth: 1}\n")
    assert run_cli("pretrain", *TINY_MAE, "--config", out / "tiny.yaml", "--data_path", digit_folders / "unlabelled",
                   "--output_dir", out, "--batch_size", "32", "--epochs", "1", "--warmup_epochs", "0", *FAST) == 0
    return out / "checkpoint-last.pth"


def test_finetune_takes_the_architecture_of_the_checkpoint(tmp_path, digit_folders, tiny_pretrain_run, caplog):
    out = tmp_path / "ft"
    with caplog.at_level(logging.INFO, logger="maekit"):
        assert run_cli("finetune", "--finetune", tiny_pretrain_run, "--data_path", digit_folders, "--output_dir",
                       out, "--batch_size", "24", "--epochs", "1", "--warmup_epochs", "0", *FAST) == 0
    assert "architecture from --finetune" in caplog.text and "--patch_size 8" in caplog.text
    assert "depth=1" in caplog.text
    assert "mismatch" not in caplog.text and "do not fit" not in caplog.text
    extra = torch.load(out / "checkpoint-last.pth", map_location="cpu", weights_only=False)["extra"]
    assert extra["model_name"] == "vit_tiny_patch16"
    recorded = {k: extra["model_args"][k] for k in ("patch_size", "img_size", "depth")}
    assert recorded == {"patch_size": 8, "img_size": 32, "depth": 1}
    # eval reads the same from the fine-tuned checkpoint; a contradicting flag is refused
    assert run_cli("eval", "--resume", out / "checkpoint-last.pth", "--data_path", digit_folders, *FAST) == 0


@pytest.mark.parametrize("command", ["finetune", "linprobe", "eval"])
def test_contradicting_patch_size_is_refused_with_both_values(tmp_path, digit_folders, tiny_pretrain_run, capsys,
                                                              command):
    source = ("--resume" if command == "eval" else "--finetune", tiny_pretrain_run)
    code = run_cli(command, *source, "--patch_size", "4", "--data_path", digit_folders, "--output_dir",
                   tmp_path / "x", *FAST)
    err = capsys.readouterr().err
    assert code != 0
    assert "--patch_size 4" in err and "records patch_size 8" in err


def test_contradicting_model_is_refused_and_a_new_input_size_is_allowed(tiny_pretrain_run):
    from maekit.tasks.arch_from_source import with_source_arch
    from maekit.tasks.validate import ConfigError

    cfg = FinetuneConfig(finetune=str(tiny_pretrain_run), model="vit_base_patch16")
    with pytest.raises(ConfigError, match="--model vit_base_patch16 .* records model vit_tiny_patch16"):
        with_source_arch(cfg)
    got = with_source_arch(FinetuneConfig(finetune=str(tiny_pretrain_run), input_size=[64]))
    assert (got.model, got.input_size, got.patch_size) == ("vit_tiny_patch16", [64], 8)


# ----------------------------------------------------------------------------- --resume is not --init
def test_resume_of_a_model_folder_or_foreign_weights_points_to_init(tmp_path, digit_folders, capsys):
    """``--resume`` continues a run; a model folder, or a weights file of another shape, gets a short
    message that names ``--init`` (not a key list hundreds of lines long)."""
    src = _source_mae()
    folder = src.save_pretrained(tmp_path / "folder")
    other = tmp_path / "other.pth"
    torch.save({"model": maekit.create_model("mae_vit_tiny_patch16", **dict(TINY_MAE_ARGS, depth=1)).state_dict()},
               other)
    common = ("--data_path", digit_folders / "unlabelled", "--batch_size", "32", "--epochs", "1", *FAST)
    assert run_cli("pretrain", *TINY_MAE, "--resume", folder, "--output_dir", tmp_path / "a", *common) != 0
    err = capsys.readouterr().err
    assert "a folder without training checkpoints" in err and "--init" in err
    assert run_cli("pretrain", *TINY_MAE, "--config", _depth2(tmp_path), "--resume", other,
                   "--output_dir", tmp_path / "b", *common) != 0
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "missing: blocks.1.norm1.weight" in err and "in all)" in err
    assert "--init" in err and len(err) < 1000


def _depth2(tmp_path):
    path = tmp_path / "depth2.yaml"
    path.write_text("model_args: {depth: 2, decoder_depth: 1}\n")
    return path


def test_resume_of_a_run_folder_takes_its_newest_checkpoint(tmp_path, digit_folders, tiny_pretrain_run, capsys):
    run = tiny_pretrain_run.parent
    assert run_cli("pretrain", *TINY_MAE, "--config", run / "tiny.yaml", "--resume", run, "--data_path",
                   digit_folders / "unlabelled", "--output_dir", tmp_path / "more", "--batch_size", "32",
                   "--epochs", "2", "--warmup_epochs", "0", *FAST) == 0
    out = capsys.readouterr().out
    assert f"Resume checkpoint {run / 'checkpoint-last.pth'}" in out and "Start training for 2 epochs (from epoch 1)" in out


def test_a_typed_flag_at_its_default_value_still_counts_as_given(tmp_path, digit_folders, tiny_pretrain_run, capsys):
    """``--model vit_large_patch16`` is finetune's default; typed, it is the user's choice and contradicts
    the checkpoint (ViT-Ti) with both values named. Left out, the checkpoint's model is taken."""
    common = ("--finetune", tiny_pretrain_run, "--data_path", digit_folders, "--output_dir", tmp_path / "x", *FAST)
    assert FinetuneConfig.default("model") == "vit_large_patch16"
    assert run_cli("finetune", "--model", "vit_large_patch16", *common) != 0
    assert "--model vit_large_patch16 contradicts --finetune" in capsys.readouterr().err
    from maekit.tasks.arch_from_source import with_source_arch
    from maekit.cli import parse

    assert with_source_arch(parse("finetune", [str(a) for a in common])).model == "vit_tiny_patch16"

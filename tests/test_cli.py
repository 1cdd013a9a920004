"""The command line as users type it: reference command lines, help, bench, list-models."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from conftest import PY, python_env, run_cli
from maekit import cli
from maekit.tasks.config import TASK_CONFIGS


def test_official_and_passl_command_lines_parse_unchanged():
    # PRETRAIN.md (official), then PASSL's README (adds --device gpu)
    pre = cli.parse("pretrain", "--batch_size 64 --model mae_vit_large_patch16 --norm_pix_loss --mask_ratio 0.75 "
                      "--epochs 800 --warmup_epochs 40 --blr 1.5e-4 --weight_decay 0.05 --data_path /in".split())
    assert (pre.model, pre.norm_pix_loss, pre.epochs, pre.blr, pre.lr) == ("mae_vit_large_patch16", True, 800,
                                                                           1.5e-4, None)
    passl = cli.parse("pretrain", "--accum_iter 1 --batch_size 128 --model mae_vit_base_patch16 --norm_pix_loss "
                        "--mask_ratio 0.75 --epochs 1600 --warmup_epochs 40 --blr 1.5e-4 --weight_decay 0.05 "
                        "--data_path /in --output_dir out --device gpu".split())
    assert passl.device == "gpu" and passl.accum_iter == 1
    ft = cli.parse("finetune", "--batch_size 32 --model vit_base_patch16 --finetune ck.pth --epochs 100 --blr 5e-4 "
                     "--layer_decay 0.65 --weight_decay 0.05 --drop_path 0.1 --reprob 0.25 --mixup 0.8 "
                     "--cutmix 1.0 --dist_eval --data_path /in".split())
    assert ft.global_pool and ft.layer_decay == 0.65 and ft.dist_eval and ft.min_lr == 1e-6
    assert not cli.parse("finetune", ["--cls_token"]).global_pool
    lp = cli.parse("linprobe", "--batch_size 512 --model vit_base_patch16 --cls_token --finetune ck.pth "
                     "--epochs 90 --blr 0.1 --weight_decay 0.0 --dist_eval --data_path /in".split())
    assert not lp.global_pool and lp.warmup_epochs == 10
    ev = cli.parse("finetune", "--eval --resume mae_finetuned_vit_base.pth --model vit_base_patch16 "
                     "--batch_size 16 --data_path /in".split())
    assert ev.eval and ev.resume == "mae_finetuned_vit_base.pth"
    # torchrun / torch.distributed.launch pass --local_rank / --local-rank: accepted, see below


def test_official_flags_that_nothing_reads_are_accepted_and_not_recorded(tmp_path):
    pre = cli.parse("pretrain", "--local-rank=0 --local_rank 1 --world_size 8 --dist_on_itp --dist_url tcp://h:1 "
                    "--epochs 3".split())
    ft = cli.parse("finetune", ["--resplit", "--world_size", "2"])
    ev = cli.parse("eval", ["--resume", "ck.pth", "--global_pool", "--cls_token"])
    yaml = tmp_path / "old.yaml"
    yaml.write_text("world_size: 8\ndist_url: env://\nlocal_rank: 0\nepochs: 2\n")
    from_file = cli.parse("pretrain", ["--config", str(yaml)])
    unread = {"world_size", "local_rank", "dist_on_itp", "dist_url", "resplit", "global_pool", "debug"}
    for cfg, kept in ((pre, ("epochs", 3)), (ft, None), (ev, None), (from_file, ("epochs", 2))):
        recorded = set(cfg.to_dict())
        assert not recorded & (unread - ({"global_pool"} if cfg is ft else set())), recorded & unread
        assert kept is None or getattr(cfg, kept[0]) == kept[1]
    assert ft.global_pool  # fine-tuning reads --global_pool / --cls_token; eval takes the checkpoint's pooling


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_takes_debug_and_shows_the_traceback_with_it(command, monkeypatch, capsys):
    """`maekit <cmd> --debug ...` is accepted by every command of the table, and a runtime error then
    prints the traceback before the one-line message (without --debug: the message alone)."""
    from maekit.errors import RuntimeFailure

    required = {"eval": ["--resume", "c.pth"], "predict": ["--model", "m", "--input", "a.png"],
                "visualize": ["--model", "m", "--image", "a.png"], "convert": ["a.pth", "b"], "knn": ["--model", "m"],
                "shard": ["a", "b"], "app": ["--model", "m"], "push": ["a.pth", "me/m"], "download": ["m.tag"]}
    seen = []

    def task(cfg, **_):
        seen.append(type(cfg).__name__)
        raise RuntimeFailure("the disk went away")

    monkeypatch.setattr(cli, "task_function", lambda name: task)
    assert "--debug" in cli.build_parser(command).format_help()
    for debug in (True, False):
        assert run_cli(command, *required.get(command, []), *(["--debug"] if debug else [])) == 1
        err = capsys.readouterr().err
        assert err.strip().endswith("the disk went away" + ("" if debug else
                                    " (--debug or MAEKIT_DEBUG=1 shows the traceback)")), err
        assert ("Traceback (most recent call last)" in err) == debug, err
    assert seen == [cli.COMMANDS[command].config.__name__] * 2


def test_one_config_error_and_one_line_messages(tmp_path, capsys, monkeypatch):
    from maekit import errors
    from maekit.tasks import validate

    assert validate.ConfigError is errors.ConfigError and issubclass(errors.ConfigError, errors.UsageError)
    # a missing required option: one prefix, the flag named
    assert run_cli("predict", "--model", "m") == 2
    err = capsys.readouterr().err
    assert err.strip() == "maekit predict: error: --input is required", err
    # --push_to_hub without a repository: no "None is not a Hub repository id"
    assert run_cli("pretrain", "--push_to_hub", "--output_dir", tmp_path / "o", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "--hub_model_id is missing" in err and "None" not in err, err
    # a split folder that does not exist: named as the flag that sets it
    from conftest import FAST, TINY_VIT

    assert run_cli("finetune", *TINY_VIT, *FAST, "--data_path", tmp_path, "--train_split", "nope",
                   "--output_dir", tmp_path / "ft") == 2
    err = capsys.readouterr().err
    assert "--train_split nope does not exist" in err and "train_split=" not in err, err
    # a recipe that does not exist: the packaged ones are listed
    assert run_cli("pretrain", "--config", "pretrain/mae_vit_base_patch16") == 2
    err = capsys.readouterr().err
    assert "pretrain/mae_vit_base," in err and "finetune/vit_base_patch16" in err and "run_mae" not in err, err
    # the same network failure is exit 1 for convert as for the others (it was 2)
    monkeypatch.setenv("MAEKIT_HOME", str(tmp_path / "home"))
    for argv in (("convert", "http://127.0.0.1:9/w.pth", tmp_path / "out"),
                 ("predict", "--model", "http://127.0.0.1:9/w.pth", "--input", "a.png")):
        assert run_cli(*argv) == 1
        err = capsys.readouterr().err
        assert "Connection refused" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_optional_extra_is_one_line_with_the_install_command(tmp_path, monkeypatch, capsys):
    from maekit.errors import describe

    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    monkeypatch.setitem(sys.modules, "webdataset", None)  # import webdataset -> ImportError
    assert run_cli("shard", tmp_path / "imgs", tmp_path / "shards") == 1
    err = capsys.readouterr().err
    assert "pip install 'maekit[shards]'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert describe(ModuleNotFoundError("No module named 'datasets'", name="datasets")) == (
        1, "this needs the hf extra (datasets is missing): pip install 'maekit[hf]'")
    assert describe(ModuleNotFoundError("No module named 'numpyy'", name="numpyy")) is None  # a bug: traceback


def test_tool_commands_keep_their_positionals_and_flags():
    conv = cli.parse("convert", ["a.pth", "out", "--from", "official", "--to", "hf", "--img_size", "32", "48",
                                 "--no-norm_pix_loss", "-q"])
    assert (conv.src, conv.dst, conv.from_format, conv.to_format, conv.img_size, conv.norm_pix_loss, conv.quiet) \
        == ("a.pth", "out", "official", "hf", [32, 48], False, True)
    push = cli.parse("push", ["runs/ft/checkpoint-best.pth", "me/tiny", "--private", "--revision", "dev"])
    assert (push.source, push.repo_id, push.private, push.revision) == ("runs/ft/checkpoint-best.pth", "me/tiny",
                                                                         True, "dev")
    shard = cli.parse("shard", ["src", "dst", "--no-labelled", "--shard_size", "10"])
    assert (shard.src, shard.dst, shard.labelled, shard.shard_size) == ("src", "dst", False, 10)
    assert cli.parse("shard", ["s", "d", "--no_labelled"]).labelled is False
    assert cli.parse("list-models", []).pattern is None and cli.parse("list-models", ["mae_*"]).pattern == "mae_*"
    assert cli.parse("download", ["a.full", "hf-hub:o/n"]).sources == ["a.full", "hf-hub:o/n"]
    app = cli.parse("app", ["--model", "a", "--model", "b", "--port", "0"])
    assert (app.model, app.port, app.device) == (["a", "b"], 0, "auto")
    run = cli.parse("run", ["--epochs", "1", "--resume_training", "--device_target", "CPU", "--use_parallel", "False",
                            "--options", "amp=none"])
    from maekit.compat.mindformers_cli import yaml_options

    assert yaml_options(run) == {"amp": "none", "runner_config.epochs": 1, "device": "CPU", "resume_training": True}
    from maekit.convert.formats import FORMATS
    from maekit.tasks.tool_config import CONVERT_FORMATS

    assert CONVERT_FORMATS == FORMATS


def test_one_default_per_option_in_help():
    """One --device default (auto) for training and inference, one output folder, one k-NN spelling
    (--knn_k; maekit knn's --k still accepted), bools as --name / --no_name (old spellings hidden)."""
    helps = {name: cli.build_parser(name).format_help() for name in cli.COMMANDS}
    for name in ("predict", "visualize", "app", "pretrain", "knn"):
        assert cli.parse(name, {"predict": ["--model", "m", "--input", "a"], "visualize": ["--model", "m", "--image",
                                "a"], "app": ["--model", "m"], "knn": ["--model", "m"]}.get(name, [])).device == "auto"
    assert "./output_dir" in helps["predict"] and "./output\n" not in helps["predict"].replace(" ", "")
    assert "--knn_k" in helps["knn"] and "--k " not in helps["knn"]
    assert cli.parse("knn", ["--model", "m", "--k", "5", "--temperature", "0.1"]).knn_k == 5
    assert "--no-" not in "".join(helps.values())
    workers = helps["pretrain"].split("\n  --num_workers")[1].split("\n  --")[0]
    assert workers.count("default") == 1, workers


def test_packaged_recipes_resolve():
    args = cli.parse("pretrain", ["--config", "pretrain/mae_vit_base"])
    assert (args.model, args.epochs, args.batch_size * args.accum_iter * 8) == ("mae_vit_base_patch16", 1600, 4096)
    ft = cli.parse("finetune", ["--config", "finetune/vit_base_patch16"])
    assert (ft.blr, ft.layer_decay, ft.mixup, ft.cutmix) == (5e-4, 0.65, 0.8, 1.0)


def test_help_usage_and_unknown_command(capsys):
    assert run_cli() == 2
    assert "pretrain" in capsys.readouterr().out
    assert run_cli("pretrian") == 2
    assert "did you mean pretrain" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run_cli("pretrain", "-h")
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--mask_ratio", "--norm_pix_loss", "--accum_iter", "--blr", "--resume", "--amp", "--augment"):
        assert flag in text


def test_list_models_and_bench(capsys):
    from maekit.models import list_models, registry

    # read from the presets' source: the names their import registers (other tests may register more)
    assert cli.preset_names() == [n for n in list_models() if registry._MODELS[n].__module__.startswith("maekit.")]
    assert run_cli("list-models", "convmae_*") == 0
    assert capsys.readouterr().out.split() == ["convmae_convvit_base_patch16", "convmae_convvit_base_patch16_dec512d8b",
                                               "convmae_convvit_small_patch16"]
    assert run_cli("bench", "--model", "mae_vit_tiny_patch16", "--input_size", "32", "--batch_size", "4",
                   "--steps", "1", "--warmup", "0", "--amp", "none", "--device", "cpu", "--json") == 0
    out = capsys.readouterr()
    res = json.loads(out.out.strip().splitlines()[-1])
    assert res["images_per_sec"] > 0 and res["precision"] == "float32"
    assert "maekit bench: step 1/1 (timed)" in out.err  # progress, not minutes of silence


# ----------------------------------------------------------------------------- one config flow
def test_help_needs_no_torch_and_shows_each_default_once():
    """`maekit <command> -h` builds its parser from tasks/config.py alone (why it answers at once)."""
    code = ("import sys, contextlib, io\nfrom maekit.cli import main\n"
            "for cmd in ('pretrain', 'finetune', 'linprobe', 'eval', 'predict', 'visualize', 'demo', 'bench', 'run',\n"
            "            'convert', 'push', 'shard', 'download', 'app', 'list-models', 'knn'):\n"
            "    buf = io.StringIO()\n"
            "    with contextlib.redirect_stdout(buf):\n"
            "        try:\n            main([cmd, '-h'])\n        except SystemExit as e:\n            assert e.code == 0\n"
            "    text = buf.getvalue()\n"
            "    assert '(default: None)' not in text and '``' not in text and text.count('(default: 0.75)') <= 1, cmd\n"
            "    print(cmd, len(text))\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n    assert main(['list-models', 'mae_*']) == 0\n"
            "assert 'mae_vit_base_patch16' in buf.getvalue().split()\n"
            "heavy = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=python_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 16


def test_every_option_has_help_and_one_default_in_help(capsys):
    with pytest.raises(SystemExit):
        run_cli("finetune", "-h")
    text = capsys.readouterr().out
    assert "--layer_decay LAYER_DECAY" in text and "layer-wise lr decay (default: 0.75)" in text
    assert "--cls_token" in text and "use the cls token\n" in text.replace("  ", "")  # fine-tune pools by default
    for cls in TASK_CONFIGS.values():
        for f in dataclasses.fields(cls):
            meta = f.metadata
            assert meta.get("hidden") or meta.get("help"), (cls.__name__, f.name)


def test_eval_and_predict_take_the_shape_flags_of_finetune():
    shape = ["--input_size", "48", "--patch_size", "4", "--in_chans", "1"]
    ev = cli.parse("eval", ["--resume", "ck.pth", *shape, "--num_classes", "3"])
    assert (ev.input_size, ev.patch_size, ev.in_chans, ev.nb_classes) == ([48], 4, 1, 3)
    pr = cli.parse("predict", ["--model", "mae_vit_tiny_patch16", "--input", "a.png", *shape, "--top_k", "2"])
    assert (pr.input_size, pr.patch_size, pr.in_chans, pr.topk) == ([48], 4, 1, 2)
    from maekit.tasks.common import config_overrides

    assert config_overrides(pr) == {"img_size": 48, "patch_size": 4, "in_chans": 1}


def test_predict_with_shape_flags_end_to_end(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    assert run_cli("predict", "--model", "mae_vit_tiny_patch16", "--no_download", "--input", tmp_path / "red.png",
                   "--input_size", "32", "--patch_size", "8", "--output_dir", tmp_path / "out", "--json",
                   "--device", "cpu") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["mask_ratio"] == 0.75 and Image.open(rows[0]["files"]["reconstruction"]).size == (32, 32)


def test_config_yaml_aliases_sections_and_clear_errors(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("model: vit_tiny_patch16\nimg_size: 48\nnum_classes: 5\noptimisation:\n  blr: 2.0e-3\n"
                    "drop_path_rate: 0.2\nmodel_args: {depth: 2}\n")
    cfg = cli.parse("finetune", ["--config", str(good), "--drop_path", "0.3"])
    assert (cfg.input_size, cfg.nb_classes, cfg.blr, cfg.drop_path, cfg.model_args) == ([48], 5, 2e-3, 0.3, {"depth": 2})
    for text, message in (("blr: null\n", "blr: a value is required"),
                          ("batch_size: eight\n", "batch_size: expected int"),
                          ("input_size: [1, 2, 3]\n", "input_size takes one or two numbers"),
                          ("mask_ratio: 1.5\n", "mask_ratio must be in"),
                          ("batch_size: 0\n", "batch_size must be >= 1"),
                          ("mask_ration: 0.5\n", "did you mean mask_ratio"),
                          ("amp: half\n", "amp: choose one of")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        assert run_cli("pretrain", "--config", bad, "--output_dir", tmp_path / "o") == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (text, err)


def test_same_option_same_default_everywhere_unless_the_reference_differs():
    differ = {"model", "input_size", "batch_size", "epochs", "blr", "min_lr", "warmup_epochs", "weight_decay",
              "global_pool", "save_every", "dist_eval", "seed", "output_dir", "device", "num_workers", "resume",
              # the pretraining monitor samples its bank and queries; maekit knn takes them all
              "knn_bank_per_class", "knn_max_queries"}
    seen: dict[str, tuple] = {}
    for name, cls in TASK_CONFIGS.items():
        if name in ("demo", "bench"):  # a tiny model on digits, a throughput probe: their own defaults
            continue
        for f in dataclasses.fields(cls):
            if f.name in differ:
                continue
            default = cls.default(f.name)
            if f.name in seen:
                assert seen[f.name][1] == default, (f.name, seen[f.name], (name, default))
            seen.setdefault(f.name, (name, default))


def test_training_arguments_are_the_task_options():
    from maekit.api import TrainingArguments
    from maekit.tasks.config import FinetuneConfig, PretrainConfig

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    for cls in (PretrainConfig, FinetuneConfig):
        assert {f.name for f in dataclasses.fields(cls) if not f.metadata.get("hidden")} <= names
    with pytest.raises(ValueError, match="blr: a value is required|mixup_mode: choose one of"):
        TrainingArguments(mixup_mode="row")


def test_log_lines_follow_the_current_stdout(monkeypatch):
    """The CLI's log handlers write to whatever sys.stdout / sys.stderr is now: a handler bound to a
    stream that was replaced and closed (pytest's capture, a notebook) would print 'Logging error'."""
    import io
    import logging

    from maekit.engine.logs import setup_logging

    old = io.StringIO()
    monkeypatch.setattr("sys.stdout", old)
    setup_logging()
    old.close()
    new = io.StringIO()
    monkeypatch.setattr("sys.stdout", new)
    logging.getLogger("maekit.test").info("hello from a later run")
    assert "hello from a later run" in new.getvalue()


def test_resume_with_another_constructor_argument_is_refused_with_both_values(tmp_path, digit_folders, capsys):
    """The resume guard compares the config's model_args (it compared a key no config has): heads do
    not change a weight shape, so without the guard the run resumed as another model."""
    from conftest import FAST, TINY_MAE

    def run(heads: int, *extra: str) -> int:
        cfg = tmp_path / f"heads{heads}.yaml"
        cfg.write_text(f"model_args: {{depth: 1, decoder_depth: 1, num_heads: {heads}}}\n")
        return run_cli("pretrain", *TINY_MAE, "--config", cfg, "--data_path", digit_folders / "unlabelled",
                       "--output_dir", tmp_path / "run", "--batch_size", "16", "--warmup_epochs", "0",
                       "--recon_every", "0", *FAST, *extra)

    assert run(2, "--epochs", "1") == 0
    capsys.readouterr()
    assert run(4, "--epochs", "2", "--resume", "auto") == 2
    err = capsys.readouterr().err
    assert "--model_args: checkpoint" in err and "'num_heads': 2" in err and "'num_heads': 4" in err, err
    assert run(2, "--epochs", "2", "--resume", "auto") == 0
    import yaml

    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert not {"world_size", "local_rank", "dist_on_itp", "dist_url", "debug"} & set(recorded), recorded


def test_knn_on_a_relative_folder_of_class_folders(digit_folders, monkeypatch, capsys):
    """`maekit knn --data_path train` (class folders, relative): read once, not as train/train."""
    from conftest import FAST

    monkeypatch.chdir(digit_folders)
    assert run_cli("knn", "--model", "mae_vit_tiny_patch16", "--no_download", "--data_path", "train",
                   "--input_size", "32", "--knn_bank_per_class", "10", "--knn_max_queries", "30", *FAST) == 0
    out = capsys.readouterr().out
    assert "k-NN (k=20, T=0.07) of mae_vit_tiny_patch16 on train: top-1" in out, out

"""``push_to_hub`` and ``maekit push`` against a loopback Hub (tests/hub_server.py): the real
huggingface_hub client creates the repository, commits, and ``maekit.load_model("hf-hub:...")``
downloads it back through the same server. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json

import pytest
import torch
from hub_server import LoopbackHub

import maekit
from maekit.cli import main as cli_main
from maekit.hub import model_card, push_to_hub
from maekit.models import create_model

VIT_ARGS = {"img_size": 32, "patch_size": 8, "depth": 1, "num_classes": 3}
LOG = [{"epoch": 0, "train_loss": 1.1, "test_acc1": 40.0},
       {"epoch": 1, "train_loss": 0.9, "test_acc1": 62.5},
       {"epoch": 2, "train_loss": 0.8, "test_acc1": 55.0}]


@pytest.fixture
def loopback_hub(tmp_path, monkeypatch):
    """A loopback Hub; the huggingface_hub client points at it (empty cache, online, HF_TOKEN set)."""
    with LoopbackHub() as hub:
        hub.point_client_here(monkeypatch, tmp_path / "hf_cache")
        yield hub


def _run_folder(folder, log=LOG):
    """What a training command writes besides checkpoints: config.yaml and log.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("model: vit_tiny_patch16\nepochs: 3\nblr: 0.001\n")
    (folder / "log.txt").write_text("".join(json.dumps(r) + "\n" for r in log))
    return folder


def _vit():
    torch.manual_seed(0)
    vit = create_model("vit_tiny_patch16", **VIT_ARGS).eval()
    vit.class_names = ["cat", "dog", "owl"]
    return vit


def test_push_to_hub_then_load_model_from_the_hub(loopback_hub, tmp_path):
    vit = _vit()
    info = push_to_hub(vit, "me/tiny", run_dir=_run_folder(tmp_path / "run"))
    assert info.commit_url == f"{loopback_hub.url}/me/tiny/commit/{info.oid}"
    files = loopback_hub.files("me/tiny")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    card = files["README.md"].decode()
    for part in ("library_name: maekit", "pipeline_tag: image-classification", "# me/tiny",
                 'model = maekit.load_model("hf-hub:me/tiny")', "image classifier, 3 classes",
                 "Labels (3): `cat`, `dog`, `owl`.", "| embed_dim | 192 |", "| depth | 1 |",
                 '"model_name": "vit_tiny_patch16"',                          # architecture
                 "## Training configuration", "epochs: 3\nblr: 0.001",          # config.yaml
                 "| test_acc1 | 55.0 |", "| best test_acc1 | 62.5 (epoch 1) |"):  # log.txt
        assert part in card, part
    assert model_card(vit, tmp_path / "run", "me/tiny") == card  # the one card

    loaded = maekit.load_model("hf-hub:me/tiny")  # downloaded from the loopback Hub, cache empty
    assert ("GET", f"/me/tiny/resolve/{info.oid}/model.safetensors") in loopback_hub.requests
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), vit(x))
    assert loaded.class_names == ["cat", "dog", "owl"] and loaded.model_args == VIT_ARGS


def test_model_method_private_branch_and_extra_sections(loopback_hub):
    torch.manual_seed(0)
    mae = create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8, depth=1, decoder_depth=1).eval()
    info = mae.push_to_hub("me/mae", private=True, revision="v1", commit_message="first weights",
                           metrics={"loss": 0.41}, card_extra={"Data": "8x8 digits, upsampled"})
    repo = loopback_hub.repos["me/mae"]
    assert repo.private and repo.branches["v1"] == info.oid and repo.messages[info.oid] == "first weights"
    assert "model.safetensors" not in loopback_hub.files("me/mae", "main")  # main untouched
    card = loopback_hub.files("me/mae", "v1")["README.md"].decode()
    assert "pipeline_tag: image-feature-extraction" in card and "MAE pretraining model" in card
    assert "| loss | 0.41 |" in card and "## Data\n\n8x8 digits, upsampled" in card
    assert "Training configuration" not in card and "Labels" not in card
    again = mae.push_to_hub("me/mae", revision="v1")  # existing repository and branch: a second commit
    assert again.oid != info.oid and repo.branches["v1"] == again.oid
    loaded = maekit.load_model("hf-hub:me/mae@v1")
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, noise=noise).pred, mae(x, noise=noise).pred)


def _finetune_run(tmp_path):
    """A fine-tuning output folder: config.yaml, log.txt and checkpoint-best.pth as the tasks write it."""
    run = _run_folder(tmp_path / "runs" / "ft")
    vit = _vit()
    extra = {"model_name": vit.model_name, "model_args": VIT_ARGS, "class_names": vit.class_names}
    torch.save({"model": vit.state_dict(), "optimizer": {}, "epoch": 2, "extra": extra}, run / "checkpoint-best.pth")
    return vit, run / "checkpoint-best.pth"


def test_push_command_on_a_training_checkpoint(loopback_hub, tmp_path, capsys):
    vit, ckpt = _finetune_run(tmp_path)
    assert cli_main(["push", str(ckpt), "me/ft", "--commit_message", "fine-tuned on digits"]) == 0
    out, err = capsys.readouterr()
    sha = loopback_hub.repos["me/ft"].branches["main"]
    assert out.strip() == f"{loopback_hub.url}/me/ft/commit/{sha}"  # the commit URL, alone on stdout
    assert f"model card from the run folder {ckpt.parent}" in err
    assert loopback_hub.repos["me/ft"].messages[sha] == "fine-tuned on digits"
    card = loopback_hub.files("me/ft")["README.md"].decode()
    assert "epochs: 3" in card and "| best test_acc1 | 62.5 (epoch 1) |" in card and "`owl`" in card
    loaded = maekit.load_model("hf-hub:me/ft")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), vit(x))
    assert loaded.class_names == ["cat", "dog", "owl"]
    # --run_dir names another folder; a model folder as SOURCE has no run folder of its own
    other = _run_folder(tmp_path / "other", log=[{"epoch": 0, "test_acc1": 99.0}])
    assert cli_main(["push", str(vit.save_pretrained(tmp_path / "folder")), "me/ft2", "--run_dir", str(other)]) == 0
    assert "| best test_acc1 | 99.0 (epoch 0) |" in loopback_hub.files("me/ft2")["README.md"].decode()
    assert "model card from the run folder" not in capsys.readouterr().err


def _fails(argv, capsys, code, *match):
    assert cli_main(["push", *argv]) == code
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" not in err, err
    assert [ln.startswith("maekit push: error: ") for ln in err.strip().splitlines()][-1:] == [True], err
    for m in match:
        assert m in err, err
    return err


def test_push_command_errors_are_one_line(loopback_hub, tmp_path, capsys, monkeypatch):
    _, ckpt = _finetune_run(tmp_path)
    _fails([str(tmp_path / "nope.pth"), "me/x"], capsys, 2, "nope.pth")
    _fails([str(ckpt), "not-a-repo-id"], capsys, 2, "is not a Hub repository id")
    _fails([str(ckpt), "me/x", "--run_dir", str(tmp_path)], capsys, 2, "no config.yaml or log.txt")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")  # the server answers 401
    _fails([str(ckpt), "me/x"], capsys, 1, "the Hub refused the token for me/x (HTTP 401",
           "Invalid credentials", "hf auth login")
    monkeypatch.delenv("HF_TOKEN")
    _fails([str(ckpt), "me/x"], capsys, 2, "no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    assert "me/x" not in loopback_hub.repos
    monkeypatch.setenv("HF_TOKEN", loopback_hub.token)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: discard port
    _fails([str(ckpt), "me/x"], capsys, 1, "cannot reach the Hub at http://127.0.0.1:9")


def test_a_hub_repository_holding_one_checkpoint_file_loads_like_the_file(loopback_hub, tmp_path):
    """Official weights uploaded as they are (no model folder): ``hf-hub:org/name`` gives the one
    checkpoint file, read like the local file; several files are listed in the message."""
    from huggingface_hub import HfApi

    torch.manual_seed(0)
    mae = create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8, depth=1, decoder_depth=1).eval()
    local = tmp_path / "mae_pretrain_vit_tiny_full.pth"
    torch.save({"model": mae.state_dict(), "epoch": 799}, local)
    api = HfApi()
    api.create_repo("me/official")
    api.upload_file(path_or_fileobj=str(local), path_in_repo=local.name, repo_id="me/official")
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    got = maekit.load_model("hf-hub:me/official")
    with torch.no_grad():
        assert torch.equal(got(x, noise=noise).pred, maekit.load_model(local)(x, noise=noise).pred)
    api.upload_file(path_or_fileobj=str(local), path_in_repo="checkpoint-9.pth", repo_id="me/official")
    with pytest.raises(FileNotFoundError, match=r"no model folder but 2 checkpoint files \(checkpoint-9.pth, "
                                                r"mae_pretrain_vit_tiny_full.pth\); download the one you want"):
        maekit.load_model("hf-hub:me/official")


def test_download_then_load_offline(loopback_hub, tmp_path, monkeypatch, capsys):
    """``maekit download`` puts a Hub repository where load_model looks; with HF_HUB_OFFLINE=1 (a
    compute node without network) the model then loads from the cache alone."""
    import huggingface_hub.constants as hc

    vit = _vit()
    vit.push_to_hub("me/tiny-dl")
    assert cli_main(["download", "hf-hub:me/tiny-dl"]) == 0
    assert capsys.readouterr().out.startswith("hf-hub:me/tiny-dl: ")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    seen = len(loopback_hub.requests)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(maekit.load_model("hf-hub:me/tiny-dl")(x), vit(x))
    assert len(loopback_hub.requests) == seen  # nothing asked of the server
    assert cli_main(["download", "hf-hub:me/absent"]) != 0
    assert "not in the Hugging Face cache" in capsys.readouterr().err


def test_training_with_push_to_hub(loopback_hub, tmp_path, digit_folders, monkeypatch, capsys):
    """``finetune --push_to_hub --hub_model_id me/ft``: the trained model and its run's card land on
    the Hub when training ends; a missing token is refused before the first epoch."""
    from conftest import FAST, TINY_VIT

    common = (*TINY_VIT, "--data_path", digit_folders, "--batch_size", "24", "--epochs", "1",
              "--warmup_epochs", "0", *FAST)
    assert cli_main(["finetune", *map(str, common), "--output_dir", str(tmp_path / "ft"), "--push_to_hub",
                     "--hub_model_id", "me/ft"]) == 0
    files = loopback_hub.files("me/ft")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    card = files["README.md"].decode()
    assert "## Training configuration" in card and "test_acc1" in card
    pushed = maekit.load_model("hf-hub:me/ft")
    local = maekit.load_model(tmp_path / "ft" / "checkpoint-last.pth")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(pushed(x), local(x)) and pushed.class_names == local.class_names
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    capsys.readouterr()
    assert cli_main(["finetune", *map(str, common), "--output_dir", str(tmp_path / "ft2"), "--push_to_hub",
                     "--hub_model_id", "me/ft2"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err and not (tmp_path / "ft2" / "log.txt").exists()
    assert cli_main(["finetune", *map(str, common), "--output_dir", str(tmp_path / "ft3"), "--push_to_hub"]) == 2
    err = capsys.readouterr().err
    assert "--hub_model_id is missing" in err and "None" not in err, err

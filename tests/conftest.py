import os
import sys
from pathlib import Path

# One intra-op thread, set before torch loads OpenMP: the tests' tensors are tiny, and a second
# thread spin-waiting for a core that a DataLoader worker, a subprocess of the test or another
# process holds made steps up to 20x slower (measured: 17 ms vs 365 ms of CPU for one step of a
# 2-block ViT at batch 64 on the loaded 2-core machine). Subprocesses inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- the tiny test configuration
# Full-size architectures (registered names) shrunk by constructor arguments: seconds per test on a CPU.
TINY_MAE_NAME, TINY_VIT_NAME = "mae_vit_tiny_patch16", "vit_tiny_patch16"
TINY_ARGS = dict(img_size=32, patch_size=8, depth=2)  # any ViT encoder (classifier or MAE)
TINY_MAE_ARGS = dict(TINY_ARGS, decoder_depth=1)  # plus a one-block decoder
FAST_ARGS = dict(num_workers=0, amp="none", device="cpu")  # no worker processes, fp32, CPU


def cli_flags(**options) -> list[str]:
    """``{"input_size": 32, "amp": "none"}`` -> ``["--input_size", "32", "--amp", "none"]``."""
    return [item for key, value in options.items() for item in (f"--{key}", str(value))]


# The same on the command line (the depth is a preset's: CLI flags name the shape only).
TINY_MAE = cli_flags(model=TINY_MAE_NAME, input_size=TINY_ARGS["img_size"], patch_size=TINY_ARGS["patch_size"])
TINY_VIT = cli_flags(model=TINY_VIT_NAME, input_size=TINY_ARGS["img_size"], patch_size=TINY_ARGS["patch_size"])
FAST = cli_flags(**FAST_ARGS)



@pytest.fixture(scope="session")
def tiny_depth(tmp_path_factory) -> dict[str, list[str]]:
    """``--config`` flags that give TINY_MAE / TINY_VIT the depths of TINY_MAE_ARGS / TINY_ARGS (2 blocks, a
    1-block decoder), which CLI flags cannot name: ``run_cli("pretrain", *TINY_MAE, *tiny_depth["mae"], ...)``
    trains 3 blocks instead of the preset's 12 + 8; a checkpoint of one starts ``*TINY_VIT, *tiny_depth["vit"]``."""
    root = tmp_path_factory.mktemp("tiny_depth")
    flags = {}
    for kind, args in (("mae", TINY_MAE_ARGS), ("vit", TINY_ARGS)):
        depths = ", ".join(f"{k}: {v}" for k, v in args.items() if "depth" in k)
        (root / f"{kind}.yaml").write_text(f"model_args: {{{depths}}}\n")
        flags[kind] = ["--config", str(root / f"{kind}.yaml")]
    return flags


@pytest.fixture(scope="session")
def tiny_pretrain(digit_folders, tiny_depth, tmp_path_factory) -> Path:
    """One epoch of ``maekit pretrain`` of the tiny MAE on digit_folders/unlabelled (64 images, batch 8): the
    output folder of a run shared by the tests that start from a pretrained checkpoint. Never write into it."""
    out = tmp_path_factory.mktemp("tiny_pretrain")
    assert run_cli("pretrain", *TINY_MAE, *tiny_depth["mae"], "--data_path", digit_folders / "unlabelled",
                   "--output_dir", out, "--batch_size", "8", "--epochs", "1", "--warmup_epochs", "1", "--blr", "1e-3",
                   *FAST) == 0
    return out

@pytest.fixture
def seed():
    torch.manual_seed(0)
    return 0


def _digit_images(n: int, offset: int = 0):
    from sklearn.datasets import load_digits
    from PIL import Image

    d = load_digits()
    for i in range(offset, offset + n):
        arr = (d.images[i] / 16.0 * 255).astype(np.uint8)
        yield Image.fromarray(arr, mode="L").resize((32, 32), Image.BICUBIC), int(d.target[i])


@pytest.fixture(scope="session")
def digit_folders(tmp_path_factory) -> Path:
    """Real image files on disk: root/train/<digit>/*.png (3 classes) and root/val/<digit>/*.png,
    plus root/unlabelled (flat + nested, mixed formats) for pretraining."""
    root = tmp_path_factory.mktemp("digits")
    keep = {0: "zero", 1: "one", 2: "two"}
    counts = {"train": 0, "val": 0}
    for k, (img, label) in enumerate(_digit_images(400)):
        if label not in keep:
            continue
        split = "val" if counts["val"] < 30 and k % 4 == 0 else "train"
        if split == "train" and counts["train"] >= 72:
            continue
        counts[split] += 1
        folder = root / split / keep[label]
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{k:04d}.png")
    unl = root / "unlabelled"
    (unl / "nested" / "deeper").mkdir(parents=True)
    for k, (img, _) in enumerate(_digit_images(64, offset=500)):
        target = unl if k % 3 == 0 else (unl / "nested" if k % 3 == 1 else unl / "nested" / "deeper")
        ext = [".png", ".JPG", ".bmp", ".tif"][k % 4]
        img.convert("RGB").save(target / f"img{k:03d}{ext}")
    return root


def run_cli(*argv: str) -> int:
    from maekit.cli import main

    return main([str(a) for a in argv])


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


PY = sys.executable


def loop_tracebacks(err: str) -> list[str]:
    """Tracebacks in ``err`` other than "Exception ignored in: <finalizer>" reports.

    Those are printed at interpreter shutdown when a library's finalizer (a temporary directory)
    races the group signal; seen once in 3 runs of the toy below. A traceback of the loop itself
    is never preceded by that line.
    """
    parts = err.split("Traceback (most recent call last):")
    return [body for before, body in zip(parts, parts[1:])
            if "Exception ignored in" not in "\n".join(before.rstrip().splitlines()[-2:])]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache in huggingface_hub's own layout (models--org--name/snapshots/<sha>)."""
    import shutil

    import huggingface_hub.constants as hc

    root = tmp_path / "hf_cache"
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(root))  # for subprocesses

    def put(repo_id: str, folder, sha: str = "0" * 40):
        repo = root / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder, repo / "snapshots" / sha)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(sha)

    return put

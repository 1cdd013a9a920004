"""``make docs-images``: the pictures of the documentation, made by the code (docs/images/*.png).

1. ``maekit demo``: its ``reconstruction.png`` and ``loss_curve.png`` -> ``demo_reconstruction.png``,
   ``demo_loss_curve.png``.
2. A pretraining run on 500 digits written as PNG files (as the pretraining tutorial does) with
   the k-NN monitor and the online probe: its ``log.txt`` curves beside its last reconstructions
   -> ``monitor_digits.png``.
3. ``maekit app`` with the demo's pretrained model, in headless Chromium ->
   ``app_screenshot.png`` (the page as a user sees it: a real reconstruction, not noise).

The runs go to ``--work`` (default ``build/docs-images``) and are reused when present (the demo
resumes or skips a finished pretraining), so a second call takes seconds. Minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
MONITOR_EPOCHS = 6
MONITOR_IMAGES = 500


def maekit(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print("+ maekit", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "maekit", *args], check=True, env=env)


def demo_images(work: Path) -> None:
    """Run (or finish) the demo; copy its pictures."""
    out = work / "demo"
    maekit("demo", "--output_dir", str(out))
    shutil.copyfile(out / "reconstruction.png", IMAGES / "demo_reconstruction.png")
    shutil.copyfile(out / "loss_curve.png", IMAGES / "demo_loss_curve.png")


def demo_checkpoint(work: Path) -> Path:
    """The demo's pretrained model (``--only app`` takes it from an earlier, possibly unfinished, demo)."""
    path = work / "demo" / "pretrain" / "checkpoint-last.pth"  # the demo's probes write classifiers beside it
    if not path.exists():
        raise SystemExit(f"no {path}: run with --only demo first")
    return path


def digit_folders(root: Path, n: int) -> None:
    """``n`` digits as PNG files, root/train/<label>/ and root/val/<label>/ (every class in both)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(n):
        folder = root / ("val" if i % 50 < 10 else "train") / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((digits.images[i] * 255 / 16).astype("uint8")).resize((32, 32), Image.BICUBIC)
        image.save(folder / f"{i:04d}.png")


def monitor_image(work: Path) -> None:
    """k-NN / online-probe curves of a short digits run beside its last reconstructions."""
    out, data = work / "monitor", work / "digits"
    if not data.exists():
        digit_folders(data, MONITOR_IMAGES)
    if not (out / f"checkpoint-{MONITOR_EPOCHS - 1}.pth").exists():
        maekit("pretrain", "--model", "mae_vit_tiny_patch16", "--input_size", "32", "--patch_size", "4",
               "--data_path", str(data), "--epochs", str(MONITOR_EPOCHS), "--warmup_epochs", "1",
               "--batch_size", "32", "--blr", "1.5e-3", "--knn_data_path", str(data), "--knn_every", "1",
               "--online_probe", "--num_workers", "0", "--output_dir", str(out), "--resume", "auto")
    rows = [json.loads(line) for line in (out / "log.txt").read_text().splitlines() if line.strip()]
    _plot_monitor(rows, sorted((out / "reconstructions").glob("epoch_*.png"))[-1], IMAGES / "monitor_digits.png")


def _plot_monitor(rows: list[dict], recon: Path, dst: Path) -> None:
    """Accuracy curves (k-NN, online probe) and the train loss of ``rows`` (log.txt), beside ``recon``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig = plt.figure(figsize=(11, 4.2), dpi=100)
    ax = fig.add_axes((0.06, 0.12, 0.46, 0.78))
    epochs = [r["epoch"] + 1 for r in rows]
    for key, style, label in (("knn_top1", "o-", "k-NN top-1"), ("probe_top1", "s--", "online probe top-1")):
        ax.plot([r["epoch"] + 1 for r in rows if key in r], [r[key] for r in rows if key in r], style, label=label)
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("accuracy on the test split (%)")
    ax.grid(alpha=0.3)
    loss_ax = ax.twinx()
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], "k:", label="train loss")
    loss_ax.set_ylabel("train loss")
    handles = ax.get_legend_handles_labels()[0] + loss_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="center right")
    ax.set_title(f"mae_vit_tiny_patch16 on {MONITOR_IMAGES} digits: --knn_data_path --online_probe", fontsize=10)
    right = fig.add_axes((0.6, 0.04, 0.38, 0.86))
    right.imshow(Image.open(recon))
    right.set_axis_off()
    right.set_title(f"{recon.name}: original | masked | reconstruction | + visible", fontsize=10)
    fig.savefig(dst)
    plt.close(fig)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_screenshot(work: Path, checkpoint: Path, chromium: str) -> None:
    """``maekit app`` with the demo's model, photographed by headless Chromium."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    app = subprocess.Popen([sys.executable, "-m", "maekit", "app", "--model", f"demo={checkpoint}", "--port", str(port)],
                           env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            if app.poll() is not None:
                raise SystemExit("maekit app exited at start-up")
            try:
                urllib.request.urlopen(url + "/api/models", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        shot = work / "app.png"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--window-size=1280,860", f"--user-data-dir={work / 'chromium-profile'}",
                 "--virtual-time-budget=20000", f"--screenshot={shot}"]
        subprocess.run([chromium, *flags, url + "/?sample=chelsea.jpg&features=1"], check=True, timeout=300,
                       capture_output=True)
        shutil.copyfile(shot, IMAGES / "app_screenshot.png")
    finally:
        os.killpg(app.pid, 15)
        app.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "build" / "docs-images"), help="where the runs go")
    parser.add_argument("--only", choices=("demo", "monitor", "app"), nargs="+", default=["demo", "monitor", "app"])
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    IMAGES.mkdir(parents=True, exist_ok=True)
    if "demo" in args.only:
        demo_images(work)
    if "monitor" in args.only:
        monitor_image(work)
    if "app" in args.only:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if not chromium:
            raise SystemExit("no Chromium on PATH (apt-get install chromium): the app screenshot is not made")
        app_screenshot(work, demo_checkpoint(work), chromium)
    for name in sorted(IMAGES.glob("*.png")):
        print(f"{name.relative_to(ROOT)}: {name.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Input-pipeline throughput: the reference pretraining pipeline against maekit's, same run.

Reference: torchvision ``ImageFolder`` (PIL open + ``convert('RGB')``) + the official MAE
pretraining transform (RandomResizedCrop(224, scale 0.2-1, bicubic), flip, ToTensor, Normalize).
maekit: ``UnlabeledImageFolder`` + ``build_pretrain_transform`` through ``build_loader``, in
three modes:

- ``float``: the same float pipeline in the workers (per-sample seeds, skip-bad-files) - what maekit
  did before uint8 batches;
- ``uint8`` (the default now; exact): uint8 batches from the workers, normalised by the
  ``DeviceLoader`` (here on the CPU, in the main process, and counted);
- ``fast``: ``uint8`` + crop-aware reduced JPEG decoding (``--fast_decode``).

Data: generated photo-like JPEGs (1/f spectrum + grain, quality 90) of ImageNet size (500x375)
and camera size (4000x3000). Each measurement iterates the whole set once through a DataLoader
(batch 32) and reports images/s; pipelines alternate round by round and the median over rounds is
kept, with its ratio to the reference from the same rounds. "per core": ``num_workers=0``, one
torch thread, images per CPU second of the process (stable on a shared machine); "N workers":
``num_workers=N``, images per wall-clock second.

    python benchmarks/data_throughput.py [--rounds 3] [--imagenet 160] [--camera 12] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from maekit.data import UnlabeledImageFolder, build_loader, build_pretrain_transform
from maekit.data.synthetic import write_photo_folder

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BATCH = 32


def reference_loader(root: Path, workers: int) -> DataLoader:
    tf = T.Compose([T.RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                    T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    ds = datasets.ImageFolder(str(root), transform=tf)
    return DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=False,
                      persistent_workers=workers > 0)


def maekit_loader(root: Path, workers: int, mode: str):
    tf = build_pretrain_transform(224, uint8=mode != "float", fast_decode=mode == "fast")
    ds = UnlabeledImageFolder(root, transform=tf, split=None)
    return build_loader(ds, batch_size=BATCH, train=True, num_workers=workers, drop_last=False, device="cpu",
                        mean=MEAN, std=STD)


def images_per_second(loader, epoch: int) -> float:
    """Images per second of wall time (with workers), or per CPU second of this process when the
    loader has no workers: on a shared machine the CPU time of one core is the stable measure."""
    if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    clock = time.process_time if loader.num_workers == 0 else time.perf_counter
    n, t0 = 0, clock()
    for batch in loader:
        n += batch[0].shape[0]
    return n / (clock() - t0)


def measure(root: Path, workers: int, rounds: int) -> dict[str, tuple[float, float]]:
    """{pipeline: (median img/s, median ratio to the reference of the same round)}."""
    loaders = {"reference": reference_loader(root, workers)}
    for mode in ("float", "uint8", "fast"):
        loaders[mode] = maekit_loader(root, workers, mode)
    for loader in loaders.values():  # warm-up: page cache, worker start-up
        images_per_second(loader, 0)
    rates: dict[str, list[float]] = {k: [] for k in loaders}
    for r in range(rounds):
        order = list(loaders) if r % 2 == 0 else list(reversed(loaders))  # alternate the order too
        for name in order:
            rates[name].append(images_per_second(loaders[name], r + 1))
    out = {}
    for name, values in rates.items():
        ratios = [v / ref for v, ref in zip(values, rates["reference"])]
        out[name] = (statistics.median(values), statistics.median(ratios))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--imagenet", type=int, default=160, help="number of 500x375 images")
    p.add_argument("--camera", type=int, default=12, help="number of 4000x3000 images")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--data_dir", default=None, help="keep the generated images here (default: a temp dir)")
    args = p.parse_args()
    base = Path(args.data_dir or tempfile.mkdtemp(prefix="maekit_bench_"))
    sets = {"ImageNet-size 500x375": (base / "imagenet", args.imagenet, (375, 500)),
            "camera-size 4000x3000": (base / "camera", args.camera, (3000, 4000))}
    for root, count, size in sets.values():
        if not (root / "c0").is_dir():
            write_photo_folder(root, count, size, seed=0, classes=4)
    print(f"# data_throughput {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} CPUs, load {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    print("| images | workers | reference img/s | maekit float | maekit uint8 (default) | maekit fast_decode |")
    print("|---|---|---|---|---|---|")
    for label, (root, _, _) in sets.items():
        for workers in (0, args.workers):
            torch.set_num_threads(1)  # workers run one thread each; the main process too
            res = measure(root, workers, args.rounds)
            cells = [f"{res['reference'][0]:.1f}"] + [f"{res[m][0]:.1f} ({res[m][1]:.2f}x)"
                                                     for m in ("float", "uint8", "fast")]
            print(f"| {label} | {'per core (0)' if workers == 0 else workers} | " + " | ".join(cells) + " |",
                  flush=True)


if __name__ == "__main__":
    main()

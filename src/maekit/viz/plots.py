"""Training curves from ``log.txt`` (one JSON object per epoch)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence


def read_log(path: str | os.PathLike) -> list[dict]:
    """Parse a maekit/official ``log.txt`` into a list of dicts (blank lines, and lines that are not
    a JSON object, such as one cut short by a crash, are skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return [r for r in records if isinstance(r, dict)]


def plot_curves(records: Iterable[dict], out_png: str | os.PathLike, *,
                keys: Sequence[str] = ("train_loss",), title: str = "training loss") -> str:
    """Plot ``keys`` against ``epoch`` into a PNG and return its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    records = list(records)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    for key in keys:
        pts = [(r["epoch"], r[key]) for r in records if key in r]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return str(out_png)

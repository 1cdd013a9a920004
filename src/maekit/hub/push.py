"""``push_to_hub(model, repo_id)``: the model folder plus a model card, uploaded with huggingface_hub.

The card (``README.md``) states the architecture (``model.config``, family, input size), and,
when ``run_dir`` is given, the training configuration (``run_dir/config.yaml``) and the last
metrics of ``run_dir/log.txt`` (one JSON record per epoch, as the engine writes it).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch.nn as nn


def _last_metrics(run_dir: Path) -> dict[str, Any]:
    log = run_dir / "log.txt"
    lines = [ln for ln in log.read_text(encoding="utf-8").splitlines() if ln.strip()] if log.is_file() else []
    try:
        return json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}


def model_card(model: nn.Module, run_dir: str | os.PathLike | None = None) -> str:
    """Markdown with a YAML header (``library_name: maekit``, tags) for ``model``."""
    cfg = model.config
    task = "image-feature-extraction" if model.is_pretraining else "image-classification"
    h, w = model.img_size
    lines = ["---", "library_name: maekit", f"pipeline_tag: {task}", "tags:", "- maekit", f"- {model.family}", "---",
             "", f"# {cfg.model_name}", "",
             f"A maekit `{type(model).__name__}` ({model.family}), input {h}x{w} with {model.in_chans} channels.",
             "", "```python", "import maekit", 'model = maekit.load_model("hf-hub:REPO_ID")', "```", "",
             "## Configuration", "", "```json", cfg.to_json_string().rstrip(), "```"]
    if run_dir is not None:
        run = Path(run_dir)
        if (run / "config.yaml").is_file():
            lines += ["", "## Training configuration", "", "```yaml",
                      (run / "config.yaml").read_text(encoding="utf-8").rstrip(), "```"]
        metrics = _last_metrics(run)
        if metrics:
            lines += ["", "## Metrics (last epoch)", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def push_to_hub(model: nn.Module, repo_id: str, *, run_dir: str | os.PathLike | None = None,
                private: bool | None = None, revision: str | None = None, token: str | None = None,
                commit_message: str = "Upload maekit model") -> Any:
    """Upload ``model.save_pretrained`` + a model card to the Hub repository ``repo_id`` (created if
    needed; token from ``HF_TOKEN`` / ``hf auth login`` unless given). Returns the commit info."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save_pretrained(Path(tmp) / "model")
        (folder / "README.md").write_text(model_card(model, run_dir).replace("REPO_ID", repo_id), encoding="utf-8")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 revision=revision)

"""A model's Hub card (``README.md``) and its upload: what :meth:`MaekitModel.push_to_hub` does.

The card is written here and only here. It states what the model is, from the model itself
(registered name, class, family, input, labels, the architecture and ``config.json``), how to
load it, and whatever sections the caller adds: the training configuration and the metrics
(:func:`maekit.hub.push_to_hub` reads them from a run folder: the models package knows nothing
about runs), or any titled Markdown.

The upload is ``huggingface_hub.HfApi`` (imported only here, on use): ``create_repo``
(``exist_ok``), ``create_branch`` for a ``revision`` other than ``main``, then one
``upload_folder`` of ``save_pretrained`` + ``README.md``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_COMMIT_MESSAGE = "Upload maekit model"
_MAX_LABELS = 50  # a card lists up to this many labels; config.json holds them all


def _value(v: Any) -> str | None:
    """A card-friendly rendering of an architecture value (None for callables and other objects)."""
    if isinstance(v, (bool, int, float, str)):
        return str(v)
    if isinstance(v, (tuple, list)) and all(isinstance(x, (bool, int, float, str)) for x in v):
        return " x ".join(map(str, v)) if v else None
    return None


def _table(rows: Mapping[str, Any], head: tuple[str, str]) -> list[str]:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    return lines + [f"| {k} | {v} |" for k, v in rows.items()]


def _summary(model: Any) -> list[str]:
    """The first paragraph: what the model is and takes."""
    cfg = model.config
    h, w = model.img_size
    kind = ("MAE pretraining model (encoder + reconstruction decoder)" if model.is_pretraining
            else f"image classifier, {model.num_classes} classes")
    size = sum(p.numel() for p in model.parameters())
    lines = [f"A maekit `{type(model).__name__}` ({model.family}): `{cfg.model_name}`, {kind}. "
             + f"Input {h}x{w}, {model.in_chans} channels. Parameters: {size:,}."]
    names = model.class_names
    if names:
        shown = ", ".join(f"`{n}`" for n in names[:_MAX_LABELS])
        more = f" and {len(names) - _MAX_LABELS} more (config.json)" if len(names) > _MAX_LABELS else ""
        lines += ["", f"Labels ({len(names)}): {shown}{more}."]
    return lines


def model_card(model: Any, repo_id: str | None = None, *, training_config: str | None = None,
               metrics: Mapping[str, Any] | None = None, extra: Mapping[str, str] | None = None) -> str:
    """Markdown with a YAML header (``library_name: maekit``, pipeline tag, tags) for ``model``.

    Args:
        model: a maekit model (built by ``create_model`` / ``load_model``: it has a ``config``).
        repo_id: the repository, for the title and the loading snippet (``REPO_ID`` when None).
        training_config: text of the run's resolved configuration (YAML), shown as is.
        metrics: ``name -> value`` rows (e.g. the last ``log.txt`` record and the best top-1).
        extra: more sections, ``title -> Markdown``, appended in order.
    """
    cfg = model.config
    task = "image-feature-extraction" if model.is_pretraining else "image-classification"
    repo = repo_id or "REPO_ID"
    arch = {k: s for k, v in model.architecture().items() if k != "family" and (s := _value(v)) is not None}
    lines = ["---", "library_name: maekit", f"pipeline_tag: {task}", "tags:", "- maekit", f"- {model.family}",
             "---", "", f"# {repo_id or cfg.model_name}", "", *_summary(model), "",
             "## Use", "", "```python", "import maekit", "", f'model = maekit.load_model("hf-hub:{repo}")',
             "```", "", f"or on the command line: `maekit predict --model hf-hub:{repo} --input IMAGE...`", "",
             "## Architecture", "", *_table(arch, ("argument", "value")), "",
             "`config.json` (`maekit.create_model(model_name, **model_args)` rebuilds it):", "",
             "```json", cfg.to_json_string().rstrip(), "```"]
    if training_config:
        lines += ["", "## Training configuration", "", "```yaml", training_config.rstrip(), "```"]
    if metrics:
        lines += ["", "## Metrics", "", *_table(metrics, ("metric", "value"))]
    for title, body in (extra or {}).items():
        lines += ["", f"## {title}", "", body.rstrip()]
    return "\n".join(lines) + "\n"


def push_model(model: Any, repo_id: str, *, private: bool | None = None, revision: str | None = None,
               token: str | None = None, commit_message: str = DEFAULT_COMMIT_MESSAGE,
               training_config: str | None = None, metrics: Mapping[str, Any] | None = None,
               card_extra: Mapping[str, str] | None = None) -> Any:
    """Upload ``model.save_pretrained`` + :func:`model_card` to the Hub repository ``repo_id``.

    The repository is created when missing (``private`` applies then), and the branch
    ``revision`` too. The token is ``token``, else huggingface_hub's (``HF_TOKEN``, ``hf auth
    login``). Returns huggingface_hub's ``CommitInfo`` (``commit_url``, ``oid``). HTTP failures
    are huggingface_hub's errors (``HfHubHTTPError``), raised as they are.
    """
    from huggingface_hub import HfApi

    card = model_card(model, repo_id, training_config=training_config, metrics=metrics, extra=card_extra)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="maekit-push-") as tmp:
        folder = model.save_pretrained(Path(tmp) / "model")
        (folder / "README.md").write_text(card, encoding="utf-8")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 revision=revision)


__all__ = ["DEFAULT_COMMIT_MESSAGE", "model_card", "push_model"]

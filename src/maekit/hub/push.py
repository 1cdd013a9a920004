"""Pushing a model to the Hugging Face Hub, all of it: the model card (``README.md``), the upload,
what a training run folder adds to the card, ``maekit push SOURCE REPO_ID`` and ``--push_to_hub``
after training. :meth:`maekit.models.MaekitModel.push_to_hub` calls :func:`push_to_hub`.

The card states what the model is, from the model itself (registered name, class, family, input,
labels, the architecture and ``config.json``), how to load it, and the sections the caller adds:
a run folder's resolved options (``config.yaml``, shown as is) and the metrics of ``log.txt`` (the
last record, plus the best ``test_acc1`` and its epoch when evaluated), or any titled Markdown.

The upload is ``huggingface_hub.HfApi`` (imported on use): ``create_repo`` (``exist_ok``),
``create_branch`` for a ``revision`` other than ``main``, then one ``upload_folder`` of
``save_pretrained`` + ``README.md``. Failures are one-line messages (:func:`hub_failure`): exit 2
for a bad SOURCE, REPO_ID or run folder and for a missing token, 1 when the Hub refuses or cannot
be reached.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import RuntimeFailure, UsageError, first_line
from ..models.base import MaekitModel, unwrap
from ..viz.plots import read_log

log = logging.getLogger("maekit.hub")
RUN_FILES = ("config.yaml", "log.txt")
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


REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_push_target(repo_id: str | None, what: str = "REPO_ID") -> None:
    """The mistakes of a push that can be told before any work (``maekit push``, or a training run
    with ``--push_to_hub`` before its first epoch): a malformed repository id, no token.

    Raises:
        maekit.errors.UsageError: with the fix in the message.
    """
    from huggingface_hub import get_token

    if not repo_id:
        raise UsageError(f"{what} is missing: the Hub repository to push to, user/name or org/name")
    if not REPO_ID.match(repo_id):
        raise UsageError(f"{what} {repo_id!r} is not a Hub repository id; expected user/name or org/name")
    if get_token() is None:
        raise UsageError(f"no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token that can write "
                         f"to {repo_id})")


def is_run_dir(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds what a training command writes (``config.yaml`` or ``log.txt``)."""
    return any((Path(folder) / name).is_file() for name in RUN_FILES)


def metrics_rows(records: list[dict[str, Any]], best_key: str = "test_acc1") -> dict[str, Any]:
    """Card rows from per-epoch records: the last record, plus ``best <best_key>`` with its epoch."""
    rows: dict[str, Any] = dict(records[-1]) if records else {}
    scored = [r for r in records if isinstance(r.get(best_key), (int, float))]
    if scored:
        best = max(scored, key=lambda r: r[best_key])
        rows[f"best {best_key}"] = f"{best[best_key]}" + (f" (epoch {best['epoch']})" if "epoch" in best else "")
    return rows


def run_card_sections(run_dir: str | os.PathLike | None) -> dict[str, Any]:
    """``training_config`` and ``metrics`` of a run folder, as :meth:`MaekitModel.push_to_hub` takes them."""
    if run_dir is None:
        return {}
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist (it should hold config.yaml and log.txt)")
    config, log_txt = run / "config.yaml", run / "log.txt"
    return {"training_config": config.read_text(encoding="utf-8") if config.is_file() else None,
            "metrics": metrics_rows(read_log(log_txt)) if log_txt.is_file() else None}


def _maekit_model(model: nn.Module) -> MaekitModel:
    model = unwrap(model)
    if not isinstance(model, MaekitModel):
        raise TypeError(f"{type(model).__name__} is not a maekit model; load it with maekit.load_model first")
    return model


def model_card(model: nn.Module, run_dir: str | os.PathLike | None = None, repo_id: str | None = None, *,
               training_config: str | None = None, metrics: Mapping[str, Any] | None = None,
               extra: Mapping[str, str] | None = None) -> str:
    """The card ``push_to_hub`` uploads: Markdown with a YAML header (``library_name: maekit``,
    pipeline tag, tags) for ``model``.

    Args:
        model: a maekit model (built by ``create_model`` / ``load_model``: it has a ``config``).
        run_dir: a training output folder: its ``config.yaml`` and ``log.txt`` metrics fill
            ``training_config`` / ``metrics`` when those are not given.
        repo_id: the repository, for the title and the loading snippet (``REPO_ID`` when None).
        training_config: text of the run's resolved configuration (YAML), shown as is.
        metrics: ``name -> value`` rows (e.g. the last ``log.txt`` record and the best top-1).
        extra: more sections, ``title -> Markdown``, appended in order.
    """
    model = _maekit_model(model)
    run = run_card_sections(run_dir)
    training_config, metrics = training_config or run.get("training_config"), metrics or run.get("metrics")
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


def push_to_hub(model: nn.Module, repo_id: str, *, run_dir: str | os.PathLike | None = None,
                private: bool | None = None, revision: str | None = None, token: str | None = None,
                commit_message: str | None = None, training_config: str | None = None,
                metrics: Mapping[str, Any] | None = None, card_extra: Mapping[str, str] | None = None) -> Any:
    """Upload ``model.save_pretrained`` + :func:`model_card` to the Hub repository ``repo_id``
    (:meth:`maekit.models.MaekitModel.push_to_hub` is this function).

    ``run_dir`` (a training output folder: ``config.yaml``, ``log.txt``) fills the card's training
    configuration and metrics. The repository is created when missing (``private`` applies then),
    and the branch ``revision`` too. The token is ``token``, else huggingface_hub's (``HF_TOKEN``,
    ``hf auth login``). Returns huggingface_hub's ``CommitInfo`` (``commit_url``, ``oid``).

    Raises:
        maekit.errors.RuntimeFailure: the Hub refused the request or could not be reached (one line
            that names the repository or the endpoint, :func:`hub_failure`; the cause is chained).
    """
    from .remote import bound_hub_session

    bound_hub_session()  # every request waits at most HF_HUB_DOWNLOAD_TIMEOUT s; a silent Hub is not retried
    model = _maekit_model(model)
    card = model_card(model, run_dir, repo_id, training_config=training_config, metrics=metrics, extra=card_extra)
    try:
        return _upload(model, repo_id, card, private=private, revision=revision, token=token,
                       commit_message=commit_message or "Upload maekit model")
    except Exception as e:
        failure = hub_failure(e, repo_id)
        if failure is None:
            raise
        raise failure from e


def _upload(model: MaekitModel, repo_id: str, card: str, *, private: bool | None, revision: str | None,
            token: str | None, commit_message: str) -> Any:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="maekit-push-") as tmp:
        folder = model.save_pretrained(Path(tmp) / "model")
        (folder / "README.md").write_text(card, encoding="utf-8")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 revision=revision)


def hub_failure(e: BaseException, repo_id: str) -> RuntimeFailure | None:
    """The one-line error for a refused or failed Hub request (None: not a Hub/HTTP failure)."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(e, HfHubHTTPError):
        status = getattr(e.response, "status_code", None)
        said = first_line(e if not getattr(e, "server_message", None) else RuntimeError(e.server_message))
        if status in (401, 403):
            return RuntimeFailure(f"the Hub refused the token for {repo_id} (HTTP {status}: {said}); set "
                                  "HF_TOKEN or run `hf auth login` with a token that has write access")
        return RuntimeFailure(f"pushing to {repo_id} failed (HTTP {status}: {said})")
    from .remote import unreachable

    said = unreachable(e, f"pushing to {repo_id}")
    return RuntimeFailure(said) if said else None


# ----------------------------------------------------------------------------- the commands
def run_push(cfg: Any) -> int:
    """``maekit push SOURCE REPO_ID`` (:class:`maekit.tasks.tool_config.PushConfig`): load SOURCE, push it
    with the card of its run folder (``--run_dir``, else SOURCE's folder when a training run wrote
    it), print the commit URL."""
    from ..engine.logs import setup_logging
    from .load import load_model

    check_push_target(cfg.repo_id)
    run_dir = Path(cfg.run_dir) if cfg.run_dir is not None else None
    if run_dir is not None and not is_run_dir(run_dir):
        raise UsageError(f"--run_dir {run_dir}: no config.yaml or log.txt there (a training output folder)")
    source = Path(cfg.source)
    if run_dir is None and source.is_file() and is_run_dir(source.parent):
        run_dir = source.parent
        print(f"maekit push: model card from the run folder {run_dir} (config.yaml, log.txt); --run_dir to choose "
              "another", file=sys.stderr)
    setup_logging(stream="stderr")  # what loading did goes to stderr: stdout is the commit URL alone
    model = load_model(cfg.source)
    info = push_to_hub(model, cfg.repo_id, run_dir=run_dir, private=cfg.private or None, revision=cfg.revision,
                   commit_message=cfg.commit_message)
    print(info.commit_url)
    return 0


def push_trained(cfg: Any, model: nn.Module, *, rank: int) -> None:
    """``--push_to_hub``: upload the trained model with the card of its run folder (rank 0). A
    failure is a message that says the run is saved and how to push it later."""
    if not cfg.push_to_hub or rank != 0:
        return
    try:
        info = push_to_hub(model, cfg.hub_model_id, run_dir=cfg.output_dir)
    except RuntimeFailure as e:
        last = os.path.join(cfg.output_dir, "checkpoint-last.pth")
        raise RuntimeFailure(f"{e}; the run is saved in {cfg.output_dir}: push it later with "
                             f"`maekit push {last} {cfg.hub_model_id}`") from e
    log.info("pushed to the Hub: %s", info.commit_url)

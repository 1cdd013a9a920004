"""``push_to_hub(model, repo_id, run_dir=...)``: a model and what its training run says about it.

The upload and the card are the model's own (:meth:`maekit.models.MaekitModel.push_to_hub`,
:mod:`maekit.models.card`); this module adds the run folder that a training command wrote: the
resolved options (``config.yaml``, shown as is) and the metrics of ``log.txt`` (one JSON record
per epoch: the last record, plus the best ``test_acc1`` and its epoch when evaluated).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import RuntimeFailure, UsageError
from ..models.base import MaekitModel, unwrap
from ..models.card import DEFAULT_COMMIT_MESSAGE
from ..models.card import model_card as _card

RUN_FILES = ("config.yaml", "log.txt")
BEST_KEY = "test_acc1"


REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_push_target(repo_id: str | None, what: str = "REPO_ID") -> None:
    """The mistakes of a push that can be told before any work (``maekit push``, or a training run
    with ``--push_to_hub`` before its first epoch): a malformed repository id, no token.

    Raises:
        maekit.errors.UsageError: with the fix in the message.
    """
    from huggingface_hub import get_token

    if not repo_id or not REPO_ID.match(repo_id):
        raise UsageError(f"{what} {repo_id!r} is not a Hub repository id; expected user/name or org/name")
    if get_token() is None:
        raise UsageError(f"no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token that can write "
                         f"to {repo_id})")


def is_run_dir(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds what a training command writes (``config.yaml`` or ``log.txt``)."""
    return any((Path(folder) / name).is_file() for name in RUN_FILES)


def _records(log: Path) -> list[dict[str, Any]]:
    """The JSON records of ``log.txt`` (lines that are not a JSON object are skipped)."""
    out = []
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def metrics_rows(records: list[dict[str, Any]], best_key: str = BEST_KEY) -> dict[str, Any]:
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
    config = run / "config.yaml"
    return {"training_config": config.read_text(encoding="utf-8") if config.is_file() else None,
            "metrics": metrics_rows(_records(run / "log.txt")) or None}


def _maekit_model(model: nn.Module) -> MaekitModel:
    model = unwrap(model)
    if not isinstance(model, MaekitModel):
        raise TypeError(f"{type(model).__name__} is not a maekit model; load it with maekit.load_model first")
    return model


def model_card(model: nn.Module, run_dir: str | os.PathLike | None = None, repo_id: str | None = None) -> str:
    """The card ``push_to_hub`` would upload (Markdown, YAML header ``library_name: maekit``)."""
    return _card(_maekit_model(model), repo_id, **run_card_sections(run_dir))


def push_to_hub(model: nn.Module, repo_id: str, *, run_dir: str | os.PathLike | None = None,
                private: bool | None = None, revision: str | None = None, token: str | None = None,
                commit_message: str = DEFAULT_COMMIT_MESSAGE) -> Any:
    """``model.push_to_hub(repo_id, ...)`` with the card sections of ``run_dir`` (a training output
    folder: ``config.yaml``, ``log.txt``). The repository is created when missing; the token is
    huggingface_hub's (``HF_TOKEN`` / ``hf auth login``) unless given. Returns the ``CommitInfo``."""
    return _maekit_model(model).push_to_hub(repo_id, private=private, revision=revision, token=token,
                                            commit_message=commit_message, **run_card_sections(run_dir))


def hub_failure(e: BaseException, repo_id: str) -> RuntimeFailure | None:
    """The one-line error for a refused or failed Hub request (None: not a Hub/HTTP failure)."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(e, HfHubHTTPError):
        status = getattr(e.response, "status_code", None)
        said = ((getattr(e, "server_message", None) or str(e)).strip().splitlines() or ["no message"])[0]
        if status in (401, 403):
            return RuntimeFailure(f"the Hub refused the token for {repo_id} (HTTP {status}: {said}); set "
                                  "HF_TOKEN or run `hf auth login` with a token that has write access")
        return RuntimeFailure(f"pushing to {repo_id} failed (HTTP {status}: {said})")
    if type(e).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3") \
            or isinstance(e, (ConnectionError, TimeoutError)):
        from huggingface_hub import constants

        return RuntimeFailure(f"cannot reach the Hub at {constants.ENDPOINT} ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no answer'}); check the "
                              "connection or HF_ENDPOINT")
    return None

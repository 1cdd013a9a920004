"""Hugging Face Hub repositories as model sources: ``hf-hub:org/name[@revision]`` or ``org/name``.

The repository is fetched with ``huggingface_hub.snapshot_download`` (its own cache,
``HF_HUB_CACHE`` / ``HF_HOME``; ``HF_HUB_OFFLINE=1`` uses the cache only; the token comes from
``HF_TOKEN`` or ``hf auth login``) and then read like a local folder: a maekit folder, or a
transformers ViTMAE / ViT folder (converted on load).
"""

from __future__ import annotations

import re
from pathlib import Path

PREFIX = "hf-hub:"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
_FILES = ["*.json", "*.safetensors", "*.bin"]


def hub_id(text: str, *, exists_locally: bool) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` when ``text`` names a Hub repository, else None.

    ``hf-hub:org/name[@rev]`` always does; a bare ``org/name[@rev]`` only when no such local path exists.
    """
    explicit = text.startswith(PREFIX)
    name = text[len(PREFIX):] if explicit else text
    if not _REPO.match(name) or (exists_locally and not explicit):
        if explicit:
            raise ValueError(f"{text!r} is not a Hub id; expected hf-hub:org/name or hf-hub:org/name@revision")
        return None
    repo, _, rev = name.partition("@")
    return repo, rev or None


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of a Hub repository's model files (downloaded into the Hub cache if needed)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=_FILES))
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"hf-hub:{repo_id}{'@' + revision if revision else ''} is not in the Hugging Face cache and cannot be "
            f"downloaded ({str(e).splitlines()[0]}); connect, unset HF_HUB_OFFLINE, or pass a local folder") from e
    except HfHubHTTPError as e:
        raise FileNotFoundError(f"hf-hub:{repo_id}: {str(e).splitlines()[0]}") from e

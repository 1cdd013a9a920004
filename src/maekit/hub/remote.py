"""Hub repositories and timm weights as model sources.

- ``hf-hub:org/name[@revision]`` or ``org/name``: fetched with ``huggingface_hub.snapshot_download``
  (its own cache, ``HF_HUB_CACHE`` / ``HF_HOME``; ``HF_HUB_OFFLINE=1`` uses the cache only; the
  token comes from ``HF_TOKEN`` or ``hf auth login``), then read like a local folder: maekit,
  transformers ViTMAE / ViT or timm layout (converted on load). Only the config and one weights
  format are fetched: safetensors when the repository has them, else ``pytorch_model*.bin``. A
  repository without a model folder but with one checkpoint file (an official ``.pth`` uploaded as
  it is) gives that file.
- ``timm:name[.tag]`` (``timm:vit_base_patch16_224.mae``): the weights timm's own pretrained
  config names, from timm's own cache -- its Hub repository (``timm/<name>.<tag>``, the Hub cache
  above) or, for weights timm serves by URL only, ``timm.models.download_cached_file``.
"""

from __future__ import annotations

import re
from pathlib import Path

PREFIX = "hf-hub:"
TIMM_PREFIX = "timm:"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
_SAFE_FILES, _BIN_FILES = ["*.json", "*.safetensors"], ["*.json", "pytorch_model*.bin"]
_LOOSE_SUFFIXES = (".pth", ".pt", ".ckpt", ".pdparams", ".pd", ".npz")
# Suffixes of checkpoint files of any format: a bare name ending so is a path, not a Hub id.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pdparams", ".pd", ".safetensors", ".npz", ".tar")


def hub_id(text: str, *, exists_locally: bool) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` when ``text`` names a Hub repository, else None.

    ``hf-hub:org/name[@rev]`` always does; a bare ``org/name[@rev]`` only when no such local path exists.
    """
    explicit = text.startswith(PREFIX)
    name = text[len(PREFIX):] if explicit else text
    # a bare name ending like a checkpoint file ('runs/checkpoint-9.pth') is a path, not a repository
    file_like = not explicit and name.lower().endswith((*CHECKPOINT_SUFFIXES, ".json"))
    if not _REPO.match(name) or (exists_locally and not explicit) or file_like:
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
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_SAFE_FILES))
        if not any(folder.glob("*.safetensors")):  # an older repository: its torch.save weights
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_BIN_FILES))
        if any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")):
            return folder
        return _loose_checkpoint(repo_id, revision, folder) or folder
    except LocalEntryNotFoundError as e:
        from huggingface_hub import constants

        name = f"hf-hub:{repo_id}{'@' + revision if revision else ''}"
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(f"{name} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                                    "HF_HUB_OFFLINE=1 forbids downloads: unset HF_HUB_OFFLINE, or pass a local "
                                    "folder") from e
        raise FileNotFoundError(f"{name} is not in the Hugging Face cache and cannot be downloaded "
                                f"({str(e).splitlines()[0]}); check the connection, or pass a local folder") from e
    except HfHubHTTPError as e:
        raise FileNotFoundError(f"hf-hub:{repo_id}: {str(e).splitlines()[0]}") from e


def _loose_checkpoint(repo_id: str, revision: str | None, folder: Path) -> Path | None:
    """The one checkpoint file of a repository that holds no model folder (an official ``.pth``, a
    PASSL ``.pdparams``, a MindFormers ``.ckpt`` uploaded as it is), downloaded; None when it has none.

    Raises:
        FileNotFoundError: several such files (the message lists them: download the one wanted).
    """
    from huggingface_hub import HfApi, constants, hf_hub_download

    if constants.HF_HUB_OFFLINE:  # what the cache holds of this revision
        names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    else:
        names = HfApi().list_repo_files(repo_id, revision=revision)
    found = sorted(n for n in names if n.lower().endswith(_LOOSE_SUFFIXES))
    if len(found) > 1:
        shown = ", ".join(found[:6]) + (" ..." if len(found) > 6 else "")
        raise FileNotFoundError(f"hf-hub:{repo_id} holds no model folder but {len(found)} checkpoint files "
                                f"({shown}); download the one you want (hf download {repo_id} FILE) and pass its "
                                "path")
    return Path(hf_hub_download(repo_id, found[0], revision=revision)) if found else None


def timm_weights(text: str) -> Path:
    """``timm:name[.tag]`` -> the local folder (timm Hub repository) or file timm's cache holds
    for those weights, downloaded when needed.

    Raises:
        ValueError: timm knows no such model or tag, or has no weights for it.
    """
    from timm.models import get_pretrained_cfg
    from timm.models._hub import download_cached_file

    name = text.removeprefix(TIMM_PREFIX)
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as e:  # an unknown tag of a known model
        raise ValueError(f"{TIMM_PREFIX}{name}: {e}") from None
    if cfg is None:
        raise ValueError(f"{TIMM_PREFIX}{name}: timm has no pretrained weights of that name "
                         "(timm.list_pretrained('vit_*') lists them)")
    if cfg.hf_hub_id:
        repo, _, rev = cfg.hf_hub_id.partition("@")
        try:
            return snapshot(repo, rev or None)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{TIMM_PREFIX}{name} (timm's Hub repository): {e}") from e
    if cfg.url:
        return Path(download_cached_file(cfg.url, check_hash=False, progress=True))
    raise ValueError(f"{TIMM_PREFIX}{name}: timm records no download location for these weights")

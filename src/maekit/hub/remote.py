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

import functools
import os
import re
import time
from pathlib import Path

from ..errors import first_line

PREFIX = "hf-hub:"
TIMM_PREFIX = "timm:"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
_SAFE_FILES, _BIN_FILES = ["*.json", "*.safetensors"], ["*.json", "pytorch_model*.bin"]
_LOOSE_SUFFIXES = (".pth", ".pt", ".ckpt", ".pdparams", ".pd", ".npz")
# Suffixes of checkpoint files of any format: a bare name ending so is a path, not a Hub id.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pdparams", ".pd", ".safetensors", ".npz", ".tar")


# --------------------------------------------------------------------------- bounded network
# huggingface_hub's shared HTTP session has no timeout (``timeout=None``): a Hub that accepts the
# connection and never answers hangs ``model_info`` / ``create_repo`` / a commit for ever, and its
# retrying helpers (``http_backoff``: 5 retries, 23 s of sleeps) multiply any timeout by six. maekit
# installs a session (on its first Hub call, never at import) whose transport fills every timeout a
# request left unset, and fails fast, without another wait, once a host went silent: one timeout per
# operation, then a one-line error naming the endpoint and the variable that sets the wait.
_SILENT_FOR = 120.0  # seconds a host that timed out is considered silent (requests to it fail at once)
_silent: dict[str, float] = {}


def hub_timeout() -> float:
    """Seconds a Hub request may wait for the server: ``HF_HUB_DOWNLOAD_TIMEOUT`` (default 10)."""
    try:
        return max(0.1, float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or 10))
    except ValueError:
        return 10.0


def silent_host(url: str | None = None) -> bool:
    """True when the Hub (``url``'s host, default the endpoint) timed out in the last two minutes."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    host = urlsplit(url or constants.ENDPOINT).netloc
    seen = _silent.get(host)
    return seen is not None and time.monotonic() - seen < _SILENT_FOR


@functools.cache
def bound_hub_session() -> None:
    """Make huggingface_hub's HTTP session time out (once per process; see the comment above)."""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook

    class HubUnreachable(httpx2.TransportError, TimeoutError):
        """A request to a host that went silent: not retried (not a ``NetworkError``)."""

    class BoundedClient(httpx2.Client):
        def send(self, request, **kwargs):
            host = request.url.netloc.decode("ascii", "replace")
            wait = hub_timeout()
            if silent_host(f"http://{host}"):
                raise HubUnreachable(f"{host} did not answer within {wait:g} s", request=request)
            given = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {k: given.get(k) or wait for k in ("connect", "read", "write", "pool")}
            try:
                return super().send(request, **kwargs)
            except (httpx2.TimeoutException, httpx2.ConnectError):
                _silent[host] = time.monotonic()
                raise

    def factory():  # huggingface_hub's default_client_factory, bounded
        return BoundedClient(event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True)

    set_client_factory(factory)


def unreachable(e: BaseException, what: str) -> str | None:
    """The one-line message for a Hub request that got no answer (None: ``e`` is another failure)."""
    from huggingface_hub import constants

    transport = type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3")
    if not (transport or isinstance(e, (ConnectionError, TimeoutError))):
        return None
    if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__:
        said = f"no answer within {hub_timeout():g} s"
    else:
        said = f"{type(e).__name__}: {first_line(e) if str(e).strip() else 'no answer'}"
    return (f"{what}: cannot reach the Hub at {constants.ENDPOINT} ({said}); check the connection or HF_ENDPOINT, "
            "raise HF_HUB_DOWNLOAD_TIMEOUT for a slow network, or set HF_HUB_OFFLINE=1 to use the cache only")


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
    """The local folder of a Hub repository's model files (downloaded into the Hub cache if needed;
    from the cache alone when the Hub does not answer)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    bound_hub_session()
    name = f"hf-hub:{repo_id}{'@' + revision if revision else ''}"
    try:
        try:
            return _snapshot(repo_id, revision, cached_only=silent_host())
        except (LocalEntryNotFoundError, HfHubHTTPError):
            raise
        except Exception as e:  # the Hub went silent mid-way (maekit's fast failure): what the cache holds
            if unreachable(e, name) is None:
                raise
            return _snapshot(repo_id, revision, cached_only=True)
    except LocalEntryNotFoundError as e:
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(f"{name} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                                    "HF_HUB_OFFLINE=1 forbids downloads: unset HF_HUB_OFFLINE, or pass a local "
                                    "folder") from e
        if silent_host():
            raise FileNotFoundError(f"{unreachable(TimeoutError(), name)}; or pass a local folder") from e
        raise FileNotFoundError(f"{name} is not in the Hugging Face cache and cannot be downloaded "
                                f"({first_line(e)}); check the connection, or pass a local folder") from e
    except HfHubHTTPError as e:
        raise FileNotFoundError(f"hf-hub:{repo_id}: {first_line(e)}") from e


def _snapshot(repo_id: str, revision: str | None, *, cached_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_SAFE_FILES,
                                    local_files_only=cached_only))
    if not any(folder.glob("*.safetensors")):  # an older repository: its torch.save weights
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_BIN_FILES,
                                        local_files_only=cached_only or silent_host()))
    if any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")):
        return folder
    return _loose_checkpoint(repo_id, revision, folder) or folder


def _loose_checkpoint(repo_id: str, revision: str | None, folder: Path) -> Path | None:
    """The one checkpoint file of a repository that holds no model folder (an official ``.pth``, a
    PASSL ``.pdparams``, a MindFormers ``.ckpt`` uploaded as it is), downloaded; None when it has none.

    Raises:
        FileNotFoundError: several such files (the message lists them: download the one wanted).
    """
    from huggingface_hub import HfApi, constants, hf_hub_download

    if constants.HF_HUB_OFFLINE or silent_host():  # what the cache holds of this revision
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

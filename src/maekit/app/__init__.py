"""``maekit app``: a local web page and plain HTTP API to look at any model.

Pretraining models: reconstructions (original | masked | reconstruction | reconstruction +
visible, the loss) with a mask-ratio slider and a seed, several models side by side with the
same mask; classifiers: top-5; any model with a patch grid: the first three principal
components of its patch features as colours. Install with ``pip install 'maekit[app]'``.

Why FastAPI + uvicorn and one static page (no Gradio): the page needs a slider, a few buttons
and images, which ~250 lines of plain HTML/JS do without a build step or a front-end framework;
the API is ordinary multipart-in / PNG-or-JSON-out HTTP, so scripts and tests use it with any
client (curl, urllib) and the outputs can be compared byte for byte with ``maekit visualize``;
FastAPI (Starlette) gives typed form fields, request body limits and JSON errors, and the three
packages (fastapi, uvicorn, python-multipart) are small, maintained and easy to pin, whereas
Gradio brings a large front-end bundle and its own event protocol that a plain HTTP client cannot
drive simply.

Safety: binds to 127.0.0.1 unless told otherwise and then refuses requests addressed to other
host names (DNS rebinding); request bodies and image sizes are limited (413 with the limit in
the message); models come only from the command line and samples from a fixed list, so no path
from a client is ever opened; one forward at a time per model (a lock per model).

Modules: :mod:`.service` (models, upload checks, the views; no web code), :mod:`.server` (the
FastAPI application and routes), :mod:`.cli` (the command).
"""

from __future__ import annotations

_EXPORTS = {
    "AppError": "service",
    "Limits": "service",
    "ModelRegistry": "service",
    "ModelSlot": "service",
    "feature_pca": "service",
    "create_app": "server",
}


def __getattr__(name: str):
    # Lazy: `maekit app` binds its port before torch is imported, and FastAPI is an optional extra.
    if name not in _EXPORTS:
        raise AttributeError(f"module 'maekit.app' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = ["AppError", "Limits", "ModelRegistry", "ModelSlot", "create_app", "feature_pca"]

"""The FastAPI application: the page, the samples and the HTTP API over :mod:`maekit.app.service`.

Routes (all errors are JSON ``{"detail": "<message>"}`` with a 4xx status; an unexpected failure
is a 500 with a one-line message, the traceback going to the server log only):

- ``GET /``: the page; ``GET /static/<file>``: its script and style; ``GET /samples/<name>``: a
  bundled photo (only names from a fixed list are served: no path from a client is opened).
- ``GET /api/models``: the loaded models (id, task, sizes, ``norm_pix_loss``, views, config).
- ``GET /api/samples``: ``[{"name", "url"}, ...]``.
- ``POST /api/reconstruct`` (multipart: ``image`` file or ``sample`` name; ``mask_ratio`` 0.75,
  ``seed`` 2, ``model`` optional): ``image/png``, the four-panel grid of ``maekit visualize``;
  headers ``X-Maekit-Loss``, ``X-Maekit-Mask`` (rows of 0/1 on the patch grid, ``/``-separated,
  1 = removed), ``X-Maekit-Model``, ``X-Maekit-Norm-Pix``, ``X-Maekit-Seconds``,
  ``X-Maekit-Notes`` (JSON list of strings).
- ``POST /api/classify`` (``image`` / ``sample``, ``top_k`` 5, ``model``): JSON
  ``[{"label", "score", "index"}, ...]`` as ``maekit predict --json`` prints them.
- ``POST /api/features`` (``image`` / ``sample``, ``model``): ``image/png``, the model's input
  beside the first three principal components of its patch features as RGB.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..tasks.config import MASK_RATIO
from . import service
from .service import AppError, Limits, ModelRegistry

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
SAMPLES = {p.name: p for p in sorted((STATIC / "samples").glob("*.jpg"))}
_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
_PAGE_HEADERS = {
    # The page talks to this server only; images come back as blob: URLs.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'",
    "X-Content-Type-Options": "nosniff",
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Guard:
    """ASGI middleware: a Content-Length over the limit gets a 413 that states the limit before
    any byte is read (FastAPI's ``max_body_size`` still stops bodies sent without a length), and
    on a loopback server a request whose ``Host`` is not loopback is refused, so a web page
    elsewhere cannot reach the server through DNS rebinding."""

    def __init__(self, app: Any, *, max_bytes: int, loopback_only: bool):
        self.app, self.max_bytes, self.loopback_only = app, max_bytes, loopback_only

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            message = None
            host = headers.get(b"host", b"").decode("latin-1").rsplit(":", 1)[0].strip("[]")
            if self.loopback_only and host and host not in LOOPBACK:
                message = 403, (f"this server only answers requests addressed to 127.0.0.1 or localhost, "
                                f"not {host!r} (start it with --host 0.0.0.0 to serve the network)")
            if message is None and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
                message = _cross_origin(headers)
            length = headers.get(b"content-length", b"")
            if message is None and length.isdigit() and int(length) > self.max_bytes:
                message = 413, (f"the upload is {int(length) / 2**20:.1f} MB; this server accepts at most "
                                f"{self.max_bytes / 2**20:g} MB per request (maekit app --max_upload_mb)")
            if message is not None:
                await JSONResponse({"detail": message[1]}, status_code=message[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _cross_origin(headers: dict[bytes, bytes]) -> tuple[int, str] | None:
    """A 403 for a write sent by a page of another origin (a browser names it in ``Origin``; a
    script or curl sends none): any web page could otherwise make a visitor's browser post here."""
    from urllib.parse import urlsplit

    origin = headers.get(b"origin", b"").decode("latin-1").strip()
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    if site == "cross-site" or (origin and origin != "null" and urlsplit(origin).netloc.lower() != host) \
            or origin == "null":
        return 403, (f"cross-origin request refused: this server accepts uploads from its own page only "
                     f"(Origin {origin or site!r}, server {host!r})")
    return None


def _too_large(limits: Limits) -> str:
    return (f"the request is over {limits.max_upload_bytes / 2**20:g} MB, the limit of this server "
            "(maekit app --max_upload_mb)")


def _install_error_handlers(app: FastAPI, limits: Limits) -> None:
    @app.exception_handler(RequestValidationError)
    async def bad_fields(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                 for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        # maekit's convention: a ValueError is a user mistake with a readable message (AppError: its status).
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status", 400))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = _too_large(limits) if exc.status_code == 413 else str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("maekit app: %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}: {exc}); the server log has "
                                       "the details"}, status_code=500)


def create_app(registry: ModelRegistry, limits: Limits | None = None, *,
               loopback_only: bool = True) -> FastAPI:
    """The application for a set of loaded models (see the module docstring for the routes)."""
    limits = limits or Limits()
    app = FastAPI(title="maekit app", docs_url=None, redoc_url=None)
    app.add_middleware(Guard, max_bytes=limits.max_upload_bytes, loopback_only=loopback_only)
    _install_error_handlers(app, limits)
    _add_files(app, registry)
    _add_views(app, registry, limits)
    return app


def _sample(name: str) -> Path:
    """The bundled photo ``name`` (only names of ``SAMPLES``: no path from a client is opened)."""
    if name not in SAMPLES:
        raise AppError(404, f"no sample {name!r}; available: {', '.join(SAMPLES)}")
    return SAMPLES[name]


async def _read_image(image: UploadFile | None, sample: str | None, limits: Limits):
    """The uploaded file or the named sample, decoded (:func:`service.decode_image`) off the event loop."""
    if image is not None and sample:
        raise AppError(400, "send either an image file or a sample name, not both")
    if image is None and not sample:
        raise AppError(400, f"no image: send a multipart file field 'image', or 'sample' with one of "
                            f"{', '.join(SAMPLES)}")
    if sample:
        data = _sample(sample).read_bytes()
    else:
        data = await image.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise AppError(413, _too_large(limits))
    return await run_in_threadpool(service.decode_image, data, limits)


def _add_files(app: FastAPI, registry: ModelRegistry) -> None:
    """The page, its assets, the samples and the two listings."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    @app.get("/static/{name}")
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise AppError(404, f"no file {name!r}")
        return FileResponse(STATIC / name, media_type=_ASSETS[name])

    @app.get("/samples/{name}")
    def sample_file(name: str) -> Response:
        return FileResponse(_sample(name), media_type="image/jpeg")

    @app.get("/api/samples")
    def samples() -> list[dict[str, str]]:
        return [{"name": n, "url": f"/samples/{n}"} for n in SAMPLES]

    @app.get("/api/models")
    def models() -> list[dict[str, Any]]:
        return [slot.info() for slot in registry.slots.values()]


def _add_views(app: FastAPI, registry: ModelRegistry, limits: Limits) -> None:
    """``POST /api/reconstruct``, ``/api/classify``, ``/api/features``."""
    # FastAPI's per-route limit stops bodies sent without a Content-Length (the Guard sees those).
    post = functools.partial(app.post, max_body_size=limits.max_upload_bytes)

    @post("/api/reconstruct")
    async def reconstruct(
        image: Annotated[UploadFile | None, File()] = None,
        sample: Annotated[str | None, Form()] = None,
        mask_ratio: Annotated[float, Form()] = MASK_RATIO,
        seed: Annotated[int, Form()] = 2,
        model: Annotated[str | None, Form()] = None,
    ) -> Response:
        slot = registry.get(model, "reconstruct")
        img, notes = await _read_image(image, sample, limits)
        out, timing, _ = await run_in_threadpool(service.run_view, slot, img, "masked_image_modeling",
                                                 mask_ratio=mask_ratio, seed=seed)
        mask = "/".join("".join(str(int(v)) for v in row) for row in out["mask"].tolist())
        headers = {
            "X-Maekit-Loss": repr(out["loss"]),
            "X-Maekit-Mask": mask,
            "X-Maekit-Model": slot.id,
            "X-Maekit-Norm-Pix": str(bool(getattr(slot.model, "norm_pix_loss", False))).lower(),
            "X-Maekit-Mask-Ratio": repr(mask_ratio),
            "X-Maekit-Seed": str(seed),
        }
        return _png(out["grid"], headers, timing["seconds"], notes + timing["notes"])

    @post("/api/classify")
    async def classify(
        image: Annotated[UploadFile | None, File()] = None,
        sample: Annotated[str | None, Form()] = None,
        top_k: Annotated[int, Form()] = 5,
        model: Annotated[str | None, Form()] = None,
    ) -> Response:
        slot = registry.get(model, "classify")
        img, notes = await _read_image(image, sample, limits)
        out, timing, _ = await run_in_threadpool(service.run_view, slot, img, "image_classification",
                                                 top_k=top_k)
        return JSONResponse(out, headers=_meta(slot.id, timing["seconds"], notes + timing["notes"]))

    @post("/api/features")
    async def features(
        image: Annotated[UploadFile | None, File()] = None,
        sample: Annotated[str | None, Form()] = None,
        model: Annotated[str | None, Form()] = None,
    ) -> Response:
        slot = registry.get(model, "features")
        img, notes = await _read_image(image, sample, limits)
        out = await run_in_threadpool(service.features_view, slot, img)
        return _png(out["image"], {"X-Maekit-Model": slot.id}, out["seconds"], notes + out["notes"])


def _meta(model_id: str, seconds: float, notes: list[str]) -> dict[str, str]:
    # json.dumps escapes non-ASCII, so the header stays latin-1 safe.
    return {"X-Maekit-Model": model_id, "X-Maekit-Seconds": f"{seconds:.4f}",
            "X-Maekit-Notes": json.dumps(notes)}


def _png(img, headers: dict[str, str], seconds: float, notes: list[str]) -> Response:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png",
                    headers={**headers, **_meta(headers["X-Maekit-Model"], seconds, notes)})

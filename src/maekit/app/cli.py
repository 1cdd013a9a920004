"""``maekit app --model SOURCE [--model SOURCE2 ...] [--host 127.0.0.1] [--port 7860]`` (options:
:class:`maekit.tasks.tool_config.AppConfig`)."""

from __future__ import annotations

import socket
import sys
from typing import Any

from ..tasks.common import inference_device


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that port 0 works and a busy port is a clear message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port "
                         "(0 picks a free one) or --host") from e


def run_app(cfg: Any) -> int:
    """Load the models of ``cfg`` (:class:`maekit.tasks.tool_config.AppConfig`), bind, print the URL and
    serve until Ctrl+C. A missing web extra is a one-line message (the CLI's error boundary)."""
    if cfg.max_upload_mb <= 0 or cfg.max_pixels <= 0 or cfg.max_side <= 0:
        raise ValueError("--max_upload_mb, --max_pixels and --max_side must be positive")
    sock = _bind(cfg.host, cfg.port)  # before the heavy imports and loading: a busy port fails fast
    try:
        import uvicorn

        from .server import LOOPBACK, create_app
    except ImportError as e:
        sock.close()
        raise ImportError(f"this needs the app extra ({e.name} is missing): pip install 'maekit[app]'",
                          name=e.name) from None
    from .service import Limits, ModelRegistry

    limits = Limits(max_upload_bytes=int(cfg.max_upload_mb * 2**20), max_pixels=int(cfg.max_pixels),
                    max_side=int(cfg.max_side))
    loopback = cfg.host in LOOPBACK
    registry = ModelRegistry.load(cfg.model, download=not cfg.no_download, device=inference_device(cfg.device))
    app = create_app(registry, limits, loopback_only=loopback)
    port = sock.getsockname()[1]
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"maekit app: {len(registry.slots)} model(s) ({', '.join(registry.slots)}) at "
          f"http://{shown}:{port}/  (Ctrl+C to stop)", flush=True)
    if not loopback:
        print(f"maekit app: warning: listening on {cfg.host}: anyone who can reach this machine can use "
              "these models", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level=cfg.log_level, access_log=cfg.log_level == "info"))
    server.run(sockets=[sock])
    return 0

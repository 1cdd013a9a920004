"""``maekit app --model SOURCE [--model SOURCE2 ...] [--host 127.0.0.1] [--port 7860]``."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

_MODEL_HELP = (
    "a model: registered name (+ .tag for published weights, e.g. mae_vit_base_patch16.visualize), "
    "model folder, checkpoint file of any supported format, or URL; repeat to compare models"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maekit app",
        description="A local web page (and HTTP API) to look at models: reconstructions with a mask-ratio "
        "slider, several models side by side, classifier top-5, PCA of patch features.",
    )
    p.add_argument("--model", action="append", required=True, metavar="SOURCE", help=_MODEL_HELP)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (127.0.0.1: this machine only; 0.0.0.0 exposes the models to the network)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (7860; 0 picks a free one)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument(
        "--no_download", action="store_true", help="never download: random weights for a bare name"
    )
    p.add_argument("--max_upload_mb", type=float, default=20.0, help="largest request body in MB (20)")
    p.add_argument(
        "--max_pixels", type=float, default=50e6, help="images with more pixels are refused (50e6)"
    )
    p.add_argument(
        "--max_side",
        type=int,
        default=4096,
        help="a longer side above this is reduced before the model's resize (4096)",
    )
    p.add_argument(
        "--log_level",
        default="warning",
        choices=("critical", "error", "warning", "info", "debug"),
        help="server log level (warning; info logs each request)",
    )
    return p


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that port 0 works and a busy port is a clear message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        raise ValueError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port "
            "(0 picks a free one) or --host"
        ) from e


def main(argv: Sequence[str]) -> int:
    """Load the models, bind, print the URL and serve until Ctrl+C."""
    args = _parser().parse_args(list(argv))
    if args.max_upload_mb <= 0 or args.max_pixels <= 0 or args.max_side <= 0:
        raise ValueError("--max_upload_mb, --max_pixels and --max_side must be positive")
    sock = _bind(args.host, args.port)  # before the heavy imports and loading: a busy port fails fast
    try:
        import uvicorn

        from .server import create_app
    except ImportError as e:
        sock.close()
        print(
            f"maekit app needs the web extra ({e.name} is missing): pip install 'maekit[app]'",
            file=sys.stderr,
        )
        return 2
    from .service import Limits, ModelRegistry

    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=int(args.max_pixels),
        max_side=int(args.max_side),
    )
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    registry = ModelRegistry.load(args.model, download=not args.no_download, device=args.device)
    app = create_app(registry, limits, loopback_only=loopback)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"maekit app: {len(registry.slots)} model(s) ({', '.join(registry.slots)}) at "
        f"http://{shown}:{port}/  (Ctrl+C to stop)",
        flush=True,
    )
    if not loopback:
        print(
            f"maekit app: warning: listening on {args.host}: anyone who can reach this machine can use "
            "these models",
            file=sys.stderr,
            flush=True,
        )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level == "info")
    )
    server.run(sockets=[sock])
    return 0

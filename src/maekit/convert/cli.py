"""``maekit convert SRC DST``: the command line of :func:`maekit.convert.convert` (options:
:class:`maekit.tasks.tool_config.ConvertConfig`); ``python -m maekit.convert.cli`` runs it alone.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .api import convert
from .errors import ConversionError
from .infer import SOFT_ARGS


def run_convert(cfg: Any) -> int:
    """Convert ``cfg.src`` to ``cfg.dst`` and print the report (unless ``cfg.quiet``). Failures raise:
    the CLI's error boundary (:mod:`maekit.errors`) makes them one line, exit 2 for a bad file or
    option, 1 for the network, as for every command."""
    overrides: dict[str, Any] = {k: getattr(cfg, k) for k in SOFT_ARGS if getattr(cfg, k) is not None}
    if cfg.img_size:
        if len(cfg.img_size) > 2:
            raise ConversionError("--img_size takes H or H W")
        overrides["img_size"] = cfg.img_size[0] if len(cfg.img_size) == 1 else list(cfg.img_size)
    src = cfg.src
    if not os.path.exists(src):  # a Hub id, URL, timm: name or published weights name
        from ..hub.load import local_source

        src = os.fspath(local_source(src, names=True))
    report = convert(src, cfg.dst, from_format=cfg.from_format, to_format=cfg.to_format, model=cfg.model,
                     **overrides)
    if not cfg.quiet:
        print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m maekit.convert.cli SRC DST ...``: ``maekit convert``."""
    from ..cli import main as maekit_main

    return maekit_main(["convert", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

"""``maekit push SOURCE REPO_ID``: upload a model, with a card from its training run, to the Hub.

SOURCE is anything ``maekit.load_model`` reads (``runs/ft/checkpoint-best.pth``, a model folder,
a name with weights). When SOURCE is a file in a training output folder (``config.yaml`` /
``log.txt`` next to it), that folder gives the card its training configuration and metrics
unless ``--run_dir`` names another. The token is huggingface_hub's (``HF_TOKEN`` or ``hf auth
login``); the commit URL is printed. Failures are one-line messages: exit 2 for a bad SOURCE,
REPO_ID or run folder and for a missing token, 1 when the Hub refuses or cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    """The ``maekit push`` options."""
    parser = argparse.ArgumentParser(
        prog="maekit push", description="upload a model (+ a model card from its training run) to the Hugging Face "
                                        "Hub. The token comes from HF_TOKEN or `hf auth login`.")
    parser.add_argument("source", metavar="SOURCE",
                        help="what maekit.load_model reads: a checkpoint (runs/ft/checkpoint-best.pth), a model "
                             "folder, a registered name")
    parser.add_argument("repo_id", metavar="REPO_ID", help="user/name or org/name (created when missing)")
    parser.add_argument("--run_dir", default=None,
                        help="training output folder whose config.yaml and log.txt go into the model card "
                             "(default: SOURCE's folder when it is one)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created when missing; default main)")
    parser.add_argument("--commit_message", default=None, help="default 'Upload maekit model'")
    return parser


def default_run_dir(source: str) -> Path | None:
    """SOURCE's folder when SOURCE is a file that a training run wrote (config.yaml / log.txt beside it)."""
    from .push import is_run_dir

    path = Path(source)
    return path.parent if path.is_file() and is_run_dir(path.parent) else None


def _check_arguments(args: argparse.Namespace) -> Path | None:
    """Usage errors before anything is loaded; returns the run folder of the card (or None)."""
    from .push import check_push_target

    check_push_target(args.repo_id)
    if args.run_dir is not None:
        from .push import is_run_dir

        if not is_run_dir(args.run_dir):
            raise UsageError(f"--run_dir {args.run_dir}: no config.yaml or log.txt there (a training output folder)")
        return Path(args.run_dir)
    run_dir = default_run_dir(args.source)
    if run_dir is not None:
        print(f"maekit push: model card from the run folder {run_dir} (config.yaml, log.txt); --run_dir to choose "
              "another", file=sys.stderr)
    return run_dir


def run(args: argparse.Namespace) -> int:
    """Load SOURCE, push it with the card of its run folder, print the commit URL."""
    from ..engine.logs import setup_logging
    from .load import load_model
    from .push import hub_failure, push_to_hub

    run_dir = _check_arguments(args)
    setup_logging(stream="stderr")  # what loading did goes to stderr: stdout is the commit URL alone
    model = load_model(args.source)
    extra: dict[str, Any] = {"commit_message": args.commit_message} if args.commit_message else {}
    try:
        info = push_to_hub(model, args.repo_id, run_dir=run_dir, private=args.private or None,
                           revision=args.revision, **extra)
    except Exception as e:
        failure = hub_failure(e, args.repo_id)
        if failure is None:
            raise
        raise failure from e
    print(info.commit_url)
    return 0


def main(argv: Sequence[str]) -> int:
    """Entry of ``maekit push`` (errors go through the CLI's error boundary, ``maekit.errors``)."""
    return run(build_parser().parse_args(argv))

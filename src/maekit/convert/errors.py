"""The one error type of ``maekit.convert``."""

from __future__ import annotations

import os


class ConversionError(ValueError):
    """A checkpoint could not be read, written or matched to a model.

    The message names the file (when there is one) and the problem. Subclass of
    ``ValueError`` so that callers that only know the standard library can catch it.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

"""Where maekit's log lines go: the *current* standard streams (no torch here: the CLI imports it)."""

from __future__ import annotations

import logging
import sys


class CurrentStreamHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stdout`` (or ``sys.stderr``) is when a record comes: tests,
    notebooks and tools swap those streams, and a handler bound to a replaced one writes to a closed file."""

    def __init__(self, name: str = "stdout"):
        self._stream_name = name
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ / setStream assign it: always the current one
        pass

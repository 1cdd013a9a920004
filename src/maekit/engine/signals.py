"""Stop requests by signal: SIGTERM, SIGINT and SIGUSR1 (SLURM's ``--signal`` pre-emption warning).

The handler only records the request; the training loop reads it before fetching each batch,
finishes cleanly, saves ``checkpoint-last.pth`` and exits with 128 + the signal number (143, 130,
138). A signal sent to the whole process group (``timeout``, ``kill -- -PGID``, SLURM, Ctrl+C in a
terminal) also reaches the DataLoader workers; the main process owns the shutdown, so once a stop
is requested PyTorch's SIGCHLD watchdog (which would raise "DataLoader worker killed by signal" at
any point of the step) is switched off, and the loop stops without fetching from the workers again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Callable, Iterator

logger = logging.getLogger("maekit.engine")

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, n))


@contextlib.contextmanager
def stop_requests(on_signal: Callable[[int], None], enabled: bool = True) -> Iterator[None]:
    """Call ``on_signal(signum)`` on SIGTERM / SIGINT / SIGUSR1 while inside (main thread only).

    Previous stop handlers are restored on exit. After a stop, SIGCHLD stays at its default: the
    workers die with the group signal, and PyTorch's watchdog, put back, raised "DataLoader worker
    killed" from a finalizer at interpreter exit (seen in a clean-clone CI run).
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:  # a forked DataLoader worker inherited this handler: the main process decides
            return
        if hasattr(signal, "SIGCHLD"):
            # Workers dying from the same group signal must not abort the save that follows.
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        on_signal(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

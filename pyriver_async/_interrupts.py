"""Telling a real Ctrl-C from a ``KeyboardInterrupt`` that a job's code raised.

Under ``asyncio.run`` a SIGINT cancels the main task and never surfaces inside a job,
so any ``KeyboardInterrupt`` a job raises is the job's own. Without it (a loop run by
hand), Python's default SIGINT handler raises ``KeyboardInterrupt`` in whatever code
runs, possibly a job's. While a client runs, :func:`install` wraps that default handler
so that it first marks the signal as received; the executor then lets a
``KeyboardInterrupt`` through only when a signal is pending, and treats any other one
as a failure of the job that raised it. Any other SIGINT handler is left alone.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

__all__ = ["install", "real_sigint_pending", "uninstall"]

# A signal counts as the cause of a KeyboardInterrupt seen this soon after it.
_WINDOW = 5.0
_received_at: float | None = None
_installed = 0


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _received_at
    _received_at = time.monotonic()
    signal.default_int_handler(signum, frame)


def install() -> None:
    """Wrap Python's default SIGINT handler while a client runs (main thread only)."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    if _installed:
        _installed += 1
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
        _installed = 1


def uninstall() -> None:
    global _installed
    if not _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed -= 1
    if _installed == 0 and signal.getsignal(signal.SIGINT) is _on_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def real_sigint_pending() -> bool:
    """True when a SIGINT arrived recently through the default handler."""
    return _received_at is not None and time.monotonic() - _received_at < _WINDOW

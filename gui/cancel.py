"""Which job the current worker thread runs, so code far below it (a trace about to start) can stop a job
that was superseded while it waited. No Qt here: gui.backend uses it."""
from __future__ import annotations

import contextlib
import threading
from typing import Callable

_local = threading.local()


class Cancelled(Exception):
    """Raised inside a job when a newer request has superseded it."""


@contextlib.contextmanager
def running(check: Callable[[], None]):
    """While the body runs on this thread, ``check_current()`` calls ``check`` (which raises Cancelled)."""
    previous = getattr(_local, "check", None)
    _local.check = check
    try:
        yield
    finally:
        _local.check = previous


def check_current() -> None:
    """Raises Cancelled if this thread runs a job that has been superseded (no-op outside a job)."""
    check = getattr(_local, "check", None)
    if check is not None:
        check()

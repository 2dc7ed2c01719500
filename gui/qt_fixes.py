"""Work-arounds for bugs in the Qt bindings, applied once when the app or its plots start.

PySide6 6.12 loses a reference to ``None``, ``True`` or ``False`` each time Qt passes one of them to a
Python override of ``QGraphicsItem.itemChange`` (pyqtgraph's GraphicsObject has one): every plot item
added to or removed from a scene costs a few. On Python 3.11 those objects are refcounted like any other,
so after some thousands of plot redraws the count reaches zero and the interpreter aborts
(``Fatal Python error: none_dealloc``). Python 3.12 makes them immortal; before it, they get a count so
large that no session can use it up (tests/test_hostile_gui.py redraws the plots thousands of times)."""
from __future__ import annotations

import ctypes
import sys

_HEADROOM = 1 << 40
_done = False


def keep_singletons_alive() -> None:
    global _done
    if _done or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    for obj in (None, True, False):
        # ob_refcnt is the first field of every CPython object
        ctypes.c_ssize_t.from_address(id(obj)).value += _HEADROOM
    _done = True

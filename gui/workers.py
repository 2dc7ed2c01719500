"""Background work: every analysis runs on a QThreadPool, never on the UI thread. A generation counter
makes cancellation cooperative: a newer request bumps it, running jobs notice between stages and stop,
and results that arrive from an older generation are dropped. Input changes are debounced (~150 ms)."""
from __future__ import annotations

import threading
import traceback
from typing import Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal

from torchbudget.engine.errors import UserError
from torchbudget.gui.cancel import Cancelled, running

DEBOUNCE_MS = 150
# A superseded job keeps its thread until its current stage ends (a trace cannot be interrupted, and the
# first one after launch waits for PyTorch to import). With the default pool size, the core count (2 on
# the development machine), two such jobs held back every newer one, the slider's instant ones included.
MIN_POOL_THREADS = 8




class Generation:
    """A thread-safe counter; a job holds the value it started with and is stale once it moves on."""

    def __init__(self):
        self._lock = threading.Lock()
        self._value = 0

    def bump(self) -> int:
        with self._lock:
            self._value += 1
            return self._value

    @property
    def value(self) -> int:
        with self._lock:
            return self._value


class JobSignals(QObject):
    progress = Signal(int, str)       # generation, stage text
    partial = Signal(int, str, object, object)  # generation, stage key, payload (e.g. the verdict before the
    #                                             sweeps), threading.Event set once the window has shown it
    finished = Signal(int, object)    # generation, payload
    failed = Signal(int, object)      # generation, UserError (or a wrapped unexpected exception)


class JobContext:
    """What a job function gets: ``check()`` raises Cancelled when stale; ``progress``/``partial`` report."""

    def __init__(self, generation: int, counter: Generation, signals: JobSignals):
        self.generation = generation
        self._counter = counter
        self._signals = signals

    @property
    def cancelled(self) -> bool:
        return self._counter.value != self.generation

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled()

    def progress(self, text: str) -> None:
        self.check()
        self._signals.progress.emit(self.generation, text)

    def partial(self, key: str, payload, *, wait_shown_s: float = 0.0) -> None:
        """Reports ``payload``; with ``wait_shown_s`` waits (up to that long) until the window has shown it,
        so the next stage's work does not take the GIL from the UI thread while it paints (the verdict)."""
        self.check()
        shown = threading.Event() if wait_shown_s > 0 else None
        self._signals.partial.emit(self.generation, key, payload, shown)
        if shown is not None:
            shown.wait(wait_shown_s)


class UnexpectedError(UserError):
    """A bug or an unforeseen failure, shown in the window instead of a traceback."""


class Job(QRunnable):
    def __init__(self, fn: Callable[[JobContext], object], context: JobContext, signals: JobSignals):
        super().__init__()
        self.setAutoDelete(True)
        self._fn, self._context, self._signals = fn, context, signals

    def run(self):
        generation = self._context.generation
        try:
            with running(self._context.check):
                payload = self._fn(self._context)
        except Cancelled:
            return
        except UserError as exc:
            self._emit(self._signals.failed, generation, exc)
        except MemoryError:
            self._emit(self._signals.failed, generation,
                       UserError("ran out of memory while analysing the model", field="model"))
        except Exception as exc:  # noqa: BLE001 - the window must survive anything a model throws
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._emit(self._signals.failed, generation, UnexpectedError(f"analysis failed: {detail}", field="model"))
        else:
            self._emit(self._signals.finished, generation, payload)

    @staticmethod
    def _emit(signal, *args):
        try:
            signal.emit(*args)
        except RuntimeError:
            pass  # the window closed while this job ran: nobody is listening any more


class JobRunner(QObject):
    """Runs the latest submitted function after a debounce; older generations are cancelled and dropped."""

    progress = Signal(str)
    partial = Signal(str, object)
    finished = Signal(object)
    failed = Signal(object)
    busy = Signal(bool)

    def __init__(self, parent=None, debounce_ms: int = DEBOUNCE_MS, pool: QThreadPool | None = None):
        super().__init__(parent)
        self.counter = Generation()
        self.pool = pool or QThreadPool.globalInstance()
        if self.pool.maxThreadCount() < MIN_POOL_THREADS:
            self.pool.setMaxThreadCount(MIN_POOL_THREADS)
        self._pending: Callable[[JobContext], object] | None = None
        self._running = 0
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(debounce_ms)
        self._debounce.timeout.connect(self._start_pending)
        self.signals = JobSignals()
        self.signals.progress.connect(self._on_progress)
        self.signals.partial.connect(self._on_partial)
        self.signals.finished.connect(self._on_finished)
        self.signals.failed.connect(self._on_failed)

    def submit(self, fn: Callable[[JobContext], object], *, immediate: bool = False) -> None:
        """Cancel whatever runs now and run ``fn`` once input has been quiet for the debounce interval."""
        self.counter.bump()  # running jobs are stale from now on
        self._pending = fn
        if immediate:
            self._debounce.stop()
            self._start_pending()
        else:
            self._debounce.start()

    def cancel(self) -> None:
        self._debounce.stop()
        self._pending = None
        self.counter.bump()
        self.busy.emit(False)

    def _start_pending(self):
        fn, self._pending = self._pending, None
        if fn is None:
            return
        generation = self.counter.bump()
        self.busy.emit(True)
        self.pool.start(Job(fn, JobContext(generation, self.counter, self.signals), self.signals))

    def _current(self, generation: int) -> bool:
        return generation == self.counter.value

    def _on_progress(self, generation, text):
        if self._current(generation):
            self.progress.emit(text)

    def _on_partial(self, generation, key, payload, shown):
        try:
            if self._current(generation):
                self.partial.emit(key, payload)
        finally:
            if shown is not None:   # after the repaint the slot asked for: a 0 ms timer runs once the
                QTimer.singleShot(0, shown.set)   # posted update requests are processed

    def _on_finished(self, generation, payload):
        if self._current(generation):
            self.busy.emit(False)
            self.finished.emit(payload)

    def _on_failed(self, generation, error):
        if self._current(generation):
            self.busy.emit(False)
            self.failed.emit(error)

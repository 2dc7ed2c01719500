"""Entry point of the desktop app: ``run_app()`` (called by ``main.py`` with no arguments).

Launch path (the verdict is what the user waits for, docs/gui.md). A ``Preload`` thread looks up the
workload the window opens with in the on-disk trace store (engine.trace_store); the window itself imports
no PyTorch.
- Stored (every launch after the first for that workload): the trace is loaded into the window's cache and
  the window opens at once; nothing on the way to its verdict imports PyTorch.
- Not stored: a second process (gui.prefetch) imports PyTorch and traces the workload on the other core
  and writes it into the store; the window opens at once, and its cache waits for that trace instead of
  tracing (in-process PyTorch would hold the GIL against Qt for ~2.5 s).
- A user's .py model, or no second process: PyTorch is imported and the workload traced on this thread
  before the window opens (a placeholder shows meanwhile).
Either way this process imports PyTorch once its first request is done and the second process has ended,
ready for the user's first change of model or shape (batch changes need no new trace)."""
from __future__ import annotations

import importlib
import os
import sys
import threading
import time

# in this order: torch first (the bulk), then what a trace needs (engine.api imports the torchvision model
# list), then the window's own modules
HEAVY_MODULES = ("torch", "torchbudget.engine.api", "torchbudget.engine.planner", "torchbudget.gui.backend",
                 "torchbudget.gui.main_window")
# the plot tabs (pyqtgraph, numpy) are imported and built by the window once its first verdict is on screen
# on the stored path PyTorch is imported once the window's first request is done (verdict, tree and plots
# on screen; importing it holds the GIL against the UI for ~2.5 s), or after this long
SETTLE_WAIT_S = 10.0
NO_PREFETCH_ENV = "TORCHBUDGET_NO_PREFETCH"   # "1": trace a first launch in this process (tests, debugging)


class Preload:
    """Finds, prefetches or traces the first workload on a background thread; imports PyTorch after it."""

    def __init__(self):
        self.started = time.perf_counter()
        self.imported = threading.Event()   # the window can open: its cache is ready (loaded, or torch imported)
        self.settled = threading.Event()   # set by Startup when the window's first request is done
        self.error: BaseException | None = None
        self.cache = None            # the TraceCache the main window will use
        self.first_workload = None   # what was loaded or traced ahead of the window (None: nothing)
        self.from_store = False      # True: the first trace came from the on-disk store, without PyTorch
        self.notes: list[str] = []   # what was ignored on the way (damaged settings, store entries), for the window
        self.prefetch = None         # gui.prefetch.Prefetch when a second process traces the first workload
        self._to_trace = None        # the first workload when this thread traces it (no second process)
        self.timings: dict[str, float] = {}   # seconds since start of each step (bench/bench_gui.py)
        self._lock = threading.Lock()
        self._callbacks = []
        self._list_callbacks = []
        # the second process starts importing PyTorch now; if the store has the first workload it is stopped
        self._spare = self._start_prefetch()
        self._thread = threading.Thread(target=self._run, name="torchbudget-preload", daemon=True)
        self._thread.start()

    @property
    def window_can_list_models(self) -> bool:
        """False while PyTorch is not imported and no model list is stored (the window fills it later)."""
        return not (self.from_store or self.prefetch)

    def join(self, timeout_s: float) -> None:
        """Before the interpreter exits: a thread still importing PyTorch at exit can crash the process."""
        self.settled.set()
        if self._spare is not None:
            self._spare.stop()
        self._thread.join(timeout_s)

    def _mark(self, step: str) -> None:
        self.timings[step] = time.perf_counter() - self.started

    def _run(self):
        try:
            self._prepare_first_workload()
        except BaseException as exc:  # noqa: BLE001 - shown in the window instead of a traceback
            self.error = exc
            self._set_imported()
            return
        early = self.from_store or self.prefetch is not None
        if early:
            self._set_imported()   # the window opens now, without PyTorch
            if self.prefetch is not None:
                self.prefetch.wait()   # leave the CPU to the second process and the window
                self._mark("second process done")
                self._models_may_have_changed()   # the second process stored the model list
            else:
                self.settled.wait(SETTLE_WAIT_S)   # leave the CPU to the window until it is filled in
        try:
            for name in HEAVY_MODULES:
                importlib.import_module(name)
                self._mark(name)
            from torchbudget.engine.process import freeze_startup_objects

            freeze_startup_objects()  # the app owns its process
        except BaseException as exc:  # noqa: BLE001 - shown in the window instead of a traceback
            self.error = exc
        if not early:
            self._set_imported()
            if self.error is None:
                self._trace_first_workload()
        self._models_may_have_changed()   # torchvision is imported: listing is cheap now

    def _prepare_first_workload(self):
        from torchbudget.engine.trace_store import TraceStore
        from torchbudget.gui import backend
        from torchbudget.gui.settings import Settings, first_workload

        store = TraceStore()
        try:
            settings = Settings()
            workload = first_workload(settings)
            self.notes += settings.problems()   # a junk settings file is set aside here: said once, by the window
            # traced for the primary GPU's kernels, as the window's planner will ask for it
            workload = workload.on_gpu(backend.resolve_gpu(settings.primary_gpu() or backend.default_gpu_name()))
        except Exception:  # noqa: BLE001 - the window's own request reports the same error in place
            workload = None
        self._mark("settings")
        stored = None
        if workload is not None and workload.inputs and not backend.is_file_model(workload.model) \
                and store.has(workload):
            stored = store.load(workload)   # a load from disk: no PyTorch
            if stored is None:
                self.notes.append(f"a damaged trace in {store.directory} was ignored and traced afresh")
        if workload is None or not workload.inputs or backend.is_file_model(workload.model):
            self.cache = backend.trace_cache(store=store)   # user code never runs in this process
        elif stored is not None:
            self.cache = backend.trace_cache(store=store)
            self.cache.put(workload, stored)
            self.first_workload, self.from_store = workload, True
            self._mark("stored trace loaded")
        elif self._spare is not None:
            self.prefetch = self._spare
            self.prefetch.request(workload)
            self.cache = backend.trace_cache(store=store, analyzer=self.prefetch.analyzer(backend.trace_here))
            self.first_workload = workload
        else:
            self.cache = backend.trace_cache(store=store)
            self._to_trace = workload   # traced on this thread once PyTorch is imported
        if self.prefetch is None and self._spare is not None:
            self._spare.stop()   # not needed: its CPU goes back to this process

    @staticmethod
    def _start_prefetch():
        if os.environ.get(NO_PREFETCH_ENV) == "1":
            return None
        from torchbudget.engine.trace_store import TraceStore
        from torchbudget.gui.prefetch import Prefetch

        try:
            return Prefetch(TraceStore())
        except OSError:
            return None   # no second process: traced here

    def when_imported(self, callback) -> None:
        """Calls ``callback()`` once the window can open (at once if it can; else from this thread)."""
        with self._lock:
            if not self.imported.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def _set_imported(self):
        with self._lock:
            self.imported.set()
            callbacks, self._callbacks = self._callbacks, []
        _call_all(callbacks)

    def on_models_may_have_changed(self, callback) -> None:
        """``callback()`` each time the model list may have become readable (stored, or torchvision imported)."""
        with self._lock:
            self._list_callbacks.append(callback)

    def _models_may_have_changed(self):
        with self._lock:
            callbacks = list(self._list_callbacks)
        _call_all(callbacks)

    def _trace_first_workload(self):
        workload = self._to_trace
        if workload is None:
            return
        try:
            self.first_workload = workload
            self.cache.get(workload)
            self._mark("first trace")
        except Exception:  # noqa: BLE001 - the window's own request reports the same error in place
            pass


def _call_all(callbacks) -> None:
    for callback in callbacks:
        try:
            callback()
        except RuntimeError:   # a Qt receiver already deleted: the app closed before this thread finished
            pass


def make_app(argv: list[str] | None = None, configure_plots: bool = True):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        QApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("TorchBudget")
    app.setOrganizationName("TorchBudget")
    if configure_plots:
        _configure_plots()
    return app


def _configure_plots():
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True)


def _make_notifier():
    from PySide6.QtCore import QObject, Signal

    class Notifier(QObject):
        ready = Signal()
    return Notifier()


class Startup:
    """Shows a placeholder until the heavy imports are done, then opens the main window."""

    def __init__(self, app, on_ready=None, preload: Preload | None = None):
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QLabel

        self.app, self.on_ready = app, on_ready
        self.window = None
        self.placeholder = QLabel("TorchBudget\n\nLoading…")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWindowTitle("TorchBudget")
        self.placeholder.resize(420, 200)
        self.placeholder.show()
        self.preload = preload or Preload()
        # woken by a queued signal, not a polling timer: a UI thread that wakes up every few ms takes the
        # GIL from the import thread each time, which costs most on a loaded machine
        self._notifier = _make_notifier()
        self._notifier.ready.connect(self._check, Qt.ConnectionType.QueuedConnection)
        self.preload.when_imported(self._notifier.ready.emit)
        self._models_notifier = _make_notifier()
        self._models_notifier.ready.connect(self._reload_models, Qt.ConnectionType.QueuedConnection)
        self.preload.on_models_may_have_changed(self._models_notifier.ready.emit)

    def _check(self):
        if self.window is not None:
            return
        if self.preload.error is not None:
            self.placeholder.setText(f"TorchBudget could not start:\n{self.preload.error}")
            return
        from torchbudget.gui.main_window import MainWindow

        try:
            self.window = MainWindow(cache=self.preload.cache, may_list_models=self.preload.window_can_list_models,
                                     startup_notes=tuple(self.preload.notes))
        except Exception as exc:  # noqa: BLE001 - said in the placeholder rather than a window that never opens
            self.placeholder.setText(f"TorchBudget could not open its window:\n{type(exc).__name__}: {exc}")
            return
        self.window.runner.finished.connect(self._on_settled)
        self.window.runner.failed.connect(self._on_settled)
        self.window.show()
        self.placeholder.close()
        if self.on_ready:
            self.on_ready(self.window)

    def _reload_models(self):
        if self.window is not None and self.window.workload_panel.model_list_pending:
            self.window.workload_panel.reload_model_names()

    def _on_settled(self, *_args):
        self.preload.settled.set()   # the preload thread may import PyTorch now


def run_app(on_ready=None) -> int:
    preload = Preload()   # before Qt is imported: PyTorch is the critical path
    app = make_app(configure_plots=False)   # pyqtgraph loads after the first verdict
    startup = Startup(app, on_ready, preload)  # noqa: F841 - kept alive until the event loop ends
    code = app.exec()
    from PySide6.QtCore import QThreadPool

    # closing the window cancelled the analysis; let a running stage stop before the interpreter goes away
    # (exiting with a thread inside PyTorch can abort the process)
    QThreadPool.globalInstance().waitForDone(10_000)
    preload.join(30.0)
    return code

"""Entry point of the desktop app: ``run_app()`` (called by ``main.py`` with no arguments).

Launch path (the verdict is what the user waits for, docs/gui.md): a ``Preload`` thread looks up the
workload the window opens with in the on-disk trace store (engine.trace_store).
- Stored (every launch after the first for that workload): the trace is loaded into the window's cache and
  the window opens at once; nothing on the way to its verdict imports PyTorch. PyTorch is imported after
  that verdict is on screen, ready for the user's first change.
- Not stored: PyTorch, torchvision and the engine are imported first, then the workload is traced into the
  window's cache; meanwhile the UI thread imports Qt and shows a placeholder, and builds the main window
  once the imports are done (never waiting on an import lock for torch). The window's first request finds
  that trace cached or in flight (``TraceCache`` traces each key once)."""
from __future__ import annotations

import importlib
import sys
import threading
import time

# in this order: torch first (the bulk), then what a trace needs (engine.api imports the torchvision model
# list), then the window's own modules
HEAVY_MODULES = ("torch", "engine.api", "engine.planner", "gui.backend", "gui.main_window")
# the plot tabs (pyqtgraph, numpy) are imported and built by the window once its first verdict is on screen
VERDICT_WAIT_S = 10.0   # on the stored path, PyTorch is imported after the first verdict or after this long


class Preload:
    """Finds or traces the first workload on a background thread, importing PyTorch only when needed."""

    def __init__(self):
        self.started = time.perf_counter()
        self.imported = threading.Event()   # the window can open: its cache is ready (loaded, or torch imported)
        self.verdict_shown = threading.Event()   # set by Startup when the first verdict is on screen
        self.error: BaseException | None = None
        self.cache = None            # the TraceCache the main window will use
        self.first_workload = None   # what was loaded or traced ahead of the window (None: nothing)
        self.from_store = False      # True: the first trace came from the on-disk store, without PyTorch
        self.timings: dict[str, float] = {}   # seconds since start of each step (bench/bench_gui.py)
        self._lock = threading.Lock()
        self._callbacks = []
        self._thread = threading.Thread(target=self._run, name="torchbudget-preload", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        """Before the interpreter exits: a thread still importing PyTorch at exit can crash the process."""
        self.verdict_shown.set()
        self._thread.join(timeout_s)

    def _mark(self, step: str) -> None:
        self.timings[step] = time.perf_counter() - self.started

    def _run(self):
        try:
            from gui import backend

            self.cache = backend.trace_cache()
            self._load_stored_first_workload()
        except BaseException as exc:  # noqa: BLE001 - shown in the window instead of a traceback
            self.error = exc
            self._set_imported()
            return
        if self.from_store:
            self._set_imported()
            self.verdict_shown.wait(VERDICT_WAIT_S)   # leave the CPU to the window until its verdict shows
        try:
            for name in HEAVY_MODULES:
                importlib.import_module(name)
                self._mark(name)
            from engine.trace import freeze_startup_objects

            freeze_startup_objects()  # the app owns its process
        except BaseException as exc:  # noqa: BLE001 - shown in the window instead of a traceback
            self.error = exc
        if not self.from_store:
            self._set_imported()
            if self.error is None:
                self._trace_first_workload()

    def _load_stored_first_workload(self):
        from gui import backend
        from gui.settings import Settings, first_workload

        try:
            workload = first_workload(Settings())
        except Exception:  # noqa: BLE001 - the window's own request reports the same error in place
            return
        self._mark("settings")
        if workload.inputs and not backend.is_file_model(workload.model) and workload in self.cache:
            self.cache.get(workload)   # a load from disk: no PyTorch
            self.first_workload, self.from_store = workload, True
            self._mark("stored trace loaded")

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
        for callback in callbacks:
            callback()

    def _trace_first_workload(self):
        from gui import backend
        from gui.settings import Settings, first_workload

        try:
            workload = first_workload(Settings())
            if workload.inputs and not backend.is_file_model(workload.model):   # user code never runs here
                self.first_workload = workload
                self.cache.get(workload)
                self._mark("first trace")
        except Exception:  # noqa: BLE001 - the window's own request reports the same error in place
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

    def _check(self):
        if self.window is not None:
            return
        if self.preload.error is not None:
            self.placeholder.setText(f"TorchBudget could not start:\n{self.preload.error}")
            return
        from gui.main_window import MainWindow

        self.window = MainWindow(cache=self.preload.cache)
        self.window.runner.partial.connect(self._on_partial)
        self.window.show()
        self.placeholder.close()
        if self.on_ready:
            self.on_ready(self.window)

    def _on_partial(self, key: str, _payload):
        if key == "evaluation":
            self.preload.verdict_shown.set()   # the preload thread may import PyTorch now


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

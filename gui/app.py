"""Entry point of the desktop app: ``run_app()`` (called by ``main.py`` with no arguments).

Launch path (the verdict is what the user waits for, docs/gui.md): a ``Preload`` thread starts importing
PyTorch, torchvision and the engine before Qt is even imported, then traces the workload the window
opens with into the window's trace cache. Meanwhile the UI thread imports Qt and shows a placeholder;
it builds the main window once the imports are done (never waiting on an import lock for torch), and the
window's first request finds that trace cached or in flight (``TraceCache`` traces each key once)."""
from __future__ import annotations

import importlib
import sys
import threading
import time

# in this order: torch first (the bulk), then what the first verdict needs (engine.api imports the
# torchvision model list), then the window's own modules
HEAVY_MODULES = ("torch", "engine.api", "engine.planner", "gui.backend", "gui.main_window")
# the plot tabs (pyqtgraph, numpy) are imported and built by the window once its first verdict is on screen


class Preload:
    """Imports the heavy modules, then traces the first workload, on a background thread."""

    def __init__(self):
        self.started = time.perf_counter()
        self.imported = threading.Event()
        self.error: BaseException | None = None
        self.cache = None            # the TraceCache the main window will use
        self.first_workload = None   # what was traced ahead of the window (None: nothing)
        self.timings: dict[str, float] = {}   # seconds since start of each step (bench/bench_gui.py)
        self._lock = threading.Lock()
        self._callbacks = []
        self._thread = threading.Thread(target=self._run, name="torchbudget-preload", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for name in HEAVY_MODULES:
                importlib.import_module(name)
                self.timings[name] = time.perf_counter() - self.started
            from engine.trace import freeze_startup_objects
            from gui import backend

            freeze_startup_objects()  # the app owns its process
            self.cache = backend.trace_cache()
        except BaseException as exc:  # noqa: BLE001 - shown in the window instead of a traceback
            self.error = exc
        self._set_imported()
        if self.error is None:
            self._trace_first_workload()

    def when_imported(self, callback) -> None:
        """Calls ``callback()`` once the imports are done (at once if they are; else from this thread)."""
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
        from gui.main_window import first_workload
        from gui.settings import Settings

        try:
            workload = first_workload(Settings())
            if workload.inputs and not backend.is_file_model(workload.model):   # user code never runs here
                self.first_workload = workload
                self.cache.get(workload)
                self.timings["first trace"] = time.perf_counter() - self.started
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
        self.placeholder = QLabel("TorchBudget\n\nLoading PyTorch…")
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
        self.window.show()
        self.placeholder.close()
        if self.on_ready:
            self.on_ready(self.window)


def run_app(on_ready=None) -> int:
    preload = Preload()   # before Qt is imported: PyTorch is the critical path
    app = make_app(configure_plots=False)   # pyqtgraph loads after the first verdict
    startup = Startup(app, on_ready, preload)  # noqa: F841 - kept alive until the event loop ends
    code = app.exec()
    from PySide6.QtCore import QThreadPool

    # closing the window cancelled the analysis; let a running stage stop before the interpreter goes away
    # (exiting with a thread inside PyTorch can abort the process)
    QThreadPool.globalInstance().waitForDone(10_000)
    return code

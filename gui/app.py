"""Entry point of the desktop app: ``run_app()`` (called by ``main.py`` with no arguments).

PyTorch and torchvision take seconds to import, so a small window appears at once and the heavy
imports run on a background thread; the main window replaces it as soon as they are done."""
from __future__ import annotations

import importlib
import sys
import threading
import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QLabel

HEAVY_MODULES = ("torch", "torchvision", "gui.main_window")


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        QApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("TorchBudget")
    app.setOrganizationName("TorchBudget")
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True)
    return app


class Startup:
    """Shows a placeholder, imports the heavy modules off the UI thread, then opens the main window."""

    def __init__(self, app: QApplication, on_ready=None):
        self.app, self.on_ready = app, on_ready
        self.window = None
        self.error: BaseException | None = None
        self.started = time.perf_counter()
        self.placeholder = QLabel("TorchBudget\n\nLoading PyTorch…")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWindowTitle("TorchBudget")
        self.placeholder.resize(420, 200)
        self.placeholder.show()
        self._thread = threading.Thread(target=self._import, name="torchbudget-imports", daemon=True)
        self._thread.start()
        self._poll = QTimer()
        self._poll.setInterval(30)
        self._poll.timeout.connect(self._check)
        self._poll.start()

    def _import(self):
        try:
            for name in HEAVY_MODULES:
                importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - shown in the window instead of a traceback
            self.error = exc

    def _check(self):
        if self._thread.is_alive():
            return
        self._poll.stop()
        if self.error is not None:
            self.placeholder.setText(f"TorchBudget could not start:\n{self.error}")
            return
        from gui.main_window import MainWindow

        self.window = MainWindow()
        self.window.show()
        self.placeholder.close()
        if self.on_ready:
            self.on_ready(self.window)


def run_app() -> int:
    app = make_app()
    startup = Startup(app)  # noqa: F841 - kept alive until the event loop ends
    return app.exec()

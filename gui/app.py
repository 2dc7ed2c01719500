"""Entry point of the desktop app: ``run_app()`` (called by ``main.py`` with no arguments)."""
from __future__ import annotations

import sys

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        QApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("TorchBudget")
    app.setOrganizationName("TorchBudget")
    pg.setConfigOptions(antialias=True)
    return app


def run_app() -> int:
    app = make_app()
    from gui.main_window import MainWindow   # imported after QApplication exists

    window = MainWindow()
    window.show()
    return app.exec()

"""Shared helpers for the GUI tests: a main window with temporary settings and hardware file."""
from __future__ import annotations

from PySide6.QtCore import QThreadPool

WAIT_MS = 60_000


def make_window(qtbot, tmp_path, monkeypatch, workload=None, **kwargs):
    monkeypatch.setenv("TORCHBUDGET_CONFIG_DIR", str(tmp_path / "config"))
    from torchbudget.gui.main_window import MainWindow
    from torchbudget.gui.settings import Settings

    settings = Settings(str(tmp_path / "settings.ini"))
    if workload is not None:
        settings.set_last_workload(workload)
    window = MainWindow(settings=settings, **kwargs)
    qtbot.addWidget(window)
    window.show()
    return window


def close_window(window):
    window.runner.cancel()
    window.model_runner.shutdown()
    window.close()
    QThreadPool.globalInstance().waitForDone(30_000)  # a running trace finishes its stage, then stops



def wait_for_plans(qtbot, window, predicate=lambda ev: True, timeout=WAIT_MS):
    """Wait until the window shows an exact (not interpolated) evaluation satisfying ``predicate``."""
    def ready():
        ev = window.evaluation
        assert ev is not None and ev.result is not None and not ev.interpolated and predicate(ev)
    qtbot.waitUntil(ready, timeout=timeout)
    return window.evaluation


def wait_idle(qtbot, window, timeout=WAIT_MS):
    """Wait until every stage (sweeps, comparison) is done: nothing traces in the background any more."""
    qtbot.waitUntil(lambda: not window.busy and window.comparison is not None, timeout=timeout)

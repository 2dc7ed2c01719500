"""Asking before running Python code the user did not pick as code. A model ``path/file.py:Name`` runs
that file (in gui.model_process). Picking the file with *Open .py…* or typing its path is the user's
choice; a workload file or the settings naming one is not, so the window asks first. One question per
file at a time: a dialog already open for a file is never stacked with another."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from torchbudget.engine.user_code import is_file_spec, split_file_spec

_asking: set[str] = set()


def model_path(model: str) -> Path | None:
    """The file a ``path/file.py:Name`` model runs (absolute), or None for a registry model."""
    if not is_file_spec(model):
        return None
    return split_file_spec(model)[0].expanduser().resolve()


def ask(parent, path: Path, why: str) -> bool:
    """The question itself (tests replace this function)."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Run this Python file?",
                      f"{why}:\n\n{path}\n\nAnalysing it runs that file's code (in a separate process). "
                      "Run it only if you trust it.",
                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, parent)
    box.setDefaultButton(QMessageBox.StandardButton.No)
    return box.exec() == QMessageBox.StandardButton.Yes


def confirm_run(parent, model: str, why: str) -> bool:
    """True when ``model`` runs no user code, or the user said yes; False while a question about the same
    file is already open."""
    path = model_path(model)
    if path is None:
        return True
    key = str(path)
    if key in _asking:
        return False
    _asking.add(key)
    try:
        return bool(ask(parent, path, why))
    finally:
        _asking.discard(key)

"""A spin box that says when a typed number is too large (the workload and cluster panels use it)."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QSpinBox


class LimitedSpinBox(QSpinBox):
    """A spin box that says so when a typed number is beyond its range, instead of silently refusing
    the key (Qt's own behaviour)."""

    tooLarge = Signal(str)   # the refused text

    def validate(self, text: str, pos: int):
        result = super().validate(text, pos)
        state = result[0] if isinstance(result, tuple) else result
        digits = text.removesuffix(self.suffix()).strip().replace(",", "")
        if state == QValidator.State.Invalid and digits.isdigit() and int(digits) > self.maximum():
            self.tooLarge.emit(digits)
        return result

"""A one-line error shown under the input field that caused it: plain words, an icon and the palette's
colour (text carries the meaning, so it reads in dark mode and without colour vision)."""
from __future__ import annotations

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel


class FieldError(QLabel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setVisible(False)
        self.setObjectName("fieldError")

    def show_message(self, text: str):
        self.setText(f"⚠ {text}")
        self.setToolTip(text)
        # the palette's link colour stands out in both light and dark themes; bold keeps it readable
        self.setStyleSheet("font-weight: bold;")
        self.setForegroundRole(QPalette.ColorRole.Link)
        self.setVisible(True)

    def clear_message(self):
        self.clear()
        self.setVisible(False)

    @property
    def message(self) -> str:
        return self.text().removeprefix("⚠ ")

"""Colours that read on light and dark palettes alike: the Okabe-Ito colour-blind-safe set for data series,
and text colours taken from the application palette so dark mode works. Meaning never rests on colour alone."""
from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from torchbudget.engine.report.labels import VERDICT_LABELS, VERDICT_SYMBOLS
from torchbudget.engine.results import MemoryCategory

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999", "#000000")

CATEGORY_COLORS = {
    MemoryCategory.WEIGHTS: "#0072B2",
    MemoryCategory.BUFFERS: "#56B4E9",
    MemoryCategory.INPUTS: "#999999",
    MemoryCategory.KV_CACHE: "#882255",
    MemoryCategory.ACTIVATIONS: "#E69F00",
    MemoryCategory.TEMPORARIES: "#F0E442",
    MemoryCategory.GRADIENTS: "#CC79A7",
    MemoryCategory.OPTIMIZER_STATE: "#D55E00",
    MemoryCategory.WORKSPACE: "#009E73",
    MemoryCategory.CUDA_CONTEXT: "#7F7F7F",
    MemoryCategory.COMMUNICATION: "#332288",
    MemoryCategory.ALLOCATOR: "#B0B0B0",
}

VERDICT_COLORS = {"fits": "#009E73", "tight": "#E69F00", "does_not_fit": "#D55E00"}
VERDICT_TEXT = {k: f"{VERDICT_SYMBOLS[k]}  {label}" for k, label in VERDICT_LABELS.items()}   # badge text


def series_color(i: int) -> str:
    return OKABE_ITO[i % (len(OKABE_ITO) - 1)]  # skip black: invisible on dark backgrounds


def contrast_text(background: str) -> str:
    c = QColor(background)
    luminance = 0.299 * c.red() + 0.587 * c.green() + 0.114 * c.blue()
    return "#000000" if luminance > 140 else "#FFFFFF"


def palette_color(role: QPalette.ColorRole) -> QColor:
    app = QApplication.instance()
    return app.palette().color(role) if app else QColor("black")


def plot_colors() -> tuple[QColor, QColor]:
    """(background, foreground) for pyqtgraph, following the system palette."""
    return palette_color(QPalette.ColorRole.Base), palette_color(QPalette.ColorRole.Text)

"""Hardware comparison: a table (a Qt model over ``compare()``'s rows) and horizontal bar charts of memory
needed vs available and of throughput across the ticked GPUs."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt

from torchbudget.engine.report.units import human_bytes, human_ms
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.report.labels import verdict_rule
from torchbudget.gui.colors import VERDICT_TEXT, plot_colors, series_color
from torchbudget.gui.layer_model import SORT_ROLE
from torchbudget.gui.plots import GIB, make_plot

HEADERS = ("GPU", "Verdict", "Needs", "Available", "Headroom", "Max batch", "Bound", "Estimate", "Samples/s")
HEADER_TIPS = (
    "GPU name", verdict_rule(Overheads()), "Memory the workload needs at its peak: tensors, workspaces, allocator slack and the CUDA context",
    "Memory this GPU offers a process before CUDA starts", "Available minus needed (negative: short by this much)",
    "Largest batch that fits", "Roofline lower bound on the step latency (datasheet peaks, perfect overlap)",
    "Latency estimate with efficiency factors and kernel-launch overhead", "Throughput at the estimated latency",
)


class ComparisonModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows = ()

    def set_comparison(self, comparison):
        self.beginResetModel()
        self.rows = tuple(comparison.rows) if comparison else ()
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()):
        return len(HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS[section]
        return None

    def raw(self, row, column):
        return (row.gpu_name, row.verdict.value, row.required_bytes, row.capacity_bytes, row.headroom_bytes,
                row.max_batch, row.lower_bound_ms, row.estimate_ms, row.throughput_samples_per_s)[column]

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, column = self.rows[index.row()], index.column()
        value = self.raw(row, column)
        if role == SORT_ROLE:
            return -1 if value is None else value
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 1:
                return VERDICT_TEXT[value]
            if column in (2, 3):
                return human_bytes(value)
            if column == 4:
                return ("−" if value < 0 else "") + human_bytes(abs(value))
            if column == 5:
                return "—" if value is None else str(value)
            if column in (6, 7):
                return human_ms(value)
            if column == 8:
                return f"{value:,.0f}"
            return value
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class ComparisonCharts:
    def __init__(self):
        self.memory = make_plot("Needed (filled) vs available (outline)", "Memory (GiB)", "")
        self.throughput = make_plot("Estimated throughput", "Throughput (samples/s)", "")
        self.memory.setToolTip("Filled bar: peak memory the workload needs; outline: the GPU's available memory.")
        self.throughput.setToolTip("Samples per second at the estimated latency on each GPU.")

    def show(self, comparison):
        rows = comparison.rows if comparison else ()
        ticks = [[(i, row.gpu_name) for i, row in enumerate(rows)]]
        _, foreground = plot_colors()
        for widget in (self.memory, self.throughput):
            item = widget.getPlotItem()
            item.clear()
            item.getAxis("left").setTicks(ticks)
            item.getViewBox().invertY(True)
        if not rows:
            return
        ys = list(range(len(rows)))
        self.memory.getPlotItem().addItem(pg.BarGraphItem(
            x0=0, y=ys, height=0.6, width=[r.capacity_bytes / GIB for r in rows], brush=None,
            pen=pg.mkPen(foreground, width=1.5)))
        self.memory.getPlotItem().addItem(pg.BarGraphItem(
            x0=0, y=ys, height=0.4, width=[r.required_bytes / GIB for r in rows],
            brushes=[series_color(5) if not r.fits else series_color(2) for r in rows], pen=None))
        self.throughput.getPlotItem().addItem(pg.BarGraphItem(
            x0=0, y=ys, height=0.6, width=[r.throughput_samples_per_s if r.fits else 0 for r in rows],
            brushes=[series_color(i) for i in ys], pen=None))
        top_gib = max(max(r.capacity_bytes, r.required_bytes) for r in rows) / GIB
        top_rate = max([r.throughput_samples_per_s for r in rows if r.fits] or [1.0])
        for widget, top in ((self.memory, top_gib), (self.throughput, top_rate)):
            widget.getPlotItem().setXRange(0, top * 1.05, padding=0)
            widget.getPlotItem().setYRange(-0.6, len(rows) - 0.4, padding=0)

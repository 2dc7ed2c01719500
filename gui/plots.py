"""Sweep plots (pyqtgraph): memory vs batch with each ticked GPU's capacity and largest-batch marker,
latency and throughput vs batch, and memory vs the second axis: resolution for image inputs, sequence length for
token inputs (with each GPU's longest-sequence marker), the context for decode (with the KV cache, tokens/s on a
right-hand axis and each GPU's largest-context marker). Fed by ``engine.solver.sweep`` (the planner's sweeps);
units on every axis: samples, or sequences for token models (concurrent sequences in decode)."""
from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import Qt

from torchbudget.gui.colors import plot_colors, series_color
from torchbudget.gui.qt_fixes import keep_singletons_alive

GIB = 2**30
# what one batch element is, by workload kind: (x label, throughput label, noun)
BATCH_UNITS = {
    "samples": ("Batch size (samples, log scale)", "Throughput (samples/s)", "batch"),
    "sequences": ("Batch size (sequences, log scale)", "Throughput (sequences/s)", "batch"),
    "decode": ("Concurrent sequences (log scale)", "Throughput (new tokens/s, one per sequence per step)",
               "sequences"),
}
AXIS_WORDS = {"batch": "batch", "resolution": "resolution", "seq_len": "sequence-length", "context": "context"}
# the fourth plot, by axis: (title, x label, log x, tooltip)
SECOND_AXES = {
    "resolution": ("Memory needed vs resolution", "Resolution (px, height = width)", False,
                   "Memory needed at the current batch against square input resolution."),
    "seq_len": ("Memory needed vs sequence length", "Sequence length (tokens per sequence, log scale)", True,
                "Memory needed at the current batch against the token inputs' length; triangles: the longest "
                "sequence that fits on each GPU (Plan.max_seq_len)"),
    "context": ("Memory needed and tokens/s vs context", "Context (tokens in the KV cache per sequence, log scale)",
                True, "Decode at the current number of sequences: memory needed and the KV cache (dashed) against "
                      "the context, new tokens/s on the right-hand axis (dotted); triangles: the largest context "
                      "that fits on each GPU"),
}
keep_singletons_alive()   # every redraw adds and removes items: see gui.qt_fixes


def make_plot(title: str, x_label: str, y_label: str, *, log_x: bool = False,
              legend_offset: tuple[int, int] = (-10, 10)) -> pg.PlotWidget:
    background, foreground = plot_colors()
    widget = pg.PlotWidget(background=background)
    item = widget.getPlotItem()
    item.setTitle(title, color=foreground.name())
    for side, text in (("bottom", x_label), ("left", y_label)):
        axis = item.getAxis(side)
        axis.setLabel(text, color=foreground.name())
        axis.enableAutoSIPrefix(False)  # units are in the label; no silent k/M rescaling
        axis.setPen(foreground)
        axis.setTextPen(foreground)
    item.showGrid(x=True, y=True, alpha=0.25)
    item.setLogMode(x=log_x, y=False)
    legend = item.addLegend(offset=legend_offset, labelTextColor=foreground.name())
    legend.setBrush(pg.mkBrush(background.red(), background.green(), background.blue(), 200))
    return widget


def _pen(i: int, *, dashed: bool = False, width: float = 2):
    return pg.mkPen(series_color(i), width=width, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)


class SweepPlots:
    """Owns the four sweep PlotWidgets and redraws them from Sweep results."""

    def __init__(self):
        self.memory_vs_batch = make_plot("Memory needed vs batch size", "Batch size (samples, log scale)",
                                         "Memory needed (GiB)", log_x=True, legend_offset=(70, 10))
        self.latency_vs_batch = make_plot("Latency per step vs batch size", "Batch size (samples, log scale)",
                                          "Latency per step (ms, log scale)", log_x=True, legend_offset=(70, 10))
        self.latency_vs_batch.getPlotItem().setLogMode(x=True, y=True)
        self.throughput_vs_batch = make_plot("Throughput vs batch size", "Batch size (samples, log scale)",
                                             "Throughput (samples/s)", log_x=True, legend_offset=(70, 10))
        self.memory_vs_resolution = make_plot("Memory needed vs resolution", "Resolution (px, height = width)",
                                              "Memory needed (GiB)", legend_offset=(70, 10))
        self.memory_vs_batch.setToolTip(
            "Memory needed at the peak (tensors, workspaces, allocator slack and the CUDA context) against batch "
            "size. Dashed lines: each ticked GPU's available memory (what it offers before CUDA starts); "
            "triangles: the largest batch that fits.")
        self.latency_vs_batch.setToolTip("Per-step latency: solid = estimate, dashed = roofline lower bound.")
        self.throughput_vs_batch.setToolTip("Samples per second at the estimated latency.")
        self.memory_vs_resolution.setToolTip("Memory needed at the current batch against square input resolution.")
        self._current_lines: list[tuple] = []   # (plot item, marker line)
        self._titles = {w: w.getPlotItem().titleLabel.text for w in self.widgets()}
        self.batch_unit = "samples"
        self.second_axis = "resolution"
        self._rates = None   # decode's tokens/s view box on the fourth plot (made on first use)

    def set_batch_unit(self, unit: str) -> None:
        """'samples', 'sequences' (token inputs) or 'decode' (concurrent sequences, new tokens/s)."""
        if unit == self.batch_unit:
            return
        self.batch_unit = unit
        x_label, throughput, _ = BATCH_UNITS[unit]
        _, foreground = plot_colors()
        for w in (self.memory_vs_batch, self.latency_vs_batch, self.throughput_vs_batch):
            w.getPlotItem().getAxis("bottom").setLabel(x_label, color=foreground.name())
        self.throughput_vs_batch.getPlotItem().getAxis("left").setLabel(throughput, color=foreground.name())
        self.throughput_vs_batch.setToolTip(throughput.split("(")[1].rstrip(")") + " at the estimated latency.")

    def set_second_axis(self, axis: str) -> None:
        """The fourth plot's axis: 'resolution' (image inputs), 'seq_len' (token inputs) or 'context' (decode)."""
        if axis == self.second_axis:
            return
        self.second_axis = axis
        title, x_label, log_x, tip = SECOND_AXES[axis]
        self._titles[self.memory_vs_resolution] = title
        _, foreground = plot_colors()
        item = self.memory_vs_resolution.getPlotItem()
        item.setTitle(title, color=foreground.name())
        item.setLogMode(x=log_x, y=False)
        item.getAxis("bottom").setTicks(None)
        item.getAxis("bottom").setLabel(x_label, color=foreground.name())
        self.memory_vs_resolution.setToolTip(tip)
        self._rate_axis(axis == "context")

    def _rate_axis(self, shown: bool):
        """Decode's tokens/s on a right-hand axis: a second view box sharing the x axis (made once)."""
        item = self.memory_vs_resolution.getPlotItem()
        if self._rates is None and shown:
            _, foreground = plot_colors()
            self._rates = pg.ViewBox()
            item.scene().addItem(self._rates)
            right = item.getAxis("right")
            right.linkToView(self._rates)
            right.setLabel("New tokens/s (dotted)", color=foreground.name())
            right.enableAutoSIPrefix(False)
            right.setPen(foreground)
            right.setTextPen(foreground)
            self._rates.setXLink(item)
            item.vb.sigResized.connect(lambda *_: self._rates.setGeometry(item.vb.sceneBoundingRect()))
            self._rates.setGeometry(item.vb.sceneBoundingRect())
        self._clear_rates()
        if self._rates is not None:
            self._rates.setVisible(shown)
        item.showAxis("right", shown)

    def _clear_rates(self):
        if self._rates is None:
            return
        legend = self.memory_vs_resolution.getPlotItem().legend
        for curve in self._rates.addedItems[:]:
            legend.removeItem(curve)
        self._rates.clear()

    def restore_titles(self):
        _, foreground = plot_colors()
        for w, title in self._titles.items():
            w.getPlotItem().setTitle(title, color=foreground.name())

    def widgets(self):
        return (self.memory_vs_batch, self.latency_vs_batch, self.throughput_vs_batch, self.memory_vs_resolution)

    def show_unavailable(self, reason: str, which: str = "all"):
        """Empty the batch plots, the resolution plot or all of them, saying why in the title."""
        _, foreground = plot_colors()
        widgets = {"batch": self.widgets()[:3], "resolution": self.widgets()[3:]}.get(which, self.widgets())
        for w in widgets:
            item = w.getPlotItem()
            item.clear()
            item.setTitle(f"{reason}", color=foreground.name())
        self._current_lines = []

    def _left_out(self, result, which: str) -> bool:
        """A sweep whose points the model could not all run: the title says so (all of them: nothing to
        plot, True). The verdict for the user's own workload is never touched by this."""
        if not result.notes:
            return False
        if not result.points:
            self.show_unavailable(f"No {AXIS_WORDS.get(result.axis, result.axis)} sweep:<br>{result.notes[-1]}", which)
            return True
        _, foreground = plot_colors()
        for w in self.widgets()[:3] if which == "batch" else self.widgets()[3:]:
            w.getPlotItem().setTitle(f"{self._titles[w]} ({len(result.notes)} point(s) left out: the model "
                                     "cannot run them)", color=foreground.name())
            w.setToolTip("\n".join(result.notes))
        return False

    def show_batch_sweep(self, result, current_batch: int):
        for w in (self.memory_vs_batch, self.latency_vs_batch, self.throughput_vs_batch):
            w.getPlotItem().clear()
        if self._left_out(result, "batch"):
            return
        self._current_lines = []
        xs = [p.value for p in result.points]
        memory = self.memory_vs_batch.getPlotItem()
        self._memory_curves(memory, result, xs)
        for i, gpu in enumerate(result.gpus):
            self._capacity_line(memory, gpu.capacity_bytes / GIB, gpu.gpu_name, i)
            if gpu.max_batch:
                needed_at = _interpolate(xs, [p.per_gpu[i].required_bytes for p in result.points], gpu.max_batch) / GIB
                memory.plot([gpu.max_batch], [needed_at], pen=None, symbol="t", symbolSize=12,
                            symbolBrush=series_color(i), name=f"largest batch on {gpu.gpu_name}: {gpu.max_batch}")
        latency = self.latency_vs_batch.getPlotItem()
        throughput = self.throughput_vs_batch.getPlotItem()
        for i, gpu in enumerate(result.gpus):
            estimate = [p.per_gpu[i].estimate_ms for p in result.points]
            bound = [p.per_gpu[i].lower_bound_ms for p in result.points]
            latency.plot(xs, estimate, pen=_pen(i), name=f"{gpu.gpu_name} estimate")
            latency.plot(xs, bound, pen=_pen(i, dashed=True), name=f"{gpu.gpu_name} bound")
            throughput.plot(xs, [p.per_gpu[i].throughput_samples_per_s for p in result.points], pen=_pen(i),
                            symbol="o", symbolSize=4, symbolBrush=series_color(i), name=gpu.gpu_name)
        _leave_room_for_legend(memory, _needed_gib(result), [g.capacity_bytes / GIB for g in result.gpus])
        ticks = [[(math.log10(b), str(b)) for b in xs if b & (b - 1) == 0]]   # powers of two only: no clutter
        for w in (self.memory_vs_batch, self.latency_vs_batch, self.throughput_vs_batch):
            w.getPlotItem().getAxis("bottom").setTicks(ticks)
        self.mark_batch(current_batch)

    def mark_batch(self, batch: int):
        """Move the 'current batch' marker (cheap: no re-sweep). The marker lines are made once per sweep
        drawn and moved afterwards: a slider drag adds and removes no plot items."""
        live = [(item, line) for item, line in self._current_lines if line in item.items]   # clear() drops them
        if len(live) != 3:
            for item, line in live:
                item.removeItem(line)
            live = []
            _, foreground = plot_colors()
            for w in (self.memory_vs_batch, self.latency_vs_batch, self.throughput_vs_batch):
                line = pg.InfiniteLine(angle=90, pen=pg.mkPen(foreground, width=1, style=Qt.PenStyle.DotLine),
                                       label="", labelOpts={"position": 0.6, "color": foreground})
                w.getPlotItem().addItem(line, ignoreBounds=True)
                live.append((w.getPlotItem(), line))
        self._current_lines = live
        for _, line in live:
            line.setValue(math.log10(batch))
            line.label.setFormat(f"{BATCH_UNITS[self.batch_unit][2]} {batch}")

    def show_resolution_sweep(self, result, current_resolution: int | None):
        """The second axis's sweep: resolution, or sequence length (``result.axis == "seq_len"``)."""
        item = self.memory_vs_resolution.getPlotItem()
        item.clear()
        self._clear_rates()
        if result is None:
            self.set_second_axis("resolution")
            item.setTitle("Memory needed vs resolution (the model has no image or token input to vary)")
            return
        self.set_second_axis(result.axis if result.axis in SECOND_AXES else "resolution")
        item.setTitle(self._titles[self.memory_vs_resolution], color=plot_colors()[1].name())
        if self._left_out(result, "resolution"):
            return
        xs = [p.value for p in result.points]
        self._memory_curves(item, result, xs)
        log_x = result.axis in ("seq_len", "context")
        context = result.axis == "context"
        if context and xs:
            self._context_curves(item, result, xs)
        for i, gpu in enumerate(result.gpus):
            self._capacity_line(item, gpu.capacity_bytes / GIB, gpu.gpu_name, i)
            best, word = (gpu.max_context, "largest context") if context else (gpu.max_seq_len, "longest sequence")
            if log_x and best and xs:
                needed_at = _interpolate(xs, [p.per_gpu[i].required_bytes for p in result.points], best)
                item.plot([best], [needed_at / GIB], pen=None, symbol="t", symbolSize=12,
                          symbolBrush=series_color(i), name=f"{word} on {gpu.gpu_name}: {best:,}")
        _leave_room_for_legend(item, _needed_gib(result), [g.capacity_bytes / GIB for g in result.gpus])
        if current_resolution:
            _, foreground = plot_colors()
            if log_x:   # powers of two only (the grid's other points are each GPU's boundary and one more)
                item.getAxis("bottom").setTicks([_power_ticks(xs)])
            label = f"{current_resolution:,} tokens" if log_x else f"{current_resolution} px"
            item.addItem(pg.InfiniteLine(pos=math.log10(current_resolution) if log_x else current_resolution,
                                         angle=90, pen=pg.mkPen(foreground, width=1, style=Qt.PenStyle.DotLine),
                                         label=label, labelOpts={"position": 0.92, "color": foreground}),
                         ignoreBounds=True)

    def _context_curves(self, item, result, xs):
        """Decode: the KV cache read by the step (dashed, one curve: the same on every GPU) on the memory axis, and
        each GPU's new tokens/s (dotted) on the right-hand axis."""
        kv = [p.per_gpu[0].kv_cache_bytes or 0 for p in result.points]
        item.plot(xs, [v / GIB for v in kv], pen=pg.mkPen(plot_colors()[1], width=1.5, style=Qt.PenStyle.DashLine),
                  name="KV cache")
        rates = []
        for i, gpu in enumerate(result.gpus):
            ys = [p.per_gpu[i].tokens_per_s or 0.0 for p in result.points]
            rates += ys
            curve = pg.PlotDataItem([math.log10(x) for x in xs], ys, pen=pg.mkPen(series_color(i), width=2,
                                                                                  style=Qt.PenStyle.DotLine))
            self._rates.addItem(curve)
            item.legend.addItem(curve, f"{gpu.gpu_name} tokens/s")
        self._rates.setYRange(0, max([*rates, 1.0]) * 1.15, padding=0)

    @staticmethod
    def _memory_curves(item, result, xs):
        """One 'memory needed' curve per distinct series (GPUs of one target share their traces)."""
        curves: dict[tuple, str] = {}
        for i, gpu in enumerate(result.gpus):
            curves.setdefault(tuple(p.per_gpu[i].required_bytes for p in result.points), gpu.target)
        for n, (series, target) in enumerate(curves.items()):
            style = Qt.PenStyle.SolidLine if n == 0 else Qt.PenStyle.DashDotLine
            item.plot(xs, [v / GIB for v in series], pen=pg.mkPen(plot_colors()[1], width=2, style=style),
                      symbol="o", symbolSize=5,
                      name="memory needed" if len(curves) == 1 else f"memory needed ({target} kernels)")

    @staticmethod
    def _capacity_line(item, capacity_gib: float, name: str, i: int):
        line = pg.InfiniteLine(pos=capacity_gib, angle=0, pen=_pen(i, dashed=True),
                               label=f"{name} available {capacity_gib:.1f} GiB",
                               labelOpts={"position": min(0.02 + 0.16 * i, 0.5), "color": series_color(i),
                                          "anchors": [(0, 1), (0, 1)]})
        item.addItem(line)


def _power_ticks(xs, most: int = 8) -> list[tuple[float, str]]:
    """Log-axis ticks at the powers of two among ``xs``, every k-th of them when there are more than ``most``
    (a context sweep can span 256 to 16,777,216: 17 labels would overlap)."""
    powers = [n for n in xs if n & (n - 1) == 0]
    step = max(1, math.ceil(len(powers) / most))
    return [(math.log10(n), f"{n:,}") for n in powers[::-1][::step][::-1]]


def _needed_gib(result) -> list[float]:
    return [g.required_bytes / GIB for p in result.points for g in p.per_gpu]


def _leave_room_for_legend(item, values, lines):
    """Y from 0 to well above the highest curve or capacity line, so the legend covers neither."""
    top = max([*values, *lines, 1e-3])
    item.setYRange(0, top * (1.2 + 0.07 * (len(lines) + 1)), padding=0)


def _interpolate(xs, ys, x):
    """Linear interpolation of ys at x (xs ascending); clamps at the ends."""
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]

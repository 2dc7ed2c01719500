"""Roofline chart (log-log): each GPU's roofline min(peak, intensity × bandwidth) and the model's layers as
points under it, placed at their arithmetic intensity and the FLOP rate their roofline bound allows.
Hovering a point names the layer."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyqtgraph as pg

from torchbudget.engine.results import Phase
from torchbudget.gui.backend import missing_tensor_rate, peak_rate_note
from torchbudget.gui.colors import plot_colors, series_color
from torchbudget.engine import vocab
from torchbudget.gui.plots import make_plot

TERA = 1e12


def layer_points(latency) -> list[tuple[str, float, float, float]]:
    """(module path, FLOP per byte, TFLOP/s at the bound, FLOPs) per module with forward arithmetic."""
    acc = defaultdict(lambda: [0, 0, 0.0])   # path -> [flops, bytes, bound ms]
    for op in latency.per_op:
        if op.phase is not Phase.FORWARD:
            continue
        a = acc[op.module_path]
        a[0] += op.flops
        a[1] += op.bytes_moved
        a[2] += op.bound_ms
    return [(path or "(model)", flops / moved, flops / (ms / 1000.0) / TERA, flops)
            for path, (flops, moved, ms) in acc.items() if flops > 0 and moved > 0 and ms > 0]


class RooflineView:
    def __init__(self):
        self.widget = make_plot("Roofline (forward pass, per layer)", "Arithmetic intensity (FLOP/byte, log scale)",
                                "Performance (TFLOP/s, log scale)", legend_offset=(-10, -40))
        self.widget.getPlotItem().setLogMode(x=True, y=True)
        self._tip = ("Each point is a layer: FLOPs ÷ bytes it moves (x) and the FLOP rate its roofline bound "
                     "allows (y). Below the slanted part a layer is memory-bound, under the flat part "
                     "compute-bound. Peaks are datasheet dense rates for the workload's dtype.")
        self.widget.setToolTip(self._tip)
        self.points_shown = 0

    def show(self, plans, precision: str):
        item = self.widget.getPlotItem()
        item.clear()
        self.points_shown = 0
        if not plans:
            return
        points = layer_points(plans[0].latency)
        intensities = [p[1] for p in points] or [1.0]
        lo, hi = min(intensities) / 4, max(max(intensities) * 4, 1000.0)
        xs = np.logspace(np.log10(lo), np.log10(hi), 200)
        chosen = vocab.precision(precision)
        dtype = chosen.autocast_dtype or chosen.param_dtype   # what its matmuls compute in
        notes = []
        for i, plan in enumerate(plans):
            gpu = plan.gpu
            peak = gpu.peak_flops_per_s(dtype, tensor_core=True, tf32=precision == "tf32")
            ys = np.minimum(peak, xs * gpu.bandwidth_bytes_per_s) / TERA
            missing = missing_tensor_rate(gpu, precision)
            rate = f" (fp32 rate: no {missing} tensor cores)" if missing else ""
            item.plot(xs, ys, pen=pg.mkPen(series_color(i), width=2),
                      name=f"{gpu.name}: {peak / TERA:.0f} TFLOP/s{rate}, {gpu.bandwidth_gbs:.0f} GB/s")
            notes += [peak_rate_note(gpu, precision)] if missing else []
        self.widget.setToolTip("\n".join([self._tip, *notes]))
        if points:
            _, foreground = plot_colors()
            # items added directly are not log-transformed by the PlotItem: place them in log10 coordinates
            scatter = pg.ScatterPlotItem(
                x=np.log10([p[1] for p in points]), y=np.log10([p[2] for p in points]),
                data=[f"{p[0]}\n{p[1]:.1f} FLOP/byte, {p[2]:.3g} TFLOP/s at the bound" for p in points],
                size=7, brush=pg.mkBrush(series_color(0)), pen=pg.mkPen(foreground, width=0.5),
                hoverable=True, hoverSize=11, hoverBrush=pg.mkBrush(series_color(1)),
                tip=lambda x, y, data: data,
                name=f"layers on {plans[0].gpu.name}")
            item.addItem(scatter)
            self.points_shown = len(points)

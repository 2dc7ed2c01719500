"""Roofline chart (log-log): each GPU's roofline min(peak, intensity × bandwidth) and the model's forward
kernels as points under it, placed at their arithmetic intensity and the FLOP rate their roofline bound
allows. Every figure is the engine's (engine.latency.LatencyReport.per_op): nothing is re-aggregated or
re-derived here. Hovering a point names the layer and the op."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from torchbudget.engine.planner import missing_tensor_rate
from torchbudget.engine.results import Phase
from torchbudget.gui.colors import plot_colors, series_color
from torchbudget.gui.plots import make_plot

TERA = 1e12


def kernel_points(latency) -> list:
    """The engine's own roofline points (engine.latency.OpPoint): forward kernels that do arithmetic."""
    return [p for p in latency.per_op if p.phase is Phase.FORWARD and p.flops > 0 and p.bytes_moved > 0]


def ceiling(latency) -> float:
    """The highest rate any of this workload's kernels can reach on the plan's GPU (FLOP/s): the engine's
    per-op peak, so precision, tensor cores and TF32 are the planner's rules, not re-derived here."""
    return max((p.peak_flops_per_s for p in latency.per_op if p.flops > 0), default=0.0)


class RooflineView:
    def __init__(self):
        self.widget = make_plot("Roofline (forward pass, per kernel)", "Arithmetic intensity (FLOP/byte, log scale)",
                                "Performance (TFLOP/s, log scale)", legend_offset=(-10, -40))
        self.widget.getPlotItem().setLogMode(x=True, y=True)
        self._tip = ("Each point is a forward kernel (an aten op) of a layer: FLOPs ÷ bytes it moves (x) and the "
                     "FLOP rate its roofline bound allows (y). Below the slanted part a kernel is memory-bound, "
                     "under the flat part compute-bound. Peaks are datasheet dense rates for the kernel's dtype.")
        self.widget.setToolTip(self._tip)
        self.points_shown = 0

    def show(self, plans):
        item = self.widget.getPlotItem()
        item.clear()
        self.points_shown = 0
        if not plans:
            return
        points = kernel_points(plans[0].latency)
        intensities = [p.arithmetic_intensity for p in points] or [1.0]
        lo, hi = min(intensities) / 4, max(max(intensities) * 4, 1000.0)
        xs = np.logspace(np.log10(lo), np.log10(hi), 200)
        for i, plan in enumerate(plans):
            gpu = plan.gpu
            peak = ceiling(plan.latency) or gpu.peak_flops_per_s("float32")
            ys = np.minimum(peak, xs * gpu.bandwidth_bytes_per_s) / TERA
            precision = plan.result.options.precision if plan.result is not None else "fp32"
            missing = missing_tensor_rate(gpu, precision)
            rate = f" (fp32 rate: no {missing} tensor cores)" if missing else ""
            item.plot(xs, ys, pen=pg.mkPen(series_color(i), width=2),
                      name=f"{gpu.name}: {peak / TERA:.0f} TFLOP/s{rate}, {gpu.bandwidth_gbs:.0f} GB/s")
        notes = [note for plan in plans for note in plan.notes]
        self.widget.setToolTip("\n".join([self._tip, *dict.fromkeys(notes)]))
        if points:
            _, foreground = plot_colors()
            # items added directly are not log-transformed by the PlotItem: place them in log10 coordinates
            scatter = pg.ScatterPlotItem(
                x=np.log10([p.arithmetic_intensity for p in points]),
                y=np.log10([p.attainable_flops_per_s / TERA for p in points]),
                data=[f"{p.module_path or '(model)'}\n{p.op}: {p.arithmetic_intensity:.1f} FLOP/byte, "
                      f"{p.attainable_flops_per_s / TERA:.3g} TFLOP/s at the bound "
                      f"({'compute' if p.compute_bound else 'memory'}-bound)" for p in points],
                size=7, brush=pg.mkBrush(series_color(0)), pen=pg.mkPen(foreground, width=0.5),
                hoverable=True, hoverSize=11, hoverBrush=pg.mkBrush(series_color(1)),
                tip=lambda x, y, data: data,
                name=f"kernels on {plans[0].gpu.name}")
            item.addItem(scatter)
            self.points_shown = len(points)

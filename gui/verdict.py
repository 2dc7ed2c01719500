"""The verdict: fits / tight / does not fit (icon + words + colour), a stacked memory bar against the
GPU's capacity with a legend, and the headline figures (largest batch, latency, throughput); for prefill/decode
the generation figures (KV cache, tokens/s, time to first token, max concurrent sequences, max context) and for
training the fine-tuning figures (trainable parameters, global batch), for token inputs the longest sequence, and
for several GPUs (a strategy) the verdict, memory and largest batch per rank, a step-time bar (compute, exposed
and overlapped communication) and the cluster's figures — all from engine.report.figures and the plan."""
from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import QFormLayout, QFrame, QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from torchbudget.engine.overheads import Overheads
from torchbudget.engine.report.figures import (
    distributed_figures, finetune_figures, generation_figures, sequence_figures,
)
from torchbudget.engine.report.labels import CATEGORY_LABELS, CATEGORY_TIPS, VERDICT_LABELS, verdict_rule
from torchbudget.engine.report.units import human_bytes, human_ms
from torchbudget.gui.colors import CATEGORY_COLORS, VERDICT_COLORS, VERDICT_TEXT, contrast_text


class MemoryBar(QWidget):
    """Stacked horizontal bar of memory by category, scaled so both the need and the capacity fit."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.segments: list[tuple[str, int, str]] = []   # (label, bytes, colour)
        self.capacity_bytes = 0
        self.setMinimumHeight(44)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self):
        return QSize(320, 48)

    def set_data(self, segments, capacity_bytes: int):
        self.segments = [s for s in segments if s[1] > 0]
        self.capacity_bytes = capacity_bytes
        total = sum(s[1] for s in self.segments)
        parts = "\n".join(f"{label}: {human_bytes(n)}" for label, n, _ in self.segments)
        self.setToolTip(f"Needed {human_bytes(total)} of {human_bytes(capacity_bytes)} available\n{parts}")
        self.update()

    def paintEvent(self, _event):
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text_color = self.palette().color(QPalette.ColorRole.WindowText)
        bar = QRectF(1, 4, self.width() - 2, self.height() - 22)
        painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Mid), 1))
        painter.setBrush(self.palette().color(QPalette.ColorRole.Base))
        painter.drawRect(bar)
        total = sum(n for _, n, _ in self.segments)
        scale_bytes = max(total, self.capacity_bytes, 1)
        x = bar.left()
        painter.setPen(Qt.PenStyle.NoPen)
        for _, nbytes, color in self.segments:
            w = bar.width() * nbytes / scale_bytes
            painter.setBrush(QColor(color))
            painter.drawRect(QRectF(x, bar.top() + 1, w, bar.height() - 2))
            x += w
        if self.capacity_bytes:
            cx = bar.left() + bar.width() * self.capacity_bytes / scale_bytes
            painter.setPen(QPen(text_color, 2, Qt.PenStyle.DashLine))
            painter.drawLine(int(cx), int(bar.top() - 3), int(cx), int(bar.bottom() + 3))
            painter.setPen(text_color)
            label = f"available {human_bytes(self.capacity_bytes)}"
            width = painter.fontMetrics().horizontalAdvance(label)
            lx = min(max(cx - width / 2, 0), self.width() - width)
            painter.drawText(QRectF(lx, bar.bottom() + 2, width + 2, 16), Qt.AlignmentFlag.AlignLeft, label)
        painter.end()


STEP_COLORS = {"compute": "#0072B2", "exposed": "#D55E00", "overlapped": "#E69F00"}
STEP_LABELS = {"compute": "Compute", "exposed": "Exposed communication", "overlapped": "Overlapped communication"}


class StepBar(QWidget):
    """A distributed step: compute then exposed communication on one bar (their sum is the step), and the
    communication that overlaps compute as a thinner bar under the compute it hides behind. The figures are
    the plan's (engine.distributed.comm.CommReport)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.compute_ms = self.exposed_ms = self.overlapped_ms = 0.0
        self.setMinimumHeight(40)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self):
        return QSize(320, 40)

    def set_report(self, report) -> None:
        self.compute_ms, self.exposed_ms = report.compute_ms, report.exposed_ms
        self.overlapped_ms = report.overlapped_ms
        self.setToolTip(f"Step {human_ms(report.step_ms)}: compute {human_ms(report.compute_ms)} + exposed "
                        f"communication {human_ms(report.exposed_ms)}; {human_ms(report.overlapped_ms)} of "
                        "communication overlaps compute (the thin bar)")
        self.update()

    def segments(self) -> list[tuple[str, float, float, bool]]:
        """(part, start ms, length ms, thin) as drawn."""
        return [("compute", 0.0, self.compute_ms, False), ("exposed", self.compute_ms, self.exposed_ms, False),
                ("overlapped", max(self.compute_ms - self.overlapped_ms, 0.0), self.overlapped_ms, True)]

    def paintEvent(self, _event):
        painter = QPainter(self)
        step = self.compute_ms + self.exposed_ms
        if step <= 0:
            painter.end()
            return
        width = self.width() - 2
        painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Mid), 1))
        painter.setBrush(self.palette().color(QPalette.ColorRole.Base))
        painter.drawRect(QRectF(1, 2, width, 22))
        painter.setPen(Qt.PenStyle.NoPen)
        for part, start, length, thin in self.segments():
            if length <= 0:
                continue
            x, w = 1 + width * start / step, max(width * length / step, 1.0)
            painter.setBrush(QColor(STEP_COLORS[part]))
            painter.drawRect(QRectF(x, 28, w, 8) if thin else QRectF(x, 3, w, 20))
        painter.end()


class Swatch(QFrame):
    def __init__(self, color: str, parent=None):
        super().__init__(parent)
        self.setFixedSize(12, 12)
        self.setStyleSheet(f"background: {color}; border: 1px solid palette(mid);")


class VerdictWidget(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.badge = QLabel("…")
        self.badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.badge.setWordWrap(True)   # "Fits per rank on 8× H100 SXM" in a narrow column
        font = self.badge.font()
        font.setPointSizeF(font.pointSizeF() * 1.5)
        font.setBold(True)
        self.badge.setFont(font)
        self.badge.setMinimumHeight(self.badge.fontMetrics().height() * 2)
        self.badge.setToolTip(verdict_rule(Overheads()))
        layout.addWidget(self.badge)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.memory_title = QLabel("Memory")
        self.memory_title.setStyleSheet("font-weight: bold;")
        self.memory_title.setToolTip("The peak by category; with several GPUs, rank 0's (every rank holds as much)")
        layout.addWidget(self.memory_title)
        self.bar = MemoryBar()
        layout.addWidget(self.bar)
        self.legend = QGridLayout()
        self.legend.setHorizontalSpacing(6)
        self.legend.setVerticalSpacing(2)
        layout.addLayout(self.legend)
        # several GPUs: the step, compute vs communication
        self.step_title = QLabel("Step per rank")
        self.step_title.setStyleSheet("font-weight: bold;")
        self.step_title.setWordWrap(True)
        self.step_title.setToolTip("One step of rank 0: compute, then the communication compute cannot hide "
                                   "(exposed); the thin bar is communication that runs while compute does")
        layout.addWidget(self.step_title)
        self.step_bar = StepBar()
        layout.addWidget(self.step_bar)
        self.step_legend = QGridLayout()
        self.step_legend.setHorizontalSpacing(6)
        self.step_legend.setVerticalSpacing(2)
        self.step_labels: dict[str, QLabel] = {}
        for row, part in enumerate(STEP_COLORS):
            self.step_legend.addWidget(Swatch(STEP_COLORS[part]), row, 0)
            self.step_labels[part] = QLabel()
            self.step_legend.addWidget(self.step_labels[part], row, 1)
        layout.addLayout(self.step_legend)
        self._show_step(None)

        figures = QFormLayout()
        self.figures = figures
        self.max_batch = QLabel("—")
        self.max_batch.setToolTip("Largest batch size whose peak memory still fits on this GPU (solved by bisection "
                                  "on traced memory)")
        self.bound = QLabel("—")
        self.bound.setToolTip("Roofline lower bound per step: each op takes at least max(FLOPs / peak FLOP/s, "
                              "bytes moved / memory bandwidth) at datasheet peaks; real runs are slower.")
        self.estimate = QLabel("—")
        self.estimate.setToolTip("Roofline with realistic efficiency factors and a kernel-launch overhead per op.")
        self.throughput = QLabel("—")
        self.throughput.setToolTip("Samples per second at the estimated latency (batch / estimate); the bound gives "
                                   "the ceiling in brackets.")
        self.peak_note = QLabel()
        self.peak_note.setWordWrap(True)
        self.peak_note.setVisible(False)
        self.peak_note.setToolTip("What the planner wants you to know about this plan (the CLI prints the same "
                                  "notes)")
        self.others = QLabel()
        self.others.setWordWrap(True)
        self.others.setToolTip("The verdict for each other ticked GPU")
        for text, label in (("Largest batch", self.max_batch), ("Latency bound", self.bound),
                            ("Latency estimate", self.estimate), ("Throughput", self.throughput)):
            figures.addRow(text, label)
            if label is self.estimate:
                figures.addRow("", self.peak_note)
        # generation / fine-tuning figures (engine.report.figures), keyed by Figure.key: rows made per plan
        self.extra_title = QLabel()
        self.extra_title.setStyleSheet("font-weight: bold;")
        self.extra_title.setVisible(False)
        figures.addRow(self.extra_title)
        self.extra = QFormLayout()
        figures.addRow(self.extra)
        self.extra_labels: dict[str, QLabel] = {}
        figures.addRow("Other GPUs", self.others)
        layout.addLayout(figures)
        layout.addStretch(1)

    def set_busy(self, text: str = "Analysing…"):
        self.badge.setText(text)
        self.badge.setStyleSheet("")

    def set_error(self, message: str):
        self.badge.setText("⚠  Cannot analyse")
        self.badge.setStyleSheet("")
        self.summary.setText(message)

    def verdict_text(self) -> str:
        return self.badge.text()

    def set_plans(self, plans: list):
        """``plans[0]`` is the primary GPU's plan; the rest are summarised in one line each."""
        if not plans:
            return
        plan = plans[0]
        key = plan.verdict.value
        color = VERDICT_COLORS[key]
        self.badge.setText(f"{VERDICT_TEXT[key]}  on {plan.gpu.name}")
        self.badge.setStyleSheet(f"background: {color}; color: {contrast_text(color)}; border-radius: 6px;")
        need, cap = plan.required_bytes, plan.capacity_bytes
        spare = "spare" if plan.headroom_bytes >= 0 else "short"
        d = plan.distributed
        if d is not None:   # memory, the verdict and the largest batch are rank 0's: each GPU's
            self.badge.setText(f"{VERDICT_TEXT[key]} per rank  on {d.world_size}× {plan.gpu.name}")
        self.badge.setToolTip(verdict_rule(plan.memory.overheads))
        source = plan.result or plan.workload   # plan_result always keeps the trace; a Plan need not
        target = source.options.target if source is not None else "unknown"
        self.summary.setText(("Each rank (GPU) needs " if d is not None else "Needs ")
                             + f"{human_bytes(need)} of {human_bytes(cap)} available "
                             f"({human_bytes(abs(plan.headroom_bytes))} {spare}); largest share: "
                             f"{CATEGORY_LABELS[plan.dominant_category].lower()}. Traced for {target} kernels.")
        self.summary.setToolTip("Available: the memory the GPU offers before CUDA starts; needed: the peak, CUDA "
                                f"context included. {target}: the compute capability whose kernel choices "
                                "(attention backend, autocast lists) the trace follows.")
        # every category, the CUDA context included, must fit in the available memory
        segments = [(CATEGORY_LABELS[c], n, CATEGORY_COLORS[c]) for c, n in plan.memory.by_category.items()]
        self.bar.set_data(segments, cap)
        self._fill_legend(plan.memory.by_category)
        self.memory_title.setText(f"Memory per rank (rank 0 of {d.world_size}, {d.strategy})" if d is not None
                                  else "Memory")
        self._show_step(d)
        for label, one, several in ((self.max_batch, "Largest batch", "Largest batch per rank"),
                                    (self.bound, "Latency bound", "Compute bound per rank"),
                                    (self.estimate, "Latency estimate", "Compute per rank")):
            self.figures.labelForField(label).setText(several if d is not None else one)
        self.max_batch.setText("—" if plan.max_batch is None else
                               "none (batch 1 does not fit)" if plan.max_batch == 0 else f"{plan.max_batch}")
        latency = plan.latency
        self.bound.setText(human_ms(latency.lower_bound_ms))
        self.estimate.setText(human_ms(latency.estimate_ms))
        self.peak_note.setText("\n".join(f"⚠ {note}" for note in plan.notes))
        self.peak_note.setVisible(bool(plan.notes))
        self.throughput.setText(f"{plan.throughput_samples_per_s:,.0f} samples/s "
                                f"(≤ {latency.max_throughput_samples_per_s:,.0f})")
        self._show_extra(plan)
        self.others.setText("\n".join(
            f"{p.gpu.name}: {VERDICT_LABELS[p.verdict.value].lower()}"
            f" ({human_bytes(p.required_bytes)} of {human_bytes(p.capacity_bytes)})" for p in plans[1:]) or "—")

    def _show_step(self, d) -> None:
        """The step-time bar of a distributed plan (hidden on one GPU)."""
        for widget in (self.step_title, self.step_bar, *self.step_labels.values()):
            widget.setVisible(d is not None)
        for i in range(self.step_legend.count()):
            self.step_legend.itemAt(i).widget().setVisible(d is not None)
        if d is None:
            return
        c = d.comm
        self.step_title.setText(f"Step per rank: {human_ms(d.step_ms)}")
        self.step_bar.set_report(c)
        for part, ms in (("compute", c.compute_ms), ("exposed", c.exposed_ms), ("overlapped", c.overlapped_ms)):
            self.step_labels[part].setText(f"{STEP_LABELS[part]} {human_ms(ms)}")

    def step_text(self) -> str:
        """The step bar's legend as shown ('' on one GPU)."""
        if not self.step_bar.isVisibleTo(self):
            return ""
        return "; ".join(self.step_labels[p].text() for p in STEP_COLORS)

    def _fill_legend(self, by_category):
        while self.legend.count():
            item = self.legend.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        shown = [(c, n) for c, n in by_category.items() if n > 0]
        for i, (category, nbytes) in enumerate(shown):
            row, col = i, 0
            swatch = Swatch(CATEGORY_COLORS[category])
            text = QLabel(f"{CATEGORY_LABELS[category]} {human_bytes(nbytes)}")
            text.setToolTip(CATEGORY_TIPS[category])
            self.legend.addWidget(swatch, row, col * 2)
            self.legend.addWidget(text, row, col * 2 + 1)

    def _show_extra(self, plan):
        """The generation, several-GPU or fine-tuning figures of ``plan`` (and a token workload's longest
        sequence); a generation plan's own rows replace the largest batch and samples/s (sequences and tokens are
        what count there), a distributed plan's the samples/s (the job's throughput is among its figures)."""
        generation = generation_figures(plan)
        several = distributed_figures(plan)
        # serving over several GPUs (tensor parallel): the generation figures, then the cluster's
        rows = generation + several if generation else several or finetune_figures(plan)
        title = ("Generation (per rank)" if several else "Generation") if generation else \
            "Several GPUs" if several else "Fine-tuning" if rows else ""
        rows = sequence_figures(plan) + rows
        self.figures.setRowVisible(self.max_batch, not generation)
        self.figures.setRowVisible(self.throughput, not generation and not several)
        while self.extra.rowCount():
            self.extra.removeRow(0)
        self.extra_labels = {}
        self.extra_title.setText(title or "Sequence length")
        self.extra_title.setVisible(bool(rows))
        for figure in rows:
            value = QLabel(figure.value)
            value.setWordWrap(True)
            value.setToolTip(figure.tip)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            name = QLabel(figure.label)
            name.setToolTip(figure.tip)
            self.extra.addRow(name, value)
            self.extra_labels[figure.key] = value

    def figure_text(self, key: str) -> str | None:
        """What the verdict shows for an engine.report.figures key (None: not shown)."""
        label = self.extra_labels.get(key)
        return label.text() if label is not None else None

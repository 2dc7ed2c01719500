"""The main window: workload and hardware panels on the left, the verdict in the middle, the views in tabs.
The window subscribes to the workload state (gui.state): every change that leaves the fields describing a
workload asks the JobRunner for a new analysis; results arrive stage by stage through signals and are shown
only while their workload is still what the fields say."""
from __future__ import annotations

import importlib
import threading

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QHeaderView, QLabel, QLineEdit, QMainWindow, QProgressBar, QPushButton, QCheckBox, QScrollArea, QSplitter,
    QTableView, QTabWidget, QTreeView, QVBoxLayout, QHBoxLayout, QWidget,
)

from torchbudget.engine.errors import UserError
from torchbudget.engine.workload import Workload
from torchbudget.gui import backend, user_code
from torchbudget.gui.analysis_job import Request, has_context_axis, has_seq_len_axis, run_request
from torchbudget.gui.hardware_panel import HardwarePanel
from torchbudget.gui.layer_model import LayerFilterProxy, LayerTreeModel, ModuleLatency
from torchbudget.gui.model_runner import ModelProcessRunner
from torchbudget.gui.settings import Settings, first_workload
from torchbudget.gui.state import DEFAULT_WORKLOAD, Change, WorkloadState, image_side
from torchbudget.gui.verdict import VerdictWidget
from torchbudget.gui.workers import JobRunner
from torchbudget.gui.workload_panel import WorkloadPanel

VIEW_TABS = ("Memory vs batch", "Latency vs batch", "Throughput vs batch", "Memory vs resolution", "Roofline",
             "Comparison")


def batch_unit(workload: Workload) -> str:
    """What the batch plots count: samples, sequences (token inputs) or concurrent sequences (decode)."""
    if workload.options.mode == "decode":
        return "decode"
    return "sequences" if workload.seq_len is not None else "samples"


def _import_view_modules():
    try:
        for name in ("pyqtgraph", "torchbudget.gui.plots", "torchbudget.gui.roofline_view", "torchbudget.gui.comparison_view"):
            importlib.import_module(name)
    except Exception:  # noqa: BLE001 - _ensure_views imports them again and raises in place
        pass


class MainWindow(QMainWindow):
    def __init__(self, settings: Settings | None = None, model_timeout_s: float | None = None, cache=None,
                 may_list_models: bool = True, startup_notes: tuple[str, ...] = ()):
        """``startup_notes``: what the launch path ignored (gui.app.Preload), said with the window's own."""
        super().__init__()
        self._may_list_models = may_list_models   # False on the launch path: gui.app fills the list later
        self.setWindowTitle("TorchBudget — will it fit, how fast can it run?")
        self.settings = settings or Settings()
        self.state = WorkloadState()
        self.cache = cache if cache is not None else backend.trace_cache()
        self.file_cache = backend.file_model_cache()
        self.runner = JobRunner(self)
        self.defaults_runner = JobRunner(self, debounce_ms=0)   # a model's default input shape
        self.model_runner = ModelProcessRunner(self)
        if model_timeout_s is not None:
            self.model_runner.timeout_s = model_timeout_s
        self.evaluation = None        # latest backend.Evaluation shown
        self.busy = False
        self._restoring = True
        self._sized_for = None
        self._file_sweeps_for = None    # (workload key, GPU names) of the sweeps shown for a .py model
        self.comparison = None
        self.batch_sweep = None
        self.resolution_sweep = None
        self._sweep_keys: dict[str, tuple | None] = {"batch": None, "resolution": None}
        self._build()
        self._connect()
        from torchbudget.gui.export import install_actions
        install_actions(self)
        # restore hardware before the workload: the first request saves both back to the settings
        self._restoring = True
        ticked, primary = self.settings.ticked_gpus(), self.settings.primary_gpu()
        self.hardware_panel.reload(ticked=ticked, primary=primary or backend.default_gpu_name())
        notes = [*startup_notes, *self._restore_workload()]
        self._restoring = False
        geometry = self.settings.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1440, 900)
        notes += self.settings.problems()
        notes += [n for n in (backend.catalog_problem(), backend.store_problem(getattr(self.cache, "store", None)))
                  if n]
        self.show_notes(notes)
        if self.state.pending_inputs_for:
            self._fetch_default_inputs(self.state.pending_inputs_for)
        else:
            self.request(immediate=True)

    def _restore_workload(self) -> list[str]:
        """The last session's workload, unless it cannot be taken or runs code the user does not allow now."""
        notes = []
        workload = first_workload(self.settings)
        if backend.is_file_model(workload.model) and not user_code.confirm_run(
                self, workload.model, "The last session analysed a model defined in this Python file"):
            notes.append(f"did not run {user_code.model_path(workload.model)} from the last session (not "
                         f"allowed); showing {DEFAULT_WORKLOAD.model} instead")
            workload = DEFAULT_WORKLOAD
        try:
            self.load_workload(workload, source="settings")
        except UserError as exc:
            notes.append(f"the last workload was ignored ({exc})")
            self.load_workload(DEFAULT_WORKLOAD, source="settings")
        try:
            self.state.set_cluster(source="settings", **self.settings.cluster())
        except (UserError, TypeError) as exc:
            notes.append(f"the last cluster was ignored ({exc})")
        return notes

    # -- layout ---------------------------------------------------------------------------
    def _build(self):
        self.workload_panel = WorkloadPanel(self.settings.recent_models(), may_list_models=self._may_list_models,
                                            state=self.state)
        self.hardware_panel = HardwarePanel(load=False)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self.workload_panel)
        left_layout.addWidget(self.hardware_panel, 1)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(420)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        self.verdict = VerdictWidget()
        self.verdict.setMinimumWidth(290)
        self.tabs = QTabWidget()
        self.layer_model = LayerTreeModel(self)
        self.layer_proxy = LayerFilterProxy(self)
        self.layer_proxy.setSourceModel(self.layer_model)
        self.layer_view = QTreeView()
        self.layer_view.setModel(self.layer_proxy)
        self.layer_view.setSortingEnabled(True)
        self.layer_view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)   # engine order until a header is clicked
        self.layer_view.setAlternatingRowColors(True)
        self.layer_view.header().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.layer_search = QLineEdit()
        self.layer_search.setPlaceholderText("Search layers by name or type…")
        self.layer_search.setClearButtonEnabled(True)
        self.only_uncounted = QCheckBox("Only layers with uncounted ops")
        self.coverage_label = QLabel()
        layers = QWidget()
        lay = QVBoxLayout(layers)
        bar = QHBoxLayout()
        bar.addWidget(self.layer_search, 1)
        bar.addWidget(self.only_uncounted)
        bar.addWidget(self.coverage_label)
        lay.addLayout(bar)
        lay.addWidget(self.layer_view)
        self.tabs.addTab(layers, "Layers")

        # the plot tabs need pyqtgraph (and numpy): built right after the first verdict, or when first used
        self._views = None
        self._view_pages = {}
        for title in VIEW_TABS:
            page = QLabel("Loading…")
            page.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self._view_pages[title] = page
            self.tabs.addTab(page, title)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(self.verdict)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(2, 1)
        splitter.setSizes([440, 300, 860])
        self.setCentralWidget(splitter)

        self.progress_label = QLabel("")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setMaximumWidth(120)
        self.progress_bar.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.notice_label = QLabel()   # what was ignored at start (a broken GPU file, settings, cache)
        self.notice_label.setVisible(False)
        self.notes: list[str] = []
        self.statusBar().addWidget(self.notice_label)
        self.statusBar().addWidget(self.progress_label, 1)
        self.statusBar().addPermanentWidget(self.progress_bar)
        self.statusBar().addPermanentWidget(self.cancel_button)

    def _connect(self):
        self.state.subscribe(self._on_state_changed)
        self.defaults_runner.finished.connect(lambda pair: self.state.apply_default_inputs(*pair))
        self.defaults_runner.failed.connect(self._on_defaults_failed)
        self.hardware_panel.tickedChanged.connect(self._on_gpus_changed)
        self.hardware_panel.primaryChanged.connect(self._on_primary_changed)
        self.layer_search.textChanged.connect(self.layer_proxy.set_search)
        self.only_uncounted.toggled.connect(self.layer_proxy.set_only_uncounted)
        self.runner.partial.connect(self._on_partial)
        self.runner.failed.connect(self._on_failed)
        self.runner.progress.connect(self.progress_label.setText)
        self.runner.busy.connect(self._on_busy)
        self.runner.finished.connect(lambda _r: self.progress_label.setText("Up to date"))
        self.cancel_button.clicked.connect(self.cancel)
        self.model_runner.finished.connect(self._on_file_model_result)
        self.model_runner.sweeps.connect(self._on_file_sweeps)
        self.model_runner.sweepsFailed.connect(self._on_file_sweeps_failed)
        self.model_runner.failed.connect(self._on_file_model_failed)

    def _ensure_views(self):
        """Builds the plot, roofline and comparison tabs (once) and fills them with what is already known."""
        if self._views is not None:
            return self._views
        import pyqtgraph as pg

        from torchbudget.gui.comparison_view import ComparisonCharts, ComparisonModel
        from torchbudget.gui.plots import SweepPlots
        from torchbudget.gui.roofline_view import RooflineView

        pg.setConfigOptions(antialias=True)
        plots, roofline = SweepPlots(), RooflineView()
        comparison_model = ComparisonModel(self)
        table = QTableView()
        table.setModel(comparison_model)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        charts = ComparisonCharts()
        compare_page = QWidget()
        compare_layout = QVBoxLayout(compare_page)
        compare_layout.addWidget(table, 1)
        chart_split = QSplitter(Qt.Orientation.Horizontal)
        chart_split.addWidget(charts.memory)
        chart_split.addWidget(charts.throughput)
        compare_layout.addWidget(chart_split, 3)
        self._views = dict(plots=plots, roofline=roofline, comparison_model=comparison_model,
                           comparison_table=table, comparison_charts=charts)
        current = self.tabs.currentIndex()
        pages = (*plots.widgets(), roofline.widget, compare_page)
        for title, page in zip(VIEW_TABS, pages):
            index = self.tabs.indexOf(self._view_pages.pop(title))
            self.tabs.removeTab(index)
            self.tabs.insertTab(index, page, title)
        self.tabs.setCurrentIndex(current)
        if self.evaluation is not None and self.evaluation.result is not None:
            roofline.show(list(self.evaluation.plans))
        return self._views

    def _load_views_soon(self):
        """Imports the plot modules off the UI thread, then builds the tabs (unless used before that)."""
        if getattr(self, "_views_loader", None) is not None:
            return
        self._views_loader = threading.Thread(target=_import_view_modules, name="torchbudget-views", daemon=True)
        self._views_loader.start()
        poll = QTimer(self)
        poll.setInterval(20)

        def check():
            if not self._views_loader.is_alive():
                poll.stop()
                self._ensure_views()
        poll.timeout.connect(check)
        poll.start()

    plots = property(lambda self: self._ensure_views()["plots"])
    roofline = property(lambda self: self._ensure_views()["roofline"])
    comparison_model = property(lambda self: self._ensure_views()["comparison_model"])
    comparison_table = property(lambda self: self._ensure_views()["comparison_table"])
    comparison_charts = property(lambda self: self._ensure_views()["comparison_charts"])

    # -- the workload ----------------------------------------------------------------------------
    def load_workload(self, workload: Workload, *, source: str = "file") -> list[str]:
        """Show ``workload`` (a file's, the last session's), traced for the primary GPU's kernels as every
        plan here is. Raises UserError, changing nothing, when the app cannot take it. Returns notes."""
        notes = []
        primary = self.hardware_panel.primary()
        if primary is not None:
            on_gpu = workload.on_gpu(primary)
            if on_gpu.options.target != workload.options.target and source == "file":
                notes.append(f"saved for {workload.options.target} kernels; planned for {primary.name}'s "
                             f"{on_gpu.options.target}")
            workload = on_gpu
        self.state.set(workload, source=source)
        if not workload.inputs and not backend.is_file_model(workload.model):
            self.state.pick_model(workload.model, source=source)   # its default input, as when picked
        return notes

    def show_notes(self, notes) -> None:
        """What was ignored at start, in the status bar (in full in its tooltip)."""
        self.notes = list(dict.fromkeys(n for n in notes if n))
        self.notice_label.setVisible(bool(self.notes))
        if self.notes:
            first = self.notes[0]
            more = f" (+{len(self.notes) - 1} more)" if len(self.notes) > 1 else ""
            self.notice_label.setText(f"⚠ Ignored: {first[:90] + '…' if len(first) > 90 else first}{more}")
            self.notice_label.setToolTip("Ignored at start:\n" + "\n".join(self.notes))

    def show_file_error(self, error: Exception) -> None:
        """A workload file that could not be opened or saved, an export that failed: said once, under the
        workload's title; the workload on screen stays as it was."""
        self.workload_panel.errors["file"].show_message(str(error))
        self.progress_label.setText(f"Error: {error}")

    def _on_state_changed(self, change: Change):
        if self._restoring:
            return
        if "batch" in change.fields and self.batch_sweep is not None:
            self.plots.mark_batch(change.workload.batch_size)   # instant, before any computation
        if "pending" in change.fields and self.state.pending_inputs_for:
            self._fetch_default_inputs(self.state.pending_inputs_for)
        if not self.state.ready:
            # half-typed: what is running was asked for other fields; its results must not land
            self.runner.cancel()
            return
        self.request()

    def _on_primary_changed(self, gpu):
        """The cluster's "auto" link inside a node is the primary GPU's own (hardware.interconnect)."""
        from torchbudget.hardware.interconnect import default_intra_node

        try:
            own = default_intra_node(gpu, strict=False).name
        except UserError:
            own = None
        self.workload_panel.cluster_group.fill_links(own)

    def _on_gpus_changed(self, _gpus):
        if not self._retarget():
            self.request()

    def _retarget(self) -> bool:
        """The state's target follows the primary GPU (its compute capability); True when it moved."""
        primary = self.hardware_panel.primary()
        if primary is None or self._restoring:
            return False
        target = self.state.workload.on_gpu(primary).options.target
        if target == self.state.workload.options.target:
            return False
        self.state.update(source="gpu", target=target)
        return True

    def _is_current(self, workload: Workload) -> bool:
        """A result applies only while its workload is still what the fields say."""
        return self.state.ready and workload == self.state.workload

    # -- requests -------------------------------------------------------------------------------
    def current_workload(self) -> Workload | None:
        try:
            return self.workload_panel.workload()
        except UserError as exc:
            self.workload_panel.show_error(exc)
            return None

    def request(self, immediate: bool = False):
        """Re-analyse for the current fields (debounced unless ``immediate`` or the trace is cached)."""
        if self._restoring or not self.state.ready:
            return
        workload, gpus = self.state.workload, tuple(self.hardware_panel.ticked())
        if not gpus:
            return
        self.settings.set_last_workload(workload)
        self.settings.set_cluster(self.state.cluster)
        self.settings.set_ticked_gpus([g.name for g in gpus[1:]] + [gpus[0].name])
        self.settings.set_primary_gpu(gpus[0].name)
        if backend.is_file_model(workload.model):
            self.runner.cancel()
            cached = workload in self.file_cache
            if cached:   # the verdict at once; sweeps for a new set of GPUs come from the model's process
                self._submit(Request(workload, gpus, self.file_cache, in_process=False, cluster=self.state.cluster),
                             immediate=True)
            if not cached or self._file_sweeps_for != (workload.key(), tuple(g.name for g in gpus)):
                if not cached:
                    self.verdict.set_busy(f"Analysing {workload.model.rsplit('/', 1)[-1]} in a separate process…")
                self.plots.show_unavailable("Sweeping in the model's own process…")
                self._on_busy(True)
                self.model_runner.start(workload, gpus)
            return
        self.model_runner.cancel()
        cached = workload in self.cache or (workload.with_batch(1) in self.cache
                                            and workload.with_batch(2) in self.cache) \
            or backend.seq_len_estimable(workload, gpus, self.cache)   # quick plans from three other lengths
        if not cached:
            self.verdict.set_busy()   # a trace is coming: the verdict on screen is not this workload's
        self._submit(Request(workload, gpus, self.cache, True, self._sweep_keys["batch"],
                             self._sweep_keys["resolution"], cluster=self.state.cluster), immediate=immediate or cached)

    def _fetch_default_inputs(self, model: str):
        self.verdict.set_busy(f"Reading {model}'s input shape…")

        kwargs = dict(self.state.workload.model_kwargs)

        def job(ctx):
            from torchbudget.engine.api import default_inputs

            return model, default_inputs(model, kwargs)
        self.defaults_runner.submit(job, immediate=True)

    def _submit(self, request: Request, immediate: bool):
        if not immediate:
            self.verdict.set_busy()
        self.runner.submit(lambda ctx: run_request(request, ctx), immediate=immediate)

    def cancel(self):
        self.runner.cancel()
        self.model_runner.cancel()
        self._on_busy(False)
        self.progress_label.setText("Cancelled")

    def rerun(self):
        workload = self.current_workload()
        if workload is not None:
            self.file_cache.clear()
            backend.forget_max_batches()
            self._sweep_keys = {"batch": None, "resolution": None}
            self._file_sweeps_for = None
        self.request(immediate=True)

    # -- results ----------------------------------------------------------------------------------
    def _on_defaults_failed(self, error):
        self.state.cancel_default_inputs()   # analysed with the inputs there are
        self._on_failed(error)

    def _on_file_model_result(self, workload, result, per_target=()):
        """The verdict's traces from a .py model's process (its sweeps follow: _on_file_sweeps)."""
        self.file_cache.put(workload, result)
        for target_workload, target_result in per_target:
            self.file_cache.put(target_workload, target_result)
        self.settings.add_recent_model(workload.model)
        if self._is_current(workload):
            self._submit(Request(workload, tuple(self.hardware_panel.ticked()), self.file_cache, in_process=False,
                                 cluster=self.state.cluster),
                         immediate=True)

    def _on_file_model_failed(self, workload, error):
        if workload is None or self._is_current(workload):
            self._on_failed(error)

    def _on_file_sweeps(self, workload, gpus, sweeps: dict):
        self._on_busy(False)
        if self._is_current(workload):
            self._show_child_sweeps(workload, gpus, sweeps)
            # the verdict again, now with the largest batch the model's process solved
            self._submit(Request(workload, tuple(self.hardware_panel.ticked()), self.file_cache, in_process=False,
                                 cluster=self.state.cluster),
                         immediate=True)

    def _on_file_sweeps_failed(self, workload, message: str):
        self._on_busy(False)
        if self._is_current(workload):
            self.plots.show_unavailable(f"No sweeps:<br>{message}")

    def _show_child_sweeps(self, workload, gpus, sweeps: dict):
        """Largest batches and sweeps a .py model's own process computed (gui.child_sweeps)."""
        from torchbudget.engine.report.schema import sweep_from_dict

        for gpu, best in zip(gpus, sweeps.get("max_batches") or ()):
            if best is not None:
                backend.remember_max_batch(self.file_cache, workload, gpu, best)
        for gpu, best in zip(gpus, sweeps.get("max_contexts") or ()):
            if best is not None:
                backend.remember_max_context(self.file_cache, workload, gpu, best)
        self._file_sweeps_for = (workload.key(), tuple(g.name for g in gpus))
        self._sweep_keys = {"batch": None, "resolution": None}   # the in-process sweeps are off screen now
        self.plots.restore_titles()
        self.batch_sweep = sweep_from_dict(sweeps.get("batch_sweep"))
        if self.batch_sweep is not None:
            self.plots.set_batch_unit(batch_unit(workload))
            self.plots.show_batch_sweep(self.batch_sweep, workload.batch_size)
        else:
            self.plots.show_unavailable(f"No batch sweep:<br>{sweeps.get('batch_error', '')}", "batch")
        for gpu, best in zip(gpus, sweeps.get("max_seq_lens") or ()):
            if best is not None:
                backend.remember_max_seq_len(self.file_cache, workload, gpu, best)
        self.resolution_sweep = sweep_from_dict(sweeps.get("resolution_sweep"))
        if self.resolution_sweep is None and sweeps.get("resolution_error"):
            self.plots.show_unavailable(f"No {self._second_axis_word(workload)} sweep:<br>"
                                        f"{sweeps['resolution_error']}", "resolution")
        else:
            self._show_second_axis(workload)

    def _on_partial(self, key: str, payload):
        if key == "evaluation":
            self._show_evaluation(payload)
        elif not self.state.ready:
            return   # the fields are being typed: the next request brings what they say
        elif key == "batch_sweep":
            self._sweep_keys["batch"], self.batch_sweep = payload
            self.plots.restore_titles()
            self.plots.set_batch_unit(batch_unit(self.state.workload))
            self.plots.show_batch_sweep(self.batch_sweep, self.state.workload.batch_size)
        elif key == "resolution_sweep":
            self._sweep_keys["resolution"], self.resolution_sweep = payload
            self._show_second_axis(self.state.workload)
        elif key == "comparison":
            self.comparison = payload
            self.comparison_model.set_comparison(payload)
            self.comparison_charts.show(payload)

    @staticmethod
    def _second_axis_word(workload) -> str:
        return "sequence-length" if has_seq_len_axis(workload) else "context" if has_context_axis(workload) \
            else "resolution"

    def _show_second_axis(self, workload):
        """The fourth plot and its tab: memory vs resolution (image inputs), vs sequence length (tokens) or vs
        the context (decode)."""
        axis = self.resolution_sweep.axis if self.resolution_sweep is not None else "resolution"
        current = {"seq_len": workload.seq_len, "context": workload.options.context_len}.get(axis) \
            if axis != "resolution" else image_side(workload)
        self.plots.show_resolution_sweep(self.resolution_sweep, current)
        index = self.tabs.indexOf(self.plots.memory_vs_resolution)
        if index >= 0:
            self.tabs.setTabText(index, {"seq_len": "Memory vs sequence length",
                                         "context": "Memory vs context"}.get(axis, "Memory vs resolution"))

    def _show_evaluation(self, evaluation):
        if not self._is_current(evaluation.workload):
            return   # asked for fields that have changed since (e.g. the valid prefix of a shape being typed)
        self.evaluation = evaluation
        self.workload_panel.clear_errors(keep_file=True)
        self.hardware_panel.error.clear_message()
        self.verdict.set_plans(list(evaluation.plans))
        if self._views is None:
            self.verdict.repaint()   # the first verdict on screen now, before the layer tree and the plot tabs
        if evaluation.interpolated:
            self.progress_label.setText(backend.estimate_note(evaluation))
        if evaluation.result is not None:
            latency = {path: ModuleLatency(m.bound_ms / 1000.0, "compute" if m.compute_bound else "memory")
                       for path, m in evaluation.plans[0].latency.per_module.items()}
            self.layer_model.set_result(evaluation.result, latency)
            self.layer_view.expandToDepth(0)
            if self._sized_for != evaluation.result.model_name:   # once per model: resizing is not free
                self._sized_for = evaluation.result.model_name
                for column in range(self.layer_model.columnCount()):
                    self.layer_view.resizeColumnToContents(column)
            self.coverage_label.setText(f"{evaluation.result.coverage:.0%} of ops counted")
            self.coverage_label.setToolTip("Share of ops with a FLOP formula or known to do no arithmetic; "
                                           "the rest are listed with ⚠ and not counted.")
            if self._views is not None:
                self.roofline.show(list(evaluation.plans))
            else:   # the verdict paints first; the plot tabs follow
                self._load_views_soon()
            if not backend.is_file_model(evaluation.workload.model):
                self.settings.add_recent_model(evaluation.workload.model)

    def _on_failed(self, error):
        self._on_busy(False)
        message = str(error)
        field = getattr(error, "field", None)
        if field == "gpu":
            self.hardware_panel.error.show_message(message)
        else:
            self.workload_panel.show_error(error) or self.workload_panel.errors["model"].show_message(message)
        self.verdict.set_error(message)
        self.progress_label.setText("Error: " + message)

    def _on_busy(self, busy: bool):
        self.busy = busy
        self.progress_bar.setVisible(busy)
        self.cancel_button.setVisible(busy)

    def closeEvent(self, event):
        self.settings.set_geometry(self.saveGeometry())
        self.settings.sync()
        self.runner.cancel()
        self.model_runner.shutdown()
        super().closeEvent(event)

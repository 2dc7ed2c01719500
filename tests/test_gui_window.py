"""The main window end to end (headless): default verdict, batch changes, ticking a GPU flips the verdict.
Expected verdicts come from the planner's own arithmetic (engine.planner.plan), not from the GUI."""
from __future__ import annotations

import pytest

from torchbudget.engine.cache import TraceCache
from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.planner import Verdict, plan
from torchbudget.engine.results import MemoryCategory, TraceOptions
from torchbudget.engine.workload import Workload
from torchbudget.hardware.catalog import resolve_gpu
from tests.gui_support import close_window, make_window, wait_for_plans

SMALL_GPU = "T4"


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    w = make_window(qtbot, tmp_path, monkeypatch)
    yield w
    close_window(w)


def test_default_workload_shows_the_planners_verdict(qtbot, window):
    evaluation = wait_for_plans(qtbot, window)
    workload = evaluation.workload
    assert workload.model == "resnet50" and workload.inputs[0].shape == (1, 3, 224, 224)
    gpu = evaluation.plans[0].gpu
    assert workload == Workload("resnet50", parse_inputs("1x3x224x224"), TraceOptions()).on_gpu(gpu)  # its kernels
    assert f"Traced for {workload.options.target} kernels" in window.verdict.summary.text()
    expected = plan(workload, evaluation.plans[0].gpu, cache=TraceCache(), solve_max_batch=False)
    assert evaluation.plans[0].verdict is expected.verdict
    assert evaluation.plans[0].required_bytes == expected.required_bytes
    words = {"fits": "Fits", "tight": "Tight", "does_not_fit": "Does not fit"}[expected.verdict.value]
    assert words in window.verdict.verdict_text()            # text, not colour alone
    assert window.layer_model.rowCount() == 1                 # the layer tree is filled
    import pyqtgraph as pg

    scatter = [i for i in window.roofline.widget.getPlotItem().items if isinstance(i, pg.ScatterPlotItem)][0]
    spot = scatter.points()[0]
    tip = scatter.opts["tip"](spot.pos().x(), spot.pos().y(), spot.data())
    assert tip.split("\n")[0] in {m.path for m in evaluation.result.modules}   # hover names the layer
    assert window.roofline.points_shown == len(scatter.points()) > 10
    qtbot.waitUntil(lambda: window.batch_sweep is not None, timeout=60_000)
    assert window.plots.memory_vs_batch.getPlotItem().listDataItems()


def test_batch_change_updates_verdict_and_plots(qtbot, window):
    wait_for_plans(qtbot, window, lambda ev: ev.plans[0].max_batch is not None)
    qtbot.waitUntil(lambda: window.batch_sweep is not None, timeout=60_000)
    before = window.verdict.summary.text()
    window.workload_panel.batch_spin.setValue(64)
    # the marker moves at once, before any computation
    assert [round(10 ** line.value()) for _, line in window.plots._current_lines] == [64, 64, 64]
    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload.batch_size == 64)
    assert window.verdict.summary.text() != before
    assert evaluation.plans[0].latency.batch_size == 64
    required = evaluation.plans[0].required_bytes
    expected = plan(evaluation.workload, evaluation.plans[0].gpu, cache=TraceCache(), solve_max_batch=False)
    assert required == expected.required_bytes


def test_ticking_a_smaller_gpu_flips_the_verdict(qtbot, tmp_path, monkeypatch):
    big, small = resolve_gpu("A100 SXM 80GB"), resolve_gpu(SMALL_GPU)
    workload = Workload("resnet50", parse_inputs("2048x3x224x224"), TraceOptions(optimizer=None))
    cache = TraceCache()
    # by the planner's own arithmetic: fits on the big GPU, not on the small one
    assert plan(workload, big, cache=cache, solve_max_batch=False).fits
    assert plan(workload, small, cache=cache, solve_max_batch=False).verdict is Verdict.DOES_NOT_FIT
    window = make_window(qtbot, tmp_path, monkeypatch, workload=workload)
    try:
        from PySide6.QtCore import Qt

        window.hardware_panel.set_ticked([])
        panel = window.hardware_panel
        panel.items.item(panel._row_of(big.name)).setCheckState(Qt.CheckState.Checked)   # tick → also primary
        wait_for_plans(qtbot, window, lambda ev: ev.plans[0].gpu.name == big.name)
        assert "Fits" in window.verdict.verdict_text() or "Tight" in window.verdict.verdict_text()
        panel.items.item(panel._row_of(small.name)).setCheckState(Qt.CheckState.Checked)
        evaluation = wait_for_plans(qtbot, window, lambda ev: ev.plans[0].gpu.name == small.name)
        assert evaluation.plans[0].verdict is Verdict.DOES_NOT_FIT
        assert "Does not fit" in window.verdict.verdict_text()
        assert [p.gpu.name for p in evaluation.plans] == [small.name, big.name]   # both ticked, compared
        assert big.name in window.verdict.others.text()
    finally:
        close_window(window)


def test_bad_input_shows_next_to_the_field_and_keeps_the_text(qtbot, window):
    wait_for_plans(qtbot, window)
    window.workload_panel.inputs_edit.setText("1x3x224xabc")
    window.workload_panel._on_inputs_edited()
    assert "malformed" in window.workload_panel.errors["input"].message
    assert window.workload_panel.inputs_edit.text() == "1x3x224xabc"
    window.workload_panel.inputs_edit.setText("1x3x224x224")
    window.workload_panel._on_inputs_edited()
    from PySide6.QtCore import Qt

    line = window.workload_panel.model_combo.lineEdit()
    line.clear()
    qtbot.keyClicks(line, "no_such_model_xyz")
    qtbot.keyClick(line, Qt.Key.Key_Return)   # a typed name is taken when editing finishes
    qtbot.waitUntil(lambda: bool(window.workload_panel.errors["model"].message), timeout=30_000)
    assert "no_such_model_xyz" in window.workload_panel.errors["model"].message
    assert window.workload_panel.model_combo.currentText() == "no_such_model_xyz"


def test_startup_shows_a_placeholder_then_the_main_window(qtbot, qapp, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHBUDGET_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("TORCHBUDGET_CONFIG_DIR", str(tmp_path))
    from torchbudget.gui.app import Startup

    opened = []
    startup = Startup(qapp, on_ready=opened.append)
    assert startup.placeholder.isVisible()
    qtbot.waitUntil(lambda: bool(opened), timeout=60_000)
    try:
        assert opened[0] is startup.window and startup.window.isVisible()
        assert not startup.placeholder.isVisible()
        # the trace started ahead of the window is the one the window asks about (same cache, same key)
        evaluation = wait_for_plans(qtbot, startup.window)
        assert startup.preload.first_workload == evaluation.plans[0].workload   # traced for the primary GPU
        assert startup.window.cache is startup.preload.cache
    finally:
        close_window(startup.window)
        startup.preload.join(60.0)   # as run_app does: no thread left importing PyTorch


def test_detected_gpu_shows_live_free_memory(qtbot, monkeypatch):
    from dataclasses import replace

    from torchbudget.gui import backend
    from torchbudget.gui.hardware_panel import HardwarePanel
    from torchbudget.hardware import nvml

    live = replace(resolve_gpu("RTX 4090"), origin="live", local_index=0)
    readings = iter([6, 5, 4, 3, 2, 1, 1, 1, 1, 1])
    monkeypatch.setattr(backend, "local_gpus", lambda: [live])
    monkeypatch.setattr(nvml, "refresh_memory", lambda index: nvml.MemoryReading(
        total_bytes=24 * 2**30, free_bytes=next(readings) * 2**30, used_bytes=0))
    panel = HardwarePanel()
    qtbot.addWidget(panel)
    assert "RTX 4090: 6.00 GiB free of 24.00 GiB" in panel.live_label.text()
    assert panel._row_of(live.name) == 0 and "(this machine)" in panel.items.item(0).text()
    panel._poll.setInterval(20)
    qtbot.waitUntil(lambda: "4.00 GiB free" in panel.live_label.text(), timeout=5000)   # polled, not fixed


def test_choosing_a_model_uses_its_default_input_and_keeps_the_batch(qtbot, window):
    from torchbudget.engine.api import default_inputs

    wait_for_plans(qtbot, window)
    panel = window.workload_panel
    panel.batch_spin.setValue(3)
    panel.model_combo.setCurrentText("inception_v3")
    expected = default_inputs("inception_v3")[0].shape[1:]        # the engine's own default (3x299x299)
    qtbot.waitUntil(lambda: panel.inputs_edit.text() == "3x" + "x".join(map(str, expected)), timeout=30_000)
    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload.model == "inception_v3")
    assert evaluation.workload.inputs[0].shape == (3, *expected)
    assert panel.resolution_spin.value() == expected[-1]


def test_largest_batch_marker_sits_where_memory_needed_crosses_usable_memory(qtbot, window):
    """Curve, capacity line and marker are all on the 'needed vs usable' scale (the CUDA context is outside
    usable memory): plotting the peak (with the context) would put the marker above the line."""
    import pyqtgraph as pg

    gib = 2**30
    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.plans[0].max_batch is not None)
    qtbot.waitUntil(lambda: window.batch_sweep is not None and bool(window.batch_sweep.gpus[0].max_batch), timeout=60_000)
    plan_now, best = evaluation.plans[0], evaluation.plans[0].max_batch
    usable_gib = plan_now.gpu.available_memory_bytes / gib
    item = window.plots.memory_vs_batch.getPlotItem()
    curve = next(i for i in item.listDataItems() if i.name() == "memory needed")
    marker = next(i for i in item.listDataItems() if (i.name() or "").startswith("largest batch"))
    needed = dict(zip(curve.xData.tolist(), curve.yData.tolist()))    # batch -> GiB, before the log x axis
    assert needed[1] == pytest.approx(plan_now.required_bytes / gib)  # the verdict's own figure at batch 1
    assert marker.xData[0] == best and marker.yData[0] == pytest.approx(needed[best])
    assert needed[best] <= usable_gib < needed[best + 1]
    capacity = [i for i in item.items if isinstance(i, pg.InfiniteLine) and i.angle == 0]
    assert [line.value() for line in capacity] == [pytest.approx(usable_gib)]


def test_first_verdict_needs_neither_plots_nor_pytorch_once_the_trace_is_stored(tmp_path):
    """Launch path (gui.app), as a user launches it (fresh processes). The first launch traces in a second
    process (gui.prefetch) and loads the trace from the store: neither PyTorch nor pyqtgraph is imported in
    the app's process by its first verdict; the plot tabs are built after it. The second launch finds the
    trace in the on-disk store without any second process, and shows the same verdict; so does a launch that
    traces in its own process."""
    import os
    import subprocess
    import sys
    import textwrap

    child = textwrap.dedent("""
        import sys
        from torchbudget.gui import app as gui_app
        def ready(window):
            from PySide6.QtWidgets import QApplication, QWidget
            def repaint(widget):
                QWidget.repaint(widget)
                if "on " in widget.verdict_text() and not shown:
                    shown.append(True)
                    plan = window.evaluation.plans[0]
                    print("verdict", "pyqtgraph" in sys.modules, "torch" in sys.modules, plan.required_bytes,
                          flush=True)
            shown = []
            type(window.verdict).repaint = repaint
            # the first request runs to its end (sweeps too), as in a user's session: all of it is stored
            window.runner.finished.connect(lambda _result: QApplication.instance().quit())
        gui_app.run_app(on_ready=ready)
    """)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TORCHBUDGET_SETTINGS=str(tmp_path / "settings.ini"),
               TORCHBUDGET_CONFIG_DIR=str(tmp_path), TORCHBUDGET_CACHE_DIR=str(tmp_path / "traces"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def launch(**extra) -> list[str]:
        done = subprocess.run([sys.executable, "-c", child], env={**env, **extra}, cwd=root, capture_output=True,
                              text=True, timeout=300)
        lines = [line.split() for line in done.stdout.splitlines() if line.startswith("verdict")]
        assert lines, done.stderr[-2000:]
        return lines[0]

    first = launch()
    assert first[1:3] == ["False", "False"]   # traced next door: neither PyTorch nor plotting modules here
    assert list((tmp_path / "traces").glob("*.trace.json.gz"))
    second = launch()
    assert second[1:3] == ["False", "False"]   # from the store: no PyTorch on the way to the verdict
    assert second[3] == first[3]
    # no second process (TORCHBUDGET_NO_PREFETCH=1, as for a user's .py model) and an empty store: traced in
    # the app's own process before the window opens, same verdict
    third = launch(TORCHBUDGET_NO_PREFETCH="1", TORCHBUDGET_CACHE_DIR=str(tmp_path / "other-traces"))
    assert third[1:] == ["False", "True", first[3]]


def test_the_checkpointing_box_plans_a_model_named_from_the_list(qtbot, tmp_path, monkeypatch):
    """The checkbox on a torchvision model (built on meta through the registry, as every listed model is):
    the verdict comes back, with less activation memory than without."""
    workload = Workload("resnet18", parse_inputs("8x3x224x224"), TraceOptions(mode="train"))
    window = make_window(qtbot, tmp_path, monkeypatch, workload=workload)
    try:
        plain = wait_for_plans(qtbot, window, lambda ev: not ev.workload.options.checkpointing)
        window.workload_panel.checkpoint_box.setChecked(True)
        ckpt = wait_for_plans(qtbot, window, lambda ev: ev.workload.options.checkpointing)
        activations = lambda ev: ev.plans[0].memory.by_category[MemoryCategory.ACTIVATIONS]  # noqa: E731
        assert activations(ckpt) < 0.7 * activations(plain)
        assert "Cannot analyse" not in window.verdict.verdict_text()
        assert any(p.startswith("activation checkpointing") for p in ckpt.result.policies)
    finally:
        close_window(window)

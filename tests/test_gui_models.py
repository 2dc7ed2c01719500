"""The GUI's Qt models and plumbing, without the main window: layer tree over a real trace, its
search/sort proxy, the job runner's stale-result dropping, the workload panel's fields."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from PySide6.QtCore import Qt
from torch import nn

from torchbudget.engine.api import analyze
from torchbudget.engine.results import UncountedOp
from torchbudget.gui.layer_model import COLUMNS, LayerFilterProxy, LayerTreeModel, SORT_ROLE
from torchbudget.gui.workers import JobRunner
from torchbudget.gui.workload_panel import WorkloadPanel, python_file_entries


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
        self.head = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


@pytest.fixture(scope="module")
def tiny():
    net = TinyNet()
    return net, analyze(net, "2x3x16x16")


def _child(model, parent, row):
    return model.index(row, 0, parent)


def test_layer_tree_mirrors_the_module_tree(qapp, tiny):
    net, result = tiny
    model = LayerTreeModel()
    model.set_result(result)
    root = model.index(0, 0)
    assert model.rowCount() == 1 and model.rowCount(root) == len(list(net.children()))
    params_col = COLUMNS.index("Params")
    assert model.index(0, params_col).data(SORT_ROLE) == sum(p.numel() for p in net.parameters())
    for row, (name, child) in enumerate(net.named_children()):
        index = _child(model, root, row)
        assert model.node(index).path == name
        assert model.index(row, params_col, root).data(SORT_ROLE) == sum(p.numel() for p in child.parameters())
        assert model.parent(index) == root
    # Output shape column: the real forward's shape of the head
    head_row = list(dict(net.named_children())).index("head")
    assert model.index(head_row, COLUMNS.index("Output shape"), root).data() == "2×10"
    # Linear MACs by closed form: batch x in_features x out_features
    assert model.index(head_row, COLUMNS.index("MACs"), root).data(SORT_ROLE) == 2 * 4 * 16 * 16 * 10


def test_search_keeps_ancestors_and_sort_orders_by_number(qapp, tiny):
    _, result = tiny
    model, proxy = LayerTreeModel(), LayerFilterProxy()
    model.set_result(result)
    proxy.setSourceModel(model)
    proxy.set_search("conv2d")
    root = proxy.index(0, 0)
    assert proxy.rowCount() == 1 and proxy.rowCount(root) == 1      # only "features" survives under the root
    features = proxy.index(0, 0, root)
    assert proxy.rowCount(features) == 2                            # its two convolutions, not the ReLU
    proxy.set_search("")
    macs_col = COLUMNS.index("MACs")
    proxy.sort(macs_col, Qt.SortOrder.DescendingOrder)
    root = proxy.index(0, 0)
    values = [proxy.index(r, macs_col, root).data(SORT_ROLE) for r in range(proxy.rowCount(root))]
    assert values == sorted(values, reverse=True) and values[0] > 0


def test_uncounted_ops_are_flagged(qapp, tiny):
    _, result = tiny
    flagged = replace(result, uncounted_ops=(UncountedOp("aten.fancy.default", 1, ("head",)),))
    model, proxy = LayerTreeModel(), LayerFilterProxy()
    model.set_result(flagged)
    proxy.setSourceModel(model)
    root = model.index(0, 0)
    head_row = [model.node(model.index(r, 0, root)).path for r in range(model.rowCount(root))].index("head")
    head = model.index(head_row, 0, root)
    assert head.data().startswith("⚠")
    assert "aten.fancy.default" in head.data(Qt.ItemDataRole.ToolTipRole)
    proxy.set_only_uncounted(True)
    assert proxy.rowCount(proxy.index(0, 0)) == 1


def test_job_runner_cancels_and_drops_stale_results(qtbot):
    runner = JobRunner(debounce_ms=10)
    results, seen_cancel = [], threading.Event()

    def slow(ctx):
        while not ctx.cancelled:
            time.sleep(0.01)
        seen_cancel.set()
        return "stale"   # returned anyway: the runner must drop it

    runner.finished.connect(results.append)
    runner.submit(slow, immediate=True)
    runner.submit(lambda ctx: "fresh")
    qtbot.waitUntil(lambda: results == ["fresh"] and seen_cancel.is_set(), timeout=5000)
    qtbot.wait(50)
    assert results == ["fresh"]


def test_a_job_waits_until_its_verdict_is_shown_before_the_next_stage(qtbot):
    """The verdict paints before the job's next stage (a trace) competes with the UI thread for the GIL."""
    runner = JobRunner(debounce_ms=0)
    order, lock = [], threading.Lock()

    def record(what):
        with lock:
            order.append(what)

    def job(ctx):
        ctx.partial("evaluation", 1, wait_shown_s=5.0)
        record("next stage")
        return "done"

    runner.partial.connect(lambda key, _payload: record(f"shown {key}"))
    runner.finished.connect(lambda _result: record("finished"))
    runner.submit(job, immediate=True)
    qtbot.waitUntil(lambda: "finished" in order, timeout=5000)
    assert order == ["shown evaluation", "next stage", "finished"]


def test_stuck_jobs_do_not_hold_back_a_newer_one(qtbot):
    """Superseded jobs in an uninterruptible stage keep their threads; a new job still runs at once."""
    runner = JobRunner(debounce_ms=0)
    release, results = threading.Event(), []

    def stuck(ctx):
        release.wait(10)   # a trace waiting for PyTorch to import, say
        return "stale"

    runner.finished.connect(results.append)
    try:
        for _ in range(3):
            runner.submit(stuck, immediate=True)
        runner.submit(lambda ctx: "instant", immediate=True)
        qtbot.waitUntil(lambda: results == ["instant"], timeout=8000)   # < the stuck jobs' 10 s: held back, it would fail
    finally:
        release.set()


def test_a_new_batch_is_scaled_from_anchors_in_memory_before_a_read_from_the_store(tmp_path):
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.results import TraceOptions
    from torchbudget.engine.trace_store import TraceStore
    from torchbudget.engine.workload import Workload
    from torchbudget.gui import backend
    from torchbudget.hardware.catalog import resolve_gpu

    gpus = (resolve_gpu("RTX 4090"),)
    workload = Workload("resnet18", parse_inputs("1x3x64x64"), TraceOptions()).on_gpu(gpus[0])   # its sm89 traces
    writer = TraceCache(store=TraceStore(tmp_path))
    for batch in (1, 2, 5):
        writer.get(workload.with_batch(batch))
    writer.flush()

    cache = TraceCache(store=TraceStore(tmp_path))
    cold = backend.quick_evaluation(workload.with_batch(5), gpus, cache)   # nothing in memory: read, exact
    assert not cold.interpolated and cache.loaded == 1
    warm = TraceCache(store=TraceStore(tmp_path))
    warm.get(workload.with_batch(1)), warm.get(workload.with_batch(2))
    scaled = backend.quick_evaluation(workload.with_batch(5), gpus, warm)  # anchors in memory: instant
    assert scaled.interpolated and warm.loaded == 2   # the two anchors only; batch 5 is read later
    assert scaled.plans[0].memory.peak_bytes == cold.plans[0].memory.peak_bytes   # inference is affine in batch


def test_workload_panel_batch_and_errors(qtbot):
    panel = WorkloadPanel()
    qtbot.addWidget(panel)
    emitted = []
    panel.workloadChanged.connect(emitted.append)
    panel.batch_spin.setValue(16)
    assert panel.inputs_edit.text() == "16x3x224x224" and emitted[-1].batch_size == 16
    panel.resolution_spin.setValue(320)
    assert emitted[-1].inputs[0].shape == (16, 3, 320, 320)
    qtbot.keyClicks(panel.inputs_edit, "x")          # "16x3x320x320x" is malformed
    assert panel.errors["input"].message and "malformed" in panel.errors["input"].message
    assert panel.inputs_edit.text() == "16x3x320x320x"   # nothing the user typed is lost
    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("infer"))
    assert emitted[-1].options.optimizer is None          # inference carries no optimizer, as on the CLI
    panel.inputs_edit.setText("2x3x32x32")
    panel._on_inputs_edited()
    count = len(emitted)
    panel.model_combo.lineEdit().clear()
    qtbot.keyClicks(panel.model_combo.lineEdit(), "my_net")
    assert len(emitted) == count                          # no analysis per keystroke of an unknown name
    qtbot.keyClick(panel.model_combo.lineEdit(), Qt.Key.Key_Return)
    assert emitted[-1].model == "my_net"


def test_python_file_entries_lists_without_running(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("raise SystemExit('must not run')\nclass Net: pass\ndef build(): pass\ndef _private(): pass\n")
    assert python_file_entries(str(path)) == ["Net", "build"]
    (tmp_path / "bad.py").write_text("def broken(:\n")
    with pytest.raises(Exception, match="syntax error on line 1"):
        python_file_entries(str(tmp_path / "bad.py"))


def test_custom_gpu_editor_writes_the_user_file(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHBUDGET_CONFIG_DIR", str(tmp_path))
    from torchbudget.hardware import catalog
    from torchbudget.gui.gpu_editor import GpuEditorDialog
    from torchbudget.gui.hardware_panel import HardwarePanel

    catalog.reload()
    panel = HardwarePanel()
    qtbot.addWidget(panel)
    dialog = GpuEditorDialog(base=catalog.resolve_gpu("T4"))
    # same memory as the database T4: same usable memory (driver reserve and CUDA context both taken off)
    assert dialog.spec().available_memory_bytes == catalog.resolve_gpu("T4").available_memory_bytes
    dialog.name_edit.setText("Lab card 7")
    dialog.memory.setValue(20.0)
    from torchbudget.gui import backend

    backend.save_user_gpu(dialog.spec())
    try:
        panel.reload(primary="Lab card 7")
        spec = panel.primary()
        assert spec.name == "Lab card 7" and spec.origin == "user" and spec.memory_bytes == 20 * 2**30
        assert spec.peak_tflops["fp16"] == catalog.resolve_gpu("T4").peak_tflops["fp16"]
        assert (tmp_path / "gpus.toml").exists()
        backend.remove_user_gpu("Lab card 7")
        panel.reload()
        assert panel._row_of("Lab card 7") == -1
    finally:
        catalog.reload()


def test_unknown_gpu_from_last_session_falls_back_with_a_message(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHBUDGET_CONFIG_DIR", str(tmp_path))
    from torchbudget.gui import backend
    from torchbudget.gui.hardware_panel import HardwarePanel

    panel = HardwarePanel()
    qtbot.addWidget(panel)
    panel.reload(primary="Imaginary GPU 9000")
    assert panel.primary().name == backend.default_gpu_name()
    assert "Imaginary GPU 9000" in panel.error.message


def test_missing_tensor_rate_is_said_where_the_peak_is_shown(qtbot):
    """T4 lists no bf16 tensor rate: the roofline falls back to fp32 (GpuSpec.peak_flops_per_s), and the
    verdict and the roofline say so with the planner's own note; a GPU with bf16 tensor cores gets none."""
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.planner import plan
    from torchbudget.engine.results import TraceOptions
    from torchbudget.engine.workload import Workload
    from torchbudget.gui.roofline_view import RooflineView
    from torchbudget.gui.verdict import VerdictWidget
    from torchbudget.hardware.catalog import resolve_gpu

    t4, rtx = resolve_gpu("T4"), resolve_gpu("RTX 4090")
    assert t4.peak_flops_per_s("bfloat16", tensor_core=True) == t4.peak_tflops["fp32"] * 1e12
    workload = Workload("resnet18", parse_inputs("1x3x64x64"), TraceOptions(precision="bf16"))
    cache = TraceCache()
    plans = [plan(workload, gpu, cache=cache, solve_max_batch=False) for gpu in (t4, rtx)]
    (note,) = [n for n in plans[0].notes if "tensor cores" in n]
    assert not [n for n in plans[1].notes if "tensor cores" in n]
    verdict = VerdictWidget()
    qtbot.addWidget(verdict)
    verdict.set_plans(plans)
    assert not verdict.peak_note.isHidden() and note in verdict.peak_note.text()
    assert "Traced for sm75 kernels" in verdict.summary.text()      # the T4's own target
    verdict.set_plans(plans[::-1])
    assert verdict.peak_note.isHidden() and "Traced for sm89 kernels" in verdict.summary.text()
    roofline = RooflineView()
    roofline.show(plans)
    names = [i.name() for i in roofline.widget.getPlotItem().listDataItems()]
    assert any(n.startswith("T4: 8 TFLOP/s (fp32 rate: no bf16 tensor cores)") for n in names)
    assert any(n.startswith("RTX 4090: 165 TFLOP/s,") for n in names)
    assert note in roofline.widget.toolTip()
    # every point is one of the engine's own roofline points (no re-aggregation in the view)
    engine_points = {(p.arithmetic_intensity, p.attainable_flops_per_s) for p in plans[0].latency.per_op}
    scatter = roofline.widget.getPlotItem().items[-1]
    xs, ys = scatter.getData()
    assert roofline.points_shown == len(xs) > 10
    assert all(any(abs(10 ** x - a) < 1e-6 * a and abs(10 ** y * 1e12 - f) < 1e-6 * f for a, f in engine_points)
               for x, y in list(zip(xs, ys))[:20])


def test_set_workload_then_workload_gives_every_field_back(qtbot):
    """What the panel is given it gives back, every field (kwargs, convention, target...) included, and
    switching to inference and back keeps the training-only choices."""
    from dataclasses import fields

    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.results import TraceOptions
    from torchbudget.engine.workload import Workload

    panel = WorkloadPanel([])
    qtbot.addWidget(panel)
    rich = Workload("resnet18", parse_inputs("64x3x128x128"),
                    TraceOptions(mode="train", precision="fp16-amp", optimizer="sgd", checkpointing=True,
                                 convention="thop", optimizer_impl="for-loop", attention="math", target="sm75",
                                 base_dtype="int8", lora_rank=4, lora_targets=("fc",), freeze=("layer1.*",),
                                 grad_accum=2, moe_routing="skewed", attention_flops="causal"),
                    {"num_classes": 10}, {"return_dict": False})
    decode = Workload("gpt2", parse_inputs("4x1:int64"), TraceOptions(mode="decode", context_len=100, kv_dtype="int8"))
    parallel = Workload("gpt2", parse_inputs("2x64:int64"), TraceOptions(mode="train", strategy="fsdp+tp", world_size=8,
                                                                          tp_size=2, sequence_parallel=True))
    assert all(any(getattr(w.options, f.name) != getattr(TraceOptions(), f.name) for w in (rich, decode, parallel))
               for f in fields(TraceOptions))
    for workload in (Workload("resnet50", parse_inputs("1x3x224x224"), TraceOptions()), rich, decode, parallel,
                     Workload("vit_b_16", parse_inputs("8x3x224x224"), TraceOptions(precision="bf16-amp")),
                     Workload("resnet18", parse_inputs("2x3x64x64"), TraceOptions(mode="train", optimizer=None)),
                     Workload("resnet18")):
        panel.set_workload(workload)
        assert panel.workload() == workload
    panel.set_workload(rich)
    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("infer"))
    assert panel.workload().options.optimizer is None and not panel.optimizer_combo.isEnabled()
    assert panel.optimizer_combo.currentData() == "sgd"          # shown (disabled), kept for training
    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("train"))
    assert panel.workload() == rich


def test_a_job_superseded_while_waiting_for_its_trace_does_not_trace(monkeypatch):
    from torchbudget.engine import cache as engine_cache
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.results import TraceOptions
    from torchbudget.engine.workload import Workload
    from torchbudget.gui import backend
    from torchbudget.gui.cancel import Cancelled, running

    traced, outcome, superseded = [], [], threading.Event()
    monkeypatch.setattr(engine_cache, "trace_workload", lambda w: traced.append(w.batch_size))

    def check():
        if superseded.is_set():
            raise Cancelled()

    def job(batch):
        try:
            with running(check):
                backend.trace_here(Workload("resnet18", parse_inputs(f"{batch}x3x64x64"), TraceOptions()))
            outcome.append("traced")
        except Cancelled:
            outcome.append("stopped")

    with backend._trace_gate:   # another trace is running
        waiting = threading.Thread(target=job, args=(7,))
        waiting.start()
        time.sleep(0.1)
        superseded.set()        # the user moved on meanwhile
    waiting.join(5)
    assert outcome == ["stopped"] and traced == []
    superseded.clear()
    job(9)                      # a current job traces
    assert traced == [9] and outcome[-1] == "traced"

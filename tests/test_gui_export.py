"""Export writes the CLI's numbers: the JSON equals ``plan --json`` for the same workload, the CSV's layers
equal ``analyze --json``; the Markdown report has its plots; workload files and settings round-trip."""
from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest

from torchbudget.cli import run_cli
from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.workload import Workload
from torchbudget.gui import export
from torchbudget.hardware.catalog import resolve_gpu
from tests.gui_support import close_window, make_window, wait_for_plans, wait_idle

GPU = "A100 SXM 80GB"
WORKLOAD = Workload("resnet18", parse_inputs("2x3x64x64"), TraceOptions(optimizer=None))


def cli_json(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_cli(argv) == 0
    return json.loads(out.getvalue())


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    w = make_window(qtbot, tmp_path, monkeypatch, workload=WORKLOAD)
    w.hardware_panel.select(GPU)
    wait_for_plans(qtbot, w, lambda ev: ev.plans[0].gpu.name == GPU and ev.plans[0].max_batch is not None)
    wait_idle(qtbot, w)   # nothing left tracing in the background while the CLI runs
    yield w
    close_window(w)


def test_json_export_equals_the_cli(window, tmp_path):
    path = tmp_path / "out.json"
    export.export_to(window, str(path))
    exported = json.loads(path.read_text())
    cli = cli_json(["plan", "resnet18", "--input", "2x3x64x64", "--gpu", GPU, "--json"])
    for key, value in cli.items():
        assert exported[key] == value, key
    analysis = cli_json(["analyze", "resnet18", "--input", "2x3x64x64", "--json"])
    assert exported["analysis"]["totals"] == analysis["totals"]


def test_csv_layers_equal_the_cli(window, tmp_path):
    path = tmp_path / "layers.csv"
    export.export_to(window, str(path))
    rows = list(csv.DictReader(path.open()))
    layers = cli_json(["analyze", "resnet18", "--input", "2x3x64x64", "--json"])["layers"]
    assert len(rows) == len(layers)
    by_path = {(layer["path"] or layer["name"]): layer for layer in layers}
    for row in rows:
        layer = by_path[row["module"]]
        assert (int(row["params"]), int(row["macs"]), int(row["flops"]), int(row["activation_bytes"])) == \
            (layer["params"], layer["macs"], layer["flops"], layer["activation_bytes"])
    assert any(float(r["latency_bound_ms"]) > 0 for r in rows)
    text = export.copy_layers_to_clipboard(window)
    assert text.splitlines()[0].split("\t")[0] == "module" and len(text.splitlines()) == len(rows) + 1


def test_markdown_report_has_figures_and_plots(qtbot, window, tmp_path):
    qtbot.waitUntil(lambda: window.batch_sweep is not None, timeout=60_000)
    written = export.export_report(window, str(tmp_path / "report.md"))
    text = written[0].read_text()
    plan = window.evaluation.plans[0]
    assert f"{plan.max_batch}" in text and "resnet18" in text
    for png in written[1:]:
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
        assert f"report_files/{png.name}" in text
    html = export.export_report(window, str(tmp_path / "page.html"))[0].read_text()
    assert "<img" in html and "page_files/roofline.png" in html
    with pytest.raises(Exception, match="use .json, .csv, .md or .html"):
        export.export_to(window, str(tmp_path / "out.xlsx"))


def test_workload_file_round_trip_and_settings_persist(qtbot, window, tmp_path, monkeypatch):
    path = tmp_path / "w.json"
    window.workload_panel.batch_spin.setValue(8)
    export.save_workload(window, str(path))
    saved = Workload.from_json(path.read_text())
    assert saved == WORKLOAD.with_batch(8).on_gpu(resolve_gpu(GPU))   # planned for the GPU's kernels
    window.workload_panel.batch_spin.setValue(3)
    assert export.open_workload(window, str(path)) == saved
    assert window.workload_panel.workload() == saved
    window.request(immediate=True)
    close_window(window)
    again = make_window(qtbot, tmp_path, monkeypatch)   # same settings file
    try:
        assert again.workload_panel.workload() == saved
        assert again.hardware_panel.primary().name == GPU
    finally:
        close_window(again)


SMALL_CNN = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))
'''


def test_every_workload_field_survives_save_open_settings_and_export(qtbot, tmp_path, monkeypatch):
    """Each field of Workload and TraceOptions is set to a non-default value through the window's own
    controls, then must come back from a saved file, from the settings at the next start, and in the
    exported JSON's workload. A user .py model is used: its kwargs visibly reach the constructor."""
    from dataclasses import fields

    from torchbudget.gui import user_code
    from torchbudget.gui.state import DEFAULT_WORKLOAD

    model_file = tmp_path / "small_cnn.py"
    model_file.write_text(SMALL_CNN)
    asked = []
    monkeypatch.setattr(user_code, "ask", lambda parent, path, why: asked.append(path) or True)
    window = make_window(qtbot, tmp_path, monkeypatch, workload=Workload("resnet18", parse_inputs("1x3x32x32")))
    panel = window.workload_panel

    def choose(name, value):
        combo = panel.option_combos[name]
        index = combo.findData(value)
        assert index >= 0, (name, value)
        combo.setCurrentIndex(index)

    setters = {   # TraceOptions field -> how a user sets it
        "mode": lambda: choose("mode", "train"),
        "precision": lambda: choose("precision", "bf16-amp"),
        "optimizer": lambda: choose("optimizer", "sgd"),
        "checkpointing": lambda: panel.checkpoint_box.setChecked(True),
        "convention": lambda: choose("convention", "thop"),
        "optimizer_impl": lambda: choose("optimizer_impl", "for-loop"),
        "attention": lambda: choose("attention", "math"),
        "target": lambda: window.hardware_panel.select("T4"),   # the primary GPU's kernels (sm75)
    }
    # issue 10's LLM options: controls come with the app's token mode (they round-trip through files and the
    # settings all the same: the state keeps the whole Workload)
    not_in_the_window_yet = {"context_len", "kv_dtype", "base_dtype", "lora_rank", "lora_targets", "freeze",
                             "grad_accum", "moe_routing", "attention_flops"}
    assert set(setters) | not_in_the_window_yet == {f.name for f in fields(TraceOptions)}   # a new option needs a control
    panel.open_python_file(str(model_file), "Net")
    qtbot.keyClicks(panel.kwargs_edit, '{"num_classes": 10}')
    panel.inputs_edit.selectAll()
    qtbot.keyClicks(panel.inputs_edit, "2x3x16x16")
    for name, setter in setters.items():
        setter()
    expected = panel.workload()
    for f in fields(TraceOptions):
        if f.name not in not_in_the_window_yet:
            assert getattr(expected.options, f.name) != getattr(TraceOptions(), f.name), f.name
    assert expected.options.target == "sm75"
    assert (expected.model, expected.inputs) == (f"{model_file}:Net", parse_inputs("2x3x16x16"))
    assert expected.model_kwargs == {"num_classes": 10} != DEFAULT_WORKLOAD.model_kwargs
    assert asked == []   # picked with Open .py…: the user's own choice, nothing to ask

    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload == expected, timeout=120_000)
    assert evaluation.result.totals.params == (3 * 4 * 9 + 4) + (4 * 10 + 10)   # num_classes=10 reached it
    exported = tmp_path / "out.json"
    export.export_to(window, str(exported))
    assert json.loads(exported.read_text())["workload"] == json.loads(expected.to_json())

    saved = tmp_path / "w.json"
    export.save_workload(window, str(saved))
    assert Workload.from_json(saved.read_text()) == expected
    choose("attention", "auto")
    panel.batch_spin.setValue(5)
    assert panel.workload() != expected
    assert export.open_workload(window, str(saved)) == expected and panel.workload() == expected
    assert asked == [model_file.resolve()]   # a file naming a .py model asks first
    qtbot.waitUntil(lambda: window.model_runner.started > 0)
    close_window(window)

    again = make_window(qtbot, tmp_path, monkeypatch)   # the same settings file: the next start
    try:
        assert again.workload_panel.workload() == expected
        assert asked == [model_file.resolve()] * 2   # restoring a .py model from the settings asks too
    finally:
        close_window(again)

"""User .py models run in a separate process: one that works loads; one that raises, one that calls
os.abort(), one that asks for 64 GiB and one that loops forever each give an error in the window, which
stays responsive."""
from __future__ import annotations

import textwrap

import pytest
from PySide6.QtCore import QTimer

from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.workload import Workload
from tests.gui_support import close_window, make_window, wait_for_plans

GOOD = """
import torch
from torch import nn

class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))
"""

BROKEN = {
    "raises": ("import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
               "        raise ValueError('the weights file is missing')\n", "weights file is missing"),
    "aborts": ("import os, torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        os.abort()\n",
               "crashed"),
    "blows_up": ("import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                 "        self.blob = bytearray(64 * 2**30)\n", "MemoryError"),   # the child's address-space cap
    "hangs": ("import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        while True:\n"
              "            pass\n", "longer than"),
}


@pytest.fixture(scope="module")
def window(qapp, tmp_path_factory):
    """One window for every case: its warm standby process is reused from case to case."""
    monkeypatch = pytest.MonkeyPatch()
    tmp_path = tmp_path_factory.mktemp("gui_process")

    class NoBot:
        def addWidget(self, widget):
            pass

    light = Workload("resnet18", parse_inputs("1x3x32x32"), TraceOptions(optimizer=None))  # little background work
    w = make_window(NoBot(), tmp_path, monkeypatch, workload=light, model_timeout_s=30)
    w.model_runner.warm_up()
    yield w
    close_window(w)
    monkeypatch.undo()


def _use_file(window, path, entry, shape):
    panel = window.workload_panel
    panel.inputs_edit.setText(shape)
    panel._on_inputs_edited()
    panel.open_python_file(str(path), entry)


def test_a_python_model_file_loads(qtbot, window, tmp_path):
    path = tmp_path / "small_net.py"
    path.write_text(textwrap.dedent(GOOD))
    _use_file(window, path, "SmallNet", "2x3x8x8")
    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload.model.endswith("small_net.py:SmallNet"))
    root = evaluation.result.modules[0]
    assert root.params == (3 * 4 * 9 + 4) + (4 * 36 * 5 + 5)      # closed form: conv + linear
    assert window.layer_model.rowCount() == 1
    assert window.verdict.verdict_text().strip()[0] in "✓!✗"
    # sweeps and the largest batch come from the model's own process
    qtbot.waitUntil(lambda: window.batch_sweep is not None and bool(window.evaluation.plans[0].max_batch),
                    timeout=30_000)
    assert [p.value for p in window.batch_sweep.points][:3] == [1, 2, 4]
    assert window.batch_sweep.points[0].per_gpu[0].required_bytes < window.batch_sweep.points[-1].per_gpu[0].required_bytes
    # a fixed-size Linear cannot take other resolutions: the plot shows the one it can run and says why
    # the others are left out
    assert "left out" in window.plots.memory_vs_resolution.getPlotItem().titleLabel.text
    assert "fc" in window.plots.memory_vs_resolution.toolTip()


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_failing_model_file_gives_an_error_and_the_window_lives(qtbot, window, tmp_path, kind):
    source, expected = BROKEN[kind]
    window.model_runner.timeout_s = 3 if kind == "hangs" else 30
    path = tmp_path / f"{kind}.py"
    path.write_text(source)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(50)
    _use_file(window, path, "Net", "1x3x8x8")
    error = window.workload_panel.errors["model"]
    qtbot.waitUntil(lambda: expected in error.message, timeout=30_000)
    timer.stop()
    assert len(ticks) >= 5            # the UI thread kept running its event loop throughout
    assert "Cannot analyse" in window.verdict.verdict_text()
    assert window.workload_panel.model_combo.currentText().endswith(f"{kind}.py:Net")   # input kept
    assert not window.model_runner.running

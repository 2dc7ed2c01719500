"""Hostile input in the app (issue 13), through the entry points a user takes: typing, menus, files on
disk, a second launch. Each case asserts the outcome: the window lives, says what went wrong in words, and
keeps what the user had (fields, workload)."""
from __future__ import annotations

import os
import random
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QThreadPool
from PySide6.QtWidgets import QDialogButtonBox

from torchbudget.engine.inputs import InputSpec, parse_inputs
from torchbudget.engine.workload import Workload
from torchbudget.gui import backend, user_code
from tests.gui_support import close_window, make_window, wait_for_plans

LIGHT = Workload("resnet18", parse_inputs("1x3x32x32"))   # little background work per case


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    w = make_window(qtbot, tmp_path, monkeypatch, workload=LIGHT)
    wait_for_plans(qtbot, w)
    yield w
    close_window(w)


def _type(qtbot, line_edit, text: str, *, delay_ms: int = 0):
    line_edit.selectAll()
    for ch in text:
        qtbot.keyClicks(line_edit, ch)
        if delay_ms:
            qtbot.wait(delay_ms)


def _paste(line_edit, text: str):
    from PySide6.QtGui import QGuiApplication

    QGuiApplication.clipboard().setText(text)
    line_edit.selectAll()
    line_edit.paste()


def _open_action(window):
    return next(a for a in window.actions() if a.text() == "&Open workload…")


# -- typing ------------------------------------------------------------------------------------------
def test_typing_a_malformed_shape_at_human_speed_keeps_its_error(qtbot, window):
    """Each valid prefix of what is typed (2x3x48x48 before the last 'x') is asked for after the debounce;
    its analysis, still waiting for its trace when the shape turns malformed, must not land and clear the
    error."""
    panel = window.workload_panel
    shown = window.evaluation
    typed = "2x3x48x48x"
    with backend._trace_gate:   # a trace is running: every prefix's analysis waits for its turn
        _type(qtbot, panel.inputs_edit, typed, delay_ms=200)   # slower than the 150 ms debounce
        assert "malformed" in panel.errors["input"].message
    QThreadPool.globalInstance().waitForDone(60_000)   # whatever was asked for the prefixes has ended
    qtbot.wait(300)                                    # and anything it reported has been delivered
    assert "malformed" in panel.errors["input"].message
    assert panel.inputs_edit.text() == typed
    assert window.evaluation is shown
    prefix = panel.state.workload               # the last valid workload, kept under the draft
    assert prefix.inputs == parse_inputs("2x3x48x48") and not panel.state.ready
    # the prefix's result arriving through the runner's own channel is dropped too: the fields say otherwise
    from torchbudget.engine.cache import TraceCache

    stale = backend.full_evaluation(prefix, tuple(window.hardware_panel.ticked()), TraceCache(),
                                    solve_max_batch=False)
    window.runner.partial.emit("evaluation", stale)
    assert window.evaluation is shown and "malformed" in panel.errors["input"].message


def test_a_models_default_input_arriving_late_never_overwrites_typing(qtbot, window, monkeypatch):
    """A model picked from the list, then an input typed at once: the model's default input (read on a
    worker thread) arrives after the typing, five times out of five, and is ignored each time."""
    from torchbudget.engine import api

    release = threading.Event()
    real = api.default_inputs

    def slow_default_inputs(model, kwargs=None):
        release.wait(30)
        return real(model, kwargs)

    monkeypatch.setattr(api, "default_inputs", slow_default_inputs)
    panel = window.workload_panel
    tries = (("inception_v3", "2x3x320x320"), ("resnet34", "3x3x96x96"), ("alexnet", "1x3x256x256"),
             ("vgg11", "2x3x64x64"), ("mobilenet_v2", "4x3x64x64"))
    for model, typed in tries:
        release.clear()
        panel.model_combo.setCurrentText(model)      # picked: its default input is being read
        _type(qtbot, panel.inputs_edit, typed)       # typed at once
        with qtbot.waitSignal(window.defaults_runner.finished, timeout=30_000):
            release.set()                            # ... and the default arrives afterwards
        qtbot.wait(20)
        assert panel.inputs_edit.text() == typed, model
        assert panel.workload() == Workload(model, parse_inputs(typed), LIGHT.options).on_gpu(
            window.hardware_panel.primary())
    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload.model == "mobilenet_v2")
    assert evaluation.workload.inputs == parse_inputs("4x3x64x64")


def test_huge_dimensions_give_a_message_under_the_field_not_a_crash(qtbot, window):
    panel = window.workload_panel
    before = panel.state.workload
    # engine.inputs refuses a tensor torch cannot hold; the window refuses a dimension its boxes cannot show
    for text, words in (("1" + "0" * 40 + "x3x224x224", "is too large (a tensor holds at most 2**63 - 1 bytes)"),
                        ("4000000000x3x224x224", "dimension of 4,000,000,000: too large"),
                        ("2x3x3000000000x3000000000", "too large"),
                        ("2000000000x2000000000x2000000000", "a tensor holds at most 2**63 - 1 bytes")):
        _paste(panel.inputs_edit, text)
        assert words in panel.errors["input"].message, text
        assert panel.inputs_edit.text() == text and panel.state.workload == before
        assert not panel.batch_spin.isEnabled()      # batch is part of the shape being fixed
    _type(qtbot, panel.inputs_edit, "1x3x32x32")
    assert panel.state.ready and panel.batch_spin.isEnabled()
    for spin, field in ((panel.batch_spin, "batch"), (panel.resolution_spin, "resolution")):
        spin.lineEdit().selectAll()
        qtbot.keyClicks(spin.lineEdit(), "40000000000")   # 4e10: the box refuses the last digits
        assert "too large: at most 2,147,483,647" in panel.errors[field].message
        assert spin.value() <= 2**31 - 1
        spin.setValue(32)
    assert window.isVisible()
    wait_for_plans(qtbot, window, lambda ev: ev.workload == panel.state.workload)


# -- workload files --------------------------------------------------------------------------------
BAD_FILES = {
    "inputs_ints": ('{"format": "torchbudget-workload/1", "model": "resnet18", "inputs": [1, 3, 224, 224]}',
                    "'inputs' must be a list of shape strings"),
    "kwargs_list": ('{"format": "torchbudget-workload/1", "model": "resnet18", "model_kwargs": [1, 2]}',
                    "'model_kwargs' must be an object"),
    "deep_nesting": ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    "deep_kwargs": ('{"format": "torchbudget-workload/1", "model": "resnet18", "model_kwargs": {"a": '
                    + "[" * 50_000 + "]" * 50_000 + "}}", "nests too deeply"),
    "bogus_mode": ('{"format": "torchbudget-workload/1", "model": "resnet18", "mode": "sleep"}', "unknown mode"),
    "bogus_precision": ('{"format": "torchbudget-workload/1", "model": "resnet18", "precision": "fp8"}',
                        "unknown precision"),
    "bogus_optimizer": ('{"format": "torchbudget-workload/1", "model": "resnet18", "mode": "train", '
                        '"optimizer": "lion"}', "unknown optimizer"),
    "checkpointing_text": ('{"format": "torchbudget-workload/1", "model": "resnet18", "checkpointing": "yes"}',
                           "'checkpointing' must be true or false"),
    "huge_input": ('{"format": "torchbudget-workload/1", "model": "resnet18", "inputs": ["1' + "0" * 40
                   + 'x3x224x224"]}', "too large"),
    "not_a_workload": ('{"hello": "world"}', "not a TorchBudget workload file"),
    "not_json": ("model: resnet18", "not valid JSON"),
    "not_utf8": (b'{"model": "\xff\xfe"}', "not UTF-8"),
    "binary": (random.Random(13).randbytes(512), "cannot open"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_workload_file_gives_one_message_and_keeps_the_workload(qtbot, window, tmp_path, monkeypatch, case):
    from PySide6.QtWidgets import QFileDialog

    content, words = BAD_FILES[case]
    path = tmp_path / f"{case}.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    panel = window.workload_panel
    before, text_before = panel.state.workload, panel.inputs_edit.text()
    _open_action(window).trigger()                   # File > Open workload…
    message = panel.errors["file"].message
    assert words in message and path.name in message
    shown = [f for f, label in panel.errors.items() if label.message]
    assert shown == ["file"]                          # one message, in one place
    assert panel.state.workload == before and panel.inputs_edit.text() == text_before
    assert window.isVisible() and window.evaluation.workload == before
    panel.batch_spin.setValue(2)                      # the next edit clears it
    assert not panel.errors["file"].message


# -- user code named by a file -------------------------------------------------------------------------
SLOW_NET = """
import os, time
import torch
from torch import nn

with open({log!r}, "a") as log:
    log.write(f"{{os.getpid()}}\\n")

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        time.sleep(1.0)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(x)
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.parametrize("spelling", ["absolute", "relative"])
def test_a_workload_file_naming_a_py_model_asks_before_running_it(qtbot, window, tmp_path, monkeypatch, spelling):
    from PySide6.QtWidgets import QFileDialog

    log = tmp_path / "runs.log"
    model = tmp_path / "models" / "slow_net.py"
    model.parent.mkdir()
    model.write_text(SLOW_NET.format(log=str(log)))
    name = str(model) if spelling == "absolute" else os.path.relpath(model)
    assert spelling == "absolute" or name.startswith("..")
    workload_file = tmp_path / "w.json"
    workload_file.write_text(Workload(f"{name}:Net", parse_inputs("2x8")).to_json())
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(workload_file), ""))
    answers, asked = [False], []
    monkeypatch.setattr(user_code, "ask", lambda parent, path, why: asked.append(path) or answers[-1])
    panel = window.workload_panel
    before, started = panel.state.workload, window.model_runner.started

    _open_action(window).trigger()                    # declined: nothing runs, nothing changes
    assert asked == [model.resolve()]
    assert "was not allowed" in panel.errors["file"].message
    assert panel.state.workload == before and window.model_runner.started == started
    qtbot.wait(300)
    assert not log.exists()

    answers.append(True)                              # allowed: runs, in one process at a time
    alive_max = 0
    for _ in range(3):                                # opened three times in a row
        _open_action(window).trigger()
        for _ in range(10):
            qtbot.wait(100)
            pids = [int(p) for p in log.read_text().split()] if log.exists() else []
            alive_max = max(alive_max, sum(_alive(p) for p in pids))
    assert panel.state.workload.model == f"{name}:Net" and len(asked) == 4
    assert window.model_runner.started == started + 1   # the same workload again is no new run
    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload.model == f"{name}:Net", timeout=60_000)
    assert evaluation.result.totals.params == 8 * 2 + 2
    assert alive_max <= 1


def test_one_question_per_file_at_a_time(monkeypatch, tmp_path):
    """A second question about a file while the first is still open (a nested event loop) is not asked."""
    inner = []

    def ask(parent, path, why):
        inner.append(user_code.confirm_run(None, "x.py:Net", why))   # asked again meanwhile
        return True

    monkeypatch.setattr(user_code, "ask", ask)
    assert user_code.confirm_run(None, "x.py:Net", "why") is True
    assert inner == [False]
    assert user_code.confirm_run(None, "resnet50", "why") is True and len(inner) == 1   # no code: no question


def test_restoring_a_py_model_from_the_settings_asks_first(qtbot, tmp_path, monkeypatch):
    log = tmp_path / "runs.log"
    model = tmp_path / "slow_net.py"
    model.write_text(SLOW_NET.format(log=str(log)))
    last = Workload(f"{model}:Net", parse_inputs("2x8"))
    asked = []
    monkeypatch.setattr(user_code, "ask", lambda parent, path, why: asked.append(path) or False)
    window = make_window(qtbot, tmp_path, monkeypatch, workload=last)
    try:
        assert asked == [model.resolve()]
        assert window.workload_panel.state.workload.model == "resnet50"     # the default instead
        assert any("did not run" in n and str(model) in n for n in window.notes)
        assert window.model_runner.started == 0
        wait_for_plans(qtbot, window)
        assert not log.exists()
    finally:
        close_window(window)
    monkeypatch.setattr(user_code, "ask", lambda parent, path, why: asked.append(path) or True)
    window = make_window(qtbot, tmp_path, monkeypatch, workload=last)
    try:
        evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload.model == last.model, timeout=60_000)
        assert len(asked) == 2 and evaluation.result.totals.params == 18
    finally:
        close_window(window)


# -- a damaged set-up at launch --------------------------------------------------------------------------
def _damage(case: str, tmp_path: Path, env: dict) -> str:
    """Breaks one thing the app reads at launch; returns words the window must say about it."""
    config, settings, cache = Path(env["TORCHBUDGET_CONFIG_DIR"]), Path(env["TORCHBUDGET_SETTINGS"]), \
        Path(env["TORCHBUDGET_CACHE_DIR"])
    gpus = config / "gpus.toml"
    if case == "gpu_typo":
        gpus.write_text('[[gpu]]\nnmae = "My card"\n')
        return "unknown key"
    if case == "gpu_not_utf8":
        gpus.write_bytes(b'[[gpu]]\nname = "\xff\xfe"\n')
        return "not UTF-8"
    if case == "gpu_binary":
        gpus.write_bytes(random.Random(7).randbytes(400))
        return "was ignored"
    if case == "gpu_deep":
        gpus.write_text("a = " + "[" * 100_000)
        return "nests too deeply"
    if case == "settings_binary":
        settings.write_bytes(random.Random(3).randbytes(600))
        return "could not be read"
    if case == "settings_wrong_types":
        settings.write_text('[workload]\nlast={"format": 3}\nrecent_models=5\n[hardware]\nticked=@Invalid()\n'
                            'primary=@ByteArray(\\xff)\n[window]\ngeometry=hello\n')
        return "last workload was ignored"
    if case == "overflowing_last_workload":
        from torchbudget.gui.settings import Settings

        # written as an older version could have: the engine now refuses to build such a workload at all
        big = Workload("resnet18", (InputSpec((1, 3, 32, 32)),)).to_json().replace('"1x3x32x32"', f'"{10**40}x3x32x32"')
        saved = Settings(str(settings))
        saved._qs.setValue("workload/last", big)
        saved._qs.sync()
        return "too large"
    if case == "cache_is_a_file":
        cache.write_text("not a folder")
        return "is not a folder"
    if case == "cache_damaged_entries":
        from torchbudget.engine.trace_store import TraceStore
        from torchbudget.gui.settings import Settings, first_workload

        Settings(str(settings)).set_last_workload(LIGHT)
        store = TraceStore(cache)
        cache.mkdir(parents=True, exist_ok=True)
        first = first_workload(Settings(str(settings))).on_gpu(backend.resolve_gpu(backend.default_gpu_name()))
        store.path_for(first).write_bytes(b"\x1f\x8b damaged")
        (cache / "model_names-x.json.gz").write_bytes(b"junk")
        return "damaged trace"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["gpu_typo", "gpu_not_utf8", "gpu_binary", "gpu_deep", "settings_binary",
                                  "settings_wrong_types", "overflowing_last_workload", "cache_is_a_file",
                                  "cache_damaged_entries"])
def test_the_app_opens_with_a_damaged_setup_and_says_what_it_ignored(qtbot, qapp, tmp_path, monkeypatch, case):
    from torchbudget.gui.app import NO_PREFETCH_ENV, Startup
    from torchbudget.gui.settings import Settings
    from torchbudget.hardware import catalog

    env = {"TORCHBUDGET_CONFIG_DIR": str(tmp_path / "config"), "TORCHBUDGET_SETTINGS": str(tmp_path / "s.ini"),
           "TORCHBUDGET_CACHE_DIR": str(tmp_path / "traces"), NO_PREFETCH_ENV: "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "config").mkdir()
    if case not in ("settings_binary", "settings_wrong_types", "overflowing_last_workload"):
        Settings(env["TORCHBUDGET_SETTINGS"]).set_last_workload(LIGHT)
    words = _damage(case, tmp_path, env)
    catalog.reload()
    opened = []
    startup = Startup(qapp, on_ready=opened.append)
    try:
        qtbot.waitUntil(lambda: bool(opened), timeout=60_000)
        window = opened[0]
        assert window.isVisible()
        assert any(words in note for note in window.notes), window.notes
        assert words in window.notice_label.toolTip()
        if case.startswith("gpu_"):
            assert words in window.hardware_panel.file_problem.message
            assert window.hardware_panel.primary().origin == "database"   # the built-in database
        evaluation = wait_for_plans(qtbot, window)                          # and it works
        assert evaluation.plans[0].verdict is not None
    finally:
        if opened:
            close_window(opened[0])
        startup.preload.join(60.0)
        catalog.reload()


def test_saving_a_custom_gpu_on_a_full_disk_says_so_in_the_editor(qtbot, tmp_path, monkeypatch):
    import tempfile as tempfile_module

    from torchbudget.gui.gpu_editor import GpuEditorDialog
    from torchbudget.gui.hardware_panel import HardwarePanel
    from torchbudget.hardware import catalog, user_file

    monkeypatch.setenv("TORCHBUDGET_CONFIG_DIR", str(tmp_path))
    catalog.reload()
    panel = HardwarePanel()
    qtbot.addWidget(panel)
    panel.select("T4")
    dialogs = []

    def fake_exec(dialog):   # the user names the card and presses Save
        dialogs.append(dialog)
        dialog.name_edit.setText("Lab card 9")
        dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
        return dialog.result()

    monkeypatch.setattr(GpuEditorDialog, "exec", fake_exec)
    panel.custom_button.click()                        # a first card saves fine
    assert panel.primary().name == "Lab card 9"
    saved = (tmp_path / "gpus.toml").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real_named = tempfile_module.NamedTemporaryFile

    def named_then_full(*args, **kwargs):   # the temporary file is made, then writing it fails
        handle = real_named(*args, **kwargs)
        handle.write = full_disk
        return handle

    for target, name, replacement in ((user_file.tempfile, "NamedTemporaryFile", full_disk),
                                      (user_file.tempfile, "NamedTemporaryFile", named_then_full),
                                      (user_file.os, "replace", full_disk)):
        with monkeypatch.context() as patch:
            patch.setattr(target, name, replacement)
            panel.select("T4")
            panel.custom_button.click()
        dialog = dialogs[-1]
        assert "No space left on device" in dialog.error.message and "unchanged" in dialog.error.message
        assert not dialog.saved and dialog.result() == 0   # the dialog stays open with what was typed
        assert dialog.name_edit.text() == "Lab card 9"
        assert (tmp_path / "gpus.toml").read_bytes() == saved
        assert sorted(p.name for p in tmp_path.iterdir()) == ["gpus.toml"]   # no .tmp left behind
    catalog.reload()


# -- background work ---------------------------------------------------------------------------------
def test_the_resolution_sweep_leaves_out_what_fails_and_keeps_the_verdict(qtbot, tmp_path, monkeypatch):
    """Default window switched to training: resnet50 cannot train at 32 px at batch 1 (BatchNorm needs
    more than one value per channel), so the sweep leaves that point out and says so; the verdict stays."""
    window = make_window(qtbot, tmp_path, monkeypatch)
    try:
        wait_for_plans(qtbot, window)
        panel = window.workload_panel
        panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("train"))
        wait_for_plans(qtbot, window, lambda ev: ev.workload.options.training)
        qtbot.waitUntil(lambda: window.resolution_sweep is not None
                        and window.resolution_sweep.gpus and window.state.workload.options.training
                        and bool(window.resolution_sweep.notes), timeout=120_000)
        qtbot.waitUntil(lambda: not window.busy, timeout=120_000)
        assert "Fits" in window.verdict.verdict_text()
        assert window.evaluation.workload.options.training
        plot = window.plots.memory_vs_resolution
        assert "left out" in plot.getPlotItem().titleLabel.text and "resolution 32" in plot.toolTip()
        assert plot.getPlotItem().listDataItems()       # the points that work are drawn
    finally:
        close_window(window)


def test_moving_the_batch_marker_a_thousand_times_adds_nothing(qtbot):
    from torchbudget.engine.cache import TraceCache
    from torchbudget.gui.plots import SweepPlots
    from torchbudget.hardware.catalog import resolve_gpu

    sweep = backend.batch_sweep(LIGHT, [resolve_gpu("A100 SXM 80GB")], TraceCache())
    plots = SweepPlots()
    for w in plots.widgets():
        qtbot.addWidget(w)
    plots.show_batch_sweep(sweep, 1)
    widgets = plots.widgets()[:3]
    items = [len(w.getPlotItem().items) for w in widgets]
    scene = [len(w.scene().items()) for w in widgets]
    for i in range(1000):
        plots.mark_batch(1 + i % 700)
    assert [len(w.getPlotItem().items) for w in widgets] == items
    assert [len(w.scene().items()) for w in widgets] == scene
    assert [round(10 ** line.value()) for _, line in plots._current_lines] == [1 + 999 % 700] * 3


REDRAWS = """
import json, sys
from PySide6.QtWidgets import QApplication
app = QApplication([])
from torchbudget.engine.report.schema import sweep_from_dict
from torchbudget.gui.plots import SweepPlots
sweep = sweep_from_dict(json.loads(sys.stdin.read()))
plots = SweepPlots()
for i in range(120):
    plots.show_batch_sweep(sweep, 1 + i)
print("redrawn", "torch" in sys.modules, flush=True)
"""


def test_redrawing_the_plots_for_a_long_session_does_not_abort_the_app():
    """PySide6 6.12 loses a reference to None each time Qt hands None to pyqtgraph's itemChange; without
    gui.qt_fixes, Python 3.11 aborts (none_dealloc) after about 80 redraws of the batch plots."""
    import json
    import subprocess
    import sys

    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.report.schema import sweep_to_dict
    from torchbudget.hardware.catalog import resolve_gpu

    sweep = backend.batch_sweep(LIGHT, [resolve_gpu("A100 SXM 80GB"), resolve_gpu("T4")], TraceCache())
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", REDRAWS], cwd=root, capture_output=True, text=True, timeout=600,
                          input=json.dumps(sweep_to_dict(sweep)), env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert done.returncode == 0 and "redrawn False" in done.stdout, done.stderr[-1500:]


TOLIST_NET = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        stats = x.tolist()   # data-dependent: slow to trace, the more so the larger the input
        return self.fc(self.pool(self.conv(x)).flatten(1))
"""


def test_a_model_calling_tolist_shows_its_verdict_before_its_sweeps(qtbot, window, tmp_path):
    """Its traces get slower with the input's size, so the largest-batch search takes minutes; the model
    process replies with the verdict first."""
    path = tmp_path / "tolist_net.py"
    path.write_text(textwrap.dedent(TOLIST_NET))
    window.model_runner.warm_up()
    standby = window.model_runner._standby
    qtbot.waitUntil(lambda: (standby.read(), standby.ready)[1], timeout=120_000)   # PyTorch imported next door
    panel = window.workload_panel
    _type(qtbot, panel.inputs_edit, "1x3x32x32")
    started = time.monotonic()
    panel.open_python_file(str(path), "Net")
    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload.model.endswith("tolist_net.py:Net"),
                                timeout=60_000)
    elapsed = time.monotonic() - started
    assert elapsed < 30, elapsed
    assert evaluation.result.totals.params == 3 * 8 * 9 + 8 + 8 * 4 + 4
    assert "Cannot analyse" not in window.verdict.verdict_text()
    assert window.model_runner.running          # its sweeps are still being worked out, next door


def test_a_refused_intermediate_number_keeps_the_typed_digits_and_says_why(qtbot, window):
    # batch 32 x 3 x 400000000**2 floats is beyond 2**63 bytes: the state refuses the 9-digit resolution on the
    # way to a 10-digit one; the box keeps what was typed, the line under it says why, and the box shows the
    # workload's resolution again when typing ends
    panel = window.workload_panel
    _type(qtbot, panel.inputs_edit, "32x3x32x32")
    spin = panel.resolution_spin
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "400000000")
    assert spin.value() == 400_000_000
    assert "too large" in panel.errors["resolution"].message
    assert image_side_of(panel) == 40_000_000
    qtbot.keyClick(spin.lineEdit(), "0")
    assert "resolution 4000000000 is too large: at most 2,147,483,647" in panel.errors["resolution"].message
    spin.editingFinished.emit()
    assert spin.value() == 40_000_000 and panel.errors["resolution"].message


def image_side_of(panel):
    return panel.state.workload.inputs[0].shape[-1]

"""GUI responsiveness: launch → verdict in a fresh process, batch change → updated verdict (resnet50), and
sequence-length change → updated verdict on a token model (gpt2, after its first trace and sweeps);
memory: the app's RSS after 1,000 batch-slider moves against after 100 (a fresh process).
Targets: verdict ≤ 3 s after launch; batch change ≤ 200 ms; seq-len change ≤ 200 ms after the first trace;
RSS growth ≤ 50 MiB from move 100 to 1,000."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

STARTUP_TARGET_S = 3.0
BATCH_TARGET_MS = 200.0
SEQ_LEN_TARGET_MS = 200.0
RSS_TARGET_MIB = 50.0

CHILD = textwrap.dedent("""
    import os, sys, time
    t0 = float(os.environ["BENCH_T0"])
    marks = {"start": time.time() - t0}
    from torchbudget.gui import app as gui_app
    original_init = gui_app.Startup.__init__
    def init(self, *args, **kwargs):   # the placeholder is on screen once the constructor returns
        original_init(self, *args, **kwargs)
        global startup
        startup = self
        self.app.processEvents()
        marks["placeholder"] = time.time() - t0
    gui_app.Startup.__init__ = init
    def ready(window):   # called as the main window opens, before any verdict can arrive
        window.preload_timings = startup.preload.timings
        marks["window"] = time.time() - t0
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication, QWidget
        def repaint(widget):   # MainWindow repaints its first verdict at once: on screen after this
            QWidget.repaint(widget)
            if "on " in widget.verdict_text() and "verdict" not in marks:
                marks["verdict"] = time.time() - t0
                marks["torch_loaded"] = float("torch" in sys.modules)
        type(window.verdict).repaint = repaint
        # stay until the first request is done (sweeps included), as a user's session would: its traces are
        # then in the store for the next launch
        window.runner.finished.connect(lambda _result: QTimer.singleShot(0, report))
        def report():
            print(" ".join(f"{k} {v:.3f}" for k, v in marks.items()), flush=True)
            print("preload", window.preload_timings, file=sys.stderr, flush=True)
            window.close()
            QApplication.instance().quit()
    gui_app.run_app(on_ready=ready)
""")


# the floor: what the first verdict cannot do without, in a bare process (no Qt), step by step
FLOOR = textwrap.dedent("""
    import time
    t = [time.perf_counter()]
    import torch; t.append(time.perf_counter())
    import torchbudget.engine.api, torchbudget.engine.planner; t.append(time.perf_counter())   # torchvision.models; torch._dynamo
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.planner import plan_result
    from torchbudget.engine.results import TraceOptions
    from torchbudget.engine.workload import Workload
    from torchbudget.hardware.catalog import default_gpu
    workload = Workload("resnet50", parse_inputs("1x3x224x224"), TraceOptions(optimizer=None))   # the default
    result = TraceCache().get(workload); t.append(time.perf_counter())
    plan_result(result, default_gpu(), workload=workload); t.append(time.perf_counter())
    steps = ("torch", "torchvision+engine", "trace", "plan")
    print("floor", " ".join(f"{k.replace(' ', '_')} {b - a:.3f}" for k, a, b in zip(steps, t, t[1:])),
          f"total {t[-1] - t[0]:.3f}", flush=True)
""")


def floor_times(runs: int = 2) -> list[dict]:
    out = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", FLOOR], capture_output=True, text=True, timeout=300,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
        line = [l for l in done.stdout.splitlines() if l.startswith("floor")]
        if not line:
            raise RuntimeError(f"floor bench child failed: {done.stderr[-2000:]}")
        parts = line[-1].split()[1:]
        out.append(dict(zip(parts[::2], map(float, parts[1::2]))))
    return out


def _env(tmp: str) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"),
               TORCHBUDGET_SETTINGS=os.path.join(tmp, "settings.ini"), TORCHBUDGET_CONFIG_DIR=tmp,
               TORCHBUDGET_CACHE_DIR=os.path.join(tmp, "traces"))
    return env


def _launch(env: dict) -> dict:
    env = dict(env, BENCH_T0=repr(time.time()))
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = [l for l in done.stdout.splitlines() if l.startswith("start")]
    if not line:
        raise RuntimeError(f"startup bench child failed: {done.stderr[-2000:]}")
    if os.environ.get("BENCH_VERBOSE"):
        print(done.stderr.strip().splitlines()[-1])
    parts = line[-1].split()
    return dict(zip(parts[::2], map(float, parts[1::2])))


def startup_times(runs: int = 2) -> list[tuple[dict, dict]]:
    """(first launch: empty settings and trace store, next launch: same settings and store) per run."""
    out = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = _env(tmp)
            out.append((_launch(env), _launch(env)))
    return out


def batch_change_ms(batches=(2, 4, 8, 16, 32, 48, 64, 96, 128, 256)) -> tuple[list[float], list[float]]:
    """(first visit of each batch, revisit) latencies from setValue to the updated verdict on screen."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = tempfile.mkdtemp()
    os.environ.update(TORCHBUDGET_SETTINGS=os.path.join(tmp, "settings.ini"), TORCHBUDGET_CONFIG_DIR=tmp,
                      TORCHBUDGET_CACHE_DIR=os.path.join(tmp, "traces"))
    from torchbudget.gui.app import make_app
    from torchbudget.gui.main_window import MainWindow

    app = make_app([])
    window = MainWindow()
    window.show()

    def wait(predicate, timeout=300.0):
        deadline = time.perf_counter() + timeout
        while not predicate():
            app.processEvents()
            time.sleep(0.001)
            if time.perf_counter() > deadline:
                raise RuntimeError("timed out waiting for the window")

    wait(lambda: window.evaluation is not None and not window.busy and window.comparison is not None)
    first, again = [], []
    for sample in (first, again):
        for batch in batches:
            start = time.perf_counter()
            window.workload_panel.batch_spin.setValue(batch)
            wait(lambda: window.evaluation.workload.batch_size == batch)
            sample.append((time.perf_counter() - start) * 1000)
            wait(lambda: not window.busy)   # let the exact trace and sweeps finish before the next move
        window.workload_panel.batch_spin.setValue(1)
        wait(lambda: window.evaluation.workload.batch_size == 1 and not window.busy)
    window.close()
    return first, again


def seq_len_change_ms(model: str = "gpt2", lengths=(128, 256, 512, 192, 320, 64)) -> tuple[list[float], list[float], float]:
    """(first visit of each length, revisit) latencies from the sequence-length slider's setValue to the updated
    verdict on screen, on a token model, once its first trace and sweeps are done (the sweep traces the powers of
    two, so those are cached; 192 and 320 are not); and the first trace's seconds."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = tempfile.mkdtemp()
    os.environ.update(TORCHBUDGET_SETTINGS=os.path.join(tmp, "settings.ini"), TORCHBUDGET_CONFIG_DIR=tmp,
                      TORCHBUDGET_CACHE_DIR=os.path.join(tmp, "traces"))
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.workload import Workload
    from torchbudget.gui.app import make_app
    from torchbudget.gui.main_window import MainWindow
    from torchbudget.gui.settings import Settings
    from torchbudget.gui.workload_panel import SEQ_LEN_STEP

    app = make_app([])
    Settings().set_last_workload(Workload(model, parse_inputs("input_ids=1x1024:int64")))
    start = time.perf_counter()
    window = MainWindow()
    window.show()

    def wait(predicate, timeout=600.0):
        deadline = time.perf_counter() + timeout
        while not predicate():
            app.processEvents()
            time.sleep(0.001)
            if time.perf_counter() > deadline:
                raise RuntimeError("timed out waiting for the window")

    wait(lambda: window.evaluation is not None and window.evaluation.result is not None)
    first_trace_s = time.perf_counter() - start
    wait(lambda: not window.busy and window.comparison is not None and window.resolution_sweep is not None)
    slider = window.workload_panel.seq_len_slider
    first, again = [], []
    for sample in (first, again):
        for length in lengths:
            start = time.perf_counter()
            slider.setValue(length // SEQ_LEN_STEP)
            wait(lambda: window.evaluation.workload.seq_len == length)
            sample.append((time.perf_counter() - start) * 1000)
            wait(lambda: not window.busy)   # the exact trace, the largest batch and the sweeps, before the next move
    window.close()
    return first, again, first_trace_s


SLIDER_RSS = textwrap.dedent("""
    import sys, time
    from torchbudget.gui.app import make_app
    from torchbudget.gui.main_window import MainWindow

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    app = make_app([])
    window = MainWindow()
    window.show()

    def wait(predicate, timeout=300.0):
        deadline = time.perf_counter() + timeout
        while not predicate():
            app.processEvents()
            time.sleep(0.001)
            if time.perf_counter() > deadline:
                raise SystemExit("timed out waiting for the window")

    wait(lambda: window.evaluation is not None and not window.busy and window.batch_sweep is not None)
    slider = window.workload_panel.batch_slider
    marks, started = {}, time.perf_counter()
    for move in range(1, int(sys.argv[1]) + 1):
        batch = 1 + (move * 37) % slider.maximum()   # a drag back and forth over the whole slider
        slider.setValue(batch)
        app.processEvents()
        if move % 10 == 0:   # a pause in the drag: its verdict lands (the sweeps behind it are superseded)
            wait(lambda: window.evaluation.workload.batch_size == batch)
        if move in (100, int(sys.argv[1])):
            wait(lambda: not window.busy)
            marks[move] = rss_mib()
    print("rss", " ".join(f"{k} {v:.1f}" for k, v in marks.items()), f"seconds {time.perf_counter() - started:.0f}",
          flush=True)
    window.close()
""")


def slider_rss_mib(moves: int = 1000) -> dict[int, float]:
    """{moves: RSS in MiB} after 100 and after ``moves`` batch-slider moves, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", SLIDER_RSS, str(moves)], env=_env(tmp), capture_output=True,
                              text=True, timeout=3600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = [l for l in done.stdout.splitlines() if l.startswith("rss")]
    if not line:
        raise RuntimeError(f"slider RSS bench child failed: {done.stderr[-2000:]}")
    parts = line[-1].split()[1:]
    return {int(k) if k.isdigit() else k: float(v) for k, v in zip(parts[::2], parts[1::2])}


def run() -> list[str]:
    lines = []
    for i in range(1, 4):   # interleaved: the same machine load for the app and its floor
        (cold, warm), floor = startup_times(1)[0], floor_times(1)[0]
        for label, s in (("first launch (traces)", cold), ("next launch (stored trace)", warm)):
            lines.append(f"launch run {i}, {label}: placeholder {s['placeholder']:.2f} s, main window "
                         f"{s['window']:.2f} s, verdict {s['verdict']:.2f} s (target ≤ {STARTUP_TARGET_S:g} s), "
                         f"PyTorch {'loaded' if s['torch_loaded'] else 'not loaded'} at the verdict")
        lines.append(f"launch run {i}, bare floor of a first launch (no Qt): "
                     + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in floor.items()) + " s")
    first, again = batch_change_ms()
    for label, sample in (("new batch (affine scaling of cached traces)", first), ("revisited batch (cached)", again)):
        lines.append(f"batch change → verdict, {label}: median {statistics.median(sample):.0f} ms, "
                     f"max {max(sample):.0f} ms over {len(sample)} (target ≤ {BATCH_TARGET_MS:g} ms)")
    first, again, traced_s = seq_len_change_ms()
    for label, sample in (("new length (powers of two traced by the sweep; 192, 320 not)", first),
                          ("revisited length (cached)", again)):
        outcome = "met" if max(sample) <= SEQ_LEN_TARGET_MS else "NOT met"
        lines.append(f"seq-len change → verdict (gpt2, first trace {traced_s:.1f} s), {label}: "
                     + ", ".join(f"{v:.0f}" for v in sample) + f" ms; median {statistics.median(sample):.0f} ms, "
                     f"max {max(sample):.0f} ms (target ≤ {SEQ_LEN_TARGET_MS:g} ms: {outcome})")
    rss = slider_rss_mib()
    lines.append(f"RSS after 100 batch-slider moves {rss[100]:.1f} MiB, after 1,000 {rss[1000]:.1f} MiB: "
                 f"{rss[1000] - rss[100]:+.1f} MiB (target ≤ +{RSS_TARGET_MIB:g} MiB; {rss['seconds']:.0f} s)")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))

"""Render each view to PNG: ``python -m torchbudget.gui.screenshots docs/screenshots`` (``make screenshots``).
Uses a temporary settings file and hardware directory, so the user's own are never touched."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

WORKLOAD_JSON = """{"format": "torchbudget-workload/1", "model": "resnet50", "inputs": ["64x3x224x224"],
 "mode": "train", "precision": "bf16-amp", "optimizer": "adamw", "checkpointing": false}"""
PRIMARY, TICKED = "RTX 4090", ("A100 SXM 80GB", "L4", "T4")
# the token mode: a small Llama (the tests' own model file) decoding 8 sequences against a 2,048-token fp8 cache
TOKEN_MODEL = Path(__file__).resolve().parents[1] / "tests" / "models" / "tiny_llms.py"
TOKEN_WORKLOAD = {"format": "torchbudget-workload/1", "model": f"{TOKEN_MODEL}:TinyLlama",
                  "inputs": ["input_ids=8x1:int64"], "mode": "decode", "precision": "bf16", "context_len": 2048,
                  "kv_dtype": "fp8"}
# several GPUs: the same Llama trained with FSDP over 8 H100s (the cluster panel, the per-rank verdict, the step bar)
CLUSTER_WORKLOAD = {"format": "torchbudget-workload/1", "model": f"{TOKEN_MODEL}:TinyLlama",
                    "inputs": ["input_ids=8x512:int64"], "mode": "train", "precision": "bf16-amp",
                    "strategy": "fsdp", "world_size": 8}
SIZE = (1600, 1000)
TIMEOUT_S = 600


def _dark_palette():
    from PySide6.QtGui import QColor, QPalette

    palette = QPalette()
    for role, color in ((QPalette.ColorRole.Window, "#2b2b2b"), (QPalette.ColorRole.WindowText, "#e6e6e6"),
                        (QPalette.ColorRole.Base, "#1e1e1e"), (QPalette.ColorRole.AlternateBase, "#2f2f2f"),
                        (QPalette.ColorRole.Text, "#e6e6e6"), (QPalette.ColorRole.Button, "#3a3a3a"),
                        (QPalette.ColorRole.ButtonText, "#e6e6e6"), (QPalette.ColorRole.Highlight, "#3d7bd9"),
                        (QPalette.ColorRole.HighlightedText, "#ffffff"), (QPalette.ColorRole.Link, "#6fb1ff"),
                        (QPalette.ColorRole.Mid, "#555555"), (QPalette.ColorRole.ToolTipBase, "#333333"),
                        (QPalette.ColorRole.ToolTipText, "#e6e6e6"), (QPalette.ColorRole.PlaceholderText, "#9a9a9a")):
        palette.setColor(role, QColor(color))
    return palette


def _open_window(app, tmp: Path, workload_json: str = WORKLOAD_JSON, ticked=TICKED, primary=PRIMARY):
    from torchbudget.engine.workload import Workload
    from torchbudget.gui.main_window import MainWindow
    from torchbudget.gui.settings import Settings

    settings = Settings(str(tmp / f"settings-{time.monotonic_ns()}.ini"))
    workload = Workload.from_json(workload_json)
    settings.set_last_workload(workload)
    settings.set_ticked_gpus(list(ticked))
    settings.set_primary_gpu(primary)
    window = MainWindow(settings=settings)
    window.resize(*SIZE)
    window.show()
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        app.processEvents()
        ev = window.evaluation
        done = (ev is not None and not ev.interpolated and not window.busy and window.comparison is not None
                and (window.resolution_sweep is not None if workload.options.mode != "decode" else
                     ev.plans[0].max_batch is not None and ev.plans[0].generation.max_context is not None))
        if done:
            break
        time.sleep(0.02)
    else:
        raise SystemExit("the analysis did not finish in time; no screenshots written")
    window.layer_view.expandToDepth(0)
    app.processEvents()
    return window


def _show_tab(app, window, title: str):
    for i in range(window.tabs.count()):
        if window.tabs.tabText(i) == title:
            window.tabs.setCurrentIndex(i)
    for _ in range(5):
        app.processEvents()
        time.sleep(0.02)


def render(out_dir: str) -> list[Path]:
    from torchbudget.gui.app import make_app

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="torchbudget-shots-"))
    os.environ["TORCHBUDGET_CONFIG_DIR"] = str(tmp / "config")
    os.environ["TORCHBUDGET_CACHE_DIR"] = str(tmp / "traces")   # traced afresh: nothing from an earlier run
    app = make_app([])
    app.setStyle("Fusion")
    written = []
    window = _open_window(app, tmp)
    shots = (("main_window.png", "Layers", None), ("layer_tree.png", "Layers", "tabs"),
             ("memory_vs_batch.png", "Memory vs batch", "tabs"), ("latency_vs_batch.png", "Latency vs batch", "tabs"),
             ("throughput_vs_batch.png", "Throughput vs batch", "tabs"),
             ("memory_vs_resolution.png", "Memory vs resolution", "tabs"), ("roofline.png", "Roofline", "tabs"),
             ("comparison.png", "Comparison", "tabs"))
    for name, tab, part in shots:
        _show_tab(app, window, tab)
        widget = window.tabs if part == "tabs" else window
        path = out / name
        widget.grab().save(str(path), "PNG")
        written.append(path)
    window.close()
    app.setPalette(_dark_palette())          # the same window under a dark system palette
    dark = _open_window(app, tmp)
    _show_tab(app, dark, "Memory vs batch")
    path = out / "main_window_dark.png"
    dark.grab().save(str(path), "PNG")
    written.append(path)
    dark.close()
    if TOKEN_MODEL.exists():   # a checkout: the token mode, decoding with the tests' small Llama
        import json

        from torchbudget.gui import user_code

        app.setPalette(app.style().standardPalette())
        user_code.ask = lambda parent, path, why: True   # the project's own model file
        token = _open_window(app, tmp, json.dumps(TOKEN_WORKLOAD), ticked=("L4",), primary="H100 SXM")
        _show_tab(app, token, "Memory vs context")
        path = out / "token_mode.png"
        token.grab().save(str(path), "PNG")
        written.append(path)
        token.close()
        cluster = _open_window(app, tmp, json.dumps(CLUSTER_WORKLOAD), ticked=(), primary="H100 SXM")
        _show_tab(app, cluster, "Memory vs sequence length")
        from PySide6.QtWidgets import QScrollArea

        cluster.findChild(QScrollArea).ensureWidgetVisible(cluster.workload_panel.cluster_group)
        app.processEvents()
        path = out / "cluster.png"
        cluster.grab().save(str(path), "PNG")
        written.append(path)
        cluster.close()
    return written


def main(argv: list[str]) -> int:
    out_dir = argv[0] if argv else "docs/screenshots"
    for path in render(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

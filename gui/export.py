"""Export and workload files: JSON (the CLI's schema, via the same serialization functions), CSV of the
layers, a Markdown report with the plots as PNG, the layer table to the clipboard, and workload files
(``Workload.to_json``/``from_json``, never pickle). Also installs the menus and keyboard shortcuts."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QFileDialog

from torchbudget.engine.errors import UserError
from torchbudget.engine.report.markdown import markdown_to_html, plan_report
from torchbudget.engine.report.schema import analysis_to_dict, dump_json, plan_to_dict
from torchbudget.engine.workload import Workload
from torchbudget.gui import user_code
from torchbudget.gui.state import check_workload

CSV_HEADERS = ("module", "type", "output_shape", "params", "macs", "flops", "activation_bytes", "latency_bound_ms",
               "bound_by")


def json_document(window) -> dict:
    """``plan --json``'s document for the primary GPU (the report layer's schema, as the CLI), plus the
    per-layer analysis under "analysis" (``analyze --json``'s) and every ticked GPU under "plans"."""
    evaluation = window.evaluation
    if evaluation is None or evaluation.result is None:
        raise UserError("nothing to export yet: wait for the analysis to finish", field="file")
    document = plan_to_dict(evaluation.plans[0])
    document["analysis"] = analysis_to_dict(evaluation.result, include_ops=True, include_events=True)
    document["plans"] = [plan_to_dict(p) for p in evaluation.plans]
    return document


def export_json(window, path: str) -> None:
    Path(path).write_text(dump_json(json_document(window)), encoding="utf-8")


def layer_rows(window) -> list[list]:
    model = window.layer_model
    rows = []
    for node in model.rows_flat():
        bound_s = model.raw_value(node, 7)
        rows.append([node.path or node.name, node.type_name, model.raw_value(node, 2), node.params, node.macs,
                     node.flops, node.activation_bytes, "" if bound_s is None else round(bound_s * 1e3, 6),
                     model.raw_value(node, 8)])
    return rows


def export_csv(window, path: str) -> None:
    if not window.layer_model.rows_flat():
        raise UserError("nothing to export yet: wait for the analysis to finish", field="file")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADERS)
        writer.writerows(layer_rows(window))


def copy_layers_to_clipboard(window) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(CSV_HEADERS)
    writer.writerows(layer_rows(window))
    QGuiApplication.clipboard().setText(buffer.getvalue())
    return buffer.getvalue()


def save_plot_png(widget, path: Path) -> None:
    widget.grab().save(str(path), "PNG")


def export_report(window, path: str) -> list[Path]:
    """A Markdown report (or HTML when the name ends in .html) with PNGs of the plots beside it."""
    evaluation = window.evaluation
    if evaluation is None or evaluation.result is None:
        raise UserError("nothing to export yet: wait for the analysis to finish", field="file")
    target = Path(path)
    images_dir = target.with_name(target.stem + "_files")
    images_dir.mkdir(parents=True, exist_ok=True)
    images = []
    named = [("memory_vs_batch", window.plots.memory_vs_batch), ("latency_vs_batch", window.plots.latency_vs_batch),
             ("throughput_vs_batch", window.plots.throughput_vs_batch),
             ("memory_vs_resolution", window.plots.memory_vs_resolution), ("roofline", window.roofline.widget)]
    for name, widget in named:
        png = images_dir / f"{name}.png"
        save_plot_png(widget, png)
        images.append(png)
    text = plan_report(evaluation.plans[0], [(png.stem.replace("_", " "), f"{images_dir.name}/{png.name}")
                                             for png in images])
    if target.suffix.lower() in (".html", ".htm"):
        text = markdown_to_html(text)
    target.write_text(text, encoding="utf-8")
    return [target, *images]


def export_to(window, path: str) -> None:
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        export_json(window, path)
    elif suffix == ".csv":
        export_csv(window, path)
    elif suffix in (".md", ".html", ".htm"):
        export_report(window, path)
    else:
        raise UserError(f"cannot export to {Path(path).name}: use .json, .csv, .md or .html", field="file")


def save_workload(window, path: str) -> None:
    workload = window.current_workload()
    if workload is None:
        raise UserError("fix the highlighted field before saving the workload", field="file")
    try:
        Path(path).write_text(workload.to_json(), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"could not save {Path(path).name}: {exc.strerror or exc}", field="file") from None


def read_workload_file(path: str) -> Workload:
    """A workload file, checked field by field (engine) and against what the app can show (gui.state);
    any problem is one UserError naming the file and the field."""
    name = Path(path).name
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"cannot open {name}: it is not a workload file (not UTF-8 text)", field="file") from None
    except OSError as exc:
        raise UserError(f"cannot open {name}: {exc.strerror or exc}", field="file") from None
    try:
        workload = Workload.from_json(text)
        check_workload(workload)
    except UserError as exc:
        raise UserError(f"cannot open {name}: {exc}", field="file") from None
    return workload


def open_workload(window, path: str) -> Workload:
    """Reads ``path`` and shows its workload; a model defined in a .py file runs only once the user allows
    it. On any problem a UserError, and the workload on screen stays as it was."""
    workload = read_workload_file(path)
    name = Path(path).name
    if not user_code.confirm_run(window, workload.model, f"{name} names a model defined in this Python file"):
        raise UserError(f"did not open {name}: it runs {user_code.model_path(workload.model)}, which was not "
                        "allowed", field="file")
    try:
        notes = window.load_workload(workload, source="file")
    except UserError as exc:
        raise UserError(f"cannot open {name}: {exc}", field="file") from None
    window.workload_panel.errors["file"].clear_message()
    window.progress_label.setText(f"Opened {name}" + "".join(f"; {n}" for n in notes))
    return workload


def install_actions(window) -> None:
    def guarded(fn):
        def run():
            try:
                fn()
            except UserError as exc:
                window.show_file_error(exc)
            except OSError as exc:   # a full disk, a folder without rights: said, never a traceback
                window.show_file_error(UserError(f"could not write: {exc.strerror or exc}", field="file"))
        return run

    def ask_open():
        path, _ = QFileDialog.getOpenFileName(window, "Open workload", "", "Workload files (*.json)")
        if path:
            open_workload(window, path)

    def ask_save():
        path, _ = QFileDialog.getSaveFileName(window, "Save workload", "workload.json", "Workload files (*.json)")
        if path:
            save_workload(window, path)

    def ask_export():
        path, _ = QFileDialog.getSaveFileName(window, "Export", "torchbudget.json",
                                              "JSON (*.json);;Layers CSV (*.csv);;Markdown report (*.md);;"
                                              "HTML report (*.html)")
        if path:
            export_to(window, path)
            window.progress_label.setText(f"Exported {path}")

    menus = {}
    for menu_name, text, shortcut, fn, tip in (
        ("&File", "&Open workload…", QKeySequence.StandardKey.Open, ask_open, "Open a saved workload file (Ctrl+O)"),
        ("&File", "&Save workload…", QKeySequence.StandardKey.Save, ask_save, "Save this workload as JSON (Ctrl+S)"),
        ("&File", "&Export…", "Ctrl+E", ask_export, "Export JSON, layers CSV or a report with plots (Ctrl+E)"),
        ("&File", "Open model &file (.py)…", "Ctrl+Shift+O", window.workload_panel.open_python_file,
         "Analyse a model from your own Python file"),
        ("&File", "&Quit", QKeySequence.StandardKey.Quit, window.close, "Close TorchBudget"),
        ("&Edit", "&Copy layer table", "Ctrl+Shift+C", lambda: copy_layers_to_clipboard(window),
         "Copy every layer as tab-separated text"),
        ("&Run", "&Re-run analysis", "F5", window.rerun, "Analyse again (F5)"),
        ("&Run", "&Cancel", "Esc", window.cancel, "Stop the running analysis"),
    ):
        menu = menus.get(menu_name) or window.menuBar().addMenu(menu_name)
        menus[menu_name] = menu
        action = QAction(text, window)
        action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.setToolTip(tip)
        action.triggered.connect(guarded(fn))
        menu.addAction(action)
        window.addAction(action)

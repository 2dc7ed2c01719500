"""Export and workload files: JSON (the CLI's schema, via the same serialization functions), CSV of the
layers, a Markdown report with the plots as PNG, the layer table to the clipboard, and workload files
(``Workload.to_json``/``from_json``, never pickle). Also installs the menus and keyboard shortcuts."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QFileDialog

from torchbudget.cli.format import dump_json, human_bytes, human_count, human_ms
from torchbudget.engine.errors import UserError
from torchbudget.engine.workload import Workload
from torchbudget.gui.colors import CATEGORY_LABELS, VERDICT_TEXT

CSV_HEADERS = ("module", "type", "output_shape", "params", "macs", "flops", "activation_bytes", "latency_bound_ms",
               "bound_by")


def json_document(window) -> dict:
    """``plan --json``'s document for the primary GPU (the CLI's own ``plan_to_dict``), plus the per-layer
    analysis under "analysis" (``analyze --json``'s ``result_to_dict``) and every ticked GPU under "plans"."""
    evaluation = window.evaluation
    if evaluation is None or evaluation.result is None:
        raise UserError("nothing to export yet: wait for the analysis to finish", field="file")
    from torchbudget.cli.plan import plan_to_dict   # the CLI's own serializers, so both write the same schema
    from torchbudget.engine.serialize import result_to_dict

    document = plan_to_dict(evaluation.plans[0])
    document["analysis"] = result_to_dict(evaluation.result)
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
    plan, result, workload = evaluation.plans[0], evaluation.result, evaluation.workload
    lines = [f"# TorchBudget report: {workload.model}", "",
             f"Input {', '.join(s.text() for s in workload.inputs)}, {workload.options.precision}, "
             f"{'training' if workload.options.mode == 'train' else 'inference'}.", "",
             f"**{VERDICT_TEXT[plan.verdict.value].split('  ')[1]} on {plan.gpu.name}**: needs "
             f"{human_bytes(plan.required_bytes)} of {human_bytes(plan.capacity_bytes)} usable.", "",
             "| Figure | Value |", "|---|---|",
             f"| Parameters | {human_count(result.totals.params)} |",
             f"| MACs (forward) | {human_count(result.totals.macs)} |",
             f"| FLOPs (forward) | {human_count(result.totals.flops)} |",
             f"| Largest batch | {plan.max_batch if plan.max_batch is not None else '—'} |",
             f"| Latency bound | {human_ms(plan.latency.lower_bound_ms)} |",
             f"| Latency estimate | {human_ms(plan.latency.estimate_ms)} |",
             f"| Throughput | {plan.throughput_samples_per_s:,.0f} samples/s |", "",
             "## Memory at the peak", "", "| Category | Bytes |", "|---|---|",
             *[f"| {CATEGORY_LABELS[c]} | {human_bytes(n)} |" for c, n in plan.memory.by_category.items() if n],
             "", "## Plots", "",
             *[f"![{png.stem.replace('_', ' ')}]({images_dir.name}/{png.name})\n" for png in images]]
    text = "\n".join(lines)
    if target.suffix.lower() in (".html", ".htm"):
        from PySide6.QtGui import QTextDocument

        document = QTextDocument()
        document.setMarkdown(text)
        text = document.toHtml()
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
    Path(path).write_text(workload.to_json(), encoding="utf-8")


def open_workload(window, path: str) -> Workload:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}", field="file") from None
    workload = Workload.from_json(text)
    window.workload_panel.set_workload(workload)
    return workload


def install_actions(window) -> None:
    def guarded(fn):
        def run():
            try:
                fn()
            except UserError as exc:
                window.progress_label.setText(f"Error: {exc}")
                window.verdict.summary.setText(str(exc))
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

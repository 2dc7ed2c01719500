"""A plan as a Markdown report (the GUI's Export… .md/.html), and a small Markdown-to-HTML converter for
the subset these reports use (headings, paragraphs with **bold**, pipe tables, images)."""
from __future__ import annotations

import html
import re

from torchbudget.engine.report.labels import CATEGORY_LABELS, VERDICT_LABELS
from torchbudget.engine.report.text import options_text, target_text
from torchbudget.engine.report.units import human_bytes, human_count, human_ms


def plan_report(plan, images: list[tuple[str, str]] = ()) -> str:
    """Markdown for ``plan`` (its trace in ``plan.result``); ``images``: (caption, relative path) pairs."""
    result, workload = plan.result, plan.workload
    options = result.options
    inputs = ", ".join(s.text() for s in result.inputs)
    lines = [f"# TorchBudget report: {result.model_name}", "",
             f"Input {inputs}, {options_text(options)}, {target_text(options, plan.gpu.name)}.", "",
             f"**{VERDICT_LABELS[plan.verdict.value]} on {plan.gpu.name}**: needs "
             f"{human_bytes(plan.required_bytes)} of {human_bytes(plan.capacity_bytes)} available.", "",
             "| Figure | Value |", "|---|---|",
             f"| Parameters | {human_count(result.totals.params)} |",
             f"| MACs (forward) | {human_count(result.totals.macs)} |",
             f"| FLOPs (forward) | {human_count(result.totals.flops)} |",
             f"| Largest batch | {plan.max_batch if plan.max_batch is not None else '—'} |",
             f"| Latency bound | {human_ms(plan.latency.lower_bound_ms)} |",
             f"| Latency estimate | {human_ms(plan.latency.estimate_ms)} |",
             f"| Throughput | {plan.throughput_samples_per_s:,.0f} samples/s |", "",
             "## Memory at the peak", "", "| Category | Bytes |", "|---|---|",
             *[f"| {CATEGORY_LABELS[c]} | {human_bytes(n)} |" for c, n in plan.memory.by_category.items() if n]]
    if plan.notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in plan.notes]]
    if images:
        lines += ["", "## Plots", "", *[f"![{caption}]({path})\n" for caption, path in images]]
    return "\n".join(lines) + "\n"


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', text)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def markdown_to_html(text: str, title: str = "TorchBudget report") -> str:
    out, table, bullets = [], None, False
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(re.fullmatch(r"-+", c) for c in cells):
                continue
            if table is None:
                table = [f"<tr>{''.join(f'<th>{_inline(c)}</th>' for c in cells)}</tr>"]
            else:
                table.append(f"<tr>{''.join(f'<td>{_inline(c)}</td>' for c in cells)}</tr>")
            continue
        if table is not None:
            out.append("<table>" + "".join(table) + "</table>")
            table = None
        if line.startswith("- "):
            if not bullets:
                out.append("<ul>")
                bullets = True
            out.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if bullets:
            out.append("</ul>")
            bullets = False
        heading = re.match(r"(#{1,6}) (.*)", line)
        if heading:
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
            f"<body>\n" + "\n".join(out) + "\n</body></html>\n")

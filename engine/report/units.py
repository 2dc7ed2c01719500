"""Human units, the one owner for every view (CLI, GUI, exports). Decimal prefixes for counts (M = 1e6,
G = 1e9); bytes in binary units labelled MiB/GiB (1 MiB = 2**20 B) so they are never confused with MB."""
from __future__ import annotations


def human_count(n: float, digits: int = 2) -> str:
    n = float(n)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.{digits}f} {suffix}"
    return f"{n:.0f}"


def human_bytes(n: float, digits: int = 2) -> str:
    n = float(n)
    for factor, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= factor:
            return f"{n / factor:.{digits}f} {suffix}"
    return f"{n:.0f} B"


def human_ms(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms * 1000:.1f} µs"


def table(headers: list[str], rows: list[list[str]], right_align_from: int = 1) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    def fmt(cells):
        out = []
        for i, (cell, w) in enumerate(zip(cells, widths)):
            out.append(str(cell).rjust(w) if i >= right_align_from else str(cell).ljust(w))
        return "  ".join(out).rstrip()
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([fmt(headers), rule, *(fmt(r) for r in rows)])

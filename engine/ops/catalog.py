"""The registered ops as rows (for docs/conventions.md and the GUI's op help): name, status, unit,
tensor-core eligibility and the formula's one-line description. Regenerate the doc's table with
``python -c "from engine.ops.catalog import markdown_table; print(markdown_table())"``."""
from __future__ import annotations

from dataclasses import dataclass

from torchbudget.engine.ops import registry


@dataclass(frozen=True)
class OpRow:
    op: str
    status: str        # "counted" | "zero"
    kind: str          # the OpKind tag
    unit: str          # "MACs" (FLOPs = 2 × MACs) | "FLOPs" | ""
    matmul_like: bool
    formula: str


def op_rows(convention: str = "default") -> tuple[OpRow, ...]:
    from torchbudget.engine.ops.collective import register_fsdp_ops

    register_fsdp_ops()   # FSDP2's ops exist once torch.distributed.fsdp is imported: list them either way
    rows = []
    for name, status in sorted(registry.registered_ops(convention).items()):
        entry = registry.lookup(registry.packet_named(name), convention) if status == "counted" else None
        if entry is None:
            rows.append(OpRow(name, "zero", registry.kind_of(registry.packet_named(name)).value, "", False,
                              "0 (no arithmetic)"))
            continue
        doc = (entry.formula.__doc__ or "").strip().splitlines()[0]
        rows.append(OpRow(name, status, entry.op_kind.value, "MACs" if entry.kind == "macs" else "FLOPs",
                          entry.op_kind.matmul_like, doc))
    return tuple(rows)


def markdown_table(convention: str = "default") -> str:
    lines = ["| op | kind | status | unit | tensor core | formula |", "|---|---|---|---|---|---|"]
    for row in op_rows(convention):
        lines.append(f"| `{row.op}` | {row.kind} | {row.status} | {row.unit} | {'yes' if row.matmul_like else ''} | "
                     f"{row.formula.replace('|', '/')} |")
    return "\n".join(lines)

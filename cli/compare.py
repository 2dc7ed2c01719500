"""``compare MODEL --gpus "H100 SXM,RTX 4090"``: one workload on several GPUs."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options
from torchbudget.cli.format import dump_json, human_bytes, human_ms, table
from torchbudget.cli.plan import add_workload_arguments, plan_to_dict, resolve_gpus, workload_from_args

HEADERS = ["GPU", "Verdict", "Needs", "Usable", "Headroom", "Max batch", "Bound", "Estimate", "Samples/s"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", parents=[common_options()], help="one workload across several GPUs",
        description="Fit, headroom, largest batch, roofline latency and throughput of one workload on each GPU.")
    add_workload_arguments(parser)
    parser.add_argument("--gpus", required=True, metavar="NAMES", help='comma-separated, e.g. "H100 SXM,RTX 4090"')
    parser.add_argument("--no-max-batch", action="store_true", help="skip the largest-batch search")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.compare import compare

    workload = workload_from_args(args)
    result = compare(workload, resolve_gpus(args.gpus), cache=TraceCache(), solve_max_batch=not args.no_max_batch)
    if args.json:
        print(dump_json({"workload": workload.to_dict(), "rows": [comparison_row_dict(r) for r in result.rows]}))
    else:
        print(render(result))
    return 0


def comparison_row_dict(row) -> dict:
    return {"gpu": row.gpu_name, "verdict": row.verdict.value, "fits": row.fits,
            "capacity_bytes": row.capacity_bytes, "required_bytes": row.required_bytes,
            "headroom_bytes": row.headroom_bytes, "headroom_fraction": row.headroom_fraction,
            "max_batch": row.max_batch, "lower_bound_ms": row.lower_bound_ms, "estimate_ms": row.estimate_ms,
            "throughput_samples_per_s": row.throughput_samples_per_s, "plan": plan_to_dict(row.plan)}


def render(result) -> str:
    rows = [[r.gpu_name, r.verdict.value.replace("_", " "), human_bytes(r.required_bytes),
             human_bytes(r.capacity_bytes), f"{r.headroom_fraction:.1%}",
             "-" if r.max_batch is None else str(r.max_batch), human_ms(r.lower_bound_ms),
             human_ms(r.estimate_ms), f"{r.throughput_samples_per_s:,.1f}"] for r in result.rows]
    lines = [table(HEADERS, rows)]
    best = result.fastest()
    if best is not None:
        lines.append(f"fastest that fits: {best.gpu_name} ({human_ms(best.estimate_ms)} estimated)")
    else:
        lines.append("the workload fits on none of these GPUs")
    return "\n".join(lines)

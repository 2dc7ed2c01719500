"""``compare MODEL --gpus "H100 SXM,RTX 4090"``: one workload on several GPUs."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options, emit
from torchbudget.cli.workload_args import (AUTO, add_cluster_arguments, add_planner_arguments,
                                           add_workload_arguments, cluster_from_args, overheads_from_args,
                                           resolve_gpus, strategies_from_args, tp_from_args, trace_cache_from_args,
                                           workload_from_args)
from torchbudget.engine.report.schema import comparison_to_dict, distributed_comparison_to_dict, dump_json
from torchbudget.engine.report.text import render_comparison, render_distributed_comparison
from torchbudget.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", parents=[common_options()], help="one workload across several GPUs",
        description="Fit, headroom, largest batch, roofline latency and throughput of one workload on each GPU "
                    "(each traced for its own GPU's kernels).")
    add_workload_arguments(parser)
    add_planner_arguments(parser)
    add_cluster_arguments(parser)
    parser.add_argument("--gpus", required=True, metavar="NAMES",
                        help='comma-separated, e.g. "H100 SXM,RTX 4090"; a cluster as COUNTx NAME, e.g. '
                             '"8x H100 SXM,16x A100 PCIe" (with --strategy: the world size of that row)')
    parser.add_argument("--no-max-batch", action="store_true", help="skip the largest-batch search")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchbudget.engine.planner import Planner

    entries = counted_gpus(args.gpus)
    strategies = strategies_from_args(args)
    args.counted_gpus = any(count for count, _ in entries)
    planner = Planner(trace_cache_from_args(args), overheads=overheads_from_args(args))
    if strategies == ("none",):
        if args.counted_gpus:
            raise UserError("a cluster such as '8x H100 SXM' needs a --strategy (ddp, fsdp, fsdp+tp...)",
                            field="strategy")
        workload = workload_from_args(args)
        result = planner.compare(workload, [spec for _, spec in entries], solve_max_batch=not args.no_max_batch,
                                 cluster=cluster_from_args(args))
        emit(args, dump_json(comparison_to_dict(result)) if args.json else render_comparison(result))
        return 0
    workload = workload_from_args(args, several=True)
    cluster = cluster_from_args(args)
    rows = []
    for count, spec in entries:
        world = count or args.world_size
        if world == 1 and not count:
            raise UserError("several GPUs: give --world-size N (or auto), or the GPUs as COUNTx NAME, e.g. "
                            f"'8x {spec.name}'", field="world_size")
        for name in strategies:
            rows.append(_row(planner, workload, spec, name, world, args, cluster))
    emit(args, dump_json(distributed_comparison_to_dict(workload, rows)) if args.json
         else render_distributed_comparison(rows))
    return 0


def _row(planner, workload, spec, strategy: str, world, args, cluster):
    from torchbudget.engine.distributed.solve import compare_strategies, search_fewest, state_guess

    tp = tp_from_args(args)
    if world == AUTO:
        return search_fewest(planner, workload, spec, strategy, tp_size=tp, cluster=cluster,
                             guess=state_guess(workload, spec))
    (row,) = compare_strategies(planner, workload, spec, world, [strategy], tp_size=tp, cluster=cluster,
                                solve_max_batch=not args.no_max_batch)
    return row


def counted_gpus(text: str) -> list:
    """'8x H100 SXM,16x A100 PCIe' -> [(8, GpuSpec), (16, GpuSpec)]; a name without a count: (None, GpuSpec)."""
    import re

    from torchbudget.hardware.catalog import resolve_gpu

    entries = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)\s*[x×]\s*(.+)", part, flags=re.IGNORECASE)
        count = None
        if match:
            count = int(match.group(1))
            if count < 1:
                raise UserError(f"{part!r}: a cluster needs 1 GPU or more", field="gpus")
            part = match.group(2).strip()
        entries.append((count, resolve_gpu(part)))
    if not entries:
        return [(None, spec) for spec in resolve_gpus(text)]   # its one-line error
    return entries

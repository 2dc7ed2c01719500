"""``compare MODEL --gpus "H100 SXM,RTX 4090"``: one workload on several GPUs."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options, emit
from torchbudget.cli.workload_args import (add_cluster_arguments, add_planner_arguments, add_workload_arguments,
                                           cluster_from_args, overheads_from_args, resolve_gpus,
                                           trace_cache_from_args, workload_from_args)
from torchbudget.engine.report.schema import comparison_to_dict, dump_json
from torchbudget.engine.report.text import render_comparison


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", parents=[common_options()], help="one workload across several GPUs",
        description="Fit, headroom, largest batch, roofline latency and throughput of one workload on each GPU "
                    "(each traced for its own GPU's kernels).")
    add_workload_arguments(parser)
    add_planner_arguments(parser)
    add_cluster_arguments(parser)
    parser.add_argument("--gpus", required=True, metavar="NAMES", help='comma-separated, e.g. "H100 SXM,RTX 4090"')
    parser.add_argument("--no-max-batch", action="store_true", help="skip the largest-batch search")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchbudget.engine.planner import Planner

    workload = workload_from_args(args)
    planner = Planner(trace_cache_from_args(args), overheads=overheads_from_args(args))
    result = planner.compare(workload, resolve_gpus(args.gpus), solve_max_batch=not args.no_max_batch,
                             cluster=cluster_from_args(args))
    emit(args, dump_json(comparison_to_dict(result)) if args.json else render_comparison(result))
    return 0

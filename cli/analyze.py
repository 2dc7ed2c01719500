"""``analyze MODEL``: params, MACs/FLOPs, output shapes and activation bytes per layer."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options, emit
from torchbudget.cli.workload_args import add_workload_arguments, trace_cache_from_args, workload_from_args
from torchbudget.engine.report.schema import analysis_to_dict, dump_json
from torchbudget.engine.report.text import render_analysis
from torchbudget.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze", parents=[common_options()], help="count params, MACs/FLOPs and activations per layer",
        description="Count a model exactly by tracing it on fake tensors (no weights, no GPU), modelling the "
                    "kernels of the target device.",
        epilog="MODEL: a torchvision name (resnet50) or path/to/file.py:ClassOrFactory.",
    )
    add_workload_arguments(parser, target=True)
    parser.add_argument("--depth", type=int, default=None, metavar="N", help="show modules down to depth N (root = 0)")
    parser.add_argument("--ops", action="store_true", help="with --json: include every op record and storage event")
    parser.add_argument("--list", action="store_true", help="list the torchvision model names and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        from torchbudget.engine.sources import list_model_names

        emit(args, "\n".join(list_model_names()))
        return 0
    if args.depth is not None and args.depth < 0:
        raise UserError(f"--depth must be 0 or more, got {args.depth}", field="depth")
    workload = workload_from_args(args)
    result = trace_cache_from_args(args).get(workload)   # from the trace store when it has it: no PyTorch
    if args.json:
        emit(args, dump_json(analysis_to_dict(result, include_ops=args.ops, include_events=args.ops)))
    else:
        emit(args, render_analysis(result, depth=args.depth))
    return 0

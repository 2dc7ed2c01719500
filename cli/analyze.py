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
        epilog="MODEL: a torchvision name (resnet50), a Hugging Face hub id or alias of a bundled config "
               "(meta-llama/Llama-3.1-8B, gpt2), path/to/config.json or a model folder, timm/NAME, or "
               "path/to/file.py:ClassOrFactory.",
    )
    add_workload_arguments(parser, target=True)
    parser.add_argument("--depth", type=int, default=None, metavar="N", help="show modules down to depth N (root = 0)")
    parser.add_argument("--ops", action="store_true", help="with --json: include every op record and storage event")
    parser.add_argument("--list", action="store_true",
                        help="list the model names (torchvision, bundled Hugging Face configs, timm) and exit")
    parser.set_defaults(func=run)


GROUP_TITLES = {"torchvision": "torchvision",
                "huggingface": "Hugging Face, bundled configs (hub id, any case, or alias; also path/to/config.json)",
                "timm": "timm"}


def run(args: argparse.Namespace) -> int:
    if args.list:
        from torchbudget.engine.sources import model_groups

        groups = model_groups()
        if args.json:
            emit(args, dump_json(groups))
        else:
            emit(args, "\n\n".join(f"# {GROUP_TITLES[name]} ({len(names)})\n" + "\n".join(names)
                                    for name, names in groups.items() if names))
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

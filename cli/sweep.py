"""``sweep MODEL --batch 1,2,4 | --resolution 224,320 | --seq-len 512,1024 | --mode decode --context 1024,2048``:
memory and latency against batch, resolution, sequence length or a decode step's context."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options, emit
from torchbudget.cli.workload_args import (add_planner_arguments, add_workload_arguments, context_values,
                                           overheads_from_args, resolve_gpus, trace_cache_from_args, with_sizes,
                                           workload_from_args)
from torchbudget.engine.errors import InputSpecError, UserError
from torchbudget.engine.report.schema import dump_json
from torchbudget.engine.report.text import render_sweep
from torchbudget.engine.vocab import InputKind


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep", parents=[common_options()],
        help="memory and latency against batch size, resolution, sequence length or decode context",
        description="Peak memory, fit and roofline latency at several batch sizes (default), square "
                    "resolutions, sequence lengths or decode contexts (--mode decode --context LIST: with the KV "
                    "cache and tokens/s), on one or more GPUs, with the largest batch (sequence, context) "
                    "that fits on each.")
    add_workload_arguments(parser, sizes=False)
    add_planner_arguments(parser)
    axis = parser.add_mutually_exclusive_group()
    axis.add_argument("--batch", metavar="LIST", help="batch sizes, e.g. 1,2,4,8,16 (default 1..128 in powers of 2)")
    axis.add_argument("--resolution", metavar="LIST", help="square image sizes, e.g. 224,320,448")
    parser.add_argument("--seq-len", metavar="LIST",
                        help="token models: sequence lengths, e.g. 512,1024,2048 (the axis; --batch N then fixes the "
                             "batch), or one length: the batch sweep's (--batch LIST or the default batches)")
    parser.add_argument("--gpus", metavar="NAMES", default=None,
                        help="comma-separated GPU names or 'local' (default: the local GPU, else the default one)")
    parser.set_defaults(func=run)


DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise InputSpecError(f"--{what} must be integers separated by commas, e.g. 1,2,4; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise InputSpecError(f"--{what} values must be positive integers; got {text!r}")
    return values


def default_gpus() -> list:
    from torchbudget.hardware.catalog import default_gpu

    return [default_gpu()]


def run(args: argparse.Namespace) -> int:
    from torchbudget.engine.planner import Planner

    workload = workload_from_args(args)
    gpus = resolve_gpus(args.gpus) if args.gpus else default_gpus()
    batches = parse_int_list(args.batch, "batch") if args.batch else None
    resolutions = parse_int_list(args.resolution, "resolution") if args.resolution else None
    seq_lens = parse_int_list(args.seq_len, "seq-len") if args.seq_len else None
    contexts = context_values(args)
    if resolutions and seq_lens:
        raise UserError("sweep one axis: --resolution or --seq-len", field="input")
    if len(contexts) > 1 and (resolutions or (seq_lens and len(seq_lens) > 1)):
        raise UserError("sweep one axis: --context LIST, --resolution or --seq-len LIST", field="input")
    if resolutions and workload.inputs and not any(s.kind is InputKind.IMAGE for s in workload.inputs):
        raise UserError("--resolution needs an image input (N x C x H x W)", field="input")
    planner = Planner(trace_cache_from_args(args), overheads=overheads_from_args(args))
    if len(contexts) > 1:   # decode: the context axis, at one batch
        if batches and len(batches) > 1:
            raise UserError("sweep one axis: with --context LIST give one --batch N", field="input")
        workload = with_sizes(workload, batch=batches[0] if batches else None,
                              seq_len=seq_lens[0] if seq_lens else None)
        result = planner.context_sweep(workload, gpus, contexts)
    elif seq_lens and len(seq_lens) > 1:   # the sequence-length axis, at one batch
        if batches and len(batches) > 1:
            raise UserError("sweep one axis: with --seq-len LIST give one --batch N", field="input")
        workload = with_sizes(workload, batch=batches[0] if batches else None, seq_len=seq_lens[0])
        result = planner.seq_len_sweep(workload, gpus, seq_lens)
    elif resolutions:
        result = planner.resolution_sweep(workload, gpus, resolutions)
    else:
        if seq_lens:   # one length: fixed for the batch sweep
            workload = with_sizes(workload, seq_len=seq_lens[0])
        result = planner.batch_sweep(workload, gpus, batches or list(DEFAULT_BATCHES))
    emit(args, dump_json(result) if args.json else render_sweep(result))
    return 0

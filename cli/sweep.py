"""``sweep MODEL --batch 1,2,4 | --resolution 224,320``: memory and latency against batch or resolution."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options
from torchbudget.cli.format import dump_json, human_bytes, human_ms, table
from torchbudget.cli.plan import add_workload_arguments, resolve_gpus, workload_from_args
from torchbudget.engine.errors import InputSpecError, UserError
from torchbudget.engine.vocab import InputKind


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep", parents=[common_options()], help="memory and latency against batch size or resolution",
        description="Peak memory, fit and roofline latency at several batch sizes (default) or square "
                    "resolutions, on one or more GPUs, with the largest batch that fits on each.")
    add_workload_arguments(parser)
    axis = parser.add_mutually_exclusive_group()
    axis.add_argument("--batch", metavar="LIST", help="batch sizes, e.g. 1,2,4,8,16 (default 1..128 in powers of 2)")
    axis.add_argument("--resolution", metavar="LIST", help="square image sizes, e.g. 224,320,448")
    parser.add_argument("--gpus", metavar="NAMES", default=None,
                        help="comma-separated GPU names or 'local' (default: the local GPU, else the default one)")
    parser.set_defaults(func=run)


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
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.solver import sweep

    workload = workload_from_args(args)
    gpus = resolve_gpus(args.gpus) if args.gpus else default_gpus()
    batches = parse_int_list(args.batch, "batch") if args.batch else None
    resolutions = parse_int_list(args.resolution, "resolution") if args.resolution else None
    if resolutions and workload.inputs and not any(s.kind is InputKind.IMAGE for s in workload.inputs):
        raise UserError("--resolution needs an image input (N x C x H x W)", field="input")
    result = sweep(workload, gpus, batches=batches, resolutions=resolutions, cache=TraceCache())
    print(dump_json(result) if args.json else render(result))
    return 0


def render(result) -> str:
    headers = [result.axis, "peak memory", "needs (excl. context)"]
    for gpu in result.gpus:
        headers += [f"{gpu.gpu_name}: fits", "bound", "estimate", "samples/s"]
    rows = []
    for point in result.points:
        row = [str(point.value) + (" *" if point.interpolated else ""), human_bytes(point.peak_bytes),
               human_bytes(point.required_bytes)]
        for g in point.per_gpu:
            row += ["yes" if g.fits else "no", human_ms(g.lower_bound_ms), human_ms(g.estimate_ms),
                    f"{g.throughput_samples_per_s:,.1f}"]
        rows.append(row)
    lines = [table(headers, rows)]
    if any(p.interpolated for p in result.points):
        lines.append("* from the affine batch model, checked byte for byte against an exact trace at a larger batch")
    for gpu in result.gpus:
        solved = f"max batch {gpu.max_batch}" if gpu.max_batch is not None else "max batch not solved"
        lines.append(f"{gpu.gpu_name}: {human_bytes(gpu.capacity_bytes)} usable, {solved}")
    return "\n".join(lines)

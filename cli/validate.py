"""``validate MODEL …`` (CUDA only): run the workload for real and print predicted vs measured."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options, emit
from torchbudget.cli.workload_args import add_workload_arguments, workload_from_args
from torchbudget.engine.report.schema import dump_json
from torchbudget.engine.report.units import human_bytes, human_ms, table


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate", parents=[common_options()], help="run the workload on the local CUDA GPU: predicted vs measured",
        description="Runs the real workload (random weights on the GPU, real forward/backward/optimizer step), "
                    "measures torch.cuda max allocated/reserved, NVML used memory and CUDA-event latency "
                    "(warm-up, then the median), and prints them next to the plan. Needs a CUDA GPU.")
    add_workload_arguments(parser)
    parser.add_argument("--device", type=int, default=0, metavar="N", help="CUDA device index (default 0)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (default 3)")
    parser.add_argument("--iterations", type=int, default=10, help="timed steps (default 10)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchbudget.engine.validate import require_cuda, validate

    require_cuda()  # fail fast, before loading and tracing the model
    result = validate(workload_from_args(args), warmup=args.warmup, iterations=args.iterations,
                      device_index=args.device)
    emit(args, dump_json(result_dict(result)) if args.json else render(result))
    return 0


def result_dict(result) -> dict:
    return {"workload": result.workload.to_dict(), "device": result.measurement.device_name,
            "measurement": result.measurement, "measured_context_bytes": result.measured_context_bytes,
            "calibrated_efficiency": result.calibrated_efficiency,
            "rows": [{"quantity": r.quantity, "predicted": r.predicted, "measured": r.measured, "unit": r.unit,
                      "error_fraction": r.error_fraction} for r in result.rows]}


def _fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    return human_bytes(value) if unit == "bytes" else human_ms(value)


def render(result) -> str:
    rows = [[r.quantity, _fmt(r.predicted, r.unit), _fmt(r.measured, r.unit),
             "n/a" if r.error_fraction is None else f"{r.error_fraction:+.1%}"] for r in result.rows]
    lines = [f"{result.measurement.device_name}: {result.measurement.iterations} timed steps", "",
             table(["Quantity", "Predicted", "Measured", "Error"], rows)]
    if result.measured_context_bytes is not None:
        lines.append(f"measured CUDA context + non-allocator memory: {human_bytes(result.measured_context_bytes)} "
                     "(use it for Overheads.cuda_context_bytes)")
    e = result.calibrated_efficiency
    if e is not None:
        lines.append(f"calibrated Efficiency (estimate = measured): matmul {e.matmul_fraction_of_peak:.3f}, "
                     f"conv {e.conv_fraction_of_peak:.3f}, other {e.other_fraction_of_peak:.3f}, "
                     f"bandwidth {e.bandwidth_fraction:.3f} of peak")
    return "\n".join(lines)

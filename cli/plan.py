"""``plan MODEL --gpu NAME``: does it fit, with what headroom, the largest batch, and how fast it can run.
Also the workload/GPU arguments that ``sweep``, ``compare`` and ``validate`` share."""
from __future__ import annotations

import argparse

from torchbudget.cli import common_options
from torchbudget.cli.format import dump_json, human_bytes, human_ms, table, to_jsonable
from torchbudget.engine.errors import UserError
from torchbudget.engine.workload import Workload

PRECISION_CHOICES = ["fp32", "tf32", "fp16", "bf16", "fp16-amp", "bf16-amp"]


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="torchvision name (resnet50) or path/to/file.py:Name")
    parser.add_argument("--input", action="append", metavar="SHAPE",
                        help="input shape, e.g. 8x3x224x224 or ids=8x128:int64 (repeatable); default: the model's")
    parser.add_argument("--mode", default="infer", choices=["infer", "train"], help="inference or one training step")
    parser.add_argument("--optimizer", default="adamw", choices=["sgd", "sgd-momentum", "adam", "adamw"],
                        help="optimizer of the training step (default adamw)")
    parser.add_argument("--precision", default="fp32", choices=PRECISION_CHOICES,
                        help="fp32, tf32, pure fp16/bf16, or fp16/bf16 autocast with fp32 master weights")
    parser.add_argument("--checkpointing", action="store_true", help="training with activation checkpointing")
    parser.add_argument("--kwargs", default=None, metavar="JSON", help='builder arguments, e.g. \'{"num_classes": 10}\'')


def workload_from_args(args: argparse.Namespace) -> Workload:
    from torchbudget.cli.analyze import parse_kwargs
    from torchbudget.engine.api import make_options
    from torchbudget.engine.inputs import parse_inputs

    options = make_options(mode=args.mode, optimizer=args.optimizer if args.mode == "train" else None,
                           precision=args.precision, checkpointing=args.checkpointing)
    if args.checkpointing and args.mode != "train":
        raise UserError("--checkpointing only applies to --mode train", field="checkpointing")
    inputs = parse_inputs(args.input) if args.input else ()
    return Workload(args.model, inputs, options, parse_kwargs(args.kwargs))


def resolve_gpus(text: str) -> list:
    """'H100 SXM,RTX 4090' or 'local' -> GpuSpecs (UnknownGpuError names the unknown one)."""
    from torchbudget.hardware.catalog import resolve_gpu

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("name at least one GPU, e.g. --gpu 'H100 SXM' (see the gpus command)", field="gpu")
    return [resolve_gpu(name) for name in names]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan", parents=[common_options()], help="will it fit on this GPU, the largest batch, roofline latency",
        description="Plan one workload on one GPU: memory breakdown at the peak, fit verdict, largest batch "
                    "that fits, roofline lower bound and realistic latency estimate.")
    add_workload_arguments(parser)
    parser.add_argument("--gpu", required=True, metavar="NAME", help="GPU name or alias, or 'local'")
    parser.add_argument("--no-max-batch", action="store_true", help="skip the largest-batch search")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.planner import plan

    workload = workload_from_args(args)
    gpus = resolve_gpus(args.gpu)
    if len(gpus) != 1:
        raise UserError("plan takes one GPU; use the compare command for several", field="gpu")
    result = plan(workload, gpus[0], cache=TraceCache(), solve_max_batch=not args.no_max_batch)
    print(dump_json(plan_to_dict(result)) if args.json else render(result))
    return 0


def plan_to_dict(plan) -> dict:
    memory = plan.memory
    latency = plan.latency
    return {
        "model": plan.result.model_name if plan.result else (plan.workload.model if plan.workload else ""),
        "workload": plan.workload.to_dict() if plan.workload else None,
        "inputs": [s.text() for s in plan.result.inputs] if plan.result else [],
        "gpu": {"name": plan.gpu.name, "usable_memory_bytes": plan.capacity_bytes},
        "verdict": plan.verdict.value,
        "fits": plan.fits,
        "headroom_bytes": plan.headroom_bytes,
        "headroom_fraction": plan.headroom_fraction,
        "dominant_category": plan.dominant_category.value,
        "max_batch": plan.max_batch,
        "notes": list(plan.notes),
        "memory": {
            "peak_bytes": memory.peak_bytes,
            "trace_peak_bytes": memory.trace_peak_bytes,
            "iteration1_peak_bytes": memory.iteration1_peak_bytes,
            "steady_state_peak_bytes": memory.steady_state_peak_bytes,
            "peak_module": memory.peak_module,
            "peak_phase": memory.peak_phase.value if memory.peak_phase else None,
            "by_category": {c.value: n for c, n in memory.by_category.items()},
            "overheads": to_jsonable(memory.overheads),
        },
        "latency": {
            "lower_bound_ms": latency.lower_bound_ms,
            "estimate_ms": latency.estimate_ms,
            "forward": to_jsonable(latency.forward),
            "backward": to_jsonable(latency.backward),
            "optimizer": to_jsonable(latency.optimizer),
            "efficiency": to_jsonable(latency.efficiency),
        },
        "throughput": {
            "samples_per_s": latency.throughput_samples_per_s,
            "max_samples_per_s": latency.max_throughput_samples_per_s,
        },
    }


VERDICT_TEXT = {"fits": "FITS", "tight": "FITS, TIGHT", "does_not_fit": "DOES NOT FIT"}


def verdict_line(plan) -> str:
    head = VERDICT_TEXT[plan.verdict.value]
    need, have = human_bytes(plan.required_bytes), human_bytes(plan.capacity_bytes)
    room = (f"headroom {human_bytes(plan.headroom_bytes)} ({plan.headroom_fraction:.1%})" if plan.fits
            else f"short by {human_bytes(-plan.headroom_bytes)}")
    return (f"{head}: needs {need} of {have} usable on {plan.gpu.name}; {room}; "
            f"largest share: {plan.dominant_category.value}")


def memory_table(plan) -> str:
    peak = plan.memory.peak_bytes or 1
    rows = [[c.value, human_bytes(n), f"{n:,}", f"{n / peak:.1%}"] for c, n in plan.memory.by_category.items() if n]
    rows.append(["total at peak", human_bytes(plan.memory.peak_bytes), f"{plan.memory.peak_bytes:,}", "100.0%"])
    # the verdict's "needs" leaves the CUDA context out because the GPU's usable memory already excludes it
    rows.append(["needs (no context)", human_bytes(plan.required_bytes), f"{plan.required_bytes:,}",
                 f"{plan.required_bytes / peak:.1%}"])
    return table(["Category", "Size (MiB/GiB)", "Bytes", "Share"], rows)


def render(plan) -> str:
    memory, latency = plan.memory, plan.latency
    workload = plan.workload
    options = workload.options if workload else None
    inputs = ", ".join(s.text() for s in plan.result.inputs) if plan.result else ""
    what = f"{options.mode} {options.precision}" if options else ""
    if options and options.mode == "train":
        what += f", {options.optimizer or 'no optimizer'}" + (", checkpointing" if options.checkpointing else "")
    lines = [f"{plan.result.model_name if plan.result else ''}  input {inputs}  {what}", "", verdict_line(plan), "",
             memory_table(plan), "",
             f"peak at op {memory.peak_op_index} in {memory.peak_module or '<root>'}"
             + (f" ({memory.peak_phase.value})" if memory.peak_phase else "")]
    if options and options.mode == "train":
        lines.append(f"tensor peaks: iteration 1 {human_bytes(memory.iteration1_peak_bytes)}, "
                     f"steady state {human_bytes(memory.steady_state_peak_bytes)} (optimizer state kept)")
    lines.append("max batch: " + ("not solved" if plan.max_batch is None else f"{plan.max_batch}"))
    parts = ", ".join(f"{name} {human_ms(p.estimate_ms)}" for name, p in
                      (("forward", latency.forward), ("backward", latency.backward), ("optimizer", latency.optimizer))
                      if p.estimate_ms)
    lines.append(f"latency: lower bound {human_ms(latency.lower_bound_ms)}, estimate {human_ms(latency.estimate_ms)}"
                 + (f" ({parts})" if parts else ""))
    lines.append(f"throughput: {latency.throughput_samples_per_s:,.1f} samples/s estimated, "
                 f"at most {latency.max_throughput_samples_per_s:,.1f} samples/s (roofline bound)")
    lines += [f"note: {note}" for note in plan.notes]
    uncounted = sum(op.calls for op in plan.result.uncounted_ops) if plan.result else 0
    if uncounted:
        lines.append(f"note: {uncounted} op calls have no FLOP formula (see analyze); their arithmetic is not in "
                     "the latency figures, only their memory traffic")
    return "\n".join(lines)

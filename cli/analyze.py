"""``analyze MODEL``: params, MACs/FLOPs, output shapes and activation bytes per layer."""
from __future__ import annotations

import argparse
import json

from torchbudget.cli import common_options
from torchbudget.cli.format import dump_json, human_bytes, human_count, table
from torchbudget.engine.errors import UserError
from torchbudget.engine.results import AnalysisResult, ModuleNode

LAYER_HEADERS = ["Module", "Type", "Output shape", "Params", "MACs", "FLOPs", "Activations"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze", parents=[common_options()], help="count params, MACs/FLOPs and activations per layer",
        description="Count a model exactly by tracing it on meta tensors (no weights, no GPU).",
        epilog="MODEL: a torchvision name (resnet50) or path/to/file.py:ClassOrFactory.",
    )
    parser.add_argument("model", nargs="?", metavar="MODEL", help="torchvision name or path/to/file.py:Name")
    parser.add_argument("--input", action="append", metavar="SHAPE",
                        help="input shape, e.g. 1x3x224x224 or ids=1x128:int64,mask=1x128:int64 (repeatable); "
                             "default: the model's own")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "tf32", "fp16", "bf16", "fp16-amp", "bf16-amp"],
                        help="precision of parameters and arithmetic (default fp32)")
    parser.add_argument("--mode", default="infer", choices=["infer", "train"], help="inference or one training step")
    parser.add_argument("--optimizer", default="adamw", choices=["sgd", "sgd-momentum", "adam", "adamw", "none"],
                        help="optimizer of the training step (default adamw)")
    parser.add_argument("--checkpointing", action="store_true", help="training with activation checkpointing")
    parser.add_argument("--convention", default="default", choices=["default", "thop"],
                        help="'thop' reproduces thop 0.0.31's counts (the seed's reference numbers)")
    parser.add_argument("--depth", type=int, default=None, metavar="N", help="show modules down to depth N (root = 0)")
    parser.add_argument("--kwargs", default=None, metavar="JSON", help='builder arguments, e.g. \'{"num_classes": 10}\'')
    parser.add_argument("--ops", action="store_true", help="with --json: include every op record and storage event")
    parser.add_argument("--list", action="store_true", help="list the torchvision model names and exit")
    parser.set_defaults(func=run)


def parse_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--kwargs is not valid JSON ({exc.msg} at column {exc.colno}): {text}", field="kwargs") \
            from None
    if not isinstance(value, dict):
        raise UserError(f"--kwargs must be a JSON object such as '{{\"num_classes\": 10}}', not {text}",
                        field="kwargs")
    return value


def run(args: argparse.Namespace) -> int:
    from torchbudget.engine.api import analyze  # imported here so `--help` stays fast
    from torchbudget.engine.sources import list_model_names

    if args.list:
        print("\n".join(list_model_names()))
        return 0
    if not args.model:
        raise UserError("name a model: a torchvision name (see --list) or path/to/file.py:Name", field="model")
    if args.depth is not None and args.depth < 0:
        raise UserError(f"--depth must be 0 or more, got {args.depth}", field="depth")
    result = analyze(args.model, args.input, dtype=args.dtype, mode=args.mode,
                     optimizer=None if args.optimizer == "none" else args.optimizer,
                     checkpointing=args.checkpointing, convention=args.convention,
                     model_kwargs=parse_kwargs(args.kwargs))
    if args.json:
        from torchbudget.engine.serialize import result_to_dict

        print(dump_json(result_to_dict(result, include_ops=args.ops, include_events=args.ops)))
    else:
        print(render(result, depth=args.depth))
    return 0


def shape_text(shapes: tuple[tuple[int, ...], ...], limit: int = 2) -> str:
    parts = ["x".join(str(d) for d in shape) or "scalar" for shape in shapes[:limit]]
    if len(shapes) > limit:
        parts.append(f"+{len(shapes) - limit} more")
    return ", ".join(parts) or "-"


def layer_row(node: ModuleNode) -> list[str]:
    return ["  " * node.depth + node.name, node.type_name, shape_text(node.output_shapes), f"{node.params:,}",
            human_count(node.macs), human_count(node.flops), human_bytes(node.activation_bytes)]


def render(result: AnalysisResult, depth: int | None = None) -> str:
    options = result.options
    inputs = ", ".join(spec.text() for spec in result.inputs)
    header = (f"{result.model_name}  input {inputs}  {options.precision} {options.mode}"
              f"  (convention {options.convention}; traced in {result.trace_seconds:.2f} s)")
    rows = [layer_row(node) for node in result.modules if depth is None or node.depth <= depth]
    lines = [header, "", table(LAYER_HEADERS, rows, right_align_from=3), "", *totals_lines(result)]
    lines += uncounted_lines(result)
    lines += [f"policy: {policy}" for policy in result.policies]
    lines += [f"warning: {warning}" for warning in result.warnings]
    return "\n".join(lines)


def totals_lines(result: AnalysisResult) -> list[str]:
    t = result.totals
    lines = [
        f"params       {t.params:,} ({human_count(t.params)}), trainable {t.trainable_params:,}",
        f"MACs         {t.macs:,} ({human_count(t.macs)})",
        f"FLOPs        {t.flops:,} ({human_count(t.flops)}) forward",
        f"weights      {human_bytes(t.param_bytes)} params + {human_bytes(t.buffer_bytes)} buffers",
        f"activations  {human_bytes(t.activation_bytes)} (sum of leaf module outputs), "
        f"output {human_bytes(t.output_bytes)}, input {human_bytes(t.input_bytes)}",
    ]
    if t.backward_flops or t.optimizer_flops:
        lines.append(f"training     backward {human_count(t.backward_flops)}FLOPs, "
                     f"optimizer {human_count(t.optimizer_flops)}FLOPs")
    return lines


def uncounted_lines(result: AnalysisResult) -> list[str]:
    coverage = f"coverage {result.coverage:.1%} of ops counted or known to do no arithmetic"
    if not result.uncounted_ops:
        return [f"{coverage}; no uncounted ops"]
    lines = [f"{coverage}; uncounted ops (no formula, not included in the totals):"]
    for op in result.uncounted_ops:
        where = ", ".join(m or "<root>" for m in op.modules[:3]) + (" ..." if len(op.modules) > 3 else "")
        lines.append(f"  {op.op}  x{op.calls}  in {where}")
    return lines

"""The GPU validation battery (`make validate`): plan, then run for real on the local CUDA GPU, and write
predicted vs measured into docs/validation.md.

Per case and batch: the planner's allocated and reserved peaks and step latency against
``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` and CUDA-event times (engine/validate.py);
per case with ``oom_search``: the planner's largest batch against the real one, found by bisection on
real steps (``torch.cuda.OutOfMemoryError``). Sized for <= 8 min on one H100/H200.

Without CUDA it is a dry run: the same plumbing on tiny shapes, steps timed on the CPU, no memory
counters, and the real-OOM bisection run against the planner's own verdict (so it must find the planner's
answer): tests/test_validation_battery.py runs it that way.

    python -m torchbudget.bench.validation_battery [--write docs/validation.md] [--dry-run] [--cases a,b]"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- validation:begin -->", "<!-- validation:end -->"
GPT2 = str(ROOT / "tests" / "models" / "gpt_block.py") + ":GPT"
DECODER = str(ROOT / "bench" / "llm7b.py") + ":Decoder"
GPT2_KWARGS = {"vocab": 50257, "dim": 768, "heads": 12, "layers": 12, "max_len": 1024, "dropout": 0.1}
LLAMA3_8B_KWARGS = {"vocab": 128256, "dim": 4096, "layers": 32, "heads": 32, "hidden": 14336, "lora_rank": 16}


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    shape: str                    # "{batch}x3x224x224"
    mode: str
    precision: str
    batches: tuple[int, ...]
    optimizer: str | None = "adamw"
    kwargs: dict = field(default_factory=dict)
    oom_search: bool = False
    dry_batches: tuple[int, ...] = (1, 2)
    dry_shape: str = ""           # the dry run's smaller input (default: shape)
    dry_kwargs: dict = field(default_factory=dict)


CASES = (
    Case("resnet50 infer", "resnet50", "{batch}x3x224x224", "infer", "fp32", (1, 32, 128), optimizer=None,
         dry_shape="{batch}x3x64x64"),
    Case("resnet50 train", "resnet50", "{batch}x3x224x224", "train", "bf16-amp", (32, 128), oom_search=True,
         dry_shape="{batch}x3x64x64"),
    Case("vit_b_16 train", "vit_b_16", "{batch}x3x224x224", "train", "bf16-amp", (32, 128), oom_search=True,
         dry_batches=(1,)),
    Case("gpt2-124M train", GPT2, "{batch}x1024:int64", "train", "bf16-amp", (4, 16), kwargs=GPT2_KWARGS,
         oom_search=True, dry_shape="{batch}x64:int64",
         dry_kwargs={"vocab": 1000, "dim": 64, "heads": 2, "layers": 2, "max_len": 128}),
    Case("llama3-8B-shaped LoRA r16 bf16 train", DECODER, "{batch}x2048:int64", "train", "bf16", (1, 4),
         kwargs=LLAMA3_8B_KWARGS, dry_shape="{batch}x32:int64",
         dry_kwargs={"vocab": 1000, "dim": 64, "layers": 2, "heads": 2, "hidden": 128, "lora_rank": 4}),
)


@dataclass(frozen=True)
class Row:
    case: str
    batch: int | str
    quantity: str
    predicted: float | None
    measured: float | None
    unit: str                     # "bytes" | "ms" | "batch"

    @property
    def error(self) -> float | None:
        if self.predicted is None or not self.measured:
            return None
        return (self.predicted - self.measured) / self.measured


def workload_of(case: Case, batch: int, dry: bool):
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.results import TraceOptions
    from torchbudget.engine.workload import Workload

    shape = (case.dry_shape or case.shape) if dry else case.shape
    options = TraceOptions(mode=case.mode, precision=case.precision, optimizer=case.optimizer)
    return Workload(case.model, parse_inputs(shape.format(batch=batch)), options,
                    case.dry_kwargs if dry else case.kwargs)


def dry_gpu():
    """What the dry run plans for: a small made-up device following the CPU's kernels (vendor Other)."""
    from torchbudget.hardware.spec import GpuSpec

    # just above the CUDA context and cuBLAS workspace (544 MiB): small largest batches, few traces to find them
    return GpuSpec(name="dry-run device", vendor="Other", memory_bytes=2**30, available_memory_bytes=600 * 2**20,
                   bandwidth_gbs=50.0, peak_tflops={"fp32": 1.0, "bf16": 2.0, "fp16": 2.0})


def largest_running_batch(runs, start: int, limit: int = 1 << 14) -> int:
    """The largest batch ``runs(batch)`` accepts (monotone): exponential from ``start`` (the planner's
    answer, so a good prediction costs two probes), then bisection; 0 if batch 1 does not run."""
    from torchbudget.engine.solver import largest_true

    start = max(1, min(start, limit))
    if runs(start):
        return largest_true(runs, start, None, limit)
    if start == 1 or not runs(1):
        return 0
    return largest_true(runs, 1, start, limit)


def run_case(case: Case, *, dry: bool, planner, gpu, log=print) -> list[Row]:
    from torchbudget.engine import validate

    rows = []
    for batch in case.dry_batches if dry else case.batches:
        workload = workload_of(case, batch, dry).on_gpu(gpu)
        plan = planner.plan(workload, gpu, solve_max_batch=False)
        result = planner.cache.get(workload)
        if dry:
            m = validate.measure_on_cpu(workload, result, warmup=1, iterations=1)
        else:
            m = validate.measure(workload, result, warmup=2, iterations=5)
        allocated = (None if m.steady_max_allocated_bytes is None else
                     max(m.iteration1_max_allocated_bytes, m.steady_max_allocated_bytes))
        rows += [Row(case.name, batch, "allocated peak", plan.memory.allocated_peak_bytes, allocated, "bytes"),
                 Row(case.name, batch, "reserved peak", plan.memory.reserved_peak_bytes, m.max_reserved_bytes, "bytes"),
                 Row(case.name, batch, "step, estimate", plan.latency.estimate_ms, m.median_ms, "ms"),
                 Row(case.name, batch, "step, roofline bound", plan.latency.lower_bound_ms, m.median_ms, "ms")]
        log(f"  {case.name} batch {batch}: measured {m.median_ms:.2f} ms")
    if case.oom_search:
        base = workload_of(case, 1, dry).on_gpu(gpu)
        predicted, _ = planner.max_batch(base, gpu)
        if dry:   # no device to exhaust: the plumbing must find the planner's own answer
            from torchbudget.engine.solver import result_fits

            runs = lambda b: result_fits(planner.cache.get(base.with_batch(b)), planner.overheads,  # noqa: E731
                                         gpu.available_memory_bytes)
        else:
            runs = lambda b: validate.runs_on_gpu(base.with_batch(b), planner.cache.get(base.with_batch(b)))  # noqa: E731
        real = largest_running_batch(runs, predicted or 1)
        rows.append(Row(case.name, "largest", "largest batch that runs", predicted, real, "batch"))
        log(f"  {case.name}: largest batch predicted {predicted}, real {real}")
    return rows


def render(rows: list[Row], header: str) -> str:
    from torchbudget.engine.report.units import human_bytes, human_ms

    def fmt(value, unit):
        if value is None:
            return "n/a"
        return human_bytes(value) if unit == "bytes" else human_ms(value) if unit == "ms" else f"{value:,.0f}"

    lines = [header, "", "| Case | Batch | Quantity | Predicted | Measured | Error |", "|---|---|---|---|---|---|"]
    for r in rows:
        error = "n/a" if r.error is None else f"{r.error:+.1%}"
        lines.append(f"| {r.case} | {r.batch} | {r.quantity} | {fmt(r.predicted, r.unit)} | {fmt(r.measured, r.unit)} "
                     f"| {error} |")
    return "\n".join(lines)


def write_into(doc: Path, table: str) -> None:
    """Replace what stands between the battery's markers in ``doc`` (the rest of the page is prose)."""
    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")


def run(argv: list[str] | None = None, log=print) -> tuple[list[Row], str]:
    parser = argparse.ArgumentParser(prog="validation_battery")
    parser.add_argument("--write", type=Path, default=None, help="put the table into this Markdown file")
    parser.add_argument("--dry-run", action="store_true", help="CPU plumbing check even if CUDA is present")
    parser.add_argument("--cases", default=None, help="comma-separated case-name prefixes")
    args = parser.parse_args(argv)
    import torch

    from torchbudget.engine.planner import Planner
    from torchbudget.hardware.catalog import resolve_gpu

    dry = args.dry_run or not torch.cuda.is_available()
    gpu = dry_gpu() if dry else resolve_gpu("local:0")
    cases = [c for c in CASES if not args.cases or any(c.name.startswith(p) for p in args.cases.split(","))]
    planner = Planner()
    started = time.perf_counter()
    rows = []
    for case in cases:
        log(f"{case.name}{' (dry run)' if dry else ''}")
        rows += run_case(case, dry=dry, planner=planner, gpu=gpu, log=log)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"Run {stamp} on {gpu.name} ({'dry run on the CPU: no memory counters' if dry else 'CUDA'}), "
              f"torch {torch.__version__}, {time.perf_counter() - started:.0f} s.")
    table = render(rows, header)
    if args.write is not None:
        if dry:
            log("dry run: the table is not written into the docs (it measures no GPU)")
        else:
            write_into(args.write, table)
    return rows, table


if __name__ == "__main__":
    _, text = run(sys.argv[1:])
    print(text)

"""Plain-text renderings of the engine's results: the tables and lines the CLI prints (the GUI's exports
reuse the same pieces). Every number goes through engine.report.units."""
from __future__ import annotations

from torchbudget.engine import vocab
from torchbudget.engine.report.labels import VERDICT_HEADLINES
from torchbudget.engine.report.units import human_bytes, human_count, human_ms, table
from torchbudget.engine.results import AnalysisResult, ModuleNode

# ------------------------------------------------------------------------------------------- analysis
LAYER_HEADERS = ["Module", "Type", "Output shape", "Params", "MACs", "FLOPs", "Activations"]


def shape_text(shapes: tuple[tuple[int, ...], ...], limit: int = 2) -> str:
    parts = ["x".join(str(d) for d in shape) or "scalar" for shape in shapes[:limit]]
    if len(shapes) > limit:
        parts.append(f"+{len(shapes) - limit} more")
    return ", ".join(parts) or "-"


def layer_row(node: ModuleNode) -> list[str]:
    return ["  " * node.depth + node.name, node.type_name, shape_text(node.output_shapes), f"{node.params:,}",
            human_count(node.macs), human_count(node.flops), human_bytes(node.activation_bytes)]


def options_text(options) -> str:
    """``bf16-amp train, adamw (foreach), checkpointing`` — what the workload runs as."""
    text = f"{options.precision} {options.mode}"
    if options.training:
        if options.optimizer:
            text += f", {options.optimizer}"
            if options.optimizer_impl != "auto":
                text += f" ({options.optimizer_impl})"
        else:
            text += ", no optimizer"
        if options.checkpointing:
            text += ", checkpointing"
        if options.grad_accum > 1:
            text += f", grad-accum {options.grad_accum}"
        if options.freeze:
            text += f", freeze {','.join(options.freeze)}"
    if options.mode == "decode":
        text += f", context {options.context_len:,}"
    if options.generation and options.kv_dtype != "auto":
        text += f", KV cache {options.kv_dtype}"
    if options.lora_rank:
        text += f", LoRA r{options.lora_rank}" + (f" on {','.join(options.lora_targets)}" if options.lora_targets else "")
    if options.base_dtype != "auto":
        text += f", base {options.base_dtype}"
    if options.attention != "auto":
        text += f", attention {options.attention}"
    return text


def target_text(options, gpu_name: str | None = None) -> str:
    if gpu_name:
        return f"target {options.target} ({gpu_name})"
    if options.target == vocab.DEFAULT_TARGET:
        return f"target {vocab.DEFAULT_TARGET_LABEL}"
    return f"target {options.target}"


def render_analysis(result: AnalysisResult, depth: int | None = None) -> str:
    inputs = ", ".join(spec.text() for spec in result.inputs)
    header = (f"{result.model_name}  input {inputs}  {options_text(result.options)}  {target_text(result.options)}"
              f"  (convention {result.options.convention}; traced in {result.trace_seconds:.2f} s)")
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
    coverage = (f"coverage {result.flop_coverage:.1%} of FLOPs ({result.coverage:.1%} of op calls counted or known "
                "to do no arithmetic)")
    if not result.uncounted_ops:
        return [f"{coverage}; no uncounted ops"]
    lines = [f"{coverage}; uncounted ops (no formula, not in the totals), by FLOPs estimated from their shapes:"]
    for op in result.uncounted_ops:
        where = ", ".join(m or "<root>" for m in op.modules[:3]) + (" ..." if len(op.modules) > 3 else "")
        lines.append(f"  {op.op}  x{op.calls}  ~{human_count(op.estimated_flops)}FLOPs  in {where}")
    return lines


# ----------------------------------------------------------------------------------------------- plan
def verdict_line(plan) -> str:
    head = VERDICT_HEADLINES[plan.verdict.value]
    need, have = human_bytes(plan.required_bytes), human_bytes(plan.capacity_bytes)
    if not plan.fits:
        room = f"short by {human_bytes(-plan.headroom_bytes)}"
    elif plan.headroom_fraction is None:
        room = f"headroom {human_bytes(plan.headroom_bytes)}"
    else:
        room = f"headroom {human_bytes(plan.headroom_bytes)} ({plan.headroom_fraction:.1%})"
    return (f"{head}: needs {need} of {have} available on {plan.gpu.name}; {room}; "
            f"largest share: {plan.dominant_category.value}")


def memory_table(plan) -> str:
    peak = plan.memory.peak_bytes or 1
    rows = [[c.value, human_bytes(n), f"{n:,}", f"{n / peak:.1%}"] for c, n in plan.memory.by_category.items() if n]
    rows.append(["total at peak", human_bytes(plan.memory.peak_bytes), f"{plan.memory.peak_bytes:,}", "100.0%"])
    return table(["Category", "Size (MiB/GiB)", "Bytes", "Share"], rows)


def render_plan(plan) -> str:
    memory, latency = plan.memory, plan.latency
    result = plan.result
    inputs = ", ".join(s.text() for s in result.inputs) if result else ""
    options = result.options if result else (plan.workload.options if plan.workload else None)
    what = f"{options_text(options)}  {target_text(options, plan.gpu.name)}" if options else ""
    lines = [f"{result.model_name if result else ''}  input {inputs}  {what}", "", verdict_line(plan), "",
             memory_table(plan), "",
             f"peak at op {memory.peak_op_index} in {memory.peak_module or '<root>'}"
             + (f" ({memory.peak_phase.value})" if memory.peak_phase else "")]
    if options and options.training:
        lines.append(f"tensor peaks: iteration 1 {human_bytes(memory.iteration1_peak_bytes)}, "
                     f"steady state {human_bytes(memory.steady_state_peak_bytes)} (optimizer state kept)")
    if memory.overheads.allocator is not None:
        lines.append(f"caching allocator: allocated peak {human_bytes(memory.allocated_peak_bytes)}, reserved peak "
                     f"{human_bytes(memory.reserved_peak_bytes)} in {memory.segments} segment(s) "
                     f"(fragmentation {human_bytes(memory.fragmentation_bytes)})")
    generation = plan.generation
    if generation is None:
        lines.append("max batch: " + ("not solved" if plan.max_batch is None else f"{plan.max_batch}"))
    if plan.max_seq_len is not None:
        lines.append(f"max seq len: {plan.max_seq_len:,} at batch {result.batch_size if result else 1}")
    k = latency.grad_accum
    parts = ", ".join(f"{name} {human_ms(p.estimate_ms)}" + (" per micro-batch" if k > 1 and name != "optimizer" else "")
                      for name, p in (("forward", latency.forward), ("backward", latency.backward),
                                      ("optimizer", latency.optimizer)) if p.estimate_ms)
    per_step = f" per optimizer step of {k} micro-batches" if k > 1 else ""
    lines.append(f"latency: lower bound {human_ms(latency.lower_bound_ms)}, estimate {human_ms(latency.estimate_ms)}"
                 + per_step + (f" ({parts})" if parts and generation is None else ""))
    if generation is None:
        lines.append(f"throughput: {latency.throughput_samples_per_s:,.1f} samples/s estimated, "
                     f"at most {latency.max_throughput_samples_per_s:,.1f} samples/s (roofline bound)"
                     + (f"; global batch {latency.global_batch} ({k} x {latency.batch_size})" if k > 1 else ""))
    else:
        lines += generation_lines(generation, plan.max_batch, plan.gpu)
    if plan.distributed is not None:
        lines += distributed_lines(plan.distributed, serving=generation is not None)
    if plan.result is not None and plan.result.options.checkpointing:   # the granularity, as analyze states it
        lines += [f"policy: {p}" for p in plan.result.policies if p.startswith("activation checkpointing")]
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def distributed_lines(d, serving: bool = False) -> list[str]:
    """A distributed plan's lines: memory, verdict and max batch above are per rank; these add the cluster,
    the collectives and the step with communication. ``serving``: a prefill/decode plan (its KV cache, bounds,
    tokens/s and solvers above are rank 0's too; the step's rate is in tokens)."""
    c = d.comm
    tp = f", TP {d.tp_size} x DP {d.dp_size}" if d.tp_size > 1 else ""
    lines = [f"cluster: {d.cluster}; {d.strategy}{tp} ({d.method}: "
             + ("torch's own wrappers on a fake process group" if d.method == "traced" else "a formula") + ")",
             "memory, verdict, KV cache, max concurrent sequences and max context are per rank (rank 0's traced "
             "step: its weight shards and its 1/tp of the KV heads)" if serving else
             "memory, verdict and max batch are per rank (rank 0's traced step)"]
    k = d.grad_accum
    per_step = f" per optimizer step of {k} micro-batches" if k > 1 else ""
    for kind, (calls, nbytes, ms) in sorted(c.by_kind.items()):
        lines.append(f"  {kind.replace('_', '-')}: {calls} call(s), {human_bytes(nbytes)}, {human_ms(ms)}{per_step}")
    lines.append(f"communication: {human_ms(c.comm_ms)} ({human_ms(c.exposed_ms)} exposed, "
                 f"{human_ms(c.overlapped_ms)} overlapped with compute){per_step}")
    if serving:
        lines.append(f"step: {human_ms(d.step_ms)} = compute {human_ms(c.compute_ms)} + exposed communication "
                     f"{human_ms(c.exposed_ms)}; {d.tokens_per_s or 0:,.1f} tokens/s over the job; scaling "
                     f"efficiency {d.scaling_efficiency:.0%}")
        return lines
    tokens = f", {d.tokens_per_s:,.0f} tokens/s" if d.tokens_per_s else ""
    batch = f"global batch {d.global_batch} = {k} x {d.global_batch // (k * d.dp_size)} x {d.dp_size} replica(s)" \
        if k > 1 else f"global batch {d.global_batch}"
    lines.append(f"step: {human_ms(d.step_ms)} = compute {human_ms(c.compute_ms)} + exposed communication "
                 f"{human_ms(c.exposed_ms)}{per_step}; {d.samples_per_s:,.1f} samples/s over the job ({batch})"
                 f"{tokens}; scaling efficiency {d.scaling_efficiency:.0%}")
    return lines


def generation_lines(g, max_batch: int | None, gpu) -> list[str]:
    """The prefill/decode lines of a plan: KV cache, the decode bandwidth bound, tokens/s, the solvers."""
    tokens = f"{g.sequences:,} x {g.context_tokens + g.new_tokens:,} tokens"
    rank = " on rank 0 (its 1/tp of the KV heads)" if g.world_size > 1 else ""
    bound = "roofline bound + exposed communication" if g.world_size > 1 else "roofline bound"
    if g.mode == "prefill":
        lines = [f"KV cache: {human_bytes(g.kv_cache_bytes)} for {tokens}{rank} when the prompt is in (kept for "
                 "decoding)",
                 f"time to first token: {human_ms(g.step_estimate_ms)} estimated, at least "
                 f"{human_ms(g.step_bound_ms)} ({bound})",
                 f"prefill throughput: {g.tokens_per_s:,.1f} tokens/s estimated, at most {g.max_tokens_per_s:,.1f} "
                 "tokens/s"]
        solved = "not solved" if max_batch is None else f"{max_batch:,}"
        return lines + [f"max batch: {solved} (prompts of {g.new_tokens:,} tokens)"]
    lines = [f"KV cache: {human_bytes(g.kv_read_bytes)} for {g.sequences:,} x {g.context_tokens:,} tokens before the "
             f"step, {human_bytes(g.kv_cache_bytes)} for {tokens} after it{rank}",
             f"decode bound: weights {human_bytes(g.weight_bytes)} + KV cache {human_bytes(g.kv_read_bytes)} read per "
             f"step at {gpu.bandwidth_gbs:,.0f} GB/s = {human_ms(g.bandwidth_bound_ms)}"
             + (f" per rank, + exposed communication {human_ms(g.exposed_comm_ms)} = "
                f"{human_ms(g.bandwidth_bound_ms + g.exposed_comm_ms)}" if g.world_size > 1 else ""),
             f"throughput: {g.tokens_per_s:,.1f} tokens/s estimated ({g.per_sequence_tokens_per_s:,.1f} per "
             f"sequence), at most {g.max_tokens_per_s:,.1f} tokens/s (the roofline and decode bounds)"]
    lines.append("max concurrent sequences: " + ("not solved" if max_batch is None else
                                                 f"{max_batch:,} (at context {g.context_tokens:,})"))
    lines.append("max context: " + ("not solved" if g.max_context is None else
                                    f"{g.max_context:,} tokens (at {g.sequences:,} sequences)"))
    return lines


# ---------------------------------------------------------------------------------------- comparison
COMPARISON_HEADERS = ["GPU", "Verdict", "Needs", "Available", "Headroom", "Max batch", "Bound", "Estimate",
                      "Samples/s"]


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_comparison(comparison) -> str:
    rows = [[r.gpu_name, r.verdict.value.replace("_", " "), human_bytes(r.required_bytes),
             human_bytes(r.capacity_bytes), _fraction(r.headroom_fraction),
             "-" if r.max_batch is None else str(r.max_batch), human_ms(r.lower_bound_ms),
             human_ms(r.estimate_ms), f"{r.throughput_samples_per_s:,.1f}"] for r in comparison.rows]
    lines = [table(COMPARISON_HEADERS, rows)]
    best = comparison.fastest()
    if best is not None:
        lines.append(f"fastest that fits: {best.gpu_name} ({human_ms(best.estimate_ms)} estimated)")
    else:
        lines.append("the workload fits on none of these GPUs")
    notes = dict.fromkeys(f"{r.gpu_name}: {note}" for r in comparison.rows for note in r.plan.notes)
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ several GPUs
DISTRIBUTED_HEADERS = ["Cluster", "Strategy", "GPUs", "Per rank", "Available", "Fits", "Step", "Comm exposed",
                       "Samples/s", "Tokens/s", "Scaling"]


def _strategy_label(strategy: str, tp: int) -> str:
    return f"{strategy} (tp {tp})" if strategy == "fsdp+tp" else strategy


def _distributed_cells(row) -> list[str]:
    """A solve.StrategyRow, or a solve.FewestSearch (its plan's row, or a row that fits nowhere)."""
    from torchbudget.engine.distributed.solve import FewestSearch, row_of

    if isinstance(row, FewestSearch):
        if row.plan is None:
            return [row.gpu_name, row.strategy, "none", "-", human_bytes(row.capacity_bytes), "no", "-", "-", "-",
                    "-", "-"]
        row = row_of(row.plan)
    return [f"{row.world_size}x {row.gpu_name}", _strategy_label(row.strategy, row.tp_size), str(row.world_size),
            human_bytes(row.per_rank_bytes), human_bytes(row.capacity_bytes), "yes" if row.fits else "no",
            human_ms(row.step_ms), human_ms(row.exposed_comm_ms), f"{row.samples_per_s:,.1f}",
            "-" if row.tokens_per_s is None else f"{row.tokens_per_s:,.0f}", f"{row.scaling_efficiency:.0%}"]


def render_distributed_comparison(rows) -> str:
    """Strategies and clusters side by side (compare with --strategy a,b or COUNTx GPU): per-rank memory, fit,
    the step with its exposed communication, the job's throughput and scaling efficiency."""
    from torchbudget.engine.distributed.solve import FewestSearch, row_of

    lines = [table(DISTRIBUTED_HEADERS, [_distributed_cells(r) for r in rows], right_align_from=2),
             "per rank: rank 0's traced step with NCCL buffers, the CUDA context and the allocator's cache; "
             "step = compute + exposed communication; scaling = compute / step"]
    plain = [row_of(r.plan) if isinstance(r, FewestSearch) and r.plan is not None else r for r in rows
             if not (isinstance(r, FewestSearch) and r.plan is None)]
    lines += [f"cluster: {c}" for c in dict.fromkeys(r.cluster for r in plain)]
    fitting = [r for r in plain if r.fits]
    if fitting:
        best = max(fitting, key=lambda r: r.samples_per_s)
        lines.append(f"fastest that fits: {best.world_size}x {best.gpu_name}, "
                     f"{_strategy_label(best.strategy, best.tp_size)} "
                     f"({best.samples_per_s:,.1f} samples/s, {best.samples_per_s / best.world_size:,.2f} per GPU)")
    else:
        lines.append("fits in none of these")
    lines += [f"note: {r.gpu_name}, {r.strategy}: {r.reason}" for r in rows
              if isinstance(r, FewestSearch) and r.plan is None and r.reason]
    return "\n".join(lines)


def render_fewest(searches, best) -> str:
    """--world-size auto: the fewest GPUs per strategy (every world size traced), and the choice."""
    rows = []
    for s in searches:
        tried = ", ".join(f"{w}: {human_bytes(b)}{'' if fits else ' (no)'}" for w, b, fits in s.tried)
        rows.append([s.strategy, "none" if s.world_size is None else str(s.world_size), tried])
    gpu = searches[0].gpu_name if searches else ""
    capacity = human_bytes(searches[0].capacity_bytes) if searches else ""
    lines = [f"fewest GPUs ({gpu}, {capacity} available per GPU): per-rank memory at each world size traced",
             table(["Strategy", "Fewest", "Traced (GPUs: per rank)"], rows, right_align_from=1)]
    lines += [f"note: {s.strategy}: {s.reason}" for s in searches if s.world_size is None and s.reason]
    if best is None:
        lines.append("no strategy fits at any world size tried")
    else:
        tp = best.plan.result.options.tp_size
        if best.world_size == 1:
            lines.append(f"fewest: 1x {best.gpu_name}: the workload fits one GPU (no strategy needed; the plan "
                         f"below is {best.strategy} on one rank)")
            return "\n".join(lines)
        lines.append(f"fewest: {best.world_size}x {best.gpu_name} with {_strategy_label(best.strategy, tp)}"
                     + (" (the fastest step of those needing as few)" if sum(
                         1 for s in searches if s.world_size == best.world_size) > 1 else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- sweep
def render_sweep(sweep) -> str:
    context = sweep.axis == "context"   # decode: the KV cache and new tokens/s, not samples/s
    headers = [sweep.axis]
    for gpu in sweep.gpus:
        headers += [f"{gpu.gpu_name}: needs", "fits", "bound", "estimate",
                    *(("KV cache", "tokens/s") if context else ("samples/s",))]
    rows = []
    for point in sweep.points:
        row = [str(point.value) + (" *" if point.interpolated else "")]
        for g in point.per_gpu:
            row += [human_bytes(g.required_bytes), "yes" if g.fits else "no", human_ms(g.lower_bound_ms),
                    human_ms(g.estimate_ms)]
            row += [human_bytes(g.kv_cache_bytes or 0), f"{g.tokens_per_s or 0:,.1f}"] if context else \
                [f"{g.throughput_samples_per_s:,.1f}"]
        rows.append(row)
    lines = [table(headers, rows)]
    if any(p.interpolated for p in sweep.points):
        lines.append("* from the affine batch model, checked byte for byte against an exact trace at a larger batch")
    for gpu in sweep.gpus:
        if sweep.axis == "seq_len":
            solved = f"max seq len {gpu.max_seq_len:,}" if gpu.max_seq_len is not None else "max seq len not solved"
        elif context:
            solved = f"max context {gpu.max_context:,}" if gpu.max_context is not None else "max context not solved"
        else:
            solved = f"max batch {gpu.max_batch}" if gpu.max_batch is not None else "max batch not solved"
        lines.append(f"{gpu.gpu_name}: {human_bytes(gpu.capacity_bytes)} available, target {gpu.target}, {solved}")
    lines += [f"note: {note}" for note in sweep.notes]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- GPUs
TABLE_DTYPES = ("fp32", "tf32", "bf16", "fp8")


def _tflops(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def render_gpu_table(specs) -> str:
    headers = ["GPU", "memory GiB", "GB/s", *(f"{d} TF" for d in TABLE_DTYPES), "origin"]
    rows = [[s.name, f"{s.memory_bytes / 2**30:g}", f"{s.bandwidth_gbs:,.0f}",
             *(_tflops(s.peak_tflops.get(d)) for d in TABLE_DTYPES), s.origin] for s in specs]
    return table(headers, rows)


def render_interconnect_table(links) -> str:
    """The interconnect table: per GPU, one direction; bus GB/s = peak x efficiency (what NCCL reaches)."""
    headers = ["Interconnect", "kind", "GB/s", "efficiency", "bus GB/s", "latency us", "domain", "origin"]
    rows = [[link.name, link.kind, f"{link.bandwidth_gb_s:,.2f}".rstrip("0").rstrip("."), f"{link.efficiency:.2f}",
             f"{link.bus_bandwidth_gb_s:,.1f}", f"{link.latency_us:g}",
             "-" if link.domain_gpus is None else f"{link.domain_gpus}", link.origin] for link in links]
    return table(headers, rows)


def render_local_gpus(local, probe) -> str:
    if not local:
        return f"No local GPU found ({probe.error or 'no GPU detected'})."
    versions = f"driver {probe.driver_version or '?'}, CUDA driver {probe.cuda_driver_version or '?'}"
    lines = [f"Local GPUs ({versions}):"]
    for spec in local:
        how = "peaks derived from SM count x clock" if spec.origin == "derived" else "matched to the database"
        lines.append(f"  local:{spec.local_index}  {spec.name}: available {human_bytes(spec.available_memory_bytes)} "
                     f"of {human_bytes(spec.memory_bytes)} total, {spec.bandwidth_gbs:,.0f} GB/s, "
                     f"fp32 {_tflops(spec.peak_tflops.get('fp32'))} TF ({how})")
    return "\n".join(lines)

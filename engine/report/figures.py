"""The headline figures of a plan beyond memory and latency, as (label, value, tip) rows: the generation
figures of a prefill/decode plan (KV cache, time to first token, tokens/s, the decode bound, max concurrent
sequences, max context), the fine-tuning figures of a training plan (trainable parameters, global batch), the
several-GPU figures of a distributed plan (cluster, strategy, collectives, communication exposed vs overlapped,
the step, the job's throughput, scaling efficiency) and the longest sequence of a token workload.
The GUI's verdict shows them; the numbers are the planner's (engine.latency.GenerationReport,
LatencyReport, Totals, engine.distributed.plan.DistributedPlan), formatted through engine.report.units as the CLI's lines are (engine.report.text)."""
from __future__ import annotations

from dataclasses import dataclass

from torchbudget.engine.report.units import human_bytes, human_count, human_ms


@dataclass(frozen=True)
class Figure:
    key: str      # stable name (tests, exports): "kv_cache", "tokens_per_s", ...
    label: str
    value: str
    tip: str


def generation_figures(plan) -> list[Figure]:
    """Prefill/decode figures of ``plan`` (empty for other modes)."""
    g = plan.generation
    if g is None:
        return []
    if g.mode == "prefill":
        solved = "not solved" if plan.max_batch is None else f"{plan.max_batch:,}"
        return [
            Figure("kv_cache", "KV cache", f"{human_bytes(g.kv_cache_bytes)} ({g.sequences:,} × {g.new_tokens:,} tokens)",
                   "Keys and values of the whole prompt, per layer, when the prefill ends (kept for decoding): "
                   "2 × layers × KV heads × head dim × tokens × sequences × bytes per value."),
            Figure("time_to_first_token", "Time to first token",
                   f"{human_ms(g.step_estimate_ms)} (≥ {human_ms(g.step_bound_ms)})",
                   "The prefill step's estimated latency (the prompt's forward yields the first token); the "
                   "roofline lower bound in brackets."),
            Figure("tokens_per_s", "Prefill throughput",
                   f"{g.tokens_per_s:,.0f} tokens/s (≤ {g.max_tokens_per_s:,.0f})",
                   "Prompt tokens per second at the estimated latency; the bound gives the ceiling in brackets."),
            Figure("max_batch", "Largest batch", f"{solved} prompts of {g.new_tokens:,} tokens",
                   "The most prompts of this length prefilled together that still fit."),
        ]
    sequences = "not solved" if plan.max_batch is None else f"{plan.max_batch:,} at context {g.context_tokens:,}"
    context = "not solved" if g.max_context is None else f"{g.max_context:,} tokens at {g.sequences:,} sequences"
    return [
        Figure("kv_cache", "KV cache", f"{human_bytes(g.kv_read_bytes)} ({g.sequences:,} × {g.context_tokens:,} tokens)",
               f"The cache the step reads: 2 × layers × KV heads × head dim × context × sequences × bytes per value "
               f"({human_bytes(g.kv_cache_bytes)} after the step's new token)."),
        Figure("decode_bound", "Decode bound",
               human_ms(g.bandwidth_bound_ms) + (f" + {human_ms(g.exposed_comm_ms)} communication"
                                                 if g.world_size > 1 else ""),
               f"No decode step beats reading every weight ({human_bytes(g.weight_bytes)}) and the whole KV cache "
               f"({human_bytes(g.kv_read_bytes)}) once at the GPU's memory bandwidth"
               + (" (rank 0's shards and KV heads), plus the tensor-parallel all-reduces it waits for."
                  if g.world_size > 1 else ".")),
        Figure("tokens_per_s", "Tokens/s",
               f"{g.tokens_per_s:,.0f} ({g.per_sequence_tokens_per_s:,.0f} per sequence, ≤ {g.max_tokens_per_s:,.0f})",
               "New tokens per second across all sequences at the estimated step latency; each sequence's own rate "
               "and the ceiling (the larger of the roofline and decode bounds) in brackets."),
        Figure("max_concurrent_sequences", "Max concurrent sequences", sequences,
               "The most sequences decoded together at this context that still fit (solved on traced memory)."),
        Figure("max_context", "Max context", context,
               "The longest context that still fits at this many concurrent sequences."),
    ]


def finetune_figures(plan) -> list[Figure]:
    """Training figures of ``plan``: trainable parameters (LoRA, --freeze) and the global batch."""
    options = plan.result.options if plan.result is not None else (plan.workload.options if plan.workload else None)
    if options is None or not options.training:
        return []
    out = []
    if plan.result is not None:
        totals = plan.result.totals
        share = f" ({totals.trainable_params / totals.params:.2%})" if totals.params else ""
        out.append(Figure("trainable_params", "Trainable params",
                          f"{human_count(totals.trainable_params)} of {human_count(totals.params)}{share}",
                          "Parameters that get gradients and optimizer state (LoRA adapters, what --freeze leaves); "
                          "the rest are frozen in the base dtype."))
    latency = plan.latency
    k = latency.grad_accum
    out.append(Figure("global_batch", "Global batch",
                      f"{latency.global_batch:,} ({k} × {latency.batch_size:,})" if k > 1 else f"{latency.global_batch:,}",
                      "Samples per optimizer step: gradient-accumulation steps × micro-batch. Memory is the "
                      "micro-batch's; the latency is per optimizer step."))
    return out


def sequence_figures(plan) -> list[Figure]:
    """The longest sequence that fits at the plan's batch (token inputs, every mode but decode): Plan.max_seq_len."""
    if plan.max_seq_len is None or plan.generation is not None and plan.generation.mode == "decode":
        return []
    batch = plan.result.batch_size if plan.result is not None else plan.workload.batch_size
    return [Figure("max_seq_len", "Longest sequence", f"{plan.max_seq_len:,} tokens at batch {batch:,}",
                   "The longest sequence (every token input's length) that still fits at this batch: solved on "
                   "traced memory, confirmed by an exact trace at the answer and one token more.")]


def distributed_figures(plan) -> list[Figure]:
    """A distributed plan's figures (empty on one GPU): memory, the verdict and the largest batch are per rank;
    these give the cluster, the collectives and the step with its communication (engine.report.text's lines)."""
    d = plan.distributed
    if d is None:
        return []
    c = d.comm
    tp = f", TP {d.tp_size} × DP {d.dp_size}" if d.tp_size > 1 else ""
    method = "traced through torch's own wrappers" if d.method == "traced" else "a documented formula"
    out = [
        Figure("cluster", "Cluster", d.cluster,
               f"{d.world_size} GPUs, {d.gpus_per_node} per node; {d.intra} inside a node, {d.inter} between nodes "
               "(hardware.cluster)."),
        Figure("strategy", "Strategy", f"{d.strategy}{tp} ({method})",
               "Rank 0's step, traced under PyTorch's own distributed wrappers on a fake process group: memory, "
               "the verdict and the largest batch above are per rank (per GPU)."),
    ]
    k = d.grad_accum
    per_step = f" per step of {k} micro-batches" if k > 1 else ""
    for kind, (calls, nbytes, ms) in sorted(c.by_kind.items()):
        out.append(Figure(f"collective_{kind}", kind.replace("_", "-"),
                          f"{calls} call(s), {human_bytes(nbytes)}, {human_ms(ms)}{per_step}",
                          "Bytes as nccl-tests counts them (all-gather: the gathered output; reduce-scatter: the "
                          "input), timed by the bus-bandwidth formulas on the link the group crosses."))
    out += [
        Figure("communication", "Communication",
               f"{human_ms(c.comm_ms)} ({human_ms(c.exposed_ms)} exposed, {human_ms(c.overlapped_ms)} overlapped)",
               "Every collective one after another; exposed: what the step waits for, overlapped: what runs "
               "while compute does (DDP's buckets in backward, FSDP's prefetched all-gathers)."),
        Figure("step", "Step", f"{human_ms(d.step_ms)} = compute {human_ms(c.compute_ms)} + exposed "
                               f"{human_ms(c.exposed_ms)}" + (f" ({k} micro-batches + the optimizer)" if k > 1 else ""),
               "The two-stream timeline's end: the per-rank compute estimate plus the communication it cannot "
               "hide (docs/distributed.md)."),
    ]
    if plan.generation is None:   # serving: tokens/s are the generation figures' (the same step)
        out.append(Figure("job_throughput", "Throughput (job)",
                          f"{d.samples_per_s:,.1f} samples/s"
                          + (f", {d.tokens_per_s:,.0f} tokens/s" if d.tokens_per_s else "")
                          + f" (global batch {d.global_batch:,})",
                          "Over the whole job: per-rank micro-batch × gradient-accumulation steps × data-parallel "
                          "replicas per optimizer step."))
    out.append(Figure("scaling_efficiency", "Scaling efficiency", f"{d.scaling_efficiency:.0%}",
                      "Compute / step: the share of the step each GPU spends computing."))
    return out

"""The headline figures of a plan beyond memory and latency, as (label, value, tip) rows: the generation
figures of a prefill/decode plan (KV cache, time to first token, tokens/s, the decode bound, max concurrent
sequences, max context) and the fine-tuning figures of a training plan (trainable parameters, global batch).
The GUI's verdict shows them; the numbers are the planner's (engine.latency.GenerationReport,
LatencyReport, Totals), formatted through engine.report.units as the CLI's lines are (engine.report.text)."""
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
        Figure("decode_bound", "Decode bound", human_ms(g.bandwidth_bound_ms),
               f"No decode step beats reading every weight ({human_bytes(g.weight_bytes)}) and the whole KV cache "
               f"({human_bytes(g.kv_read_bytes)}) once at the GPU's memory bandwidth."),
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

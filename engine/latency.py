"""Roofline latency: per op ``t = max(FLOPs / peak FLOP/s, bytes / bandwidth)``, summed.

The lower bound uses the datasheet peaks with no hidden factors. The estimate divides each peak by a
named efficiency factor (engine.overheads.Efficiency) and adds a kernel-launch overhead per kernel,
so it is never below the bound."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from torchbudget.engine.memory import kv_cache_bytes
from torchbudget.engine.overheads import Efficiency
from torchbudget.engine.results import AnalysisResult, OpKind, OpRecord, Phase, frozen_map
from torchbudget.engine.vocab import InputKind
from torchbudget.hardware.spec import GpuSpec

@dataclass(frozen=True)
class OpPoint:
    """One op on the roofline chart."""
    index: int
    op: str
    module_path: str
    phase: Phase
    flops: int
    bytes_moved: int
    arithmetic_intensity: float      # FLOP per byte (0 when no bytes move)
    attainable_flops_per_s: float    # min(peak, intensity * bandwidth)
    peak_flops_per_s: float
    bound_ms: float
    estimate_ms: float
    compute_bound: bool


@dataclass(frozen=True)
class ModuleLatency:
    path: str
    bound_ms: float
    estimate_ms: float
    compute_ms: float                # sum of FLOP times at peak
    memory_ms: float                 # sum of byte times at full bandwidth
    compute_bound: bool              # compute_ms >= memory_ms


@dataclass(frozen=True)
class PhaseLatency:
    bound_ms: float = 0.0
    estimate_ms: float = 0.0


@dataclass(frozen=True)
class LatencyReport:
    gpu_name: str
    lower_bound_ms: float                     # one step: with gradient accumulation K, K x (forward + backward)
    estimate_ms: float                        # + the optimizer (one optimizer step, the global batch)
    forward: PhaseLatency                     # phases as traced: one (micro-)batch
    backward: PhaseLatency
    optimizer: PhaseLatency
    per_module: Mapping[str, ModuleLatency]   # inclusive: a module's time includes its children's
    per_op: tuple[OpPoint, ...]               # ops that launch a kernel
    batch_size: int                           # the traced (micro-)batch
    throughput_samples_per_s: float           # global batch / estimate
    max_throughput_samples_per_s: float       # global batch / lower bound
    efficiency: Efficiency
    grad_accum: int = 1                       # micro-batches per optimizer step

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass(frozen=True)
class GenerationReport:
    """Prefill and decode figures of one step (engine.tracing.generation). A decode step's sequences each get
    ``new_tokens`` (one) per step; a prefill step is the time to the first token."""
    mode: str                            # "prefill" | "decode"
    sequences: int                       # the batch: concurrent sequences
    new_tokens: int                      # tokens per sequence this step (decode: 1; prefill: the prompt)
    context_tokens: int                  # decode: tokens in the cache before the step; prefill: 0
    weight_bytes: int                    # parameter bytes: each weight is read once per step
    kv_read_bytes: int                   # the KV cache before the step (decode reads all of it; prefill: 0)
    kv_cache_bytes: int                  # the KV cache when the step ends (context + new tokens)
    bandwidth_bound_ms: float            # (weights + KV read) / bandwidth: what no decode step can beat
    step_bound_ms: float                 # the roofline lower bound of the whole step (per-op sum)
    step_estimate_ms: float
    tokens_per_s: float                  # sequences x new tokens / estimate
    max_tokens_per_s: float              # ... / the larger of the roofline and bandwidth bounds
    per_sequence_tokens_per_s: float     # new tokens / estimate: the rate each sequence sees (decode)
    max_context: int | None = None       # decode: the largest context that fits at this batch (None: not solved)
    # several GPUs (tensor parallel): weights and KV cache above are rank 0's (its shards, its KV heads); the
    # step's bounds and estimate add the communication it waits for (TP's all-reduces: all on the critical path)
    exposed_comm_ms: float = 0.0
    world_size: int = 1

    @property
    def tokens_per_step(self) -> int:
        return self.sequences * self.new_tokens

    @property
    def time_to_first_token_ms(self) -> float | None:
        """Prefill: the step's estimate (the prompt's forward, which yields the first token's logits)."""
        return self.step_estimate_ms if self.mode == "prefill" else None


def generation_report(result: AnalysisResult, gpu: GpuSpec, latency: "LatencyReport", distributed=None
                      ) -> GenerationReport | None:
    """The generation figures of a prefill/decode trace; None for other modes. ``distributed``: the plan's
    engine.distributed.plan.DistributedPlan of a several-GPU trace (rank 0's): the weights read are rank 0's
    shards, and the step's bounds and estimate add its exposed communication (the two-stream timeline's)."""
    options = result.options
    if not options.generation:
        return None
    tokens = [s for s in result.inputs if s.kind is InputKind.TOKENS and s.name != "attention_mask"]
    spec = next((s for s in tokens if s.name == "input_ids"), tokens[0] if tokens else None)
    sequences, new = (spec.shape[0], spec.shape[1]) if spec is not None else (result.batch_size, 1)
    before, after = kv_cache_bytes(result.storage_events)   # per rank: a distributed trace is rank 0's
    info = result.distributed
    weights = info.local_param_bytes if info is not None and info.local_param_bytes else result.totals.param_bytes
    bandwidth = gpu.bandwidth_bytes_per_s
    bound_ms = (weights + before) / bandwidth * 1000.0 if bandwidth > 0 else 0.0
    comm_ms = distributed.comm.exposed_ms if distributed is not None else 0.0
    step_bound_ms = latency.lower_bound_ms + comm_ms
    estimate_ms = distributed.step_ms if distributed is not None else latency.estimate_ms
    tokens_per_step = sequences * new
    ceiling_ms = max(step_bound_ms, bound_ms + comm_ms)
    estimate_s = estimate_ms / 1000.0
    return GenerationReport(
        mode=options.mode, sequences=sequences, new_tokens=new, context_tokens=options.context_len,
        weight_bytes=weights, kv_read_bytes=before, kv_cache_bytes=after, bandwidth_bound_ms=bound_ms,
        step_bound_ms=step_bound_ms, step_estimate_ms=estimate_ms,
        tokens_per_s=tokens_per_step / estimate_s if estimate_s > 0 else 0.0,
        max_tokens_per_s=tokens_per_step / (ceiling_ms / 1000.0) if ceiling_ms > 0 else 0.0,
        per_sequence_tokens_per_s=new / estimate_s if estimate_s > 0 else 0.0,
        exposed_comm_ms=comm_ms, world_size=info.world_size if info is not None else 1,
    )


def _efficiency_for(op: OpRecord, efficiency: Efficiency) -> float:
    if op.matmul_like:
        return efficiency.conv_fraction_of_peak if op.kind is OpKind.CONV else efficiency.matmul_fraction_of_peak
    return efficiency.other_fraction_of_peak


def _prefixes(path: str):
    yield ""
    if path:
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            yield ".".join(parts[:i])


def _op_time(op: OpRecord, flops: int, moved: int, gpu: GpuSpec, tf32: bool, efficiency: Efficiency):
    """(peak FLOP/s, compute s at peak, memory s at full bandwidth, bound ms, estimate ms) of one kernel."""
    peak = gpu.peak_flops_per_s(op.compute_dtype, tensor_core=op.matmul_like, tf32=tf32)
    bandwidth = gpu.bandwidth_bytes_per_s
    compute_s = flops / peak if peak > 0 and flops else 0.0
    memory_s = moved / bandwidth if bandwidth > 0 else 0.0
    bound_ms = max(compute_s, memory_s) * 1000.0
    estimate_ms = (max(compute_s / _efficiency_for(op, efficiency), memory_s / efficiency.bandwidth_fraction) * 1000.0
                   + efficiency.kernel_launch_overhead_us / 1000.0)
    return peak, compute_s, memory_s, bound_ms, estimate_ms


def op_estimates_ms(result: AnalysisResult, gpu: GpuSpec, efficiency: Efficiency = Efficiency()) -> list[float]:
    """Each op's realistic estimate (ms; 0 for ops that launch no kernel), in op order: the compute stream of
    engine.distributed.comm's timeline."""
    tf32 = result.options.precision == "tf32"
    return [_op_time(op, op.flops, op.bytes_read + op.bytes_written, gpu, tf32, efficiency)[4]
            if op.launches_kernel else 0.0 for op in result.ops]


def phase_totals(counted_ops, gpu: GpuSpec, *, tf32: bool, efficiency: Efficiency = Efficiency()) -> dict:
    """{phase: [bound ms, estimate ms]} from ``(op, flops, bytes moved)`` triples: the cheap path for
    sweeps, where the counts come from the affine batch model instead of an op record."""
    phases = {p: [0.0, 0.0] for p in Phase}
    for op, flops, moved in counted_ops:
        if op.launches_kernel:
            _, _, _, bound_ms, estimate_ms = _op_time(op, flops, moved, gpu, tf32, efficiency)
            phases[op.phase][0] += bound_ms
            phases[op.phase][1] += estimate_ms
    return phases


def report_from_phases(phases: dict, gpu: GpuSpec, batch: int, efficiency: Efficiency, per_module=None,
                       per_op=(), grad_accum: int = 1) -> LatencyReport:
    """Totals per optimizer step: with gradient accumulation, ``grad_accum`` forward+backward passes of the
    traced micro-batch and one optimizer step; throughput is over the global batch."""
    def step(i: int) -> float:
        return grad_accum * (phases[Phase.FORWARD][i] + phases[Phase.BACKWARD][i]) + phases[Phase.OPTIMIZER][i]

    lower, estimate = step(0), step(1)
    samples = batch * grad_accum
    return LatencyReport(
        gpu_name=gpu.name,
        lower_bound_ms=lower,
        estimate_ms=estimate,
        forward=PhaseLatency(*phases[Phase.FORWARD]),
        backward=PhaseLatency(*phases[Phase.BACKWARD]),
        optimizer=PhaseLatency(*phases[Phase.OPTIMIZER]),
        per_module=frozen_map(per_module),
        per_op=tuple(per_op),
        batch_size=batch,
        throughput_samples_per_s=samples / (estimate / 1000.0) if estimate > 0 else 0.0,
        max_throughput_samples_per_s=samples / (lower / 1000.0) if lower > 0 else 0.0,
        efficiency=efficiency,
        grad_accum=grad_accum,
    )


def roofline(result: AnalysisResult, gpu: GpuSpec, efficiency: Efficiency = Efficiency(), *,
             detail: bool = True) -> LatencyReport:
    """The roofline report; ``detail=False`` leaves out per-op points and per-module sums (faster)."""
    tf32 = result.options.precision == "tf32"
    if not detail:
        phases = phase_totals(((op, op.flops, op.bytes_read + op.bytes_written) for op in result.ops), gpu,
                              tf32=tf32, efficiency=efficiency)
        return report_from_phases(phases, gpu, result.batch_size, efficiency,
                                  grad_accum=result.options.grad_accum)
    bandwidth = gpu.bandwidth_bytes_per_s
    points: list[OpPoint] = []
    phases = {p: [0.0, 0.0] for p in Phase}
    modules: dict[str, list[float]] = {}   # path -> [bound, estimate, compute, memory]
    for op in result.ops:
        if not op.launches_kernel:
            continue
        moved = op.bytes_read + op.bytes_written
        peak, compute_s, memory_s, bound_ms, estimate_ms = _op_time(op, op.flops, moved, gpu, tf32, efficiency)
        intensity = op.flops / moved if moved else 0.0
        attainable = min(peak, intensity * bandwidth) if moved else peak
        points.append(OpPoint(op.index, op.op, op.module_path, op.phase, op.flops, moved, intensity, attainable,
                              peak, bound_ms, estimate_ms, compute_s >= memory_s))
        phases[op.phase][0] += bound_ms
        phases[op.phase][1] += estimate_ms
        for prefix in _prefixes(op.module_path):
            acc = modules.setdefault(prefix, [0.0, 0.0, 0.0, 0.0])
            acc[0] += bound_ms
            acc[1] += estimate_ms
            acc[2] += compute_s * 1000.0
            acc[3] += memory_s * 1000.0
    per_module = {path: ModuleLatency(path, b, e, c, m, c >= m) for path, (b, e, c, m) in modules.items()}
    return report_from_phases(phases, gpu, result.batch_size, efficiency, per_module, points,
                              grad_accum=result.options.grad_accum)

"""The plan: will this workload fit on this GPU, with what headroom, and how fast can it run.

Pure arithmetic on a trace and a GpuSpec (``plan_result``), plus ``Planner``: the one object that CLI
and GUI both plan through. It holds the trace cache, the overheads, the remembered largest batches and
the sweep grids, so both give the same answers and the same notes."""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Sequence

from torchbudget.engine import vocab
from torchbudget.engine.cache import TraceCache
from torchbudget.engine.compare import Comparison, row_of
from torchbudget.engine.errors import UserError
from torchbudget.engine.latency import GenerationReport, LatencyReport, generation_report, roofline
from torchbudget.engine.memory import MemoryProfile, fits, simulate_memory, uses_cudnn
from torchbudget.engine.overheads import Efficiency, Overheads
from torchbudget.engine.report.units import human_bytes
from torchbudget.engine.results import GENERATION_WARNING, AnalysisResult, MemoryCategory
from torchbudget.engine.workload import Workload
from torchbudget.hardware.spec import GpuSpec

if TYPE_CHECKING:
    from torchbudget.engine.distributed.plan import ClusterChoice, DistributedPlan


class Verdict(str, Enum):
    FITS = "fits"
    TIGHT = "tight"                  # fits, with less headroom than Overheads.tight_threshold_fraction
    DOES_NOT_FIT = "does_not_fit"


@dataclass(frozen=True)
class Plan:
    workload: Workload | None
    gpu: GpuSpec
    memory: MemoryProfile
    verdict: Verdict
    capacity_bytes: int              # gpu.available_memory_bytes: offered before CUDA starts
    headroom_bytes: int              # capacity - required; negative when it does not fit
    headroom_fraction: float | None  # headroom / capacity; None when the GPU offers nothing
    dominant_category: MemoryCategory
    max_batch: int | None            # None when not solved
    latency: LatencyReport
    throughput_samples_per_s: float
    result: AnalysisResult | None = None
    notes: tuple[str, ...] = ()      # warnings a user should read: tensor-core fallback, unsolved max batch...
    generation: GenerationReport | None = None   # prefill/decode: tokens/s, KV cache, decode bounds, max context
    # several GPUs: memory, verdict and max batch are per rank; this holds the cluster, the collectives, the step
    # time with communication and the job's throughput (engine.distributed.plan)
    distributed: "DistributedPlan | None" = None
    max_seq_len: int | None = None   # token models: the longest sequence that fits at this batch (None: not solved)

    @property
    def fits(self) -> bool:
        return self.verdict is not Verdict.DOES_NOT_FIT

    @property
    def required_bytes(self) -> int:
        """The whole footprint at the peak (CUDA context included): what is compared with capacity."""
        return self.memory.required_bytes


def verdict_for(required_bytes: int, capacity_bytes: int, overheads: Overheads) -> Verdict:
    if required_bytes > capacity_bytes:
        return Verdict.DOES_NOT_FIT
    if capacity_bytes - required_bytes < overheads.tight_threshold_fraction * capacity_bytes:
        return Verdict.TIGHT
    return Verdict.FITS


def fits_in(memory: MemoryProfile, gpu: GpuSpec) -> bool:
    return memory.required_bytes <= gpu.available_memory_bytes


def missing_tensor_rate(gpu: GpuSpec, precision: str) -> str | None:
    """The tensor rate ("bf16", ...) the precision asks for but the GPU does not list: the roofline then
    uses the fp32 rate (GpuSpec.peak_flops_per_s falls back), e.g. bf16 on a T4."""
    key = vocab.precision(precision).tensor_rate
    return None if key is None or gpu.peak_tflops.get(key) else key


def plan_notes(result: AnalysisResult, gpu: GpuSpec, overheads: Overheads) -> tuple[str, ...]:
    """What a user should know about this plan beyond the numbers."""
    notes = []
    key = missing_tensor_rate(gpu, result.options.precision)
    if key:
        notes.append(f"{gpu.name} has no {key} tensor cores: its matmuls are timed at the fp32 rate")
    expected = vocab.target_for_capability(gpu.compute_capability, gpu.vendor)
    if result.options.target != expected:
        notes.append(f"traced for {result.options.target} kernels; {gpu.name} runs {expected}'s")
    if gpu.available_memory_bytes <= overheads.cuda_context_bytes:
        notes.append(f"{gpu.name} offers {human_bytes(gpu.available_memory_bytes)}, not even the CUDA context "
                     f"({human_bytes(overheads.cuda_context_bytes)})")
    notes += [w for w in result.warnings if w.startswith(GENERATION_WARNING)]
    if result.options.distributed and result.options.world_size == 1:
        notes.append(f"--strategy {result.options.strategy} over 1 GPU shards and communicates nothing: give "
                     "--world-size N (or auto) to plan several GPUs")
    uncounted = sum(op.calls for op in result.uncounted_ops)
    if uncounted:
        notes.append(f"{uncounted} op calls have no FLOP formula (see analyze); their arithmetic is not in the "
                     "latency figures, only their memory traffic")
    return tuple(notes)


def overheads_for(options, overheads: Overheads) -> Overheads:
    """The overheads of one rank: a distributed workload adds NCCL's buffers, one set per communicator."""
    if not options.distributed or options.world_size < 2:
        return overheads
    communicators = vocab.strategy(options.strategy).communicators
    return replace(overheads, communicators=communicators)


def position_notes(workload: Workload | None, result: AnalysisResult, max_seq_len: int | None = None
                   ) -> tuple[str, ...]:
    """A sequence longer than the model has positions for (max_position_embeddings: a bundled or local Hugging
    Face config) is planned, with a note: rotary models run past it, the model was not trained for it."""
    from torchbudget.engine.hf_catalog import position_limits, position_warning

    if workload is None:
        return ()
    notes = []
    # prefill/decode traces warn past the positions themselves (GENERATION_WARNING, in plan_notes)
    beyond = None if vocab.is_generation(workload.options.mode) else position_warning(
        workload.model, workload.model_kwargs, result.inputs)
    if beyond:
        notes.append(beyond.replace("counted", "planned"))
    limit = position_limits(workload.model, workload.model_kwargs).get("tokens")
    if max_seq_len and limit and max_seq_len > limit and not beyond:
        notes.append(f"max seq len {max_seq_len:,} is beyond the model's {limit:,} positions: memory is not what "
                     "limits it")
    return tuple(notes)


def plan_result(result: AnalysisResult, gpu: GpuSpec, *, overheads: Overheads = Overheads(),
                efficiency: Efficiency = Efficiency(), workload: Workload | None = None,
                max_batch: int | None = None, notes: Sequence[str] = (), max_context: int | None = None,
                cluster: "ClusterChoice | None" = None, max_seq_len: int | None = None) -> Plan:
    overheads = overheads_for(result.options, overheads)
    memory = simulate_memory(result, overheads)
    latency = roofline(result, gpu, efficiency)
    distributed = None
    if result.distributed is not None:
        from torchbudget.engine.distributed.plan import distributed_plan
        from torchbudget.engine.latency import op_estimates_ms

        distributed = distributed_plan(result, gpu, op_estimates_ms(result, gpu, efficiency), cluster)
    generation = generation_report(result, gpu, latency, distributed)
    if generation is not None and max_context is not None:
        generation = replace(generation, max_context=max_context)
    capacity = gpu.available_memory_bytes
    headroom = capacity - memory.required_bytes
    dominant = max(memory.by_category.items(), key=lambda kv: kv[1])[0]
    verdict = verdict_for(memory.required_bytes, capacity, overheads)
    if verdict is Verdict.DOES_NOT_FIT:
        ok, _ = fits(result.storage_events, overheads, capacity, has_conv=uses_cudnn(result))
        if ok:   # the allocator gets there by releasing its cache and retrying: it runs, at a cost
            verdict = Verdict.TIGHT
            notes = (*notes, f"fits only because PyTorch's allocator frees its cached segments and retries "
                             f"(its usual reserve, {human_bytes(memory.reserved_peak_bytes)}, would not fit): "
                             "expect cudaFree/cudaMalloc stalls; expandable_segments:True helps")
    return Plan(
        workload=workload, gpu=gpu, memory=memory,
        verdict=verdict,
        capacity_bytes=capacity, headroom_bytes=headroom,
        headroom_fraction=headroom / capacity if capacity > 0 else None,
        dominant_category=dominant, max_batch=max_batch, latency=latency,
        throughput_samples_per_s=distributed.samples_per_s if distributed else latency.throughput_samples_per_s,
        result=result,
        notes=tuple(notes) + plan_notes(result, gpu, overheads) + position_notes(workload, result, max_seq_len),
        generation=generation, distributed=distributed, max_seq_len=max_seq_len,
    )


MAX_SWEEP_BATCH = 1 << 15


def sweep_batches(current_batch: int, max_batches: Sequence[int | None]) -> tuple[int, ...]:
    """Powers of two up to past the current batch and every largest batch, plus each largest batch b and
    b + 1: the memory curve then crosses the capacity line between those two points, exactly at the
    largest-batch marker (a straight segment between powers of two would not)."""
    top = max([current_batch, 8, *[(b or 0) + 1 for b in max_batches]])
    values, b = set(), 1
    while b < top * 2 and b <= MAX_SWEEP_BATCH:
        values.add(b)
        b *= 2
    values.update(v for best in max_batches if best for v in (best, best + 1) if v <= MAX_SWEEP_BATCH)
    return tuple(sorted(values))


MAX_SWEEP_SEQ_LEN = 1 << 20


def _doubling_grid(current: int, bests: Sequence[int | None], floor: int, limit: int) -> tuple[int, ...]:
    """Powers of two from ``floor`` (or below ``current``) to past ``current`` and every best answer, plus each
    best n and n + 1 (the curve crosses the capacity line there); nothing above ``limit``."""
    top = max([current, *[(n or 0) + 1 for n in bests]])
    values, n = {current}, min(floor, 1 << (current.bit_length() - 1))
    while n < top * 2 and n <= limit:
        values.add(n)
        n *= 2
    values.update(v for best in bests if best for v in (best, best + 1) if v <= limit)
    return tuple(sorted(values))


def sweep_seq_lens(current: int, max_seq_lens: Sequence[int | None]) -> tuple[int, ...]:
    """Sequence lengths: the doubling grid from 128 around the current length and every longest sequence."""
    return _doubling_grid(current, max_seq_lens, 128, MAX_SWEEP_SEQ_LEN)


MAX_SWEEP_CONTEXT = 1 << 24   # the context search's limit (solver.DEFAULT_CONTEXT_LIMIT): each marker on its curve


def sweep_contexts(current: int, max_contexts: Sequence[int | None]) -> tuple[int, ...]:
    """Decode contexts: the doubling grid from 256 around the current context and every largest context."""
    return _doubling_grid(max(1, current), max_contexts, 256, MAX_SWEEP_CONTEXT)


def sweep_resolutions(current: int) -> tuple[int, ...]:
    """Around the current square side: quarter to double, in multiples of 32 (at least 32)."""
    values = {max(32, int(current * f) // 32 * 32) for f in (0.25, 0.5, 0.75, 1.25, 1.5, 2.0)}
    return tuple(sorted(values | {current}))


class Planner:
    """Plans, largest batches, comparisons and sweeps over one trace cache and one set of overheads.
    Thread-safe (the GUI calls it from worker threads). The largest batch does not depend on the batch
    asked about, so it is solved once per (workload without its batch, GPU) and remembered: moving a
    batch slider then traces nothing."""

    def __init__(self, cache: TraceCache | None = None, *, overheads: Overheads = Overheads(),
                 efficiency: Efficiency = Efficiency()):
        self.cache = cache if cache is not None else TraceCache()
        self.overheads = overheads
        self.efficiency = efficiency
        self._max_batches: dict[tuple, int] = {}
        self._max_seq_lens: dict[tuple, tuple[int | None, str | None]] = {}
        self._max_contexts: dict[tuple, int] = {}
        self._lock = threading.Lock()

    # -- largest batch ---------------------------------------------------------------------------
    def _memo_key(self, workload: Workload, gpu: GpuSpec) -> tuple:
        return (workload.on_gpu(gpu).with_batch(1).key() if workload.inputs else workload.on_gpu(gpu).key(),
                gpu.name, gpu.available_memory_bytes, self.overheads)

    def known_max_batch(self, workload: Workload, gpu: GpuSpec) -> int | None:
        with self._lock:
            return self._max_batches.get(self._memo_key(workload, gpu))

    def remember_max_batch(self, workload: Workload, gpu: GpuSpec, best: int) -> None:
        """For answers solved elsewhere (the GUI's model process for a user's .py file)."""
        with self._lock:
            self._max_batches[self._memo_key(workload, gpu)] = best

    def forget_max_batches(self) -> None:
        """After a user's .py file may have changed (largest sequence lengths too)."""
        with self._lock:
            self._max_batches.clear()
            self._max_seq_lens.clear()

    def max_batch(self, workload: Workload, gpu: GpuSpec) -> tuple[int | None, str | None]:
        """(largest batch, None), or (None, why) when a batch the search needs cannot be traced."""
        from torchbudget.engine.solver import try_max_batch  # the solver builds on this module's pieces

        best = self.known_max_batch(workload, gpu)
        if best is not None:
            return best, None
        # the affine model's anchors: batches 1 and 2 when they are in memory already (a GUI that swept),
        # else the workload's own batch and the next (its trace is usually done: one trace fewer)
        on_gpu = workload.on_gpu(gpu)
        low = on_gpu.with_batch(1) if on_gpu.inputs else on_gpu
        anchored = low if on_gpu.inputs and self.cache.in_memory(low) and self.cache.in_memory(on_gpu.with_batch(2)) \
            else on_gpu
        best, why = try_max_batch(anchored, gpu, cache=self.cache,
                                  overheads=self._overheads(workload))
        if best is not None:
            self.remember_max_batch(workload, gpu, best)
        return best, why

    # -- largest sequence length (token models: the second axis) ----------------------------------------
    def _seq_memo_key(self, workload: Workload, gpu: GpuSpec) -> tuple:
        on_gpu = workload.on_gpu(gpu)
        return (on_gpu.with_seq_len(1).key() if on_gpu.seq_len is not None else on_gpu.key(),
                gpu.name, gpu.available_memory_bytes, self.overheads)

    def known_max_seq_len(self, workload: Workload, gpu: GpuSpec) -> int | None:
        with self._lock:
            return self._max_seq_lens.get(self._seq_memo_key(workload, gpu), (None, None))[0]

    def remember_max_seq_len(self, workload: Workload, gpu: GpuSpec, best: int) -> None:
        """For answers solved elsewhere (the GUI's model process for a user's .py file)."""
        with self._lock:
            self._max_seq_lens[self._seq_memo_key(workload, gpu)] = (best, None)

    def max_seq_len(self, workload: Workload, gpu: GpuSpec) -> tuple[int | None, str | None]:
        """(longest sequence that fits at the workload's batch, None) for a workload with token inputs; (None,
        None) without them; (answer or None, why) when a length could not be traced. Remembered per workload
        without its sequence length and GPU: moving a sequence-length slider traces nothing new."""
        from torchbudget.engine.solver import _require_inputs, try_max_seq_len

        key = self._seq_memo_key(workload, gpu)
        with self._lock:
            if key in self._max_seq_lens:
                return self._max_seq_lens[key]
        solved = try_max_seq_len(_require_inputs(workload, self.cache), gpu, cache=self.cache,
                                 overheads=self._overheads(workload))
        if solved[0] is not None:
            with self._lock:
                self._max_seq_lens[key] = solved
        return solved

    # -- generation (decode) ------------------------------------------------------------------------
    def max_concurrent_sequences(self, workload: Workload, gpu: GpuSpec) -> tuple[int | None, str | None]:
        """Decode: the most sequences decoded together at the workload's context (the largest batch)."""
        from torchbudget.engine.solver import _require_decode

        _require_decode(workload, "largest number of concurrent sequences")
        return self.max_batch(workload, gpu)

    def _context_key(self, workload: Workload, gpu: GpuSpec) -> tuple:
        return (workload.on_gpu(gpu).with_options(context_len=1).key(), gpu.name, gpu.available_memory_bytes,
                self.overheads)

    def known_max_context(self, workload: Workload, gpu: GpuSpec) -> int | None:
        with self._lock:
            return self._max_contexts.get(self._context_key(workload, gpu))

    def remember_max_context(self, workload: Workload, gpu: GpuSpec, best: int) -> None:
        """For answers solved elsewhere (the GUI's model process for a user's .py file)."""
        with self._lock:
            self._max_contexts[self._context_key(workload, gpu)] = best

    def max_context(self, workload: Workload, gpu: GpuSpec) -> tuple[int | None, str | None]:
        """Decode: (the largest context that fits at the workload's batch, None), or (None, why); remembered
        per (workload without its context, GPU)."""
        from torchbudget.engine.solver import _require_decode, try_max_context

        _require_decode(workload, "largest context")
        best = self.known_max_context(workload, gpu)
        if best is not None:
            return best, None
        best, why = try_max_context(workload.on_gpu(gpu), gpu, cache=self.cache,
                                    overheads=self._overheads(workload))
        if best is not None:
            with self._lock:
                self._max_contexts[self._context_key(workload, gpu)] = best
        return best, why

    def _beyond_positions(self, workload: Workload, context: int | None) -> list[str]:
        """The largest context's own trace (the solver's last) says whether it is past the model's positions."""
        at = workload.with_options(context_len=context) if context else None
        if at is None or at == workload or not self.cache.in_memory(at):
            return []
        warnings = [w for w in self.cache.get(at).warnings if w.startswith(GENERATION_WARNING)]
        return [f"at the largest context: {w.removeprefix(GENERATION_WARNING)}" for w in warnings[:1]]

    # -- plans -----------------------------------------------------------------------------------
    def plan(self, workload: Workload, gpu: GpuSpec, *, solve_max_batch: bool = True,
             solve_max_seq_len: bool | None = None, cluster: "ClusterChoice | None" = None) -> Plan:
        """``solve_max_batch``: solve the largest batch (decode: concurrent sequences, and the largest context).
        ``solve_max_seq_len``: the longest sequence at the plan's batch, for workloads with token inputs except
        decode (whose question is the context); None: with the largest batch."""
        on_gpu = workload.on_gpu(gpu)
        result = self.cache.get(on_gpu)
        best, why = self.max_batch(on_gpu, gpu) if solve_max_batch else (self.known_max_batch(on_gpu, gpu), None)
        notes = [why] if why else []
        context = None
        if on_gpu.options.mode == "decode":
            context, why = self.max_context(on_gpu, gpu) if solve_max_batch else \
                (self.known_max_context(on_gpu, gpu), None)
            notes += [why] if why else []
            notes += self._beyond_positions(on_gpu, context)
        tokens = on_gpu.options.mode != "decode" and any(s.kind is vocab.InputKind.TOKENS for s in result.inputs)
        resolved = on_gpu if on_gpu.inputs else replace(on_gpu, inputs=tuple(result.inputs))
        longest = None
        if tokens and (solve_max_batch if solve_max_seq_len is None else solve_max_seq_len):
            longest, seq_why = self.max_seq_len(resolved, gpu)
            notes += [seq_why] if seq_why else []
        elif tokens:
            longest = self.known_max_seq_len(resolved, gpu)
        return plan_result(result, gpu, overheads=self.overheads, efficiency=self.efficiency, workload=on_gpu,
                           max_batch=best, notes=notes, max_context=context, max_seq_len=longest, cluster=cluster)

    def plans(self, workload: Workload, gpus: Sequence[GpuSpec], *, solve_max_batch: bool = True,
              cluster: "ClusterChoice | None" = None) -> tuple[Plan, ...]:
        return tuple(self.plan(workload, gpu, solve_max_batch=solve_max_batch, cluster=cluster) for gpu in gpus)

    def quick_plans(self, workload: Workload, gpus: Sequence[GpuSpec], *, cluster: "ClusterChoice | None" = None
                    ) -> tuple[tuple[Plan, ...], bool] | None:
        """Plans without tracing, when possible: (plans, interpolated). The exact traces are cached, or
        batches 1 and 2 of the same workload are (the affine batch model predicts this batch), or three
        sequence lengths of it are in memory (the quadratic sequence model, ``seq_len_estimate``). None when
        a trace is needed. ``cluster``: a distributed workload's links and nodes (engine.distributed.plan)."""
        from torchbudget.engine.affine import AffineTrace

        if not gpus or not workload.inputs:
            return None
        plans, interpolated = [], False
        for gpu in gpus:
            on_gpu = workload.on_gpu(gpu)
            anchors = (on_gpu.with_batch(1), on_gpu.with_batch(2)) if on_gpu.batch_size > 2 else ()
            result = None
            # cheapest first: in memory (the exact trace, then the anchors), then the store
            for have in (self.cache.in_memory, self.cache.__contains__):
                if have(on_gpu):
                    result = self.cache.get(on_gpu)
                    break
                if anchors and all(have(a) for a in anchors):
                    model = AffineTrace.fit(*(self.cache.get(a) for a in anchors))
                    if model is not None:
                        result, interpolated = model.result_at(on_gpu.batch_size), True
                        break
                if have == self.cache.in_memory:   # listing lengths needs the memory (the store cannot list)
                    result = self.seq_len_estimate(on_gpu)
                    if result is not None:
                        interpolated = True
                        break
            if result is None:
                return None
            context = self.known_max_context(on_gpu, gpu) if on_gpu.options.mode == "decode" else None
            longest = self.known_max_seq_len(on_gpu, gpu) if on_gpu.options.mode != "decode" and any(
                s.kind is vocab.InputKind.TOKENS for s in result.inputs) else None
            plans.append(plan_result(result, gpu, overheads=self.overheads, efficiency=self.efficiency,
                                     workload=on_gpu, max_batch=self.known_max_batch(on_gpu, gpu),
                                     max_context=context, cluster=cluster, max_seq_len=longest))
        return tuple(plans), interpolated

    def seq_len_estimate(self, workload: Workload) -> AnalysisResult | None:
        """A trace of ``workload`` estimated from three traces of it at other sequence lengths in memory (the
        solver's quadratic model, exact for sizes and counts that are polynomials of degree <= 2 in the length):
        the nearest lengths around it (two below and one above, or one below and two above, else the three
        nearest), with the same op structure. None without token inputs, in decode (its axis is the context),
        or when no three such traces are in memory."""
        from torchbudget.engine.solver import QuadraticSeqTrace

        length = workload.seq_len
        if length is None or workload.options.mode == "decode":
            return None
        known = [n for n in self.cache.seq_lens_in_memory(workload) if n != length and n > 1]
        if len(known) < 3:
            return None
        below = sorted((n for n in known if n < length), reverse=True)
        above = sorted(n for n in known if n > length)
        if below and above:
            extra = sorted(below[1:2] + above[1:2], key=lambda n: abs(n - length))
            anchors = sorted([below[0], above[0], *extra[:1]])
        else:
            anchors = sorted(sorted(known, key=lambda n: abs(n - length))[:3])
        if len(anchors) < 3:
            return None
        try:
            traces = [self.cache.get(workload.with_seq_len(n)) for n in anchors]
        except UserError:
            return None
        model = QuadraticSeqTrace.fit(traces, anchors)
        return None if model is None else model.result_at(
            length, replace(workload, inputs=traces[0].inputs).with_seq_len(length).inputs)

    def compare(self, workload: Workload, gpus: Sequence[GpuSpec], *, solve_max_batch: bool = True,
                cluster: "ClusterChoice | None" = None) -> Comparison:
        return Comparison(workload, tuple(row_of(self.plan(workload, gpu, solve_max_batch=solve_max_batch,
                                                           cluster=cluster)) for gpu in gpus))

    # -- sweeps ----------------------------------------------------------------------------------
    def _overheads(self, workload: Workload) -> Overheads:
        """One rank's overheads (a distributed workload's NCCL buffers included), as its plan counts them."""
        return overheads_for(workload.options, self.overheads)

    def batch_sweep(self, workload: Workload, gpus: Sequence[GpuSpec], batches: Sequence[int] | None = None):
        """Memory and latency against batch. Default grid: ``sweep_batches`` around the current batch and
        each GPU's largest batch. Anchored at batch 1 (the affine model's cached traces), so a new current
        batch traces nothing new."""
        from torchbudget.engine.solver import sweep

        bests = [self.max_batch(workload, gpu)[0] if workload.inputs else None for gpu in gpus]
        grid = tuple(batches) if batches else sweep_batches(workload.batch_size, bests)
        anchored = workload.with_batch(1) if workload.inputs else workload
        result = sweep(anchored, gpus, batches=grid, cache=self.cache, overheads=self._overheads(workload),
                       efficiency=self.efficiency, solve_max_batch=False)
        return replace(result, gpus=tuple(replace(g, max_batch=b) for g, b in zip(result.gpus, bests)))

    def seq_len_sweep(self, workload: Workload, gpus: Sequence[GpuSpec], lengths: Sequence[int] | None = None):
        """Memory and latency against the sequence length of the token inputs (at the workload's batch), with
        each GPU's longest sequence; None without a token input. Default grid: ``sweep_seq_lens``."""
        from torchbudget.engine.solver import _require_inputs, sweep

        resolved = _require_inputs(workload, self.cache)
        if resolved.seq_len is None:
            return None
        solved = [self.max_seq_len(resolved, gpu) for gpu in gpus]
        bests = [best for best, _ in solved]
        grid = tuple(lengths) if lengths else sweep_seq_lens(resolved.seq_len, bests)
        result = sweep(resolved, gpus, seq_lens=grid, cache=self.cache, overheads=self._overheads(workload),
                       efficiency=self.efficiency)
        whys = tuple(dict.fromkeys(f"{gpu.name}: {why}" for gpu, (_, why) in zip(gpus, solved) if why))
        return replace(result, gpus=tuple(replace(g, max_seq_len=b) for g, b in zip(result.gpus, bests)),
                       notes=result.notes + whys)

    def context_sweep(self, workload: Workload, gpus: Sequence[GpuSpec], contexts: Sequence[int] | None = None):
        """Decode: memory, KV cache and tokens/s against the context (the tokens in the KV cache, at the
        workload's batch; exact traces), with each GPU's largest context. Default grid: ``sweep_contexts``.
        A one-line UserError for another mode."""
        from torchbudget.engine.solver import _require_decode, sweep

        _require_decode(workload, "context sweep")
        solved = [self.max_context(workload, gpu) for gpu in gpus]
        bests = [best for best, _ in solved]
        grid = tuple(contexts) if contexts else sweep_contexts(workload.options.context_len, bests)
        result = sweep(workload, gpus, contexts=grid, cache=self.cache, overheads=self._overheads(workload),
                       efficiency=self.efficiency, solve_max_batch=False)
        whys = tuple(dict.fromkeys(f"{gpu.name}: {why}" for gpu, (_, why) in zip(gpus, solved) if why))
        return replace(result, gpus=tuple(replace(g, max_context=b) for g, b in zip(result.gpus, bests)),
                       notes=result.notes + whys)

    def resolution_sweep(self, workload: Workload, gpus: Sequence[GpuSpec], resolutions: Sequence[int] | None = None):
        """Memory and latency against the square side of the image inputs; None without an image input."""
        from torchbudget.engine.solver import sweep
        from torchbudget.engine.vocab import InputKind

        images = [s for s in workload.inputs if s.kind is InputKind.IMAGE]
        if not images:
            return None
        grid = tuple(resolutions) if resolutions else sweep_resolutions(images[0].shape[-1])
        return sweep(workload, gpus, resolutions=grid, cache=self.cache, overheads=self._overheads(workload),
                     efficiency=self.efficiency)


def plan(workload: Workload, gpu: GpuSpec, *, cache: TraceCache | None = None, solve_max_batch: bool = True,
         overheads: Overheads = Overheads(), efficiency: Efficiency = Efficiency()) -> Plan:
    """One plan (``Planner(cache, ...).plan``): traced for ``gpu``'s kernels."""
    return Planner(cache, overheads=overheads, efficiency=efficiency).plan(workload, gpu,
                                                                           solve_max_batch=solve_max_batch)


def compare(workload: Workload, gpus: Sequence[GpuSpec], *, cache: TraceCache | None = None,
            solve_max_batch: bool = True, overheads: Overheads = Overheads(),
            efficiency: Efficiency = Efficiency()) -> Comparison:
    """One workload on each GPU (``Planner(cache, ...).compare``)."""
    return Planner(cache, overheads=overheads, efficiency=efficiency).compare(workload, gpus,
                                                                              solve_max_batch=solve_max_batch)

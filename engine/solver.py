"""Largest batch / resolution that fits, exact against the memory simulation, and sweeps for plots.

Peak memory is assumed monotone in batch and resolution. Search: exponential then binary. For batch,
the affine model from two traces (the workload's batch b and b + 1) predicts the boundary; an exact
trace at the answer confirms that it fits and that the model reproduces it byte for byte (then answer + 1,
which the model says does not fit, needs no trace of its own); otherwise answer + 1 is traced too."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

from torchbudget.engine.affine import AffineTrace, context_axis
from torchbudget.engine.cache import TraceCache
from torchbudget.engine.errors import InputSpecError, UserError
from torchbudget.engine.latency import generation_report, roofline
from torchbudget.engine.memory import fits, simulate_memory, uses_cudnn, workspace_bytes
from torchbudget.engine.results import MemoryCategory
from torchbudget.engine.overheads import Efficiency, Overheads
from torchbudget.engine.workload import Workload
from torchbudget.hardware.spec import GpuSpec
from torchbudget.engine.vocab import InputKind

DEFAULT_BATCH_LIMIT = 1 << 16
DEFAULT_RESOLUTION_LIMIT = 8192


def result_fits(result, overheads: Overheads, available_bytes: int) -> bool:
    """engine.memory.fits for a trace: the verdict's rule, so the solvers agree with the plan."""
    return fits(result.storage_events, overheads, available_bytes, has_conv=uses_cudnn(result))[0]


def weights_alone_exceed(result, overheads: Overheads, available_bytes: int) -> bool:
    """True when the weights and buffers held from the first op to the end (allocated before it, never freed:
    the parameters, whose size no batch, sequence length or context changes) plus the fixed overheads (CUDA
    context, cuBLAS workspace, communicators) already exceed ``available_bytes``. Then no size along any axis
    fits (every trace holds those bytes, the allocator rounds them up, never down) and a search can answer 0
    without tracing size 1: a 70B model's AdamW step at 282 GB of fp32 weights on an 80 GB card."""
    events = result.storage_events
    freed = {e.storage_id for e in events if e.kind == "free"}
    held = sum(e.nbytes for e in events if e.kind == "alloc" and e.op_index < 0 and e.storage_id not in freed
               and e.category in (MemoryCategory.WEIGHTS, MemoryCategory.BUFFERS))
    fixed = (workspace_bytes(overheads, False) + overheads.cuda_context_bytes
             + overheads.communication_bytes(overheads.communicators))
    return held + fixed > available_bytes


def largest_true(predicate: Callable[[int], bool], lo: int, hi: int | None, limit: int) -> int:
    """Largest n in [lo, limit] with predicate(n), given predicate(lo) is True and, if given,
    predicate(hi) is False. Monotone predicate. Exponential search up from lo, then binary."""
    if hi is None:
        step = 1
        while True:
            probe = min(lo + step, limit)
            if probe == lo:
                return lo
            if predicate(probe):
                lo = probe
                if probe == limit:
                    return lo
                step *= 2
            else:
                hi = probe
                break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if predicate(mid):
            lo = mid
        else:
            hi = mid
    return lo


def largest_below(predicate: Callable[[int], bool], lo: int, top: int, limit: int) -> int:
    """Largest n in [lo, top) with predicate(n), given predicate(top) is False (a model's guess that did not
    fit): step down exponentially to a value that holds, then bisect. predicate(lo) is assumed True."""
    step = 1
    while True:
        probe = max(lo, top - step)
        if probe == lo or predicate(probe):
            return largest_true(predicate, probe, top, limit)
        top, step = probe, step * 2


def _require_inputs(workload: Workload, cache: TraceCache) -> Workload:
    if workload.inputs:
        return workload
    result = cache.get(workload)  # the model's default input, resolved by the trace
    resolved = replace(workload, inputs=tuple(result.inputs))
    cache.put(resolved, result)
    return resolved


def batch_model(workload: Workload, cache: TraceCache, anchor: int | None = None) -> AffineTrace | None:
    """The affine batch model from exact traces at ``anchor`` and ``anchor + 1`` (default: the workload's
    own batch, usually traced already); None if the two differ in structure."""
    workload = _require_inputs(workload, cache)
    b = anchor or workload.batch_size
    return AffineTrace.fit(cache.get(workload.with_batch(b)), cache.get(workload.with_batch(b + 1)))


def max_batch(workload: Workload, gpu: GpuSpec, *, cache: TraceCache | None = None,
              limit: int = DEFAULT_BATCH_LIMIT, overheads: Overheads = Overheads()) -> int:
    """Largest batch whose simulated requirement fits ``gpu.available_memory_bytes``; 0 if batch 1 does not fit.

    Exact traces: the workload's batch b and b + 1 (the affine model's anchors), then the model's answer
    (and answer + 1 only when the answer's trace differs from the model); more where the model was wrong.
    Starts from batch 1 when b does not fit."""
    cache = cache if cache is not None else TraceCache()
    workload = _require_inputs(workload.on_gpu(gpu), cache)
    capacity = gpu.available_memory_bytes

    def fits(batch: int) -> bool:
        return result_fits(cache.get(workload.with_batch(batch)), overheads, capacity)

    start = min(workload.batch_size, limit)
    if fits(start):
        anchor, hi = start, None
    elif start == 1 or weights_alone_exceed(cache.get(workload.with_batch(start)), overheads, capacity) \
            or not fits(1):
        return 0
    else:
        anchor, hi = 1, start
    if anchor >= limit or anchor + 1 == hi or not fits(anchor + 1):
        return anchor
    lo = anchor + 1
    model = batch_model(workload, cache, anchor)
    if model is None:
        return largest_true(fits, lo, hi, limit)
    guess = largest_true(lambda b: model.fits(b, overheads, capacity), lo, hi, limit)
    if fits(guess):
        if guess == limit or guess + 1 == hi:
            return guess
        # The exact trace at the guess fits. If the model reproduced it byte for byte (affine from b to
        # the guess), its guess + 1, which does not fit by construction, is taken without a fourth trace;
        # a model wrong only past the guess could under-report, never over-report.
        if model.matches(cache.get(workload.with_batch(guess))) or not fits(guess + 1):
            return guess
        return largest_true(fits, guess + 1, hi, limit)
    return largest_below(fits, lo, guess, limit)   # the model was optimistic


def try_max_batch(workload: Workload, gpu: GpuSpec, *, cache: TraceCache, overheads: Overheads = Overheads()
                  ) -> tuple[int | None, str | None]:
    """max_batch, or (None, why) when a batch size the search needs cannot be traced (e.g. a model that
    only accepts its own batch size): the caller still plans the batch it was given."""
    try:
        return max_batch(workload, gpu, cache=cache, overheads=overheads), None
    except UserError as exc:
        return None, f"largest batch not solved: {exc}"


# ------------------------------------------------------------------------------------- generation (decode)
DEFAULT_CONTEXT_LIMIT = 1 << 24     # tokens: far beyond any model's positions; the search stops here


def _require_decode(workload: Workload, what: str) -> None:
    if workload.options.mode != "decode":
        raise UserError(f"the {what} is a decode question (--mode decode --context TOKENS); this workload is "
                        f"{workload.options.mode}", field="mode")


def max_concurrent_sequences(workload: Workload, gpu: GpuSpec, *, cache: TraceCache | None = None,
                             limit: int = DEFAULT_BATCH_LIMIT, overheads: Overheads = Overheads()) -> int:
    """Decode: the most sequences decoded together (the batch) at the workload's context that fit; 0 if one
    does not. The batch solver's answer (every sequence's cache grows the batch's KV tensors)."""
    _require_decode(workload, "largest number of concurrent sequences")
    return max_batch(workload, gpu, cache=cache, limit=limit, overheads=overheads)


def max_context(workload: Workload, gpu: GpuSpec, *, cache: TraceCache | None = None,
                limit: int = DEFAULT_CONTEXT_LIMIT, overheads: Overheads = Overheads()) -> int:
    """Decode: the largest context (tokens already in the KV cache) that fits at the workload's batch; 0 if a
    context of one token does not. Exact against the simulation, as max_batch: exact traces at the workload's
    context L and L + 1 give an affine model in the context (``engine.affine.context_axis``), its boundary is
    confirmed by an exact trace (and boundary + 1 unless that trace matches the model byte for byte). Memory is
    assumed monotone in the context; a sliding-window model's cache stops growing at its window, so its answer
    can be the search limit."""
    _require_decode(workload, "largest context")
    cache = cache if cache is not None else TraceCache()
    workload = _require_inputs(workload.on_gpu(gpu), cache)
    capacity = gpu.available_memory_bytes
    return _largest_fitting(lambda n: cache.get(workload.with_options(context_len=n)), workload.options.context_len,
                            limit, lambda result: result_fits(result, overheads, capacity),
                            lambda model, n: model.fits(n, overheads, capacity), context_axis,
                            lambda result: weights_alone_exceed(result, overheads, capacity))


def try_max_context(workload: Workload, gpu: GpuSpec, *, cache: TraceCache, overheads: Overheads = Overheads()
                    ) -> tuple[int | None, str | None]:
    """max_context, or (None, why) when a context the search needs cannot be traced."""
    try:
        return max_context(workload, gpu, cache=cache, overheads=overheads), None
    except UserError as exc:
        return None, f"largest context not solved: {exc}"


def _largest_fitting(trace_at: Callable[[int], object], start: int, limit: int, fits_exactly: Callable,
                     fits_model: Callable, axis, too_big: Callable = lambda result: False) -> int:
    """max_batch's search along any axis the traces are affine in (``axis`` reads its value from a trace):
    exact traces at ``start`` and ``start + 1``, the affine model's boundary, an exact trace confirming it."""
    def fits(n: int) -> bool:
        return fits_exactly(trace_at(n))

    start = max(1, min(start, limit))
    if fits(start):
        anchor, hi = start, None
    elif start == 1 or too_big(trace_at(start)) or not fits(1):
        return 0
    else:
        anchor, hi = 1, start
    if anchor >= limit or anchor + 1 == hi or not fits(anchor + 1):
        return anchor
    lo = anchor + 1
    model = AffineTrace.fit(trace_at(anchor), trace_at(anchor + 1), axis)
    if model is None:
        return largest_true(fits, lo, hi, limit)
    guess = largest_true(lambda n: fits_model(model, n), lo, hi, limit)
    if fits(guess):
        if guess == limit or guess + 1 == hi or model.matches(trace_at(guess)) or not fits(guess + 1):
            return guess
        return largest_true(fits, guess + 1, hi, limit)
    return largest_below(fits, lo, guess, limit)


def _spatial(workload: Workload) -> tuple[int, int]:
    images = [s for s in workload.inputs if s.kind is InputKind.IMAGE]
    if not images:
        raise InputSpecError("resolution search needs an image input (N x C x H x W)")
    return images[0].shape[-2], images[0].shape[-1]


def max_resolution(workload: Workload, gpu: GpuSpec, *, cache: TraceCache | None = None, step: int = 32,
                   limit: int = DEFAULT_RESOLUTION_LIMIT, overheads: Overheads = Overheads()) -> int | None:
    """Largest square resolution (a multiple of ``step``) that fits; 0 if ``step`` itself does not fit;
    None for models without an image input."""
    if step < 1:
        raise InputSpecError(f"resolution step must be positive, got {step}")
    cache = cache if cache is not None else TraceCache()
    workload = _require_inputs(workload.on_gpu(gpu), cache)
    try:
        _spatial(workload)
    except UserError:
        return None
    capacity = gpu.available_memory_bytes

    def fits(k: int) -> bool:
        side = k * step
        return result_fits(cache.get(workload.with_resolution(side, side)), overheads, capacity)

    if not fits(1):
        return 0
    return largest_true(fits, 1, None, max(1, limit // step)) * step


@dataclass(frozen=True)
class SweepGpuPoint:
    gpu_name: str
    required_bytes: int               # the whole footprint at the peak, compared with available memory
    tensor_peak_bytes: int            # tensors only, rounded
    fits: bool
    lower_bound_ms: float
    estimate_ms: float
    throughput_samples_per_s: float
    kv_cache_bytes: int | None = None     # context sweeps: the KV cache of the context's tokens (read each step)
    tokens_per_s: float | None = None     # context sweeps: new tokens per second (sequences x 1 / step estimate)


@dataclass(frozen=True)
class SweepPoint:
    value: int                        # the batch size, the (square) resolution, the sequence length or the context
    batch_size: int
    interpolated: bool                # from the affine batch model rather than its own trace
    per_gpu: tuple[SweepGpuPoint, ...]


@dataclass(frozen=True)
class SweepGpu:
    gpu_name: str
    capacity_bytes: int
    target: str                       # whose kernels the points of this GPU were traced for
    max_batch: int | None             # batch sweeps only
    max_seq_len: int | None = None    # sequence-length sweeps only
    max_context: int | None = None    # context sweeps only (decode: the largest context at the workload's batch)


@dataclass(frozen=True)
class Sweep:
    axis: str                         # "batch" | "resolution" | "seq_len" | "context"
    points: tuple[SweepPoint, ...]
    gpus: tuple[SweepGpu, ...]
    notes: tuple[str, ...] = ()       # e.g. points skipped because the model cannot run them


DEFAULT_SWEEP_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


def sweep(workload: Workload, gpus: Sequence[GpuSpec], *, batches: Sequence[int] | None = None,
          resolutions: Sequence[int] | None = None, cache: TraceCache | None = None,
          overheads: Overheads = Overheads(), efficiency: Efficiency = Efficiency(),
          solve_max_batch: bool = True, seq_lens: Sequence[int] | None = None,
          contexts: Sequence[int] | None = None) -> Sweep:
    """Memory and latency against batch (default), resolution, sequence length (``seq_lens``: the token
    inputs, at the workload's batch; exact traces) or context (``contexts``: decode only, the tokens in the KV
    cache, at the workload's batch; exact traces; each point has its KV-cache bytes and tokens/s, each GPU its
    largest context), on each GPU (traced for each GPU's target: GPUs of one compute capability share their
    traces). A point the model cannot run (BatchNorm at 1x1, a fixed-size Linear at another resolution, BERT
    past 512 positions) is left out and named in ``notes``."""
    if sum(axis is not None for axis in (batches, resolutions, seq_lens, contexts)) > 1:
        raise UserError("sweep one axis: batch, resolution, sequence length or context", field="input")
    if not gpus:
        raise UserError("a sweep needs at least one GPU", field="gpu")
    if contexts is not None:
        _require_decode(workload, "context sweep")
    cache = cache if cache is not None else TraceCache()
    axis = "resolution" if resolutions is not None else "seq_len" if seq_lens is not None else \
        "context" if contexts is not None else "batch"
    values = _checked(resolutions, "resolution") if resolutions is not None else \
        _checked(seq_lens, "sequence length") if seq_lens is not None else \
        _checked(contexts, "context") if contexts is not None else \
        _checked(batches or DEFAULT_SWEEP_BATCHES, "batch size")
    by_target: dict[str, list] = {}      # target -> [(value, source, interpolated) or (value, error)]
    best: dict[str, int | None] = {}
    notes: list[str] = []
    if axis == "batch" and solve_max_batch:
        # first: the boundary traces it leaves in the cache are what the affine model is checked against
        for gpu in gpus:
            best[gpu.name], why = try_max_batch(workload, gpu, cache=cache, overheads=overheads)
            if why:
                notes.append(f"{gpu.name}: {why}")
    if axis == "context" and solve_max_batch:   # each GPU's largest context at the workload's batch
        for gpu in gpus:
            best[gpu.name], why = try_max_context(workload, gpu, cache=cache, overheads=overheads)
            if why:
                notes.append(f"{gpu.name}: {why}")
    for gpu in gpus:
        on_gpu = _require_inputs(workload.on_gpu(gpu), cache)
        target = on_gpu.options.target
        if target not in by_target:
            if axis == "resolution":
                _spatial(on_gpu)
                by_target[target] = [_traced(lambda v: cache.get(on_gpu.with_resolution(v, v)), v) for v in values]
            elif axis == "seq_len":
                if on_gpu.seq_len is None:
                    raise InputSpecError("a sequence-length sweep needs a token input (N x L integer ids)")
                by_target[target] = [_traced(lambda v: cache.get(on_gpu.with_seq_len(v)), v) for v in values]
            elif axis == "context":
                by_target[target] = [_traced(lambda v: cache.get(on_gpu.with_options(context_len=v)), v)
                                     for v in values]
            else:
                by_target[target] = _batch_traces(on_gpu, values, cache)
    points = []
    for i, value in enumerate(values):
        per_gpu, batch, interpolated, error = [], value, False, None
        for gpu in gpus:
            entry = by_target[workload.on_gpu(gpu).options.target][i]
            if entry[1] is None:
                error = entry[2]
                break
            _, source, interpolated = entry
            if interpolated:  # source is the affine model
                memory, batch = source.memory_at(value, overheads), value
                latency = source.latency_at(value, gpu, efficiency)
                fitting = source.fits(value, overheads, gpu.available_memory_bytes)
            else:
                memory, batch = simulate_memory(source, overheads), source.batch_size
                latency = roofline(source, gpu, efficiency, detail=False)
                fitting = result_fits(source, overheads, gpu.available_memory_bytes)
            generation = generation_report(source, gpu, latency, _distributed_of(source, gpu, efficiency)) \
                if axis == "context" else None
            per_gpu.append(SweepGpuPoint(gpu.name, memory.required_bytes, memory.tensor_peak_bytes,
                                         fitting, latency.lower_bound_ms,
                                         latency.estimate_ms, latency.throughput_samples_per_s,
                                         generation.kv_read_bytes if generation else None,
                                         generation.tokens_per_s if generation else None))
        if error is not None:
            notes.append(f"{axis} {value} left out: {error}")
            continue
        points.append(SweepPoint(value, batch, interpolated, tuple(per_gpu)))
    summaries = tuple(SweepGpu(g.name, g.available_memory_bytes, workload.on_gpu(g).options.target,
                               best.get(g.name) if axis == "batch" else None,
                               max_context=best.get(g.name) if axis == "context" else None) for g in gpus)
    return Sweep(axis, tuple(points), summaries, tuple(notes))


def _distributed_of(result, gpu: GpuSpec, efficiency: Efficiency):
    """A several-GPU trace's communication on the cluster's default links (a sweep point's tokens/s counts what
    the step waits for); None on one GPU."""
    if result.distributed is None:
        return None
    from torchbudget.engine.distributed.plan import distributed_plan
    from torchbudget.engine.latency import op_estimates_ms

    return distributed_plan(result, gpu, op_estimates_ms(result, gpu, efficiency))


def _traced(get, value):
    """(value, trace, False), or (value, None, why) when the model cannot run at this point."""
    try:
        return value, get(value), False
    except UserError as exc:
        return value, None, str(exc)


def _checked(values: Sequence[int], what: str) -> tuple[int, ...]:
    out = tuple(sorted(set(int(v) for v in values)))
    if not out or out[0] < 1:
        raise InputSpecError(f"every {what} in a sweep must be a positive integer, got {list(values)}")
    return out


def _batch_traces(workload: Workload, values: tuple[int, ...], cache: TraceCache):
    """Exact traces where cached (or for every value when the model fails); elsewhere the affine model
    from the workload's own batch, provided it predicts an exact trace far away (the largest cached
    batch, e.g. the max-batch boundary; else the largest value) byte for byte."""
    model = batch_model(workload, cache)
    if model is not None:
        cached = [b for b in cache.batches_of(workload) if b > model.batch_b]
        check = max(cached or [v for v in values if v > model.batch_b], default=None)
        if check is not None:
            if not model.matches(cache.get(workload.with_batch(check))):
                model = None
    out = []
    for v in values:
        key = workload.with_batch(v)
        if model is None or key in cache:
            out.append(_traced(lambda b: cache.get(workload.with_batch(b)), v))
        else:
            out.append((v, model, True))
    return out


# ------------------------------------------------------------------------------------- sequence length
# The second axis of token models, as resolution is for images: the largest sequence length (every token
# input on the sequence axis, Workload.with_seq_len) that fits at the workload's batch. Exact against the
# simulation like max_batch: the answer's own trace fits and answer + 1's does not (or is taken from a
# model that reproduced the answer's trace byte for byte). Storage sizes of a transformer are polynomials of
# degree <= 2 in the sequence length (activations S, attention scores and masks S²), so three traces with
# the same structure give a quadratic model to search on; it is only a guess, always confirmed by exact traces
# (a size that is not quadratic — a kernel padding to 32 — or a structure that changes with the length — a
# sliding window — only costs more exact traces).
DEFAULT_SEQ_LEN_LIMIT = 1 << 20


class QuadraticSeqTrace:
    """Every storage size as a quadratic polynomial of the sequence length, through traces at three lengths
    (Lagrange interpolation); None-safe constructor: ``fit``."""

    def __init__(self, traces: Sequence, lengths: Sequence[int]):
        import numpy as np

        self.a = traces[0]
        self.traces = tuple(traces)
        self.lengths = tuple(lengths)
        self._sizes = [np.fromiter((e.nbytes for e in t.storage_events), np.float64, len(t.storage_events))
                       for t in traces]
        self._has_conv = uses_cudnn(self.a)

    @classmethod
    def fit(cls, traces: Sequence, lengths: Sequence[int]) -> "QuadraticSeqTrace | None":
        from torchbudget.engine.affine import _same_structure

        if len(set(lengths)) != 3 or any(not _same_structure(traces[0], t) for t in traces[1:]):
            return None
        return cls(traces, lengths)

    def sizes_at(self, length: int):
        import numpy as np

        (x0, x1, x2), (y0, y1, y2) = self.lengths, self._sizes
        x = float(length)
        value = (y0 * ((x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2)))
                 + y1 * ((x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2)))
                 + y2 * ((x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1))))
        return np.maximum(np.rint(value), 0).astype(np.int64)

    def _weights(self, length: int) -> tuple[float, float, float]:
        (x0, x1, x2), x = self.lengths, float(length)
        return ((x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2)), (x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2)),
                (x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1)))

    def result_at(self, length: int, inputs: Sequence) -> "AnalysisResult":
        """A synthetic trace at ``length`` (``inputs``: the workload's at that length): every storage size and
        every op's FLOPs, MACs and bytes on the quadratic through the three traces (exact where the model is:
        activations S, attention S², a linear layer's FLOPs S, attention's S²). For quick plans (Planner), which
        the exact trace replaces."""
        from dataclasses import replace as _replace

        from torchbudget.engine.results import OpRecord, StorageEvent

        w0, w1, w2 = self._weights(length)

        def quad(y0: int, y1: int, y2: int) -> int:
            return max(0, round(y0 * w0 + y1 * w1 + y2 * w2))

        events = tuple(StorageEvent(e.op_index, e.kind, e.storage_id, int(n), e.category, e.phase)
                       for e, n in zip(self.a.storage_events, self.sizes_at(length).tolist()))
        ops = tuple(OpRecord(x.index, x.op, x.module_path, x.phase, (), (),
                             quad(x.bytes_read, y.bytes_read, z.bytes_read),
                             quad(x.bytes_written, y.bytes_written, z.bytes_written),
                             quad(x.macs, y.macs, z.macs), quad(x.flops, y.flops, z.flops),
                             x.status, x.kind, x.compute_dtype, x.launches_kernel)
                    for x, y, z in zip(*(t.ops for t in self.traces)))
        shown = ", ".join(f"{n:,}" for n in self.lengths)
        return _replace(self.a, inputs=tuple(inputs), ops=ops, storage_events=events, modules=(),
                        warnings=self.a.warnings + (f"estimated from traces at sequence lengths {shown}",))

    def fits(self, length: int, overheads: Overheads, available_bytes: int) -> bool:
        return fits(self.a.storage_events, overheads, available_bytes, has_conv=self._has_conv,
                    sizes=self.sizes_at(length))[0]

    def matches(self, exact, length: int) -> bool:
        """True when the model predicts every storage size of ``exact`` (the trace at ``length``) exactly."""
        import numpy as np
        from torchbudget.engine.affine import _same_structure

        return _same_structure(self.a, exact) and np.array_equal(
            self.sizes_at(length), [e.nbytes for e in exact.storage_events])


def max_seq_len(workload: Workload, gpu: GpuSpec, *, cache: TraceCache | None = None,
                limit: int = DEFAULT_SEQ_LEN_LIMIT, overheads: Overheads = Overheads()) -> int | None:
    """Largest sequence length whose simulated requirement fits ``gpu`` at the workload's batch; 0 if length 1
    does not fit; None for a workload without token inputs. A length the model cannot run (BERT past its 512
    positions) counts as not fitting; ``try_max_seq_len`` says why."""
    return _solve_seq_len(workload, gpu, cache if cache is not None else TraceCache(), limit, overheads)[0]


def try_max_seq_len(workload: Workload, gpu: GpuSpec, *, cache: TraceCache, overheads: Overheads = Overheads(),
                    limit: int = DEFAULT_SEQ_LEN_LIMIT) -> tuple[int | None, str | None]:
    """(max_seq_len, None), or (answer, why) when a longer length could not be traced (the model's limit, not
    memory's), or (None, why) when the search itself failed."""
    try:
        return _solve_seq_len(workload, gpu, cache, limit, overheads)
    except UserError as exc:
        return None, f"largest sequence length not solved: {exc}"


def _learned_table(workload: Workload) -> int | None:
    """The rows of the learned position table the sequence axis indexes (engine.hf_catalog), None without one."""
    from torchbudget.engine.hf_catalog import learned_position_limit
    from torchbudget.engine.workload import DECODER_PREFIX

    tokens = [s for s in workload.inputs if s.kind is InputKind.TOKENS]
    decoder = bool(tokens) and all((s.name or "").startswith(DECODER_PREFIX) for s in tokens)
    return learned_position_limit(workload.model, workload.model_kwargs, decoder=decoder)


def _solve_seq_len(workload: Workload, gpu: GpuSpec, cache: TraceCache, limit: int,
                   overheads: Overheads) -> tuple[int | None, str | None]:
    workload = _require_inputs(workload.on_gpu(gpu), cache)
    start = workload.seq_len
    if start is None:
        return None, None
    capacity = gpu.available_memory_bytes
    refused: list[tuple[int, str]] = []

    def trace(length: int):
        return cache.get(workload.with_seq_len(length))

    def fits_at(length: int) -> bool:
        if length == start:    # the workload's own length must trace: its error is the user's to see
            return result_fits(trace(length), overheads, capacity)
        try:
            return result_fits(trace(length), overheads, capacity)
        except UserError as exc:   # a length the model cannot run does not fit (noted once)
            refused.append((length, str(exc)))
            return False

    def answer(best: int) -> tuple[int, str | None]:
        """The length and, when the next one was refused (the model's limit, not memory's), why."""
        why = next((why for n, why in refused if n == best + 1), None)
        return best, why and f"sequence length {best + 1:,} cannot run: {why}"

    table = _learned_table(workload)
    if table is not None and table < limit:   # no real run indexes past a learned position table
        limit = table
        refused.append((table + 1, f"{workload.model} has {table:,} learned positions"))
    start = min(start, limit)
    if fits_at(start):
        lo, hi = start, None
    elif start == 1 or weights_alone_exceed(trace(start), overheads, capacity) or not fits_at(1):
        return answer(0)
    else:
        lo, hi = 1, start
    if lo >= limit or lo + 1 == hi or not fits_at(lo + 1):
        return answer(lo)
    # anchors: the length that fits and 1.5x, 2x of it; inside a known bracket, spread over its upper part
    # (the model interpolates better than it extrapolates; length 1 is often traced differently: a decode step)
    if hi is None:
        step = max(1, lo // 2)
        lengths = (lo, lo + step, lo + 2 * step)
    else:
        first = max(lo, (hi - 1) // 4)
        lengths = (first, (first + hi - 1) // 2, hi - 1)
    model = None
    if len(set(lengths)) == 3:
        try:
            model = QuadraticSeqTrace.fit([trace(n) for n in lengths], lengths)
        except UserError:
            model = None
    if model is None:
        return answer(largest_true(fits_at, lo + 1, hi, limit))
    guess = largest_true(lambda n: model.fits(n, overheads, capacity), lo, hi, limit)
    if fits_at(guess):
        if guess == limit or guess + 1 == hi:
            return answer(guess)
        if model.matches(trace(guess), guess) or not fits_at(guess + 1):
            return answer(guess)
        return answer(largest_true(fits_at, guess + 1, hi, limit))
    return answer(largest_below(fits_at, lo, guess, limit))   # the model was optimistic

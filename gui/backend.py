"""The GUI's only door into the engine, planner and hardware catalog (no Qt here). Worker threads call
these functions; each returns the engine's own dataclasses. User .py models are never traced in this
process: their trace comes from gui.model_process and goes into a cache that refuses to trace."""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Sequence

from torchbudget.engine.affine import AffineTrace
from torchbudget.engine.cache import TraceCache
from torchbudget.engine.compare import Comparison, compare
from torchbudget.engine.errors import ModelLoadError, UserError
from torchbudget.hardware.errors import UnknownGpuError
from torchbudget.engine.planner import Plan, plan_result
from torchbudget.engine.results import AnalysisResult
from torchbudget.engine.solver import Sweep, max_batch, sweep
from torchbudget.engine.trace_store import TraceStore
from torchbudget.engine.workload import Workload
from torchbudget.gui.cancel import check_current
from torchbudget.hardware.spec import GpuSpec
from torchbudget.engine.vocab import InputKind

MAX_SWEEP_BATCH = 1 << 15


@dataclass(frozen=True)
class Evaluation:
    workload: Workload
    result: AnalysisResult | None      # exact trace at this workload (None while only an estimate exists)
    plans: tuple[Plan, ...]            # primary GPU first
    interpolated: bool                 # plans come from the batch-affine model, the exact trace follows


_trace_gate = threading.Lock()


def trace_here(workload: Workload) -> AnalysisResult:
    """Traces in this process, one trace at a time. A job superseded while it waited for its turn stops
    before tracing (gui.cancel): dragging the batch slider then traces the batch it stops at, not every
    batch it passed."""
    from torchbudget.engine.cache import trace_workload

    with _trace_gate:
        check_current()
        return trace_workload(workload)


def trace_cache(maxsize: int = 96, analyzer=None, store: TraceStore | None = None) -> TraceCache:
    """The window's trace cache, backed by the on-disk store: the next launch opens on its workload
    without tracing."""
    return TraceCache(maxsize=maxsize, analyzer=analyzer or trace_here, store=store or TraceStore())


MODEL_NAMES_FACT = "model_names"


def model_names(*, may_import: bool = True) -> list[str] | None:
    """Every torchvision model name, from the trace store when it knows them: listing them imports
    torchvision (2.5 s with PyTorch), which a launch never needs before its verdict. Otherwise listed and
    stored, or None when ``may_import`` is False."""
    store = TraceStore()
    names = store.load_fact(MODEL_NAMES_FACT)
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    if not may_import:
        return None
    try:
        from torchbudget.engine.sources import list_model_names
    except ImportError:
        return ["resnet50"]
    names = list(list_model_names())
    store.save_fact(MODEL_NAMES_FACT, names)
    return names


def is_file_model(model: str) -> bool:
    return model.split(":", 1)[0].endswith(".py")


def _refuse(workload: Workload) -> AnalysisResult:
    raise ModelLoadError(f"{workload.model} runs only in its own process; this shape has not been analysed yet")


def file_model_cache() -> TraceCache:
    return TraceCache(maxsize=32, analyzer=_refuse)


# -- analysis and plans ---------------------------------------------------------------------------
# The largest batch does not depend on the batch asked about, so it is solved once per (workload without
# its batch, GPU) from the batch-1/2 anchors and remembered: moving the batch slider then traces nothing.
_max_batch_memo: dict[tuple, int] = {}
_memo_lock = threading.Lock()


def _memo_key(workload: Workload, gpu: GpuSpec) -> tuple:
    return workload.with_batch(1).key(), gpu.name, gpu.usable_memory_bytes


def known_max_batch(workload: Workload, gpu: GpuSpec) -> int | None:
    with _memo_lock:
        return _max_batch_memo.get(_memo_key(workload, gpu))


def forget_max_batches() -> None:
    """After F5: a user's .py file may have changed since its largest batch was solved."""
    with _memo_lock:
        _max_batch_memo.clear()


def remember_max_batch(workload: Workload, gpu: GpuSpec, best: int) -> None:
    """For answers solved elsewhere (the model process of a .py model)."""
    with _memo_lock:
        _max_batch_memo[_memo_key(workload, gpu)] = best


def solve_max_batch(workload: Workload, gpu: GpuSpec, cache: TraceCache) -> int:
    best = known_max_batch(workload, gpu)
    if best is None:
        best = max_batch(workload.with_batch(1), gpu, cache=cache)   # anchors at batches 1 and 2
        with _memo_lock:
            _max_batch_memo[_memo_key(workload, gpu)] = best
    return best


def quick_evaluation(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> Evaluation | None:
    """Plans without tracing, when possible: the exact trace is cached, or batches 1 and 2 of the same
    workload are (then the affine batch model predicts this batch). None when a trace is needed."""
    if not gpus or not workload.inputs:
        return None
    anchors = (workload.with_batch(1), workload.with_batch(2)) if workload.batch_size > 2 else ()
    # cheapest first: the exact trace in memory, the affine model from anchors in memory (both instant),
    # then reads from the store: the exact trace (one file) before the two anchors
    for have in (cache.in_memory, cache.__contains__):
        if have(workload):
            result = cache.get(workload)
            return Evaluation(workload, result, _plans(result, workload, gpus), False)
        if anchors and all(have(a) for a in anchors):
            model = AffineTrace.fit(*(cache.get(a) for a in anchors))
            if model is not None:
                return Evaluation(workload, None, _plans(model.result_at(workload.batch_size), workload, gpus),
                                  True)
    return None


def _plans(result, workload, gpus) -> tuple[Plan, ...]:
    return tuple(plan_result(result, gpu, workload=workload, max_batch=known_max_batch(workload, gpu))
                 for gpu in gpus)


def full_evaluation(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache, *,
                    solve_max_batch: bool = True) -> Evaluation:
    result = cache.get(workload)
    plans = []
    for gpu in gpus:
        best = solve_max_batch_for(workload, gpu, cache) if solve_max_batch else known_max_batch(workload, gpu)
        plans.append(plan_result(result, gpu, workload=workload, max_batch=best))
    return Evaluation(workload, result, tuple(plans), False)


def solve_max_batch_for(workload: Workload, gpu: GpuSpec, cache: TraceCache) -> int | None:
    return solve_max_batch(workload, gpu, cache) if workload.inputs else None


def sweep_batches(current_batch: int, max_batches: Sequence[int | None]) -> tuple[int, ...]:
    """Powers of two up to past the current batch and every largest batch (a marker shows the current one),
    plus each largest batch b and b + 1: the curve then crosses the capacity line between those two
    points, exactly at the largest-batch marker (a straight segment between powers of two would not)."""
    top = max([current_batch, 8, *[(b or 0) + 1 for b in max_batches]])
    values, b = set(), 1
    while b < top * 2 and b <= MAX_SWEEP_BATCH:
        values.add(b)
        b *= 2
    values.update(v for best in max_batches if best for v in (best, best + 1) if v <= MAX_SWEEP_BATCH)
    return tuple(sorted(values))


def batch_sweep(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache,
                max_batches: Sequence[int | None] = ()) -> Sweep:
    # anchored at batch 1 (the affine model's cached traces), so a new current batch traces nothing new
    result = sweep(workload.with_batch(1), gpus, batches=sweep_batches(workload.batch_size, max_batches),
                   cache=cache, solve_max_batch=False)
    return replace(result, gpus=tuple(replace(g, max_batch=known_max_batch(workload, gpu))
                                      for g, gpu in zip(result.gpus, gpus)))


def sweep_resolutions(current: int) -> tuple[int, ...]:
    values = {max(32, int(current * f) // 32 * 32) for f in (0.25, 0.5, 0.75, 1.25, 1.5, 2.0)}
    return tuple(sorted(values | {current}))


def resolution_sweep(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> Sweep | None:
    images = [s for s in workload.inputs if s.kind is InputKind.IMAGE]
    if not images:
        return None
    return sweep(workload, gpus, resolutions=sweep_resolutions(images[0].shape[-1]), cache=cache)


def comparison(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache, *, solve: bool = True) -> Comparison:
    result = compare(workload, gpus, cache=cache, solve_max_batch=False)
    if not solve:
        return result
    return replace(result, rows=tuple(replace(row, max_batch=solve_max_batch_for(workload, gpu, cache))
                                      for row, gpu in zip(result.rows, gpus)))


# -- hardware ----------------------------------------------------------------------------------
_TENSOR_RATE_FOR_PRECISION = {"tf32": "tf32", "fp16": "fp16", "fp16-amp": "fp16", "bf16": "bf16", "bf16-amp": "bf16"}


def missing_tensor_rate(gpu: GpuSpec, precision: str) -> str | None:
    """The tensor rate ("bf16", ...) the precision asks for but the GPU does not list: the roofline then
    uses the fp32 rate (GpuSpec.peak_flops_per_s falls back silently), e.g. bf16 on a T4."""
    key = _TENSOR_RATE_FOR_PRECISION.get(precision)
    return None if key is None or gpu.peak_tflops.get(key) else key


def peak_rate_note(gpu: GpuSpec, precision: str) -> str | None:
    key = missing_tensor_rate(gpu, precision)
    return f"{gpu.name} has no {key} tensor cores: fp32 rate used" if key else None


def database_gpus() -> list[GpuSpec]:
    from torchbudget.hardware.catalog import database

    return list(database())


def local_gpus() -> list[GpuSpec]:
    try:
        from torchbudget.hardware.catalog import local_gpus as detect

        return list(detect())
    except (ImportError, OSError, RuntimeError, UserError):
        return []   # no driver, no NVML: the database still works


def default_gpu_name() -> str:
    from torchbudget.hardware.catalog import default_gpu

    return default_gpu().name


def resolve_gpu(name: str) -> GpuSpec:
    from torchbudget.hardware.catalog import resolve_gpu as resolve

    spec = resolve(name)
    if spec is None:
        raise UnknownGpuError(f"unknown GPU {name!r}", field="gpu")
    return spec


def live_memory(spec: GpuSpec) -> tuple[int, int]:
    """(free, total) bytes right now for a detected GPU; the spec's own figures if NVML cannot say."""
    if spec.local_index is not None:
        try:
            from torchbudget.hardware.nvml import refresh_memory

            reading = refresh_memory(spec.local_index)
            if reading is not None:
                return reading.free_bytes, reading.total_bytes
        except (ImportError, OSError, RuntimeError, UserError):
            pass
    return spec.usable_memory_bytes, spec.memory_bytes


def save_user_gpu(spec: GpuSpec) -> None:
    from torchbudget.hardware.user_file import save_user_gpu as save

    save(spec)


def remove_user_gpu(name: str) -> None:
    from torchbudget.hardware.user_file import remove_user_gpu as remove

    remove(name)

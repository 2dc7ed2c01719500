"""The GUI's only door into the engine, planner and hardware catalog (no Qt here). Worker threads call
these functions; each returns the engine's own dataclasses. User .py models are never traced in this
process: their trace comes from gui.model_process and goes into a cache that refuses to trace."""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Sequence

from torchbudget.engine.cache import TraceCache
from torchbudget.engine.compare import Comparison
from torchbudget.engine.errors import ModelLoadError, UserError
from torchbudget.hardware.errors import UnknownGpuError
from torchbudget.engine.planner import Plan, Planner, sweep_batches, sweep_resolutions  # noqa: F401
from torchbudget.engine.results import AnalysisResult
from torchbudget.engine.solver import Sweep
from torchbudget.engine.trace_store import TraceStore
from torchbudget.engine.workload import Workload
from torchbudget.gui.cancel import check_current
from torchbudget.hardware.spec import GpuSpec


@dataclass(frozen=True)
class Evaluation:
    workload: Workload
    result: AnalysisResult | None      # exact trace at this workload (None while only an estimate exists)
    plans: tuple[Plan, ...]            # primary GPU first
    interpolated: bool                 # plans are estimates (the batch-affine model, or the quadratic model in
                                       # the sequence length); the exact trace follows


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


def store_problem(store: TraceStore | None) -> str | None:
    """Why the trace store cannot keep traces between sessions (its folder is a file, or read-only);
    the app works without it, only slower on the next launch."""
    import os

    if store is None:
        return None
    folder = store.directory
    if folder.exists() and not folder.is_dir():
        return f"the trace cache {folder} is not a folder: traces are not kept between sessions"
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        return f"the trace cache {folder} is read-only: traces are not kept between sessions"
    return None


def file_model_cache() -> TraceCache:
    return TraceCache(maxsize=32, analyzer=_refuse)


# -- analysis and plans ---------------------------------------------------------------------------
# One engine Planner per trace cache (the in-process one and the file models' one): it holds the
# remembered largest batches, the anchors and the sweep grids, so the GUI plans exactly as the CLI does.
_planners: "weakref.WeakKeyDictionary[TraceCache, Planner]" = weakref.WeakKeyDictionary()
_planners_lock = threading.Lock()


def planner_for(cache: TraceCache) -> Planner:
    with _planners_lock:
        planner = _planners.get(cache)
        if planner is None:
            planner = _planners[cache] = Planner(cache)
        return planner


def known_max_batch(workload: Workload, gpu: GpuSpec, cache: TraceCache) -> int | None:
    return planner_for(cache).known_max_batch(workload, gpu)


def forget_max_batches() -> None:
    """After F5: a user's .py file may have changed since its largest batch was solved."""
    with _planners_lock:
        planners = list(_planners.values())
    for planner in planners:
        planner.forget_max_batches()


def remember_max_batch(cache: TraceCache, workload: Workload, gpu: GpuSpec, best: int) -> None:
    """For answers solved elsewhere (the model process of a .py model)."""
    planner_for(cache).remember_max_batch(workload, gpu, best)


def quick_evaluation(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache, cluster=None
                     ) -> Evaluation | None:
    """Plans without tracing, when possible (Planner.quick_plans); None when a trace is needed. ``cluster``:
    engine.distributed.plan.ClusterChoice (GPUs per node, interconnects) of a distributed workload."""
    quick = planner_for(cache).quick_plans(workload, gpus, cluster=cluster)
    if quick is None:
        return None
    plans, interpolated = quick
    return Evaluation(workload, None if interpolated else plans[0].result, plans, interpolated)


def estimate_note(evaluation: Evaluation) -> str:
    """What an estimated evaluation was estimated from, for the progress line: 'Estimated from traces at
    sequence lengths 128, 256, 512; exact trace follows…'."""
    result = evaluation.plans[0].result
    source = next((w for w in reversed(result.warnings if result is not None else ())
                   if w.startswith(("interpolated from", "estimated from"))), "estimated")
    return f"{source[0].upper()}{source[1:]}; exact trace follows…"


def seq_len_estimable(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> bool:
    """True when Planner.quick_plans can estimate this sequence length from three others in memory (a cheap
    look at the cache's keys, no model fitted): the window then asks at once instead of after the debounce."""
    if not gpus or workload.seq_len is None or workload.options.mode == "decode":
        return False
    on_gpu = workload.on_gpu(gpus[0])
    return len([n for n in cache.seq_lens_in_memory(on_gpu) if n > 1 and n != workload.seq_len]) >= 3


def full_evaluation(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache, *,
                    solve_max_batch: bool = True, cluster=None) -> Evaluation:
    plans = planner_for(cache).plans(workload, gpus, solve_max_batch=solve_max_batch and bool(workload.inputs),
                                     cluster=cluster)
    return Evaluation(workload, plans[0].result if plans else cache.get(workload), plans, False)


def batch_sweep(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> Sweep:
    return planner_for(cache).batch_sweep(workload, gpus)


def batch_sweep_values(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> tuple[int, ...]:
    """The batch grid the sweep will use (for deciding whether the sweep on screen is still current)."""
    planner = planner_for(cache)
    return sweep_batches(workload.batch_size, [planner.known_max_batch(workload, g) for g in gpus])


def resolution_sweep(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> Sweep | None:
    return planner_for(cache).resolution_sweep(workload, gpus)


def seq_len_sweep_values(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> tuple[int, ...]:
    """The sequence lengths the seq-len sweep will trace (each GPU's longest sequence solved first)."""
    from torchbudget.engine.planner import sweep_seq_lens

    planner = planner_for(cache)
    return sweep_seq_lens(workload.seq_len, [planner.max_seq_len(workload, g)[0] for g in gpus])


def seq_len_sweep(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> Sweep | None:
    """Memory and latency against the token inputs' length at the workload's batch (Planner.seq_len_sweep)."""
    return planner_for(cache).seq_len_sweep(workload, gpus)


def context_sweep_values(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> tuple[int, ...]:
    """Decode: the contexts the context sweep will trace (each GPU's largest context solved first)."""
    from torchbudget.engine.planner import sweep_contexts

    planner = planner_for(cache)
    return sweep_contexts(workload.options.context_len, [planner.max_context(workload, g)[0] for g in gpus])


def context_sweep(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache) -> Sweep:
    """Decode: memory, KV cache and tokens/s against the context at the workload's batch (Planner.context_sweep)."""
    return planner_for(cache).context_sweep(workload, gpus)


def remember_max_seq_len(cache: TraceCache, workload: Workload, gpu: GpuSpec, best: int) -> None:
    """The longest sequence solved elsewhere (the model process of a .py model)."""
    planner_for(cache).remember_max_seq_len(workload, gpu, best)


def remember_max_context(cache: TraceCache, workload: Workload, gpu: GpuSpec, best: int) -> None:
    """Decode: the largest context solved elsewhere (the model process of a .py model)."""
    planner_for(cache).remember_max_context(workload, gpu, best)


def comparison(workload: Workload, gpus: Sequence[GpuSpec], cache: TraceCache, *, solve: bool = True,
               cluster=None) -> Comparison:
    return planner_for(cache).compare(workload, gpus, solve_max_batch=solve and bool(workload.inputs), cluster=cluster)


# -- hardware ----------------------------------------------------------------------------------
# The window opens whatever the user's GPU file holds: a file that does not load (a typo, not UTF-8,
# binary, nested too deep) is left out, the built-in database is used, and ``catalog_problem()`` says why.
_catalog_problem: str | None = None
_builtin: tuple[GpuSpec, ...] | None = None


def catalog_problem() -> str | None:
    """Why the user's GPU file was left out the last time the catalogue was read (None: it loaded)."""
    return _catalog_problem


def _file_problem(exc: BaseException) -> str:
    from torchbudget.hardware.user_file import user_file_path

    path = str(user_file_path())
    if isinstance(exc, RecursionError):
        why = "it nests too deeply to read"
    elif isinstance(exc, UnicodeDecodeError):
        why = "it is not UTF-8 text"
    else:
        why = str(exc).removeprefix(path).lstrip(": ") or type(exc).__name__
    return f"your GPU file {path} was ignored ({why}); using the built-in database"


def _builtin_gpus() -> tuple[GpuSpec, ...]:
    global _builtin
    if _builtin is None:
        from torchbudget.hardware.spec_file import builtin_file_path, load_entries, spec_from_entry

        _builtin = tuple(spec_from_entry(e, origin="database")
                         for e in load_entries(builtin_file_path(), require_source=True))
    return _builtin


def _catalog(call):
    """``call()`` on the full catalogue; on a user file that does not load, None (and the problem noted)."""
    global _catalog_problem
    try:
        value = call()
    except UnknownGpuError:
        raise
    except Exception as exc:  # noqa: BLE001 - any damage to the user's file: left out, said once
        _catalog_problem = _file_problem(exc)
        return None
    _catalog_problem = None
    return value


def database_gpus() -> list[GpuSpec]:
    from torchbudget.hardware.catalog import database

    specs = _catalog(database)
    return list(specs if specs is not None else _builtin_gpus())


def local_gpus() -> list[GpuSpec]:
    """Detected GPUs, matched against the database (the built-in one when the user's file is left out)."""
    try:
        from torchbudget.hardware import nvml
        from torchbudget.hardware.local import specs_from_probe

        return list(specs_from_probe(nvml.probe(), tuple(database_gpus())))
    except Exception:  # noqa: BLE001 - no driver, no NVML, a broken probe: the database still works
        return []


def default_gpu_name() -> str:
    """The first detected GPU, else the database default (hardware.catalog's rule)."""
    from torchbudget.hardware.catalog import DEFAULT_GPU_NAME

    local = local_gpus()
    return local[0].name if local else DEFAULT_GPU_NAME


def resolve_gpu(name: str) -> GpuSpec:
    from torchbudget.hardware.catalog import resolve_gpu as resolve
    from torchbudget.hardware.names import name_key

    spec = _catalog(lambda: resolve(name))
    if spec is None and _catalog_problem is not None:
        spec = next((g for g in _builtin_gpus() if name_key(g.name) == name_key(name)), None)
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
    return spec.available_memory_bytes, spec.memory_bytes


def save_user_gpu(spec: GpuSpec) -> None:
    from torchbudget.hardware.user_file import save_user_gpu as save

    save(spec)


def remove_user_gpu(name: str) -> None:
    from torchbudget.hardware.user_file import remove_user_gpu as remove

    remove(name)

"""What one analysis request computes on a worker thread, stage by stage, reporting each stage as soon as
it is ready (verdict first, then the sweeps). Between stages it checks for cancellation."""
from __future__ import annotations

from dataclasses import dataclass

from torchbudget.engine.cache import TraceCache
from torchbudget.engine.errors import UserError
from torchbudget.engine.workload import Workload
from torchbudget.gui import backend
from torchbudget.gui.workers import JobContext
from torchbudget.engine.vocab import InputKind


@dataclass(frozen=True)
class Request:
    workload: Workload
    gpus: tuple                       # GpuSpec, primary first
    cache: TraceCache
    in_process: bool = True           # False for user .py models: only what is cached can be planned
    batch_sweep_key: tuple | None = None       # the sweep on screen; not redone when unchanged
    resolution_sweep_key: tuple | None = None
    cluster: object = None            # engine.distributed.plan.ClusterChoice (several GPUs: nodes and links)


def batch_key(request: Request, values: tuple[int, ...]) -> tuple:
    return request.workload.with_batch(1).key(), tuple(g.name for g in request.gpus), values


def resolution_key(request: Request, values: tuple[int, ...]) -> tuple:
    return request.workload.key(), tuple(g.name for g in request.gpus), values


SHOWN_WAIT_S = 0.5   # a verdict is painted before the next stage competes for the GIL (at most this long)


def run_request(request: Request, ctx: JobContext) -> str:
    workload, gpus, cache, cluster = request.workload, request.gpus, request.cache, request.cluster
    latest = backend.quick_evaluation(workload, gpus, cache, cluster)
    if latest is not None:
        ctx.partial("evaluation", latest, wait_shown_s=SHOWN_WAIT_S)
    if latest is None or latest.interpolated or latest.plans[0].max_batch is None:
        # an estimate on screen stays said to be one until the exact trace replaces it
        ctx.progress(backend.estimate_note(latest) if latest is not None and latest.interpolated
                     else "Tracing the model…")
        latest = backend.full_evaluation(workload, gpus, cache, solve_max_batch=False, cluster=cluster)
        ctx.partial("evaluation", latest, wait_shown_s=SHOWN_WAIT_S)
        if request.in_process:
            ctx.progress("Solving the largest batch…")
            latest = backend.full_evaluation(workload, gpus, cache, cluster=cluster)
            ctx.partial("evaluation", latest, wait_shown_s=SHOWN_WAIT_S)
    if not request.in_process:
        ctx.partial("comparison", backend.comparison(workload, gpus, cache, solve=False, cluster=cluster))
        return "done"
    values = backend.batch_sweep_values(workload, gpus, cache)
    key = batch_key(request, values)
    if key != request.batch_sweep_key:
        ctx.progress("Sweeping batch sizes…")
        ctx.partial("batch_sweep", (key, backend.batch_sweep(workload, gpus, cache)))
    ctx.progress("Comparing GPUs…")
    ctx.partial("comparison", backend.comparison(workload, gpus, cache, cluster=cluster))
    images = [s for s in workload.inputs if s.kind is InputKind.IMAGE]
    if images:
        values = backend.sweep_resolutions(images[0].shape[-1])
        key = resolution_key(request, values)
        if key != request.resolution_sweep_key:
            for side in values:   # trace one resolution at a time so a newer request can stop us
                ctx.progress(f"Sweeping resolution ({side} px)…")
                for target_workload in {w.options.target: w for w in (workload.on_gpu(g) for g in gpus)}.values():
                    try:
                        cache.get(target_workload.with_resolution(side, side))
                    except UserError:
                        pass   # the sweep leaves this point out and says why
            ctx.partial("resolution_sweep", (key, backend.resolution_sweep(workload, gpus, cache)))
    elif has_seq_len_axis(workload):
        key = ("seq_len", workload.key(), tuple(g.name for g in gpus))
        if key != request.resolution_sweep_key:
            ctx.partial("resolution_sweep", (key, _axis_sweep("seq_len", workload, gpus, cache, ctx)))
    elif has_context_axis(workload):
        key = ("context", workload.key(), tuple(g.name for g in gpus))
        if key != request.resolution_sweep_key:
            ctx.partial("resolution_sweep", (key, _axis_sweep("context", workload, gpus, cache, ctx)))
    else:
        ctx.partial("resolution_sweep", (None, None))
    return "done"


def has_seq_len_axis(workload: Workload) -> bool:
    """Token inputs, and a mode whose question is their length (decode's is the context)."""
    return workload.seq_len is not None and workload.options.mode != "decode"


def has_context_axis(workload: Workload) -> bool:
    """Decode: the fourth plot is memory (and tokens/s) against the context in the KV cache."""
    return workload.options.mode == "decode"


# the second axes traced point by point: (what is solved first, what is swept, one point's workload); backend
# has ``<axis>_sweep_values`` (the points) and ``<axis>_sweep`` (the sweep from the cache) for each
_AXES = {
    "context": ("Solving the largest context…", "the context", lambda w, n: w.with_options(context_len=n)),
    "seq_len": ("Solving the longest sequence…", "sequence length", lambda w, n: w.with_seq_len(n)),
}


def _axis_sweep(axis: str, workload: Workload, gpus, cache: TraceCache, ctx: JobContext):
    """Decode's context or a token model's sequence length: the largest value per GPU, then each point traced one
    at a time (a newer request can stop us between them), then the sweep from the cache. A point the model cannot
    run is left out by the sweep; a sweep that cannot start comes back empty, naming why."""
    from torchbudget.engine.solver import Sweep

    solving, what, at = _AXES[axis]
    try:
        ctx.progress(solving)
        values = getattr(backend, f"{axis}_sweep_values")(workload, gpus, cache)
        for value in values:
            ctx.progress(f"Sweeping {what} ({value:,} tokens)…")
            for target_workload in {w.options.target: w for w in (workload.on_gpu(g) for g in gpus)}.values():
                try:
                    cache.get(at(target_workload, value))
                except UserError:
                    pass   # the sweep leaves this point out and says why
        return getattr(backend, f"{axis}_sweep")(workload, gpus, cache)
    except UserError as exc:
        return Sweep(axis, (), (), (str(exc),))

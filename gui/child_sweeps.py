"""Sweeps for user .py models, computed in the model process (their traces may only run there) and sent
back as JSON through the report layer's schema (engine.report.schema)."""
from __future__ import annotations

from torchbudget.engine.errors import UserError
from torchbudget.engine.report.schema import sweep_to_dict
from torchbudget.engine.results import AnalysisResult
from torchbudget.hardware.spec import GpuSpec


def results_for(workload, gpus: list[GpuSpec], cache) -> list[tuple[dict, AnalysisResult]]:
    """The trace of ``workload`` for each distinct target among ``gpus`` (its own target when none):
    (workload dict, result) pairs for the GUI's file-model cache."""
    targets = {w.options.target: w for w in (workload.on_gpu(g) for g in gpus)} or {workload.options.target: workload}
    return [(w.to_dict(), cache.get(w)) for _, w in sorted(targets.items())]


def sweeps_for(workload, gpus: list[GpuSpec], cache) -> dict:
    """Largest batch per GPU (decode: and largest context; token inputs: the longest sequence) and the batch and
    resolution (token inputs: sequence-length; decode: context) sweeps, as JSON-ready data
    (run in the child).
    A sweep the model cannot do (e.g. a fixed-size Linear at other resolutions) comes back as its error."""
    from torchbudget.gui import backend

    out: dict = {"max_batches": [None] * len(gpus), "batch_sweep": None, "resolution_sweep": None}
    try:
        out["max_batches"] = [backend.planner_for(cache).max_batch(workload, gpu)[0] if workload.inputs else None
                              for gpu in gpus]
        if workload.options.mode == "decode":
            out["max_contexts"] = [backend.planner_for(cache).max_context(workload, gpu)[0] for gpu in gpus]
        out["batch_sweep"] = sweep_to_dict(backend.batch_sweep(workload, gpus, cache))
    except UserError as exc:
        out["batch_error"] = str(exc)
    try:
        if workload.seq_len is not None and workload.options.mode != "decode":   # token inputs: their length
            out["max_seq_lens"] = [backend.planner_for(cache).max_seq_len(workload, gpu)[0] for gpu in gpus]
            out["resolution_sweep"] = sweep_to_dict(backend.seq_len_sweep(workload, gpus, cache))
        elif workload.options.mode == "decode":   # decode: the context in the KV cache
            out["resolution_sweep"] = sweep_to_dict(backend.context_sweep(workload, gpus, cache))
        else:
            out["resolution_sweep"] = sweep_to_dict(backend.resolution_sweep(workload, gpus, cache))
    except UserError as exc:
        out["resolution_error"] = str(exc)
    return out

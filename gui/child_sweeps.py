"""Sweeps for user .py models, computed in the model process (their traces may only run there) and sent
back as JSON: GpuSpec and Sweep to plain dicts and back."""
from __future__ import annotations

from torchbudget.cli.format import to_jsonable
from torchbudget.engine.errors import UserError
from torchbudget.engine.solver import Sweep, SweepGpu, SweepGpuPoint, SweepPoint
from torchbudget.hardware.spec import GpuSpec


def gpu_to_dict(spec: GpuSpec) -> dict:
    return to_jsonable(spec)


def gpu_from_dict(data: dict) -> GpuSpec:
    return GpuSpec(**{**data, "nvml_names": tuple(data.get("nvml_names", ())),
                      "aliases": tuple(data.get("aliases", ()))})


def sweep_to_dict(sweep: Sweep | None) -> dict | None:
    return None if sweep is None else to_jsonable(sweep)


def sweep_from_dict(data: dict | None) -> Sweep | None:
    if data is None:
        return None
    points = tuple(SweepPoint(**{**p, "per_gpu": tuple(SweepGpuPoint(**g) for g in p["per_gpu"])})
                   for p in data["points"])
    return Sweep(data["axis"], points, tuple(SweepGpu(**g) for g in data["gpus"]))


def sweeps_for(workload, gpus: list[GpuSpec], cache) -> dict:
    """Largest batch per GPU and the batch/resolution sweeps, as JSON-ready data (run in the child).
    A sweep the model cannot do (e.g. a fixed-size Linear at other resolutions) comes back as its error."""
    from torchbudget.gui import backend

    out: dict = {"max_batches": [None] * len(gpus), "batch_sweep": None, "resolution_sweep": None}
    try:
        out["max_batches"] = [backend.solve_max_batch_for(workload, gpu, cache) for gpu in gpus]
        out["batch_sweep"] = sweep_to_dict(backend.batch_sweep(workload, gpus, cache, out["max_batches"]))
    except UserError as exc:
        out["batch_error"] = str(exc)
    try:
        out["resolution_sweep"] = sweep_to_dict(backend.resolution_sweep(workload, gpus, cache))
    except UserError as exc:
        out["resolution_error"] = str(exc)
    return out

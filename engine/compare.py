"""One workload on N GPUs: one trace, one plan per GPU."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from torchbudget.engine.cache import TraceCache
from torchbudget.engine.overheads import Efficiency, Overheads
from torchbudget.engine.planner import Plan, Verdict, plan_result
from torchbudget.engine.solver import try_max_batch
from torchbudget.engine.workload import Workload
from torchbudget.hardware.spec import GpuSpec


@dataclass(frozen=True)
class ComparisonRow:
    gpu_name: str
    verdict: Verdict
    fits: bool
    capacity_bytes: int
    required_bytes: int
    headroom_bytes: int
    headroom_fraction: float
    max_batch: int | None
    lower_bound_ms: float
    estimate_ms: float
    throughput_samples_per_s: float
    plan: Plan


@dataclass(frozen=True)
class Comparison:
    workload: Workload
    rows: tuple[ComparisonRow, ...]

    def fastest(self) -> ComparisonRow | None:
        fitting = [r for r in self.rows if r.fits]
        return min(fitting, key=lambda r: r.estimate_ms) if fitting else None


def compare(workload: Workload, gpus: Sequence[GpuSpec], *, cache: TraceCache | None = None,
            solve_max_batch: bool = True, overheads: Overheads = Overheads(),
            efficiency: Efficiency = Efficiency()) -> Comparison:
    """One workload on each GPU; ``solve_max_batch`` as in ``plan()``."""
    cache = cache if cache is not None else TraceCache()
    result = cache.get(workload)
    rows = []
    for gpu in gpus:
        best, why = try_max_batch(workload, gpu, cache=cache, overheads=overheads) if solve_max_batch else (None, None)
        p = plan_result(result, gpu, overheads=overheads, efficiency=efficiency, workload=workload, max_batch=best)
        if why:
            p = replace(p, notes=(why,))
        rows.append(ComparisonRow(gpu.name, p.verdict, p.fits, p.capacity_bytes, p.required_bytes,
                                  p.headroom_bytes, p.headroom_fraction, best, p.latency.lower_bound_ms,
                                  p.latency.estimate_ms, p.throughput_samples_per_s, p))
    return Comparison(workload, tuple(rows))

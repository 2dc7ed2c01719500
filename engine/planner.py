"""The plan: will this workload fit on this GPU, with what headroom, and how fast can it run.
Pure arithmetic on a trace and a GpuSpec."""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from torchbudget.engine.cache import TraceCache
from torchbudget.engine.latency import LatencyReport, roofline
from torchbudget.engine.memory import MemoryProfile, simulate_memory
from torchbudget.engine.overheads import Efficiency, Overheads
from torchbudget.engine.results import AnalysisResult, MemoryCategory
from torchbudget.engine.workload import Workload
from torchbudget.hardware.spec import GpuSpec


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
    capacity_bytes: int              # gpu.usable_memory_bytes (net of the CUDA context)
    headroom_bytes: int              # capacity - required; negative when it does not fit
    headroom_fraction: float         # headroom / capacity
    dominant_category: MemoryCategory
    max_batch: int | None            # None when not solved
    latency: LatencyReport
    throughput_samples_per_s: float
    result: AnalysisResult | None = None
    notes: tuple[str, ...] = ()      # e.g. why the largest batch could not be solved

    @property
    def fits(self) -> bool:
        return self.verdict is not Verdict.DOES_NOT_FIT

    @property
    def required_bytes(self) -> int:
        """Peak footprint less the CUDA context: what is compared with usable memory."""
        return self.memory.required_bytes


def verdict_for(required_bytes: int, capacity_bytes: int, overheads: Overheads) -> Verdict:
    if required_bytes > capacity_bytes:
        return Verdict.DOES_NOT_FIT
    if capacity_bytes - required_bytes < overheads.tight_threshold_fraction * capacity_bytes:
        return Verdict.TIGHT
    return Verdict.FITS


def fits_in(memory: MemoryProfile, gpu: GpuSpec) -> bool:
    return memory.required_bytes <= gpu.usable_memory_bytes


def plan_result(result: AnalysisResult, gpu: GpuSpec, *, overheads: Overheads = Overheads(),
                efficiency: Efficiency = Efficiency(), workload: Workload | None = None,
                max_batch: int | None = None) -> Plan:
    memory = simulate_memory(result, overheads)
    latency = roofline(result, gpu, efficiency)
    capacity = gpu.usable_memory_bytes
    headroom = capacity - memory.required_bytes
    dominant = max(memory.by_category.items(), key=lambda kv: kv[1])[0]
    return Plan(
        workload=workload, gpu=gpu, memory=memory,
        verdict=verdict_for(memory.required_bytes, capacity, overheads),
        capacity_bytes=capacity, headroom_bytes=headroom,
        headroom_fraction=headroom / capacity if capacity > 0 else float("-inf"),
        dominant_category=dominant, max_batch=max_batch, latency=latency,
        throughput_samples_per_s=latency.throughput_samples_per_s, result=result,
    )


def plan(workload: Workload, gpu: GpuSpec, *, cache: TraceCache | None = None, solve_max_batch: bool = True,
         overheads: Overheads = Overheads(), efficiency: Efficiency = Efficiency()) -> Plan:
    cache = cache if cache is not None else TraceCache()
    result = cache.get(workload)
    best, notes = None, ()
    if solve_max_batch:
        from torchbudget.engine.solver import try_max_batch  # imported late: the solver builds on this module's pieces

        best, why = try_max_batch(workload, gpu, cache=cache, overheads=overheads)
        notes = (why,) if why else ()
    planned = plan_result(result, gpu, overheads=overheads, efficiency=efficiency, workload=workload, max_batch=best)
    return replace(planned, notes=notes) if notes else planned

"""One workload on N GPUs, as rows: one plan per GPU (each traced for its own GPU's kernels; GPUs of one
compute capability share their trace). Made by ``engine.planner.Planner.compare`` / ``compare``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # the planner makes comparisons; this module only describes them
    from torchbudget.engine.planner import Plan, Verdict
    from torchbudget.engine.workload import Workload


@dataclass(frozen=True)
class ComparisonRow:
    gpu_name: str
    verdict: "Verdict"
    fits: bool
    capacity_bytes: int
    required_bytes: int
    headroom_bytes: int
    headroom_fraction: float | None
    max_batch: int | None
    lower_bound_ms: float
    estimate_ms: float
    throughput_samples_per_s: float
    plan: "Plan"


def row_of(plan: "Plan") -> ComparisonRow:
    return ComparisonRow(plan.gpu.name, plan.verdict, plan.fits, plan.capacity_bytes, plan.required_bytes,
                         plan.headroom_bytes, plan.headroom_fraction, plan.max_batch, plan.latency.lower_bound_ms,
                         plan.latency.estimate_ms, plan.throughput_samples_per_s, plan)


@dataclass(frozen=True)
class Comparison:
    workload: "Workload"
    rows: tuple[ComparisonRow, ...]

    def fastest(self) -> ComparisonRow | None:
        fitting = [r for r in self.rows if r.fits]
        return min(fitting, key=lambda r: r.estimate_ms) if fitting else None

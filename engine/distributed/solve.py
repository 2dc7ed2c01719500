"""Solvers over several GPUs (plans through engine.planner.Planner, so every answer is a traced plan):

* ``fewest_gpus``: the smallest world size (powers of two) at which a strategy fits a workload per rank;
* ``compare_strategies``: one workload on N GPUs under each strategy, side by side (per-rank memory, fit,
  step time, exposed communication, throughput, scaling efficiency).

The largest per-GPU batch for N GPUs is the planner's ordinary max batch of the distributed workload (the
trace, and so the solver, is per rank)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torchbudget.engine import vocab
from torchbudget.engine.errors import UserError
from torchbudget.hardware.spec import GpuSpec

MAX_FEWEST = 1024


@dataclass(frozen=True)
class StrategyRow:
    strategy: str
    world_size: int
    tp_size: int
    fits: bool
    per_rank_bytes: int
    step_ms: float
    exposed_comm_ms: float
    samples_per_s: float
    tokens_per_s: float | None
    scaling_efficiency: float
    max_batch: int | None
    plan: object


def _with(workload, strategy: str, world: int, tp: int):
    tp = world if strategy == "tp" else (tp if vocab.strategy(strategy).tensor_parallel else 1)
    return workload.with_options(strategy=strategy, world_size=world, tp_size=tp)


def row_of(plan) -> StrategyRow:
    d = plan.distributed
    o = plan.result.options
    return StrategyRow(o.strategy, o.world_size, o.tp_size, plan.fits, plan.required_bytes,
                       d.step_ms if d else plan.latency.estimate_ms, d.comm.exposed_ms if d else 0.0,
                       plan.throughput_samples_per_s, d.tokens_per_s if d else None,
                       d.scaling_efficiency if d else 1.0, plan.max_batch, plan)


def compare_strategies(planner, workload, gpu: GpuSpec, world_size: int, strategies: Sequence[str], *,
                       tp_size: int = 2, cluster=None, solve_max_batch: bool = False) -> tuple[StrategyRow, ...]:
    rows = []
    for name in strategies:
        w = _with(workload, vocab.normalise_strategy(name), world_size, tp_size)
        rows.append(row_of(planner.plan(w, gpu, solve_max_batch=solve_max_batch, cluster=cluster)))
    return tuple(rows)


def fewest_gpus(planner, workload, gpu: GpuSpec, strategy: str, *, tp_size: int = 2, limit: int = MAX_FEWEST,
                cluster=None) -> tuple[int | None, object | None]:
    """(the fewest GPUs, a power of two, whose rank 0 fits; its plan), or (None, None) up to ``limit``."""
    strategy = vocab.normalise_strategy(strategy)
    world = max(tp_size if vocab.strategy(strategy).tensor_parallel and strategy != "tp" else 1,
                2 if strategy == "tp" else 1)
    while world <= limit:
        try:
            plan = planner.plan(_with(workload, strategy, world, tp_size), gpu, solve_max_batch=False,
                                cluster=cluster)
        except UserError:
            raise
        if plan.fits:
            return world, plan
        world *= 2
    return None, None


__all__ = ["StrategyRow", "compare_strategies", "fewest_gpus"]

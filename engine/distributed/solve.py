"""Solvers over several GPUs (plans through engine.planner.Planner, so every answer is a traced plan):

* ``search_fewest`` / ``fewest_gpus``: the smallest world size (the strategy's smallest, doubled) at which a
  strategy fits a workload per rank;
* ``compare_strategies``: one workload on N GPUs under each strategy, side by side (per-rank memory, fit,
  step time, exposed communication, throughput, scaling efficiency); ``distributed_rows`` does the same for
  several clusters (GPU x count) and strategies at once.

The search for the fewest GPUs traces the strategy's smallest world size and its double; per-rank memory is
then modelled as ``a + b / N`` (what is sharded shrinks with N, what is replicated does not; NCCL's buffers
set apart), which says where to look next (the first size the model says fits, confirmed by a trace, and the
sizes below it traced until one does not fit) or that no size fits (``a``, the part that does not shrink, is
already over the GPU: DDP's full replica). Every answer is a traced plan; the model only chooses what to trace.

The largest per-GPU batch for N GPUs is the planner's ordinary max batch of the distributed workload (the
trace, and so the solver, is per rank)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from torchbudget.engine import vocab
from torchbudget.engine.results import MemoryCategory
from torchbudget.hardware.spec import GpuSpec

MAX_FEWEST = 1024
DEFAULT_TP = 2        # the tensor-parallel degree fsdp+tp is searched and compared at unless one is given


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
    gpu_name: str = ""
    capacity_bytes: int = 0
    cluster: str = ""


@dataclass(frozen=True)
class FewestSearch:
    """The fewest GPUs at which ``strategy`` fits per rank: ``world_size`` and its ``plan`` (None: no size up
    to ``limit`` fits, ``reason`` says why); ``tried``: (world size, per-rank bytes, fits) of every trace."""
    strategy: str
    gpu_name: str
    capacity_bytes: int
    world_size: int | None
    plan: object | None
    tried: tuple[tuple[int, int, bool], ...]
    reason: str = ""


def _tp_for(strategy: str, world: int, tp: int) -> int:
    if strategy == "tp":
        return world
    return tp if vocab.strategy(strategy).tensor_parallel else 1


def _with(workload, strategy: str, world: int, tp: int):
    return workload.with_options(strategy=strategy, world_size=world, tp_size=_tp_for(strategy, world, tp))


def row_of(plan) -> StrategyRow:
    d = plan.distributed
    o = plan.result.options
    return StrategyRow(o.strategy, o.world_size, o.tp_size, plan.fits, plan.required_bytes,
                       d.step_ms if d else plan.latency.estimate_ms, d.comm.exposed_ms if d else 0.0,
                       plan.throughput_samples_per_s, d.tokens_per_s if d else None,
                       d.scaling_efficiency if d else 1.0, plan.max_batch, plan, plan.gpu.name, plan.capacity_bytes,
                       d.cluster if d else f"1x {plan.gpu.name}")


def compare_strategies(planner, workload, gpu: GpuSpec, world_size: int, strategies: Sequence[str], *,
                       tp_size: int = DEFAULT_TP, cluster=None, solve_max_batch: bool = False
                       ) -> tuple[StrategyRow, ...]:
    rows = []
    for name in strategies:
        w = _with(workload, vocab.normalise_strategy(name), world_size, tp_size)
        rows.append(row_of(planner.plan(w, gpu, solve_max_batch=solve_max_batch, cluster=cluster)))
    return tuple(rows)


def smallest_world(strategy: str, tp_size: int = DEFAULT_TP) -> int:
    """The smallest world size a strategy runs at: 2 for tp, the TP degree for fsdp+tp, else 1."""
    if strategy == "tp":
        return 2
    return tp_size if vocab.strategy(strategy).tensor_parallel else 1


def _without_nccl(plan) -> int:
    return plan.required_bytes - plan.memory.by_category.get(MemoryCategory.COMMUNICATION, 0)


# strategies that shard parameters, gradients and optimizer state over every GPU: rank 0 holds at least
# 1/N of the model's state, so the search may start at the first N where that share fits (state_lower_bound)
SHARDS_STATE = frozenset({"fsdp", "fsdp-grad-op", "fsdp+tp", "tp"})


def model_state_bytes(workload) -> int:
    """A lower bound of the training state (parameters, gradients, optimizer state) of the whole model, from
    its parameter count (the model built on meta) and the bytes per parameter the precision and optimizer
    keep at the least: fp32 master weights and gradients in fp32 and the amp precisions (else the dtype's),
    AdamW/Adam 2 fp32 moments, SGD with momentum 1, 8-bit AdamW 2 bytes. Inference: the weights. Only a
    starting point for the search: every size it reports is traced."""
    from torchbudget.engine.sources import load_model

    options = workload.options
    module = load_model(workload.model, workload.model_kwargs).module
    params = sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
    weight = 2 if options.precision in ("bf16", "fp16") else 4
    if not options.training:
        return params * weight
    state = {"adamw": 8, "adam": 8, "sgd-momentum": 4, "adamw-8bit": 2}.get(options.optimizer or "", 0)
    if weight == 2 and options.optimizer in ("adamw", "adam", "sgd-momentum"):
        state //= 2
    return params * (2 * weight + state)


def search_fewest(planner, workload, gpu: GpuSpec, strategy: str, *, tp_size: int = DEFAULT_TP,
                  limit: int = MAX_FEWEST, cluster=None, guess: float | None = None) -> FewestSearch:
    """The fewest GPUs (the strategy's smallest world size times a power of two, up to ``limit``) whose rank 0
    fits ``gpu``. See the module's note for the search. ``guess``: a world size below which a sharding strategy
    cannot fit (model_state_bytes / the GPU's memory): the search starts there; if that size fits, the sizes
    below it are traced until one does not, so the guess saves traces but never changes the answer."""
    strategy = vocab.normalise_strategy(strategy)
    plans: dict[int, object] = {}

    def at(world: int):
        if world not in plans:
            plans[world] = planner.plan(_with(workload, strategy, world, tp_size), gpu, solve_max_batch=False,
                                        cluster=cluster)
        return plans[world]

    def done(world: int | None, reason: str = "") -> FewestSearch:
        tried = tuple((w, p.required_bytes, p.fits) for w, p in sorted(plans.items()))
        return FewestSearch(strategy, gpu.name, gpu.available_memory_bytes, world,
                            plans[world] if world is not None else None, tried, reason)

    start = smallest_world(strategy, tp_size)
    if start > limit:
        return done(None, f"its smallest world size {start} is over the limit {limit}")
    first = start
    if guess and guess > start and strategy in SHARDS_STATE:
        first = min(start * 2 ** math.ceil(math.log2(guess / start)), limit)
    if at(first).fits:
        world = first
        while world // 2 >= start and at(world // 2).fits:
            world //= 2
        return done(world)
    lower, upper = first, first * 2          # the two sizes the memory model is fitted on
    while upper <= limit:
        if at(upper).fits:
            # the sizes between the last that did not fit and this one were never traced: halve down
            world = upper
            while world // 2 > lower and world // 2 not in plans and at(world // 2).fits:
                world //= 2
            return done(world)
        n1, n2 = lower, upper
        r1, r2 = _without_nccl(at(n1)), _without_nccl(at(n2))
        nccl = at(n2).required_bytes - r2
        room = gpu.available_memory_bytes - nccl
        b = (r1 - r2) / (1 / n1 - 1 / n2)
        a = r1 - b / n1
        if b <= 0 or a >= room:
            floor = max(a, 0.0) + nccl
            return done(None, f"per-rank memory does not shrink below {floor / 2**30:,.1f} GiB with more GPUs "
                              f"(what is not sharded), over the {gpu.available_memory_bytes / 2**30:,.1f} GiB of "
                              f"{gpu.name}")
        needed = b / (room - a)
        step = 2 ** max(math.ceil(math.log2(max(needed / start, 1.0))), 0)
        nxt = max(start * step, upper * 2)
        lower, upper = upper, nxt
    return done(None, f"no world size up to {limit} fits")


def state_guess(workload, gpu: GpuSpec) -> float:
    """The world size at which 1/N of the model's state (model_state_bytes) fills the GPU."""
    return model_state_bytes(workload) / max(gpu.available_memory_bytes, 1)


def fewest_gpus(planner, workload, gpu: GpuSpec, strategy: str, *, tp_size: int = DEFAULT_TP,
                limit: int = MAX_FEWEST, cluster=None) -> tuple[int | None, object | None]:
    """(the fewest GPUs whose rank 0 fits; its plan), or (None, None) up to ``limit``."""
    found = search_fewest(planner, workload, gpu, strategy, tp_size=tp_size, limit=limit, cluster=cluster)
    return found.world_size, found.plan


def best_of(searches: Sequence[FewestSearch]) -> FewestSearch | None:
    """The search with the fewest GPUs; among equals, the plan with the shortest step."""
    found = [s for s in searches if s.world_size is not None]
    if not found:
        return None
    return min(found, key=lambda s: (s.world_size, s.plan.distributed.step_ms if s.plan.distributed
                                     else s.plan.latency.estimate_ms))


__all__ = ["DEFAULT_TP", "FewestSearch", "StrategyRow", "best_of", "compare_strategies", "fewest_gpus",
           "model_state_bytes", "search_fewest", "smallest_world", "state_guess"]

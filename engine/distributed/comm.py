"""Communication time of rank 0's traced step: each collective timed by the bus-bandwidth formulas on the link
its process group crosses, and the step laid out on two streams (compute and communication) to tell exposed
communication from what overlaps compute. No torch: arithmetic on an AnalysisResult. docs/distributed.md.

Bus-bandwidth formulas (NCCL's ``PERFORMANCE.md``, nccl-tests), S the buffer's bytes as nccl-tests counts it,
n the group size, B = link bandwidth x efficiency (bus bandwidth), plus a latency per call:

    all-reduce            2 (n-1)/n * S / B
    all-gather            (n-1)/n * S / B      (S: the gathered output)
    reduce-scatter        (n-1)/n * S / B      (S: the input, before scattering)
    all-to-all            (n-1)/n * S / B
    broadcast, reduce     S / B

The overlap model (a timeline of two streams, in op order):

* compute ops run one after another on the compute stream (engine.latency's per-op estimate);
* a collective starts on the communication stream when it is issued and the stream is free;
* **blocking** collectives (all-gathers, tensor-parallel all-reduces, forward and optimizer broadcasts) hold
  the next compute op until they finish; **gradient** collectives (DDP's bucket all-reduces, FSDP's
  reduce-scatters) are waited for only before the optimizer step (or at the end of the step);
* FSDP **prefetches**: a unit's all-gather is issued when the previous all-gather's unit starts computing, so
  it overlaps that unit's compute (exposed = max(0, all-gather - previous unit's compute)).

So DDP exposes the last bucket (and any backlog), FSDP the first all-gather of each pass and whatever a
block's compute cannot hide, tensor parallel everything (its all-reduces are on the critical path)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from torchbudget.engine.results import AnalysisResult, CollectiveCall, Phase, frozen_map

# bytes-on-the-wire factor of each collective for a group of n (times S / B)
_FACTORS = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
}
COLLECTIVE_KINDS = tuple(_FACTORS)


def bus_factor(kind: str, n: int) -> float:
    """The bus-bandwidth factor of ``kind`` over a group of ``n`` (0 for a group of one: nothing moves)."""
    if n <= 1:
        return 0.0
    return _FACTORS[kind](n)


def collective_seconds(kind: str, nbytes: int, n: int, bandwidth_gb_s: float, efficiency: float,
                       latency_us: float) -> float:
    """Time of one collective: factor(n) * S / (bandwidth x efficiency) + latency (0 for a group of one)."""
    if n <= 1:
        return 0.0
    bus = bandwidth_gb_s * 1e9 * efficiency
    return bus_factor(kind, n) * nbytes / bus + latency_us * 1e-6


@dataclass(frozen=True)
class TimedCollective:
    call: CollectiveCall
    link: str                # the interconnect's name
    ms: float
    blocking: bool           # compute waits for it at once (else: before the optimizer step)


@dataclass(frozen=True)
class CommReport:
    """Rank 0's communication and the step it makes with compute."""

    collectives: tuple[TimedCollective, ...]
    compute_ms: float              # the per-rank roofline estimate (engine.latency), the compute stream's sum
    comm_ms: float                 # every collective, one after another
    step_ms: float                 # the two-stream timeline's end: compute + exposed communication
    by_kind: Mapping[str, tuple[int, int, float]]    # kind -> (calls, bytes, ms)
    method: str = "traced"         # "traced" | "formula" (engine.distributed.fallback)

    @property
    def exposed_ms(self) -> float:
        return max(self.step_ms - self.compute_ms, 0.0)

    @property
    def overlapped_ms(self) -> float:
        return max(self.comm_ms - self.exposed_ms, 0.0)


def is_blocking(call: CollectiveCall, strategy: str) -> bool:
    """Does the next compute op wait for this collective? Gradient reductions in backward do not."""
    if call.phase is Phase.BACKWARD and call.kind in ("reduce_scatter", "all_reduce") and call.group != "tp":
        return False
    return True


def _prefetches(strategy: str) -> bool:
    return strategy in ("fsdp", "fsdp-grad-op", "fsdp+tp")


def timeline(result: AnalysisResult, op_ms: Sequence[float], link_of, *, method: str = "traced") -> CommReport:
    """The two-stream timeline of ``result`` (a distributed trace): ``op_ms`` each op's compute estimate (ms),
    ``link_of(group label) -> Interconnect`` the link a group's collectives cross."""
    info = result.distributed
    strategy = info.strategy
    calls = {c.op_index: c for c in info.collectives}
    timed: list[TimedCollective] = []
    compute_t = 0.0       # the compute stream's clock (ms)
    comm_t = 0.0          # when the communication stream is free
    pending_grads = 0.0   # the latest end of a non-blocking collective
    last_gather_issue: dict[Phase, float] = {}   # FSDP: when the previous unit started (the prefetch point)
    optimizer_started = False
    for op in result.ops:
        if op.phase is Phase.OPTIMIZER and not optimizer_started:
            optimizer_started = True
            compute_t = max(compute_t, pending_grads)
        call = calls.get(op.index)
        if call is None:
            compute_t += op_ms[op.index]
            continue
        link = link_of(call.group)
        ms = collective_seconds(call.kind, call.nbytes, call.group_size, link.bandwidth_gb_s, link.efficiency,
                                link.latency_us) * 1000.0
        blocking = is_blocking(call, strategy)
        issue = compute_t
        if call.kind == "all_gather" and _prefetches(strategy):
            issue = min(compute_t, last_gather_issue.get(call.phase, compute_t))
        start = max(issue, comm_t)
        end = start + ms
        comm_t = end
        if blocking:
            compute_t = max(compute_t, end)
            if call.kind == "all_gather":
                last_gather_issue[call.phase] = compute_t
        else:
            pending_grads = max(pending_grads, end)
        timed.append(TimedCollective(call, link.name, ms, blocking))
    step = max(compute_t, pending_grads, comm_t)
    by_kind: dict[str, list] = {}
    for t in timed:
        acc = by_kind.setdefault(t.call.kind, [0, 0, 0.0])
        acc[0] += 1
        acc[1] += t.call.nbytes
        acc[2] += t.ms
    return CommReport(
        collectives=tuple(timed), compute_ms=sum(op_ms), comm_ms=sum(t.ms for t in timed), step_ms=step,
        by_kind=frozen_map({k: tuple(v) for k, v in by_kind.items()}), method=method)


__all__ = ["CommReport", "TimedCollective", "bus_factor", "collective_seconds", "timeline", "COLLECTIVE_KINDS"]

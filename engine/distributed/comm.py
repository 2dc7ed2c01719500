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
block's compute cannot hide, tensor parallel everything (its all-reduces are on the critical path).

Gradient accumulation (K micro-batches per optimizer step): K - 1 more passes of forward and backward before the
traced one, each waiting for its gradient collectives at its end; DDP's run ``no_sync()`` (no gradient
all-reduce), FSDP's and tensor parallel's communicate as the traced one does. Figures are per optimizer step."""
from __future__ import annotations

from dataclasses import dataclass, replace
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
    ms: float                # one call
    blocking: bool           # compute waits for it at once (else: before the optimizer step)
    per_step: int = 1        # how often it runs per optimizer step (gradient accumulation: K, or 1 for a
                             # collective of the last micro-batch or the optimizer step only)


@dataclass(frozen=True)
class CommReport:
    """Rank 0's communication and the step it makes with compute. With gradient accumulation (K micro-batches
    per optimizer step) every figure is per optimizer step: K micro-batches and one optimizer step."""

    collectives: tuple[TimedCollective, ...]    # the traced micro-batch's (and the optimizer step's) calls
    compute_ms: float              # the per-rank roofline estimate (engine.latency), the compute stream's sum
    comm_ms: float                 # every collective of the step, one after another
    step_ms: float                 # the two-stream timeline's end: compute + exposed communication
    by_kind: Mapping[str, tuple[int, int, float]]    # kind -> (calls, bytes, ms) per optimizer step
    method: str = "traced"         # "traced" | "formula" (engine.distributed.fallback)
    grad_accum: int = 1            # micro-batches per optimizer step

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


def skipped_under_no_sync(call: CollectiveCall, strategy: str) -> bool:
    """DDP's ``no_sync()`` (micro-batches 1..K-1 of gradient accumulation) skips the gradient all-reduces of
    backward; its forward (buffer broadcasts) runs as usual. FSDP2 and tensor parallel communicate in every
    micro-batch (FSDP2's default reduce-scatters each one and accumulates the sharded gradients)."""
    return strategy in ("ddp", "zero1") and call.phase is Phase.BACKWARD and call.kind == "all_reduce" \
        and call.group != "tp"


def _lay_out(ops, calls: Mapping[int, CollectiveCall], op_ms: Sequence[float], timed_of, strategy: str,
             skip=None) -> tuple[float, list[TimedCollective]]:
    """One pass of ``ops`` on the two streams from a quiet start (both streams free at 0): its end and its
    timed collectives. ``skip(call)``: collectives that do not run in this pass."""
    timed: list[TimedCollective] = []
    compute_t = 0.0       # the compute stream's clock (ms)
    comm_t = 0.0          # when the communication stream is free
    pending_grads = 0.0   # the latest end of a non-blocking collective
    last_gather_issue: dict[Phase, float] = {}   # FSDP: when the previous unit started (the prefetch point)
    optimizer_started = False
    for op in ops:
        if op.phase is Phase.OPTIMIZER and not optimizer_started:
            optimizer_started = True
            compute_t = max(compute_t, pending_grads)
        call = calls.get(op.index)
        if call is None:
            compute_t += op_ms[op.index]
            continue
        if skip is not None and skip(call):
            continue
        timed_call = timed_of(call)
        issue = compute_t
        if call.kind == "all_gather" and _prefetches(strategy):
            issue = min(compute_t, last_gather_issue.get(call.phase, compute_t))
        start = max(issue, comm_t)
        end = start + timed_call.ms
        comm_t = end
        if timed_call.blocking:
            compute_t = max(compute_t, end)
            if call.kind == "all_gather":
                last_gather_issue[call.phase] = compute_t
        else:
            pending_grads = max(pending_grads, end)
        timed.append(timed_call)
    return max(compute_t, pending_grads, comm_t), timed


def timeline(result: AnalysisResult, op_ms: Sequence[float], link_of, *, method: str = "traced") -> CommReport:
    """The two-stream timeline of ``result`` (a distributed trace): ``op_ms`` each op's compute estimate (ms),
    ``link_of(group label) -> Interconnect`` the link a group's collectives cross.

    Gradient accumulation (``options.grad_accum`` K > 1): the traced micro-batch (the last, or one of 2..K) and
    the optimizer step, preceded by K - 1 micro-batches of the same forward and backward, each ending when its
    gradient collectives have (FSDP2 waits for its reduce-scatters at the end of every backward). Under DDP
    those run ``no_sync()``: no gradient all-reduce (``skipped_under_no_sync``); under FSDP and tensor parallel
    every collective of forward and backward runs K times per optimizer step."""
    info = result.distributed
    strategy = info.strategy
    options = result.options
    k = options.grad_accum if options.training else 1
    calls = {c.op_index: c for c in info.collectives}
    memo: dict[int, TimedCollective] = {}

    def timed_of(call: CollectiveCall) -> TimedCollective:
        found = memo.get(call.op_index)
        if found is None:
            link = link_of(call.group)
            ms = collective_seconds(call.kind, call.nbytes, call.group_size, link.bandwidth_gb_s, link.efficiency,
                                    link.latency_us) * 1000.0
            found = memo[call.op_index] = TimedCollective(call, link.name, ms, is_blocking(call, strategy))
        return found

    last_end, timed = _lay_out(result.ops, calls, op_ms, timed_of, strategy)
    step, compute = last_end, sum(op_ms)
    repeats: dict[int, int] = {}    # op index -> runs in the K - 1 micro-batches before the traced one
    if k > 1:
        micro = [op for op in result.ops if op.phase is not Phase.OPTIMIZER]
        no_sync = lambda call: skipped_under_no_sync(call, strategy)  # noqa: E731
        micro_end, micro_timed = _lay_out(micro, calls, op_ms, timed_of, strategy, skip=no_sync)
        step += (k - 1) * micro_end
        compute += (k - 1) * sum(op_ms[op.index] for op in micro)
        repeats = {t.call.op_index: k - 1 for t in micro_timed}
    timed = [replace(t, per_step=1 + repeats.get(t.call.op_index, 0)) for t in timed]
    by_kind: dict[str, list] = {}
    for t in timed:
        acc = by_kind.setdefault(t.call.kind, [0, 0, 0.0])
        acc[0] += t.per_step
        acc[1] += t.call.nbytes * t.per_step
        acc[2] += t.ms * t.per_step
    return CommReport(
        collectives=tuple(timed), compute_ms=compute, comm_ms=sum(t.ms * t.per_step for t in timed), step_ms=step,
        by_kind=frozen_map({k_: tuple(v) for k_, v in by_kind.items()}), method=method, grad_accum=k)


__all__ = ["CommReport", "TimedCollective", "bus_factor", "collective_seconds", "timeline", "skipped_under_no_sync",
           "COLLECTIVE_KINDS"]

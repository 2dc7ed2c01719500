"""Peak-memory simulation from the trace's storage events, plus the per-GPU overheads.

The trace lists every storage allocation and free in program order. Replaying them gives the live
bytes after every event; the peak is the largest of those. GPU overheads (context, workspaces,
allocator rounding and reserve) are added on top, never by the trace."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from engine.overheads import Overheads
from engine.results import AnalysisResult, MemoryCategory, Phase, frozen_map

TRACE_CATEGORIES = (
    MemoryCategory.WEIGHTS, MemoryCategory.BUFFERS, MemoryCategory.INPUTS, MemoryCategory.ACTIVATIONS,
    MemoryCategory.TEMPORARIES, MemoryCategory.GRADIENTS, MemoryCategory.OPTIMIZER_STATE,
)
OVERHEAD_CATEGORIES = (MemoryCategory.WORKSPACE, MemoryCategory.CUDA_CONTEXT, MemoryCategory.ALLOCATOR)


@dataclass(frozen=True)
class MemoryProfile:
    peak_bytes: int                              # the process's whole footprint: tensors at peak + overheads
    by_category: Mapping[MemoryCategory, int]    # at the peak; sums to peak_bytes
    trace_peak_bytes: int                        # the trace's own tensor peak: no overheads, no rounding
    iteration1_peak_bytes: int                   # tensors only (rounded), first training step
    steady_state_peak_bytes: int                 # tensors only (rounded), optimizer state alive from the start
    timeline: tuple[tuple[int, int], ...]        # (op index, largest live tensor bytes during it); -1 = before
    peak_op_index: int
    peak_module: str
    peak_phase: Phase | None
    overheads: Overheads

    @property
    def required_bytes(self) -> int:
        """What must fit in ``GpuSpec.usable_memory_bytes``, which is already net of the CUDA context."""
        return self.peak_bytes - self.by_category[MemoryCategory.CUDA_CONTEXT]

    @property
    def tensor_peak_bytes(self) -> int:
        """Rounded tensor bytes at the peak (the figure torch.cuda.max_memory_allocated reports)."""
        return max(self.iteration1_peak_bytes, self.steady_state_peak_bytes)


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block if n > 0 else 0


def _replay(events, block: int, *, sizes=None, optimizer_state_upfront: int = 0):
    """Replay events in order. Returns (peak rounded bytes, raw bytes per category at the peak,
    peak op index, timeline {op index: largest rounded live bytes during it}).

    ``optimizer_state_upfront``: rounded bytes of optimizer state alive from the start (steady state);
    each optimizer-state allocation then only claims back what was already counted for it.
    ``sizes``: per-event byte counts replacing ``event.nbytes`` (the affine batch model uses it)."""
    opt = MemoryCategory.OPTIMIZER_STATE
    raw = {c: 0 for c in TRACE_CATEGORIES}
    raw[opt] = optimizer_state_upfront
    upfront_left = optimizer_state_upfront
    counted: dict[int, tuple[int, int]] = {}   # storage id -> (raw bytes, rounded bytes) still counted
    total = optimizer_state_upfront          # rounded live bytes
    peak, peak_raw, peak_op = total, dict(raw), -1
    timeline: dict[int, int] = {-1: total}
    for i, ev in enumerate(events):
        if ev.kind == "alloc":
            nbytes = ev.nbytes if sizes is None else sizes[i]
            rounded = _round_up(nbytes, block)
            if ev.category is opt and upfront_left:
                taken = min(rounded, upfront_left)
                upfront_left -= taken
                raw[opt] -= taken
                total -= taken
            counted[ev.storage_id] = (nbytes, rounded)
            raw[ev.category] += nbytes
            total += rounded
            if total > peak:
                peak, peak_raw, peak_op = total, dict(raw), ev.op_index
        else:
            nbytes, rounded = counted.pop(ev.storage_id, (0, 0))
            raw[ev.category] -= nbytes
            total -= rounded
        if total > timeline.get(ev.op_index, -1):
            timeline[ev.op_index] = total
    return peak, peak_raw, peak_op, timeline


def _state_bytes(events, block: int, sizes=None) -> int:
    opt = MemoryCategory.OPTIMIZER_STATE
    return sum(_round_up(ev.nbytes if sizes is None else sizes[i], block)
               for i, ev in enumerate(events) if ev.kind == "alloc" and ev.category is opt)


def uses_cudnn(result: AnalysisResult) -> bool:
    return any("convolution" in op.op for op in result.ops)


def workspace_bytes(overheads: Overheads, has_conv: bool) -> int:
    return overheads.cublas_workspace_bytes + (overheads.cudnn_workspace_bytes if has_conv else 0)


def required_bytes(events, overheads: Overheads, *, has_conv: bool, sizes=None) -> int:
    """simulate_memory(...).required_bytes without the breakdown or timeline: what the solvers compare
    with ``GpuSpec.usable_memory_bytes`` (the CUDA context is not included: usable memory is net of it)."""
    block = overheads.allocator_block_bytes
    peak = _replay(events, block, sizes=sizes)[0]
    state = _state_bytes(events, block, sizes)
    if state:
        peak = max(peak, _replay(events, block, sizes=sizes, optimizer_state_upfront=state)[0])
    return peak + int(peak * overheads.allocator_reserve_fraction) + workspace_bytes(overheads, has_conv)


def simulate_memory(result: AnalysisResult, overheads: Overheads = Overheads()) -> MemoryProfile:
    events = result.storage_events
    raw_peak = _replay(events, 1)[0]
    block = overheads.allocator_block_bytes
    peak1, live1, op1, timeline = _replay(events, block)
    state_bytes = _state_bytes(events, block)
    if state_bytes:
        peak_ss, live_ss, op_ss, _ = _replay(events, block, optimizer_state_upfront=state_bytes)
    else:
        peak_ss, live_ss, op_ss = peak1, live1, op1
    if peak_ss > peak1:
        tensor_peak, live_at_peak, peak_op = peak_ss, live_ss, op_ss
    else:
        tensor_peak, live_at_peak, peak_op = peak1, live1, op1

    by_category = {c: int(live_at_peak[c]) for c in TRACE_CATEGORIES}
    rounding = tensor_peak - sum(by_category.values())
    by_category[MemoryCategory.WORKSPACE] = workspace_bytes(overheads, uses_cudnn(result))
    by_category[MemoryCategory.CUDA_CONTEXT] = overheads.cuda_context_bytes
    by_category[MemoryCategory.ALLOCATOR] = rounding + int(tensor_peak * overheads.allocator_reserve_fraction)
    peak_bytes = sum(by_category.values())

    ops = result.ops
    peak_op_record = ops[peak_op] if 0 <= peak_op < len(ops) else None
    return MemoryProfile(
        peak_bytes=peak_bytes,
        by_category=frozen_map(by_category),
        trace_peak_bytes=raw_peak,
        iteration1_peak_bytes=peak1,
        steady_state_peak_bytes=peak_ss,
        timeline=tuple(sorted(timeline.items())),
        peak_op_index=peak_op,
        peak_module=peak_op_record.module_path if peak_op_record else "",
        peak_phase=peak_op_record.phase if peak_op_record else None,
        overheads=overheads,
    )

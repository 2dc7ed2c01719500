"""Peak-memory simulation from the trace's storage events, plus the per-GPU overheads.

The trace lists every storage allocation and free in program order. Replaying them gives the live
bytes after every event (the tensor peak, what ``torch.cuda.max_memory_allocated`` tracks); replaying
them through PyTorch's caching allocator (engine/allocator.py) gives its reserved segments (what
``max_memory_reserved`` reports, and what runs out). GPU overheads (CUDA context, library workspaces)
are added on top, never by the trace."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, NamedTuple

import numpy as np

from torchbudget.engine.allocator import AllocatorReplay, replay
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.results import AnalysisResult, MemoryCategory, OpKind, Phase, frozen_map

TRACE_CATEGORIES = (
    MemoryCategory.WEIGHTS, MemoryCategory.BUFFERS, MemoryCategory.INPUTS, MemoryCategory.KV_CACHE,
    MemoryCategory.ACTIVATIONS, MemoryCategory.TEMPORARIES, MemoryCategory.GRADIENTS, MemoryCategory.OPTIMIZER_STATE,
)
OVERHEAD_CATEGORIES = (MemoryCategory.WORKSPACE, MemoryCategory.CUDA_CONTEXT, MemoryCategory.COMMUNICATION,
                       MemoryCategory.ALLOCATOR)
ALLOCATOR_BLOCK_BYTES = 512   # the caching allocator's rounding (kMinBlockSize): the live tensor peaks' unit


@dataclass(frozen=True)
class MemoryProfile:
    peak_bytes: int                              # the process's whole footprint: reserved + workspaces + context
    by_category: Mapping[MemoryCategory, int]    # tensors at their peak + overheads; sums to peak_bytes
    trace_peak_bytes: int                        # the trace's own tensor peak: no overheads, no rounding
    iteration1_peak_bytes: int                   # tensors only (512-rounded), first training step
    steady_state_peak_bytes: int                 # tensors only (512-rounded), optimizer state alive from the start
    allocated_peak_bytes: int                    # allocator blocks at the peak (torch.cuda.max_memory_allocated)
    reserved_peak_bytes: int                     # allocator segments (torch.cuda.max_memory_reserved)
    timeline: tuple[tuple[int, int], ...]        # (op index, largest live tensor bytes during it); -1 = before
    peak_op_index: int
    peak_module: str
    peak_phase: Phase | None
    overheads: Overheads
    segments: int = 0                            # allocator segments at their most

    @property
    def required_bytes(self) -> int:
        """What must fit in ``GpuSpec.available_memory_bytes``: the whole footprint, CUDA context included
        (the device facts subtract nothing; every overhead is the planner's, in engine.overheads)."""
        return self.peak_bytes

    @property
    def tensor_peak_bytes(self) -> int:
        """512-rounded live tensor bytes at the peak."""
        return max(self.iteration1_peak_bytes, self.steady_state_peak_bytes)

    @property
    def fragmentation_bytes(self) -> int:
        """What the allocator's cache costs over the allocation peak (reserved - allocated)."""
        return self.reserved_peak_bytes - self.allocated_peak_bytes


class _Event(NamedTuple):
    kind: str
    storage_id: int
    nbytes: int = 0   # the replay always gets the sizes separately (from the trace or the affine model)


class _Events:
    """The storage events as arrays (built once per trace): kind, category, op index, and for each free
    the position of its allocation, so the replay is a cumulative sum. Also the two-step sequence the
    allocator replays for a training step (see ``allocator_sequence``)."""

    def __init__(self, events):
        self.events = events
        n = len(events)
        self.is_alloc = np.fromiter((e.kind == "alloc" for e in events), bool, n)
        self.category = np.fromiter((_CATEGORY_INDEX[e.category] for e in events), np.int64, n)
        self.op_index = np.fromiter((e.op_index for e in events), np.int64, n)
        self.nbytes = np.fromiter((e.nbytes for e in events), np.int64, n)
        position: dict[int, int] = {}
        alloc_of = np.full(n, -1, np.int64)
        for i, e in enumerate(events):
            if e.kind == "alloc":
                position[e.storage_id] = i
                alloc_of[i] = i
            else:
                alloc_of[i] = position.pop(e.storage_id, -1)
        self.alloc_of = alloc_of
        self.is_state_alloc = self.is_alloc & (self.category == _CATEGORY_INDEX[MemoryCategory.OPTIMIZER_STATE])
        self._sequence = None
        # the trace's own sizes replayed under one allocator config, capacity and device size: a deterministic
        # answer the solvers and the plan ask for again and again (fits, then the plan's profile)
        self.replays: dict[tuple, AllocatorReplay] = {}

    def deltas(self, sizes, block: int) -> np.ndarray:
        """+bytes at each allocation, -bytes (of its allocation) at each free; rounded up to ``block``."""
        sizes = self.nbytes if sizes is None else np.asarray(sizes, np.int64)
        sizes = np.maximum(sizes, 0)
        if block > 1:
            sizes = -(-sizes // block) * block
        freed = np.where(self.alloc_of >= 0, sizes[np.maximum(self.alloc_of, 0)], 0)
        return np.where(self.is_alloc, sizes, -freed)

    def allocator_sequence(self, training: bool) -> tuple[list[_Event], np.ndarray]:
        """(events, source index per event) the allocator replays. Inference: the trace as it is. Training:
        two steps, because the cache the first step leaves is there for the next: step 1 as traced, then
        ``zero_grad(set_to_none=True)`` frees the gradients, then step 2 — the same events with fresh storage
        ids, except that weights, buffers, the input batch and the optimizer state already exist."""
        if self._sequence is not None and self._sequence[0] == training:
            return self._sequence[1], self._sequence[2]
        events = self.events
        sequence = [_Event(e.kind, e.storage_id) for e in events]
        source = list(range(len(events)))
        if training:
            persistent = {_CATEGORY_INDEX[c] for c in (MemoryCategory.WEIGHTS, MemoryCategory.BUFFERS,
                                                      MemoryCategory.INPUTS, MemoryCategory.KV_CACHE,
                                                      MemoryCategory.OPTIMIZER_STATE)}
            gradient = _CATEGORY_INDEX[MemoryCategory.GRADIENTS]
            freed = {e.storage_id for e in events if e.kind == "free"}
            for i, e in enumerate(events):   # set_to_none: the gradients alive after step 1 go
                if e.kind == "alloc" and self.category[i] == gradient and e.storage_id not in freed:
                    sequence.append(_Event("free", e.storage_id))
                    source.append(i)
            offset = max((e.storage_id for e in events), default=0) + 1
            for i, e in enumerate(events):
                if self.category[i] not in persistent:
                    sequence.append(_Event(e.kind, e.storage_id + offset))
                    source.append(i)
        self._sequence = (training, sequence, np.asarray(source, np.int64))
        return sequence, self._sequence[2]


_CATEGORY_INDEX = {c: i for i, c in enumerate(TRACE_CATEGORIES)}
_cache: dict[int, _Events] = {}


def _events_of(events) -> _Events:
    cached = _cache.get(id(events))
    if cached is None or cached.events is not events:
        if len(_cache) > 64:
            _cache.clear()
        cached = _cache[id(events)] = _Events(events)
    return cached


def _peak(live: np.ndarray, start: int = 0) -> tuple[int, int]:
    """(largest live bytes, event position; -1 = before the first event)."""
    if len(live) == 0:
        return start, -1
    i = int(np.argmax(live))
    return (int(live[i]), i) if live[i] > start else (start, -1)


def _peaks(arrays: _Events, sizes, block: int):
    """Rounded live bytes after each event for iteration 1 and for the steady state (optimizer state
    alive from the start: its total is live up front and each state allocation just claims its share)."""
    rounded = arrays.deltas(sizes, block)
    live = np.cumsum(rounded)
    state_total = int(rounded[arrays.is_state_alloc].sum())
    steady = live + state_total - np.cumsum(np.where(arrays.is_state_alloc, rounded, 0)) if state_total else live
    return live, steady, state_total


def _has_training_events(arrays: _Events) -> bool:
    return bool(np.any(arrays.category == _CATEGORY_INDEX[MemoryCategory.GRADIENTS]))


def allocator_replay(events, overheads: Overheads, *, sizes=None, capacity_bytes: int | None = None,
                     device_total_bytes: int | None = None) -> AllocatorReplay | None:
    """The caching allocator over the trace (two steps for training); None without an allocator."""
    if overheads.allocator is None:
        return None
    arrays = _events_of(events)
    key = (overheads.allocator, capacity_bytes, device_total_bytes)
    if sizes is None and key in arrays.replays:
        return arrays.replays[key]
    sequence, source = arrays.allocator_sequence(_has_training_events(arrays))
    base = arrays.nbytes if sizes is None else np.asarray(sizes, np.int64)
    replayed = replay(sequence, sizes=np.maximum(base, 0)[source], capacity_bytes=capacity_bytes,
                      config=overheads.allocator, device_total_bytes=device_total_bytes, timelines=False)
    if sizes is None:
        arrays.replays[key] = replayed
    return replayed


def _block(overheads: Overheads) -> int:
    return 1 if overheads.allocator is None else ALLOCATOR_BLOCK_BYTES


def required_bytes(events, overheads: Overheads, *, has_conv: bool, sizes=None) -> int:
    """simulate_memory(...).required_bytes without the breakdown or timeline: what the solvers compare
    with ``GpuSpec.available_memory_bytes``."""
    return (_held_bytes(events, overheads, sizes) + workspace_bytes(overheads, has_conv) + overheads.cuda_context_bytes
            + overheads.communication_bytes(overheads.communicators))


def _held_bytes(events, overheads: Overheads, sizes) -> int:
    """Reserved peak (the allocator's segments), or the tensor peak without an allocator."""
    replayed = allocator_replay(events, overheads, sizes=sizes)
    if replayed is not None:
        return replayed.reserved_peak_bytes
    live, steady, state_total = _peaks(_events_of(events), sizes, _block(overheads))
    return max(_peak(live)[0], _peak(steady, state_total)[0])


def fits(events, overheads: Overheads, available_bytes: int, *, has_conv: bool, sizes=None) -> tuple[bool, bool]:
    """(fits, only_after_releasing_the_cache). The whole footprint fits the available memory; or it does
    not, but the allocator, given what is left once the context and workspaces are taken, serves every
    request by freeing its cache and retrying (as PyTorch does before raising out-of-memory)."""
    fixed = (workspace_bytes(overheads, has_conv) + overheads.cuda_context_bytes
             + overheads.communication_bytes(overheads.communicators))
    if _held_bytes(events, overheads, sizes) + fixed <= available_bytes:
        return True, False
    if overheads.allocator is None or available_bytes <= fixed:
        return False, False
    squeezed = allocator_replay(events, overheads, sizes=sizes, capacity_bytes=available_bytes - fixed,
                                device_total_bytes=available_bytes)
    return (not squeezed.oom), not squeezed.oom


def kv_cache_bytes(events) -> tuple[int, int]:
    """(KV cache before the step, KV cache when it ends) in storage bytes: the KV_CACHE storages allocated
    before the first op (a decode step's context), and those still alive after the last event (what the
    cache holds for the next step: a prefill's prompt, a decode step's context plus its new tokens)."""
    before = after = 0
    for e in events:
        if e.category is not MemoryCategory.KV_CACHE:
            continue
        sign = 1 if e.kind == "alloc" else -1
        after += sign * e.nbytes
        if e.kind == "alloc" and e.op_index < 0:
            before += e.nbytes
    return before, after


def uses_cudnn(result: AnalysisResult) -> bool:
    return any(op.kind is OpKind.CONV for op in result.ops)


def workspace_bytes(overheads: Overheads, has_conv: bool) -> int:
    return overheads.cublas_workspace_bytes + (overheads.cudnn_workspace_bytes if has_conv else 0)


def _raw_by_category(arrays: _Events, raw: np.ndarray, position: int) -> dict:
    totals = np.zeros(len(TRACE_CATEGORIES), np.int64)
    if position >= 0:
        np.add.at(totals, arrays.category[:position + 1], raw[:position + 1])
    return {c: int(totals[i]) for i, c in enumerate(TRACE_CATEGORIES)}


def _timeline(arrays: _Events, live: np.ndarray) -> tuple[tuple[int, int], ...]:
    if len(live) == 0:
        return ((-1, 0),)
    slots = arrays.op_index + 1
    largest = np.full(int(slots.max()) + 1, -1, np.int64)
    np.maximum.at(largest, slots, live)
    largest[0] = max(largest[0], 0)
    return tuple((i - 1, int(v)) for i, v in enumerate(largest.tolist()) if v >= 0)


def simulate_memory(result: AnalysisResult, overheads: Overheads = Overheads(), *, sizes=None) -> MemoryProfile:
    """The peak profile of ``result``. ``sizes``: per-event byte counts replacing ``event.nbytes``
    (the affine batch model's prediction for another batch size).

    The breakdown is taken at the tensor peak; ``allocator`` is what the caching allocator holds beyond
    those tensors (rounding, unsplit block remainders, cached segments), so the categories sum to the
    reserved peak plus workspaces and context."""
    arrays = _events_of(result.storage_events)
    raw = arrays.deltas(sizes, 1)
    trace_peak = _peak(np.cumsum(raw))[0]
    live, steady, state_total = _peaks(arrays, sizes, _block(overheads))
    peak1, at1 = _peak(live)
    peak_ss, at_ss = _peak(steady, state_total)
    steady_wins = peak_ss > peak1
    tensor_peak, position = (peak_ss, at_ss) if steady_wins else (peak1, at1)

    by_category = _raw_by_category(arrays, raw, position)
    if steady_wins:  # the state not yet allocated at the peak is alive already
        state_so_far = int(np.where(arrays.is_state_alloc, arrays.deltas(sizes, _block(overheads)),
                                    0)[:position + 1].sum()) if position >= 0 else 0
        by_category[MemoryCategory.OPTIMIZER_STATE] += state_total - state_so_far
    replayed = allocator_replay(result.storage_events, overheads, sizes=sizes)
    allocated = replayed.allocated_peak_bytes if replayed else tensor_peak
    reserved = replayed.reserved_peak_bytes if replayed else tensor_peak
    by_category[MemoryCategory.WORKSPACE] = workspace_bytes(overheads, uses_cudnn(result))
    by_category[MemoryCategory.CUDA_CONTEXT] = overheads.cuda_context_bytes
    by_category[MemoryCategory.COMMUNICATION] = overheads.communication_bytes(overheads.communicators)   # 0: one GPU
    by_category[MemoryCategory.ALLOCATOR] = max(reserved - sum(by_category[c] for c in TRACE_CATEGORIES), 0)

    peak_op = int(arrays.op_index[position]) if position >= 0 else -1
    ops = result.ops
    peak_op_record = ops[peak_op] if 0 <= peak_op < len(ops) else None
    return MemoryProfile(
        peak_bytes=sum(by_category.values()),
        by_category=frozen_map(by_category),
        trace_peak_bytes=trace_peak,
        iteration1_peak_bytes=peak1,
        steady_state_peak_bytes=peak_ss,
        allocated_peak_bytes=allocated,
        reserved_peak_bytes=reserved,
        timeline=_timeline(arrays, live),
        peak_op_index=peak_op,
        peak_module=peak_op_record.module_path if peak_op_record else "",
        peak_phase=peak_op_record.phase if peak_op_record else None,
        overheads=overheads,
        segments=replayed.segments_peak if replayed else 0,
    )

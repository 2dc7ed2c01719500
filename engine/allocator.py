"""A replay of PyTorch's CUDA caching allocator over the trace's storage events.

What OOMs on a GPU is the *reserved* memory of the caching allocator (whole cudaMalloc segments), not
the sum of live tensors. This module replays the allocator's rules, one device and one stream, over
a sequence of alloc/free events and reports what ``torch.cuda.max_memory_allocated`` and
``torch.cuda.max_memory_reserved`` would say, and whether a device of a given capacity runs out.

The rules follow ``c10/cuda/CUDACachingAllocator.cpp`` and ``c10/core/AllocatorConfig.{h,cpp}`` of
pytorch/pytorch (read at commit b944315b93d36f842ef94d67a041371993234a74, checked against the
torch 2.14.1 headers and binary); docs/allocator.md lists every rule with its C++ symbol and what is
not modelled. Pure Python (+ numpy for the rounding and the timelines); no torch import.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

MIB = 2**20

# Constants of c10/core/AllocatorConfig.h (CUDACachingAllocator.cpp before 2.9).
K_MIN_BLOCK_SIZE = 512            # kMinBlockSize: every request is rounded to a multiple of this
K_SMALL_SIZE = 1 * MIB            # kSmallSize: largest request served by the small pool
K_SMALL_BUFFER = 2 * MIB          # kSmallBuffer: small-pool segment (and expandable page) size
K_MIN_LARGE_ALLOC = 10 * MIB      # kMinLargeAlloc: requests below this share large_segment_size segments
K_ROUND_LARGE = 2 * MIB           # kRoundLarge: larger requests get a segment rounded up to this
K_LARGE_BUFFER = 20 * MIB         # kLargeBuffer: default large_segment_size (and max_non_split_rounding)

# roundup_power2_divisions covers 16 power-of-two intervals from 1 MiB to 64 GiB (AllocatorConfig.cpp:
# kRoundUpPowerOfTwoIntervals, kRoundUpPowerOfTwoStart); sizes outside are clamped to the ends.
_ROUNDUP_INTERVALS = 16
_ROUNDUP_START_LOG2 = 20

# Free blocks live in a sorted list of int keys (size << _SH | address): the C++ std::set ordered by
# BlockComparatorSize (stream, size, ptr); one stream here, so (size, address). Synthetic addresses
# stay below 2**_SH (1 PiB of virtual address space).
_SH = 50
_MASK = (1 << _SH) - 1
_VA_ALIGN = 2 * MIB
_DEFAULT_TOTAL_MEMORY = 1 << 42   # device size assumed for expandable segments' address space if none is given


# --------------------------------------------------------------------------------------------- config

_BOOL_IGNORED = ("pinned_use_background_threads", "release_lock_on_cudamalloc", "release_lock_on_hipmalloc",
                 "pinned_use_cuda_host_register", "pinned_use_hip_host_register",
                 "graph_capture_record_stream_reuse", "pinned_free_catch_all", "throw_on_cudamalloc_oom")
_INT_IGNORED = ("pinned_max_round_threshold_mb", "pinned_max_cached_size_mb", "pinned_reserve_segment_size_mb",
                "pinned_num_register_threads")
_MODELLED = ("expandable_segments", "max_split_size_mb", "max_non_split_rounding_mb", "large_segment_size_mb",
             "roundup_power2_divisions", "garbage_collection_threshold", "per_process_memory_fraction", "backend")
#: Every key torch 2.14.1 accepts in PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF.
SUPPORTED_KEYS = _MODELLED + _BOOL_IGNORED + _INT_IGNORED
#: Keys accepted (and checked) but with no effect on the replay: pinned host memory, locking, graphs.
IGNORED_KEYS = _BOOL_IGNORED + _INT_IGNORED


def _is_pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


@dataclass(frozen=True)
class AllocatorConfig:
    """The allocator settings that change the replay (``PYTORCH_CUDA_ALLOC_CONF``).

    ``max_non_split_rounding_bytes`` None means torch's default, ``large_segment_size_bytes``.
    ``roundup_power2_divisions``: () for none, an int for every interval, or 16 per-interval values
    (1 MiB, 2 MiB, ... 32 GiB and above; 0 or 1 = no power-of-two rounding there).
    ``per_process_memory_fraction`` (< 1) caps the allocator at that share of the device's total memory
    (replay's ``device_total_bytes``), as ``torch.cuda.set_per_process_memory_fraction``; it is also what enables
    ``garbage_collection_threshold``, as in the C++ (no fraction, no garbage collection)."""

    expandable_segments: bool = False
    max_split_size_bytes: int | None = None
    max_non_split_rounding_bytes: int | None = None
    large_segment_size_bytes: int = K_LARGE_BUFFER
    roundup_power2_divisions: tuple[int, ...] | int = ()
    garbage_collection_threshold: float = 0.0
    per_process_memory_fraction: float = 1.0
    ignored_keys: tuple[str, ...] = ()   # keys from_env_string accepted without modelling them

    def __post_init__(self):
        divisions = self.roundup_power2_divisions
        if isinstance(divisions, int):
            divisions = (divisions,) * _ROUNDUP_INTERVALS if divisions else ()
        divisions = tuple(int(d) for d in divisions)
        if divisions and len(divisions) != _ROUNDUP_INTERVALS:
            raise ValueError(f"roundup_power2_divisions needs {_ROUNDUP_INTERVALS} values, got {len(divisions)}")
        if any(d != 0 and not _is_pow2(d) for d in divisions):
            raise ValueError(f"roundup_power2_divisions must be 0 or powers of 2, got {divisions}")
        object.__setattr__(self, "roundup_power2_divisions", divisions if any(d > 1 for d in divisions) else ())
        if self.large_segment_size_bytes <= K_MIN_LARGE_ALLOC:
            raise ValueError(f"large_segment_size_bytes must be > {K_MIN_LARGE_ALLOC} (10 MiB), "
                             f"got {self.large_segment_size_bytes}")
        floor = self.large_segment_size_bytes // MIB * MIB   # the C++ compares whole MiB
        for name in ("max_split_size_bytes", "max_non_split_rounding_bytes"):
            value = getattr(self, name)
            if value is not None and value < floor:
                raise ValueError(f"{name} must be >= large_segment_size ({floor // MIB} MiB), got {value}")
        if not 0.0 <= self.garbage_collection_threshold < 1.0:
            raise ValueError(f"garbage_collection_threshold must be in (0, 1), "
                             f"got {self.garbage_collection_threshold}")
        if not 0.0 <= self.per_process_memory_fraction <= 1.0:
            raise ValueError(f"per_process_memory_fraction must be in [0, 1], "
                             f"got {self.per_process_memory_fraction}")

    @property
    def non_split_rounding_bytes(self) -> int:
        """max_non_split_rounding_size: an oversize block may serve a request this much smaller."""
        if self.max_non_split_rounding_bytes is None:
            return self.large_segment_size_bytes
        return self.max_non_split_rounding_bytes

    @classmethod
    def from_env_string(cls, env: str) -> "AllocatorConfig":
        """Parse ``PYTORCH_CUDA_ALLOC_CONF`` syntax, e.g. "expandable_segments:True,max_split_size_mb:128".

        Accepts what torch 2.14.1 accepts (keys, order, whitespace, trailing comma, ``[a:b,>:c]`` lists),
        except malformed numbers torch's stoull/stod would read a prefix of ("64abc", "-5"): those raise
        here. Raises a one-line ValueError naming the bad key or value. ``backend:cudaMallocAsync`` (a
        different allocator) is refused as not modelled."""
        tokens = _tokenize(env)
        values: dict = {}
        ignored: list[str] = []
        i = 0
        while i < len(tokens):
            key = tokens[i]
            if key not in SUPPORTED_KEYS:
                raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: unknown key {key!r}")
            if i + 1 >= len(tokens) or tokens[i + 1] != ":":
                raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: expected ':' and a value after {key!r}")
            i += 2
            if key == "roundup_power2_divisions":
                i, values[key] = _parse_divisions(tokens, i)
            else:
                raw = _value(tokens, i, key)
                values[key] = _parse_scalar(key, raw)
                if key in IGNORED_KEYS and key not in ignored:
                    ignored.append(key)
            i += 1
            if i < len(tokens):
                if tokens[i] != ",":
                    raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: expected ',' after {key!r}, got {tokens[i]!r}")
                i += 1
        return cls._from_values(values, tuple(ignored))

    @classmethod
    def _from_values(cls, values: dict, ignored: tuple[str, ...]) -> "AllocatorConfig":
        large = values.get("large_segment_size_mb", K_LARGE_BUFFER // MIB) * MIB
        kwargs = {"large_segment_size_bytes": large, "ignored_keys": ignored}
        # torch 2.14 checks both against large_segment_size whatever the order (it parses that key first)
        for key, name in (("max_split_size_mb", "max_split_size_bytes"),
                          ("max_non_split_rounding_mb", "max_non_split_rounding_bytes")):
            if key in values:
                if values[key] < large // MIB:
                    raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key}:{values[key]} is too small, "
                                     f"must be >= {large // MIB} (large_segment_size_mb)")
                kwargs[name] = values[key] * MIB
        for key in ("expandable_segments", "garbage_collection_threshold", "per_process_memory_fraction",
                    "roundup_power2_divisions"):
            if key in values:
                kwargs[key] = values[key]
        return cls(**kwargs)

    def divisions_for(self, size: int) -> int:
        """AcceleratorAllocatorConfig::roundup_power2_divisions(size)."""
        if not self.roundup_power2_divisions:
            return 0
        index = min(max(size.bit_length() - 1 - _ROUNDUP_START_LOG2, 0), _ROUNDUP_INTERVALS - 1)
        return self.roundup_power2_divisions[index]


def _tokenize(env: str) -> list[str]:
    """ConfigTokenizer: ',', ':', '[' and ']' are tokens of their own; whitespace is dropped."""
    tokens, buf = [], []
    for ch in env:
        if ch in ",:[]":
            if buf:
                tokens.append("".join(buf))
                buf = []
            tokens.append(ch)
        elif not ch.isspace():
            buf.append(ch)
    if buf:
        tokens.append("".join(buf))
    return tokens


def _value(tokens: list[str], i: int, key: str) -> str:
    if i >= len(tokens) or tokens[i] in ",:[]":
        raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: missing value for {key!r}")
    return tokens[i]


def _int(key: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or int(raw) >= 2**64:
        raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key} needs a non-negative integer, got {raw!r}")
    return int(raw)


def _parse_scalar(key: str, raw: str):
    if key == "expandable_segments" or key in _BOOL_IGNORED:
        if raw not in ("True", "False"):   # case-sensitive, as ConfigTokenizer::toBool
            raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key} must be True or False, got {raw!r}")
        return raw == "True"
    if key == "backend":
        if raw == "native":
            return raw
        if raw == "cudaMallocAsync":
            raise ValueError("PYTORCH_CUDA_ALLOC_CONF: backend:cudaMallocAsync is not modelled (native only)")
        raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: unknown backend {raw!r} (native or cudaMallocAsync)")
    if key in ("garbage_collection_threshold", "per_process_memory_fraction"):
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key} needs a number, got {raw!r}") from None
        if key == "garbage_collection_threshold" and not 0.0 < value < 1.0:
            raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: garbage_collection_threshold:{raw} must be in (0.0, 1.0)")
        if key == "per_process_memory_fraction" and not 0.0 <= value <= 1.0:
            raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: per_process_memory_fraction:{raw} must be in [0.0, 1.0]")
        return value
    value = _int(key, raw)
    if key == "large_segment_size_mb" and value <= K_MIN_LARGE_ALLOC // MIB:
        raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: large_segment_size_mb:{raw} must be > 10")
    if key == "pinned_num_register_threads" and (not _is_pow2(value) or value > 128):
        raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: pinned_num_register_threads:{raw} must be a power of 2 <= 128")
    return value


def _parse_divisions(tokens: list[str], i: int) -> tuple[int, tuple[int, ...]]:
    """parseRoundUpPower2Divisions: "4" (every interval) or "[64:8,256:4,>:1]" (boundaries in MiB).
    Returns the index of the last token read and the 16 per-interval values."""
    key = "roundup_power2_divisions"
    raw = _value(tokens, i, key) if i >= len(tokens) or tokens[i] != "[" else "["
    if raw != "[":
        value = _int(key, raw)
        if not _is_pow2(value):
            raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key}:{raw} must be a power of 2")
        return i, (value,) * _ROUNDUP_INTERVALS
    out = [0] * _ROUNDUP_INTERVALS
    first, last_index = True, 0
    i += 1
    while i < len(tokens) and tokens[i] != "]":
        boundary = tokens[i]
        if i + 2 >= len(tokens) or tokens[i + 1] != ":":
            raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key} expects [size_mb:divisions,...], got {boundary!r}")
        value = _int(key, tokens[i + 2])
        if value != 0 and not _is_pow2(value):
            raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key} divisions must be 0 or a power of 2, got {value}")
        if boundary == ">":
            out[last_index + 1:] = [value] * (_ROUNDUP_INTERVALS - last_index - 1)
        else:
            size_mb = _int(key, boundary)
            if not _is_pow2(size_mb):
                raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key} interval {boundary!r} must be a power of 2")
            index = min(size_mb.bit_length() - 1, _ROUNDUP_INTERVALS - 1)
            if first:
                out[:index] = [value] * index
                first = False
            out[index] = value
            last_index = index
        i += 3
        if i < len(tokens) and tokens[i] == ",":
            i += 1
        elif i < len(tokens) and tokens[i] != "]":
            raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key} expects ',' or ']', got {tokens[i]!r}")
    if i >= len(tokens):
        raise ValueError(f"PYTORCH_CUDA_ALLOC_CONF: {key} list has no closing ']'")
    return i, tuple(out)


# ---------------------------------------------------------------------------------------- size rules

def roundup_power2_next_division(size: int, divisions: int) -> int:
    """DeviceCachingAllocator::roundup_power2_next_division: the next of ``divisions`` equal steps
    between the powers of two around ``size``."""
    if _is_pow2(size):
        return size
    floor = 1 << (size.bit_length() - 1)
    step = floor >> (divisions.bit_length() - 1)
    if step == 0:
        return floor << 1
    rounded = size & ~(step - 1)
    return size if rounded == size else rounded + step


def round_size(size: int, config: AllocatorConfig | None = None) -> int:
    """DeviceCachingAllocator::round_size: at least kMinBlockSize, then a multiple of it (or the next
    power-of-two division when roundup_power2_divisions applies to this size)."""
    if size < K_MIN_BLOCK_SIZE:
        return K_MIN_BLOCK_SIZE
    divisions = config.divisions_for(size) if config is not None else 0
    if divisions > 1 and size > K_MIN_BLOCK_SIZE * divisions:
        return roundup_power2_next_division(size, divisions)
    return -(-size // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE


def allocation_size(size: int, config: AllocatorConfig | None = None) -> int:
    """get_allocation_size: the cudaMalloc size for a rounded request that no cached block serves."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return config.large_segment_size_bytes if config is not None else K_LARGE_BUFFER
    return -(-size // K_ROUND_LARGE) * K_ROUND_LARGE


# ---------------------------------------------------------------------------------------- the replay

@dataclass(frozen=True)
class AllocatorReplay:
    """What the caching allocator would report after the events (from ``measure_from`` on).

    allocated_peak_bytes   max of the sum of *block* sizes of live allocations: torch.cuda.max_memory_allocated.
                           A block can exceed its rounded request when the remainder was too small to split.
    reserved_peak_bytes    max of the bytes held from the driver (segments, or mapped pages with expandable
                           segments): torch.cuda.max_memory_reserved. This is what must fit on the device.
    rounded_peak_bytes     max of the sum of round_size(request) of live allocations: the 512-rounded peak.
    fragmentation_bytes    reserved_peak_bytes - allocated_peak_bytes: what the cache costs over the allocation peak.
    segments_peak          max number of live segments (cudaMalloc'd, or expandable segments).
    cuda_malloc_calls      cudaMalloc calls, plus page mappings with expandable segments (stats num_device_alloc).
    cuda_free_calls        cudaFree calls and page unmappings (num_device_free): cache releases before an OOM.
    alloc_retries          allocations that needed the whole cache released first (num_alloc_retries).
    oom / oom_at_event     True and the event index when even a released cache could not serve a request;
                           the replay stops there (later timeline entries repeat the state at the OOM).
    final_allocated_bytes / final_reserved_bytes   the state after the last event replayed.
    reserved_timeline / allocated_timeline   bytes after each event (int64, len(events)); None if not asked for.
    """

    allocated_peak_bytes: int
    reserved_peak_bytes: int
    rounded_peak_bytes: int
    fragmentation_bytes: int
    segments_peak: int
    cuda_malloc_calls: int
    cuda_free_calls: int
    alloc_retries: int
    oom: bool
    oom_at_event: int | None
    final_allocated_bytes: int
    final_reserved_bytes: int
    config: AllocatorConfig
    reserved_timeline: np.ndarray | None = field(default=None, compare=False, repr=False)
    allocated_timeline: np.ndarray | None = field(default=None, compare=False, repr=False)


def replay(events: Sequence, *, sizes=None, capacity_bytes: int | None = None,
           config: AllocatorConfig = AllocatorConfig(), measure_from: int = 0,
           device_total_bytes: int | None = None, timelines: bool = True) -> AllocatorReplay:
    """Replay ``events`` (objects with ``.kind`` "alloc"/"free", ``.storage_id``, ``.nbytes``, in order).

    sizes           per-event byte counts replacing ``event.nbytes`` (only allocations' entries are read:
                    a free releases whatever its allocation got), e.g. the affine model's other batch size.
    capacity_bytes  what the allocator can obtain from the driver; a new segment that would take the
                    reserved bytes past it fails, and the cache is released and retried before an OOM.
                    None: unlimited.
    device_total_bytes  the device's total memory (cudaDeviceProp.totalGlobalMem), default capacity_bytes:
                    per_process_memory_fraction is a share of it, and each expandable segment reserves 9/8 of
                    it as address space (which decides when a new expandable segment is started).
    measure_from    peaks and counters start at this event, as torch.cuda.reset_peak_memory_stats() there;
                    earlier events only build the state (e.g. a prefix allocating weights and optimizer state,
                    or a whole first iteration before a steady-state step).
    A free of an unknown (or already freed) storage is ignored; a 0-byte allocation allocates nothing.
    """
    compiled = _compile(events)
    n = len(compiled.code)
    if not 0 <= measure_from <= n:
        raise ValueError(f"measure_from must be in [0, {n}], got {measure_from}")
    raw = compiled.nbytes if sizes is None else np.asarray(sizes, dtype=np.int64)
    if raw.shape != (n,):
        raise ValueError(f"sizes must have one entry per event ({n}), got shape {raw.shape}")
    rounded = _round_sizes(raw, config)
    sim = _Simulator(compiled.code, rounded.tolist(), capacity_bytes, config,
                     capacity_bytes if device_total_bytes is None else device_total_bytes)
    stop = sim.run(0, measure_from)
    if stop is None:
        sim.reset_peaks()
        stop = sim.run(measure_from, n)
    return sim.result(compiled, rounded, measure_from, stop, timelines)


class _Compiled:
    """The event sequence as flat lists, built once per trace: code[i] is -1 for an allocation, the
    index of the matching allocation for a free, -2 for a free of nothing known."""

    __slots__ = ("events", "code", "nbytes", "is_alloc", "alloc_of")

    def __init__(self, events):
        self.events = events
        n = len(events)
        code = [-1] * n
        nbytes = np.zeros(n, np.int64)
        position: dict = {}
        for i, e in enumerate(events):
            if e.kind == "alloc":
                position[e.storage_id] = i
                nbytes[i] = e.nbytes
            elif e.kind == "free":
                code[i] = position.pop(e.storage_id, -2)
            else:
                raise ValueError(f"event {i}: kind must be 'alloc' or 'free', got {e.kind!r}")
        self.code = code
        self.nbytes = nbytes
        c = np.asarray(code, np.int64)
        self.is_alloc = c == -1
        self.alloc_of = c


_compiled_cache: dict[int, _Compiled] = {}


def _compile(events) -> _Compiled:
    cached = _compiled_cache.get(id(events))
    if cached is None or cached.events is not events:
        if len(_compiled_cache) > 64:
            _compiled_cache.clear()
        cached = _compiled_cache[id(events)] = _Compiled(events)
    return cached


def _round_sizes(raw: np.ndarray, config: AllocatorConfig) -> np.ndarray:
    """round_size of every request; 0 stays 0 (NativeCachingAllocator::allocate skips a 0-byte request)."""
    raw = np.maximum(raw, 0)
    if config.roundup_power2_divisions:
        return np.fromiter((round_size(s, config) if s else 0 for s in raw.tolist()), np.int64, len(raw))
    return np.where(raw > 0, np.maximum(-(-raw // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE, K_MIN_BLOCK_SIZE), 0)


class _Block:
    """A Block of the C++: a piece of a segment, allocated, cached (free) or, with expandable
    segments, unmapped address space. prev/next link the pieces of one segment in address order."""

    __slots__ = ("size", "addr", "pool", "seg", "prev", "next", "allocated", "mapped", "gcb")

    def __init__(self, size, addr, pool, seg=None, mapped=True):
        self.size = size
        self.addr = addr
        self.pool = pool
        self.seg = seg          # the _ExpandableSegment, None for a cudaMalloc segment
        self.prev = None
        self.next = None
        self.allocated = False
        self.mapped = mapped
        self.gcb = 0            # gc_count_base: the pool's get_free_block count when cached


class _Pool:
    """BlockPool: the cached blocks of one size class (``keys`` + ``free``: the C++ ``blocks`` set) and,
    with expandable segments, the unmapped address ranges (``unmapped``, by address)."""

    __slots__ = ("small", "keys", "free", "unmapped", "calls")

    def __init__(self, small):
        self.small = small
        self.keys: list[int] = []
        self.free: dict[int, _Block] = {}
        self.unmapped: dict[int, _Block] = {}
        self.calls = 0          # get_free_blocks_call_count (only counted when garbage collection is on)


class _ExpandableSegment:
    __slots__ = ("base", "page", "size")

    def __init__(self, base, page, size):
        self.base, self.page, self.size = base, page, size


def _splice(block, before, after):
    """Block::splice: put ``block`` between ``before`` and ``after``."""
    if before is not None:
        before.next = block
    block.prev = before
    if after is not None:
        after.prev = block
    block.next = after


def _expandable_size(b):
    """How far a cached block could grow: its size plus the unmapped range right after it."""
    nxt = b.next
    return b.size + (nxt.size if nxt is not None and not nxt.mapped else 0)


class _Simulator:
    def __init__(self, code, rounded, capacity, config: AllocatorConfig, total_memory):
        n = len(code)
        self.code = code
        self.rounded = rounded
        self.live: list = [None] * n       # the block each allocation event got
        self.delta = [0] * n               # +block size at its allocation, -block size at its free
        self.capacity = capacity
        self.config = config
        self.small = _Pool(True)
        self.large = _Pool(False)
        self.max_split = config.max_split_size_bytes
        self.non_split_rounding = config.non_split_rounding_bytes
        self.large_segment = config.large_segment_size_bytes
        self.expandable = config.expandable_segments
        fraction = config.per_process_memory_fraction
        # allowed_memory_maximum: set only by a fraction < 1 (setMemoryFraction), of the device's memory
        self.allowed = int(fraction * total_memory) if total_memory is not None and fraction < 1.0 else None
        self.gc_on = self.allowed is not None and config.garbage_collection_threshold > 0.0
        self.total_memory = total_memory if total_memory is not None else _DEFAULT_TOTAL_MEMORY
        self.reserved = 0                  # total_allocated_memory / stats.reserved_bytes
        self.segments = 0
        self.next_va = _VA_ALIGN           # synthetic addresses: each new segment above the last
        self.changes: list[tuple[int, int]] = []   # (event, reserved after it) whenever reserved moves
        self.event = 0
        self.oom_at: int | None = None
        self.reset_peaks()

    def reset_peaks(self):
        self.reserved_peak = self.reserved
        self.segments_peak = self.segments
        self.mallocs = self.frees = self.retries = 0

    # -- the hot loop: DeviceCachingAllocator::malloc and ::free ------------------------------------

    def run(self, lo: int, hi: int) -> int | None:
        """Replay events [lo, hi); returns the OOM event's index, or None."""
        code, rounded, live, delta = self.code, self.rounded, self.live, self.delta
        small, large = self.small, self.large
        max_split, non_split = self.max_split, self.non_split_rounding
        expandable, gc_on = self.expandable, self.gc_on
        SH, MASK, bisect, ins, Block = _SH, _MASK, bisect_left, insort, _Block
        SMALL, MIN_BLOCK = K_SMALL_SIZE, K_MIN_BLOCK_SIZE
        for i, c, size in zip(range(lo, hi), code[lo:hi], rounded[lo:hi]):
            if c == -1:
                if not size:
                    continue
                is_small = size <= SMALL
                pool = small if is_small else large    # get_pool
                keys, free = pool.keys, pool.free
                if gc_on:
                    pool.calls += 1
                b = None
                if expandable:
                    b = self._get_free_block_expandable(pool, size)
                else:
                    # get_free_block: the smallest cached block >= size (lower_bound), lowest address on ties
                    j = bisect(keys, size << SH)
                    if j < len(keys):
                        key = keys[j]
                        # oversize blocks (>= max_split_size) serve only requests >= max_split_size, and only
                        # when the block is less than max_non_split_rounding_size bigger than the request
                        if max_split is None or (
                                (key >> SH) < max_split if size < max_split else (key >> SH) < size + non_split):
                            del keys[j]
                            b = free.pop(key & MASK)
                if b is None:
                    self.event = i
                    b = self._malloc_slow(pool, size)
                    if b is None:
                        self.oom_at = i
                        return i
                # should_split: small pool (or expandable) when >= kMinBlockSize remains; large pool when
                # more than kSmallSize remains and the request is below max_split_size
                remaining = b.size - size
                if (remaining >= MIN_BLOCK if is_small or expandable else
                        remaining > SMALL and (max_split is None or size < max_split)):
                    # alloc_found_block: a new block takes the front, the rest goes back to the pool
                    front = Block(size, b.addr, pool, b.seg)
                    p = b.prev
                    front.prev = p
                    if p is not None:
                        p.next = front
                    front.next = b
                    b.prev = front
                    b.addr += size
                    b.size = remaining
                    ins(keys, remaining << SH | b.addr)
                    free[b.addr] = b
                    b.gcb = pool.calls
                    b = front
                b.allocated = True
                live[i] = b
                delta[i] = b.size
            elif c >= 0:
                b = live[c]
                if b is None:
                    continue
                live[c] = None
                size = b.size
                delta[i] = -size
                b.allocated = False
                # free_block: merge with free neighbours of the same segment (try_merge_blocks; with
                # expandable segments only mapped with mapped), then cache the block
                pool = b.pool
                keys, free = pool.keys, pool.free
                p = b.prev
                if p is not None and not p.allocated and p.mapped:
                    del keys[bisect(keys, p.size << SH | p.addr)]
                    del free[p.addr]
                    b.addr = p.addr
                    size += p.size
                    pp = p.prev
                    b.prev = pp
                    if pp is not None:
                        pp.next = b
                nx = b.next
                if nx is not None and not nx.allocated and nx.mapped:
                    del keys[bisect(keys, nx.size << SH | nx.addr)]
                    del free[nx.addr]
                    size += nx.size
                    nn = nx.next
                    b.next = nn
                    if nn is not None:
                        nn.prev = b
                b.size = size
                ins(keys, size << SH | b.addr)
                free[b.addr] = b
                b.gcb = pool.calls
        return None

    # -- pool bookkeeping ----------------------------------------------------------------------------

    def _cache(self, b):
        """insert_into_blocks"""
        pool = b.pool
        insort(pool.keys, b.size << _SH | b.addr)
        pool.free[b.addr] = b
        b.gcb = pool.calls

    def _uncache(self, b):
        """pool.blocks.erase (the key must be taken before size or address change)"""
        pool = b.pool
        keys = pool.keys
        del keys[bisect_left(keys, b.size << _SH | b.addr)]
        del pool.free[b.addr]

    def _reserve(self, nbytes):
        self.reserved += nbytes
        if self.reserved > self.reserved_peak:
            self.reserved_peak = self.reserved
        self.changes.append((self.event, self.reserved))

    def _unreserve(self, nbytes):
        self.reserved -= nbytes
        self.frees += 1
        self.changes.append((self.event, self.reserved))

    def _new_segment(self, count=1):
        self.segments += count
        if self.segments > self.segments_peak:
            self.segments_peak = self.segments

    def _take_va(self, size):
        addr = self.next_va
        self.next_va += -(-size // _VA_ALIGN) * _VA_ALIGN
        if self.next_va > _MASK:
            raise OverflowError("the replay ran out of its 1 PiB of synthetic address space")
        return addr

    # -- DeviceCachingAllocator::malloc after get_free_block failed -----------------------------------

    def _malloc_slow(self, pool, size):
        alloc_size = allocation_size(size, self.config)
        if self.gc_on:
            self._garbage_collect_cached_blocks()
        b = self._alloc_block(pool, size, alloc_size, False)
        if b is None and self._release_available_cached_blocks(pool, size):
            b = self._alloc_block(pool, size, alloc_size, False)
        if b is None:
            self._release_cached_blocks()
            b = self._alloc_block(pool, size, alloc_size, True)
        return b

    def _alloc_block(self, pool, size, alloc_size, is_retry):
        """alloc_block: a new segment of alloc_size (cudaMalloc), or more mapped pages; None if it fails."""
        if is_retry:
            self.retries += 1
        if self.allowed is not None and self.reserved + alloc_size > self.allowed:
            return None
        if self.expandable:
            return self._try_allocate_expandable_block(pool, size)
        if self.capacity is not None and self.reserved + alloc_size > self.capacity:
            return None   # cudaMalloc: out of memory
        b = _Block(alloc_size, self._take_va(alloc_size), pool)
        self.mallocs += 1
        self._new_segment()
        self._reserve(alloc_size)
        return b

    def _release_block(self, b):
        """release_block: cudaFree a whole cached segment."""
        assert b.seg is None and b.prev is None and b.next is None, "only whole segments are released"
        self._uncache(b)
        self.segments -= 1
        self._unreserve(b.size)

    def _release_available_cached_blocks(self, pool, size):
        """release_available_cached_blocks: with max_split_size set, free the smallest oversize cached
        block that is at least max(size, max_split_size), or else oversize blocks from the largest down
        until that much is released."""
        max_split = self.max_split
        if max_split is None:
            return False
        keys, free = pool.keys, pool.free
        target = max(size, max_split)
        j = bisect_left(keys, target << _SH)
        if j < len(keys) and free[keys[j] & _MASK].seg is None:
            self._release_block(free[keys[j] & _MASK])
            return True
        if j == 0:
            return False
        released = 0
        j -= 1
        while released < target and (keys[j] >> _SH) >= max_split:
            cur = free[keys[j] & _MASK]
            first = j == 0
            if not first:
                j -= 1
            if cur.seg is None:
                released += cur.size
                self._release_block(cur)   # removes keys[j + 1]: indices below stay valid
            if first:
                break
        return released >= target

    def _release_cached_blocks(self):
        """release_cached_blocks (emptyCache): every whole cached segment, every free mapped page."""
        self._release_blocks(self.large)
        self._release_blocks(self.small)

    def _release_blocks(self, pool):
        to_unmap = []
        for key in list(pool.keys):
            b = pool.free[key & _MASK]
            if b.seg is not None:
                to_unmap.append(b)
            elif b.prev is None and b.next is None:
                self._release_block(b)
        for b in to_unmap:
            self._unmap_block(b)
            if b.prev is None and b.next is None:   # release_expandable_segment
                del pool.unmapped[b.addr]
                self.segments -= 1

    def _garbage_collect_cached_blocks(self):
        """garbage_collect_cached_blocks: above threshold x allowed memory, free whole large-pool segments
        cached for at least the average number of get_free_block calls, oldest first, until enough."""
        threshold = int(self.config.garbage_collection_threshold * self.allowed)
        if self.reserved <= threshold:
            return
        target = self.reserved - threshold
        large = self.large
        ages = [(large.calls - b.gcb) for b in large.free.values() if b.prev is None and b.next is None]
        total_age, count = sum(ages), len(ages)
        reclaimed, freed = 0, True
        while reclaimed < target and freed and count > 0:
            age_threshold = total_age / count
            freed = False
            for key in list(large.keys):
                b = large.free.get(key & _MASK)
                if b is None or b.prev is not None or b.next is not None or b.seg is not None:
                    continue
                age = large.calls - b.gcb
                if age >= age_threshold:
                    freed = True
                    reclaimed += b.size
                    total_age -= age
                    count -= 1
                    self._release_block(b)

    # -- expandable segments -------------------------------------------------------------------------

    def _get_free_block_expandable(self, pool, size):
        """get_free_block with expandable segments: the block at the end of a segment counts as big as
        it could grow, so a later block that could grow less is preferred."""
        keys, free = pool.keys, pool.free
        n = len(keys)
        j = bisect_left(keys, size << _SH)
        if j == n:
            return None
        b = free[keys[j] & _MASK]
        while j + 1 < n:
            nb = free[keys[j + 1] & _MASK]
            if _expandable_size(nb) >= _expandable_size(b):
                break
            j += 1
            b = nb
        max_split = self.max_split
        if max_split is not None and (b.size >= max_split if size < max_split
                                      else b.size >= size + self.non_split_rounding):
            return None
        del keys[j]
        del free[b.addr]
        return b

    def _find_expandable_block(self, pool, size):
        """find_expandable_block: the lowest address where free and unmapped blocks together give size
        bytes, or a new segment whose whole address space (9/8 of the device) is unmapped."""
        for addr in sorted(pool.unmapped):
            c = pool.unmapped[addr]
            if c.prev is not None and not c.prev.allocated:
                c = c.prev
            room, b = 0, c
            while room < size and b is not None and not b.allocated:
                room += b.size
                b = b.next
            if room >= size:
                return c
        page = K_SMALL_BUFFER if pool.small else self.large_segment
        total = self.total_memory
        span = -(-(total + total // 8) // page) * page
        seg = _ExpandableSegment(self._take_va(span), page, span)
        c = _Block(span, seg.base, pool, seg, mapped=False)
        pool.unmapped[c.addr] = c
        self._new_segment()
        return c

    def _map_block(self, to_map, size):
        """map_block: map whole pages from the start of an unmapped block (cuMemCreate + cuMemMap)."""
        page = to_map.seg.page
        mapped = -(-size // page) * page
        if self.capacity is not None and self.reserved + mapped > self.capacity:
            return False   # cuMemCreate: out of memory, the pages made so far are released
        pool = to_map.pool
        del pool.unmapped[to_map.addr]
        to_map.mapped = True
        if mapped < to_map.size:
            rest = _Block(to_map.size - mapped, to_map.addr + mapped, pool, to_map.seg, mapped=False)
            _splice(rest, to_map, to_map.next)
            pool.unmapped[rest.addr] = rest
            to_map.size = mapped
        self._try_merge(to_map, to_map.prev)
        self._try_merge(to_map, to_map.next)
        self._cache(to_map)
        self.mallocs += 1
        self._reserve(mapped)
        return True

    def _try_allocate_expandable_block(self, pool, size):
        c = self._find_expandable_block(pool, size)
        if not c.mapped and not self._map_block(c, min(c.size, size)):
            return None
        while c.size < size:
            nxt = c.next   # unmapped: mapping it merges c into it
            if not self._map_block(nxt, min(size - c.size, nxt.size)):
                return None
            c = nxt
        self._uncache(c)
        return c

    def _unmap_block(self, b):
        """unmap_block: unmap the pages lying wholly inside a cached block; the partial pages at either
        end stay mapped as cached blocks of their own."""
        seg = b.seg
        page, base = seg.page, seg.base
        begin = base + -(-(b.addr - base) // page) * page
        end = base + (b.addr + b.size - base) // page * page
        if begin >= end:
            return
        pool = b.pool
        self._uncache(b)
        before = begin - b.addr
        if before > 0:
            head = _Block(before, b.addr, pool, seg)
            _splice(head, b.prev, b)
            self._cache(head)
        after = b.size - before - (end - begin)
        if after > 0:
            tail = _Block(after, end, pool, seg)
            _splice(tail, b, b.next)
            self._cache(tail)
        b.addr, b.size, b.mapped = begin, end - begin, False
        self._try_merge(b, b.prev)
        self._try_merge(b, b.next)
        pool.unmapped[b.addr] = b
        self._unreserve(end - begin)

    def _try_merge(self, dst, src):
        """try_merge_blocks: absorb a free neighbour in the same mapped state (dst is in no set)."""
        if src is None or src.allocated or src.mapped != dst.mapped:
            return
        if src.mapped:
            self._uncache(src)
        else:
            del src.pool.unmapped[src.addr]
        if dst.prev is src:
            dst.addr = src.addr
            dst.prev = src.prev
            if dst.prev is not None:
                dst.prev.next = dst
        else:
            dst.next = src.next
            if dst.next is not None:
                dst.next.prev = dst
        dst.size += src.size

    # -- results -------------------------------------------------------------------------------------

    def result(self, compiled: _Compiled, rounded: np.ndarray, measure_from: int, stop: int | None,
               timelines: bool) -> AllocatorReplay:
        n = len(self.code)
        end = n if stop is None else stop
        allocated = np.cumsum(np.asarray(self.delta, np.int64))
        # the rounded live bytes: +round_size at each served allocation, minus it at its free
        served = np.zeros(n, bool)
        served[:end] = True
        alloc_of = compiled.alloc_of
        is_free = (alloc_of >= 0) & served & served[np.maximum(alloc_of, 0)]
        rdelta = np.where(compiled.is_alloc & served, rounded, 0)
        rdelta = rdelta - np.where(is_free, rounded[np.maximum(alloc_of, 0)], 0)
        rounded_live = np.cumsum(rdelta)

        def peak(series):
            start = int(series[measure_from - 1]) if measure_from > 0 else 0
            return max(start, int(series[measure_from:].max())) if measure_from < n else start

        reserved_timeline = None
        if timelines:
            reserved_timeline = np.zeros(n, np.int64)
            if self.changes:
                idx = np.fromiter((c[0] for c in self.changes), np.int64, len(self.changes))
                val = np.fromiter((c[1] for c in self.changes), np.int64, len(self.changes))
                last = np.append(idx[1:] != idx[:-1], True)   # the state after each event: its last change
                idx, val = idx[last], val[last]
                reserved_timeline[idx[0]:] = np.repeat(val, np.diff(np.append(idx, n)))
        allocated_peak = peak(allocated) if n else 0
        return AllocatorReplay(
            allocated_peak_bytes=allocated_peak,
            reserved_peak_bytes=self.reserved_peak,
            rounded_peak_bytes=peak(rounded_live) if n else 0,
            fragmentation_bytes=self.reserved_peak - allocated_peak,
            segments_peak=self.segments_peak,
            cuda_malloc_calls=self.mallocs,
            cuda_free_calls=self.frees,
            alloc_retries=self.retries,
            oom=stop is not None,
            oom_at_event=stop,
            final_allocated_bytes=int(allocated[-1]) if n else 0,
            final_reserved_bytes=self.reserved,
            config=self.config,
            reserved_timeline=reserved_timeline,
            allocated_timeline=allocated if timelines else None,
        )

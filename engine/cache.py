"""An LRU cache of traces keyed by ``Workload.key()``, safe to share between threads (the GUI traces
from worker threads). Two threads asking for the same workload trace it once. With a ``TraceStore`` a
miss reads the disk before tracing, and new traces are written there in the background."""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

from torchbudget.engine import vocab
from torchbudget.engine.errors import UserError
from torchbudget.engine.results import AnalysisResult
from torchbudget.engine.trace_store import TraceStore
from torchbudget.engine.workload import Workload

Analyzer = Callable[[Workload], AnalysisResult]


def trace_workload(workload: Workload) -> AnalysisResult:
    from torchbudget.engine.api import analyze_workload  # imported late: PyTorch only when a trace is needed
    from torchbudget.engine.process import tracer_imported

    tracer_imported()
    return analyze_workload(workload)


def _any_cuda_key(workload: Workload) -> tuple | None:
    """The key under which a trace no CUDA capability decided is shared by every CUDA target."""
    if not workload.options.target.startswith("sm"):
        return None
    return ("any-cuda", *workload.with_options(target=vocab.DEFAULT_TARGET).key())


class TraceCache:
    def __init__(self, maxsize: int = 64, analyzer: Analyzer | None = None, store: TraceStore | None = None):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._analyze = analyzer or trace_workload
        self.store = store
        # one writer thread: saving never delays the caller; pending saves finish at interpreter exit
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchbudget-store") if store else None
        self._entries: OrderedDict[tuple, AnalysisResult] = OrderedDict()
        self._lock = threading.Lock()
        self._in_flight: dict[tuple, threading.Lock] = {}
        self.hits = 0
        self.misses = 0          # traced here
        self.loaded = 0          # read from the store

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def in_memory(self, workload: Workload) -> bool:
        """``get`` returns it at once (no trace, no read from the store)."""
        shared = _any_cuda_key(workload)
        with self._lock:
            return workload.key() in self._entries or (shared is not None and shared in self._entries)

    def __contains__(self, workload: Workload) -> bool:
        """In memory or in the store: ``get`` returns it without tracing."""
        if self.in_memory(workload):
            return True
        return self.store is not None and self.store.has(workload)

    def _lookup(self, key: tuple) -> AnalysisResult | None:
        with self._lock:
            result = self._entries.get(key)
            if result is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return result

    def _shared(self, workload: Workload) -> AnalysisResult | None:
        """A trace made for another CUDA target that no capability decided (no SDPA call): the same for
        this one, but for the target it names."""
        shared = _any_cuda_key(workload)
        result = self._lookup(shared) if shared is not None else None
        if result is None:
            return None
        result = replace(result, options=workload.options)
        self.put(workload, result)
        if self.store is not None:
            self._saver.submit(self.store.save, workload, result)
        return result

    def get(self, workload: Workload) -> AnalysisResult:
        """The trace of ``workload``, traced now if not cached. UserErrors propagate and are not cached."""
        key = workload.key()
        result = self._lookup(key) or self._shared(workload)
        if result is not None:
            return result
        with self._lock:
            key_lock = self._in_flight.setdefault(key, threading.Lock())
        with key_lock:  # one trace per key at a time; latecomers find it cached
            result = self._lookup(key)
            if result is not None:
                return result
            stored = self.store.load(workload) if self.store is not None else None
            result = stored if stored is not None else self._analyze(workload)
            if stored is None and self.store is not None:
                self._saver.submit(self.store.save, workload, result)
            with self._lock:
                if stored is None:
                    self.misses += 1
                else:
                    self.loaded += 1
                self._entries[key] = result
                self._entries.move_to_end(key)
                shared = _any_cuda_key(workload)
                if shared is not None and not result.target_dependent:
                    self._entries[shared] = result
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
                self._in_flight.pop(key, None)
            return result

    def put(self, workload: Workload, result: AnalysisResult) -> None:
        with self._lock:
            self._entries[workload.key()] = result
            self._entries.move_to_end(workload.key())
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def batches_of(self, workload: Workload) -> list[int]:
        """Batch sizes cached for ``workload`` (same model, options, and inputs but for the batch)."""
        want = workload.with_batch(1).key() if workload.inputs else None
        with self._lock:
            keys = list(self._entries)
        out = []
        for key in keys:
            if len(key) != 4:   # a shared any-CUDA key: its own target's key is there too
                continue
            model, inputs, options, kwargs = key
            if inputs and want is not None and (model, tuple(s.with_batch(1) for s in inputs), options, kwargs) == want:
                out.append(inputs[0].shape[0])
        return out

    def seq_lens_in_memory(self, workload: Workload) -> list[int]:
        """Sequence lengths in memory for ``workload`` (the same but for the length of its token inputs)."""
        if workload.seq_len is None:
            return []
        want = workload.with_seq_len(1).key()
        with self._lock:
            keys = list(self._entries)
        out = []
        for key in keys:
            if len(key) != 4 or key[0] != want[0] or key[2] != want[2] or key[3] != want[3] or \
                    len(key[1]) != len(want[1]):
                continue
            other = replace(workload, inputs=key[1])
            try:
                if other.seq_len is not None and other.with_seq_len(1).key() == want:
                    out.append(other.seq_len)
            except UserError:
                continue
        return sorted(set(out))

    def clear(self) -> None:
        """Forgets what is in memory (the store keeps its entries: they depend on nothing a user edits)."""
        with self._lock:
            self._entries.clear()

    def flush(self) -> None:
        """Waits for background saves (tests, before a process hands its store to another)."""
        if self._saver is not None:
            self._saver.submit(lambda: None).result()

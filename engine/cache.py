"""An LRU cache of traces keyed by ``Workload.key()``, safe to share between threads (the GUI traces
from worker threads). Two threads asking for the same workload trace it once."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from engine.results import AnalysisResult
from engine.workload import Workload

Analyzer = Callable[[Workload], AnalysisResult]


def _default_analyzer(workload: Workload) -> AnalysisResult:
    from engine.api import analyze_workload  # imported late: the api imports model sources

    return analyze_workload(workload)


class TraceCache:
    def __init__(self, maxsize: int = 64, analyzer: Analyzer | None = None):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._analyze = analyzer or _default_analyzer
        self._entries: OrderedDict[tuple, AnalysisResult] = OrderedDict()
        self._lock = threading.Lock()
        self._in_flight: dict[tuple, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, workload: Workload) -> bool:
        with self._lock:
            return workload.key() in self._entries

    def _lookup(self, key: tuple) -> AnalysisResult | None:
        with self._lock:
            result = self._entries.get(key)
            if result is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return result

    def get(self, workload: Workload) -> AnalysisResult:
        """The trace of ``workload``, traced now if not cached. UserErrors propagate and are not cached."""
        key = workload.key()
        result = self._lookup(key)
        if result is not None:
            return result
        with self._lock:
            key_lock = self._in_flight.setdefault(key, threading.Lock())
        with key_lock:  # one trace per key at a time; latecomers find it cached
            result = self._lookup(key)
            if result is not None:
                return result
            result = self._analyze(workload)
            with self._lock:
                self.misses += 1
                self._entries[key] = result
                self._entries.move_to_end(key)
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
            model, inputs, options, kwargs = key
            if inputs and want is not None and (model, tuple(s.with_batch(1) for s in inputs), options, kwargs) == want:
                out.append(inputs[0].shape[0])
        return out

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

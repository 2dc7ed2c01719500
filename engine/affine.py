"""The batch-affine model of a trace: traced at two batch sizes with the same op and event structure,
every storage size and every op's FLOPs/bytes is ``base + slope * batch``. The solvers use it to
bracket the answer cheaply, then confirm with exact traces."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from torchbudget.engine.latency import phase_totals, report_from_phases
from torchbudget.engine.memory import fits, required_bytes, simulate_memory, uses_cudnn
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.results import AnalysisResult, OpRecord, StorageEvent


def _same_structure(a: AnalysisResult, b: AnalysisResult) -> bool:
    if len(a.ops) != len(b.ops) or len(a.storage_events) != len(b.storage_events):
        return False
    if any(x.op != y.op for x, y in zip(a.ops, b.ops)):
        return False
    return all(x.kind == y.kind and x.category is y.category and x.op_index == y.op_index
               for x, y in zip(a.storage_events, b.storage_events))


def batch_axis(result: AnalysisResult) -> int:
    return result.batch_size


def context_axis(result: AnalysisResult) -> int:
    """A decode step's context length (tokens in the KV cache): its sizes are affine in it too."""
    return result.options.context_len


class AffineTrace:
    """Built from traces at batch sizes ``batch_a < batch_b``; None-safe constructor: ``fit``. ``axis``: the
    value the model is affine in (default the batch size; ``context_axis`` for a decode step's context, where
    ``batch_a``/``batch_b`` are context lengths and only the memory methods apply)."""

    def __init__(self, a: AnalysisResult, b: AnalysisResult, axis=batch_axis):
        self.a, self.b = a, b
        self.axis = axis
        self.batch_a, self.batch_b = axis(a), axis(b)
        span = self.batch_b - self.batch_a
        self._span = span
        self._has_conv = uses_cudnn(a)
        sa = np.fromiter((e.nbytes for e in a.storage_events), np.int64, len(a.storage_events))
        sb = np.fromiter((e.nbytes for e in b.storage_events), np.int64, len(b.storage_events))
        self._size_base = sa
        self._size_delta = sb - sa
        self._op_counts = None

    @classmethod
    def fit(cls, a: AnalysisResult, b: AnalysisResult, axis=batch_axis) -> "AffineTrace | None":
        """None when the two traces differ in structure or batch (then only exact traces will do)."""
        if axis(a) >= axis(b) or not _same_structure(a, b):
            return None
        return cls(a, b, axis)

    def _scale(self, base: int, delta: int, batch: int) -> int:
        return max(0, base + (delta * (batch - self.batch_a)) // self._span)

    def sizes_at(self, batch: int) -> np.ndarray:
        return np.maximum(self._size_base + (self._size_delta * (batch - self.batch_a)) // self._span, 0)

    def matches(self, exact: AnalysisResult) -> bool:
        """True when the model predicts every storage size of the exact trace ``exact`` byte for byte."""
        return _same_structure(self.a, exact) and np.array_equal(
            self.sizes_at(self.axis(exact)), [e.nbytes for e in exact.storage_events])

    def required_bytes(self, batch: int, overheads: Overheads) -> int:
        return required_bytes(self.a.storage_events, overheads, has_conv=self._has_conv, sizes=self.sizes_at(batch))

    def fits(self, batch: int, overheads: Overheads, available_bytes: int) -> bool:
        """engine.memory.fits for the predicted trace at ``batch``."""
        return fits(self.a.storage_events, overheads, available_bytes, has_conv=self._has_conv,
                    sizes=self.sizes_at(batch))[0]

    def memory_at(self, batch: int, overheads: Overheads):
        """simulate_memory of the predicted trace at ``batch``."""
        return simulate_memory(self.a, overheads, sizes=self.sizes_at(batch))

    def latency_at(self, batch: int, gpu, efficiency):
        """The roofline totals (no per-op detail) of the predicted trace at ``batch``."""
        if self._op_counts is None:
            flops = np.array([[x.flops, y.flops] for x, y in zip(self.a.ops, self.b.ops)], np.int64).reshape(-1, 2)
            moved = np.array([[x.bytes_read + x.bytes_written, y.bytes_read + y.bytes_written]
                              for x, y in zip(self.a.ops, self.b.ops)], np.int64).reshape(-1, 2)
            self._op_counts = (flops, moved)
        flops, moved = self._op_counts
        step = batch - self.batch_a
        flops_at = np.maximum(flops[:, 0] + ((flops[:, 1] - flops[:, 0]) * step) // self._span, 0).tolist()
        moved_at = np.maximum(moved[:, 0] + ((moved[:, 1] - moved[:, 0]) * step) // self._span, 0).tolist()
        phases = phase_totals(zip(self.a.ops, flops_at, moved_at), gpu, tf32=self.a.options.precision == "tf32",
                              efficiency=efficiency)
        return report_from_phases(phases, gpu, batch, efficiency, grad_accum=self.a.options.grad_accum)

    def result_at(self, batch: int) -> AnalysisResult:
        """A synthetic trace at ``batch``: sizes, FLOPs and bytes interpolated (for sweeps and plots)."""
        def lin(x: int, y: int) -> int:
            return self._scale(x, y - x, batch)

        events = tuple(StorageEvent(e.op_index, e.kind, e.storage_id, int(n), e.category, e.phase)
                       for e, n in zip(self.a.storage_events, self.sizes_at(batch).tolist()))
        ops = tuple(OpRecord(x.index, x.op, x.module_path, x.phase, (), (), lin(x.bytes_read, y.bytes_read),
                             lin(x.bytes_written, y.bytes_written), lin(x.macs, y.macs), lin(x.flops, y.flops),
                             x.status, x.kind, x.compute_dtype, x.launches_kernel)
                    for x, y in zip(self.a.ops, self.b.ops))
        return replace(self.a, inputs=tuple(s.with_batch(batch) for s in self.a.inputs), ops=ops,
                       storage_events=events, modules=(), warnings=self.a.warnings + (
                           f"interpolated from traces at batch {self.batch_a} and {self.batch_b}",))

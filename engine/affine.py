"""The batch-affine model of a trace: traced at two batch sizes with the same op and event structure,
every storage size and every op's FLOPs/bytes is ``base + slope * batch``. The solvers use it to
bracket the answer cheaply, then confirm with exact traces."""
from __future__ import annotations

from dataclasses import replace

from engine.memory import required_bytes, uses_cudnn
from engine.overheads import Overheads
from engine.results import AnalysisResult, TensorMeta


def _same_structure(a: AnalysisResult, b: AnalysisResult) -> bool:
    if len(a.ops) != len(b.ops) or len(a.storage_events) != len(b.storage_events):
        return False
    if any(x.op != y.op for x, y in zip(a.ops, b.ops)):
        return False
    return all(x.kind == y.kind and x.category is y.category and x.op_index == y.op_index
               for x, y in zip(a.storage_events, b.storage_events))


class AffineTrace:
    """Built from traces at batch sizes ``batch_a < batch_b``; None-safe constructor: ``fit``."""

    def __init__(self, a: AnalysisResult, b: AnalysisResult):
        self.a, self.b = a, b
        self.batch_a, self.batch_b = a.batch_size, b.batch_size
        span = self.batch_b - self.batch_a
        self._span = span
        self._has_conv = uses_cudnn(a)
        sa = [e.nbytes for e in a.storage_events]
        sb = [e.nbytes for e in b.storage_events]
        self._size_base = sa
        self._size_delta = [y - x for x, y in zip(sa, sb)]

    @classmethod
    def fit(cls, a: AnalysisResult, b: AnalysisResult) -> "AffineTrace | None":
        """None when the two traces differ in structure or batch (then only exact traces will do)."""
        if a.batch_size >= b.batch_size or not _same_structure(a, b):
            return None
        return cls(a, b)

    def _scale(self, base: int, delta: int, batch: int) -> int:
        return max(0, base + (delta * (batch - self.batch_a)) // self._span)

    def sizes_at(self, batch: int) -> list[int]:
        return [self._scale(x, d, batch) for x, d in zip(self._size_base, self._size_delta)]

    def required_bytes(self, batch: int, overheads: Overheads) -> int:
        return required_bytes(self.a.storage_events, overheads, has_conv=self._has_conv, sizes=self.sizes_at(batch))

    def result_at(self, batch: int) -> AnalysisResult:
        """A synthetic trace at ``batch``: sizes, FLOPs and bytes interpolated (for sweeps and plots)."""
        def lin(x: int, y: int) -> int:
            return self._scale(x, y - x, batch)

        events = tuple(replace(e, nbytes=n) for e, n in zip(self.a.storage_events, self.sizes_at(batch)))
        ops = tuple(replace(x, macs=lin(x.macs, y.macs), flops=lin(x.flops, y.flops),
                            bytes_read=lin(x.bytes_read, y.bytes_read),
                            bytes_written=lin(x.bytes_written, y.bytes_written), inputs=(), outputs=())
                    for x, y in zip(self.a.ops, self.b.ops))
        return replace(self.a, inputs=tuple(s.with_batch(batch) for s in self.a.inputs), ops=ops,
                       storage_events=events, modules=(), warnings=self.a.warnings + (
                           f"interpolated from traces at batch {self.batch_a} and {self.batch_b}",))

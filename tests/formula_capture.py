"""Test helper: run a callable under a tiny TorchDispatchMode and count every aten op with
engine.ops.registry.count — the same calls the trace makes, without depending on the trace."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

from torch.utils._python_dispatch import TorchDispatchMode

from torchbudget.engine.ops.registry import count
from torchbudget.engine.results import OpStatus


@dataclass
class CapturedCounts:
    macs: int = 0
    flops: int = 0
    macs_by_op: collections.Counter = field(default_factory=collections.Counter)
    flops_by_op: collections.Counter = field(default_factory=collections.Counter)
    uncounted: collections.Counter = field(default_factory=collections.Counter)
    calls: list = field(default_factory=list)   # (packet name, OpCount, out)


class FormulaCapture(TorchDispatchMode):
    def __init__(self, convention: str = "default"):
        super().__init__()
        self.convention = convention
        self.counts = CapturedCounts()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        result = count(func, args, kwargs, out, self.convention)
        name = str(func.overloadpacket)
        c = self.counts
        c.macs += result.macs
        c.flops += result.flops
        c.macs_by_op[name] += result.macs
        c.flops_by_op[name] += result.flops
        c.calls.append((name, result, out))
        if result.status is OpStatus.UNCOUNTED:
            c.uncounted[str(func)] += 1
        return out


def capture(fn, *args, convention: str = "default") -> CapturedCounts:
    with FormulaCapture(convention) as mode:
        fn(*args)
    return mode.counts

"""One formula per aten op (overload packet), registered in one place.

A formula is a small pure function ``f(args, kwargs, out) -> int`` returning MACs (for matmul-like ops)
or FLOPs (for everything else), where ``args``/``kwargs``/``out`` are the op's own arguments and
results (meta or fake tensors: only shapes, dtypes and scalars are read). Every op is in exactly one
of three sets: counted (a formula), known-zero (views, copies, allocation), or uncounted (reported)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from torchbudget.engine.results import OpKind, OpStatus

Formula = Callable[[tuple, dict, object], int]


@dataclass(frozen=True)
class OpCount:
    macs: int
    flops: int
    status: OpStatus
    op_kind: OpKind = OpKind.OTHER

    @property
    def matmul_like(self) -> bool:
        return self.op_kind.matmul_like


@dataclass(frozen=True)
class _Entry:
    formula: Formula
    kind: str          # "macs": formula returns MACs, FLOPs = 2 * MACs; "flops": formula returns FLOPs
    op_kind: OpKind


_FORMULAS: dict[str, dict[object, _Entry]] = {"default": {}}
_ZERO: dict[object, OpKind] = {}

UNCOUNTED = OpCount(0, 0, OpStatus.UNCOUNTED)


def _packet(op) -> object:
    """Key ops by overload packet (aten.convolution covers .default and .out)."""
    return getattr(op, "overloadpacket", op)


def register(*ops, op_kind: OpKind, kind: str = "flops", convention: str = "default"):
    """Decorator: register one formula for one or more ops, tagged with their ``op_kind``. Registering an
    op twice is an error."""
    if kind not in ("macs", "flops"):
        raise ValueError(f"kind must be 'macs' or 'flops', not {kind!r}")

    def decorate(formula: Formula) -> Formula:
        table = _FORMULAS.setdefault(convention, {})
        for op in ops:
            key = _packet(op)
            if key in table or (convention == "default" and key in _ZERO):
                raise ValueError(f"{key} is registered twice (convention {convention!r})")
            table[key] = _Entry(formula, kind, op_kind)
        return formula

    return decorate


def register_zero(*ops, op_kind: OpKind) -> None:
    """Ops that do no arithmetic: views (VIEW), copies and the like (MEMORY), allocation (ALLOCATION)."""
    for op in ops:
        key = _packet(op)
        if key in _ZERO or key in _FORMULAS["default"]:
            raise ValueError(f"{key} is registered twice")
        _ZERO[key] = op_kind


def packet_named(name: str):
    """The op packet a ``registered_ops()`` name stands for ("aten.mm" -> torch.ops.aten.mm)."""
    namespace, op = name.split(".", 1)
    return getattr(getattr(torch.ops, namespace), op)


def lookup(op, convention: str = "default", attention_flops: str = "full") -> _Entry | None:
    """The formula of ``op``: the convention's own, else (``attention_flops`` other than "full") the attention
    formula of that counting rule (table ``attention-<rule>``, engine/ops/attention.py), else the default."""
    key = _packet(op)
    if convention != "default":
        entry = _FORMULAS.get(convention, {}).get(key)
        if entry is not None:
            return entry
    if attention_flops != "full":
        entry = _FORMULAS.get(f"attention-{attention_flops}", {}).get(key)
        if entry is not None:
            return entry
    return _FORMULAS["default"].get(key)


def is_known_zero(op) -> bool:
    return _packet(op) in _ZERO


def count(op, args: tuple, kwargs: dict, out, convention: str = "default", attention_flops: str = "full") -> OpCount:
    """The trace's single entry point: MACs/FLOPs, status and kind of one op call. A formula that raises
    propagates: the recorder is the one boundary that catches it and reports it (never a silent zero)."""
    entry = lookup(op, convention, attention_flops)
    if entry is None:
        zero_kind = _ZERO.get(_packet(op))
        return UNCOUNTED if zero_kind is None else OpCount(0, 0, OpStatus.ZERO, zero_kind)
    value = int(entry.formula(args, kwargs or {}, out))
    if entry.kind == "macs":
        return OpCount(value, 2 * value, OpStatus.COUNTED, entry.op_kind)
    return OpCount(0, value, OpStatus.COUNTED, entry.op_kind)


def kind_of(op, convention: str = "default") -> OpKind:
    """The registered kind of ``op`` (OTHER when it has no formula)."""
    entry = lookup(op, convention)
    if entry is not None:
        return entry.op_kind
    return _ZERO.get(_packet(op), OpKind.OTHER)


def counted_packets(convention: str = "default") -> tuple:
    """The op packets with a formula in ``convention`` (not the default fallback)."""
    return tuple(_FORMULAS.get(convention, {}))


def registered_ops(convention: str = "default") -> dict[str, str]:
    """op packet name -> 'counted' | 'zero', for docs and tests."""
    names = {str(k): "counted" for k in _FORMULAS.get(convention, {})}
    names.update({str(k): "zero" for k in _ZERO})
    return names

"""Mixture-of-experts routing: the exact policy for top-k routers, by *known values*.

A top-k router sends every token to exactly k of its E experts; which k depends on the router's scores, and
a fake tensor has none. The ops that turn that choice into per-expert work are data-dependent (``nonzero`` /
``where`` of an expert mask, ``.item()`` / ``.tolist()`` of token counts, ``bincount``, ``_grouped_mm``'s
offsets from ``histc`` + ``cumsum``), so under the worst-case policies alone every expert would get every
(token, slot) pair: in transformers' eager expert loop (E+1 iterations, each over all tokens·k pairs) that is E+1
times the real expert work.

Instead, the router's index output gets real values, chosen by ``TraceOptions.moe_routing``:

* **balanced**: pair p = t·k + j (token t, slot j) goes to expert p mod E. A token's k experts are distinct
  (k consecutive residues), and the N = tokens·k pairs spread evenly: ⌊N/E⌋ per expert, one more for experts
  0 … (N mod E) − 1 (the remainder goes to the lowest-numbered experts).
* **skewed** (worst case for per-expert memory): every token goes to experts 0 … k−1; each of them gets all
  the tokens, the other E − k experts none.

**Which op is a router.** A ``topk`` (or ``argmax`` / ``max`` over a dim: a top-1 router) over a dimension
of size E, of floating scores, run inside a module that *declares E experts*: the innermost module on the
module path (from the op's own module outwards) that declares an expert count decides, and the op is a
router only if its dimension has exactly that size. A module declares experts by an int attribute
(``num_experts``, ``num_local_experts``, ``n_routed_experts``, ``moe_num_experts``, ``n_experts``,
``num_routed_experts``) on itself or on a direct child, or by a child ``ModuleList``/``ModuleDict`` whose name
contains "expert" (its length). That covers every transformers 5.x MoE (the router modules carry
``num_experts``; DBRX's FFN has ``experts.num_experts``) and the usual hand-written block (``self.experts =
nn.ModuleList(...)`` next to ``self.gate``), and rejects DeepSeek-V3's group-limited pre-selection (a topk over
the groups, not the experts). No op *pattern* after the topk is assumed: whatever the model does with the
indices (one-hot masks, sort/argsort permutations, histc/bincount counts, scatter into a gate matrix, a loop
over the hit experts, ``.tolist()`` split sizes), the values follow.

**Replay.** An op whose tensor inputs all have known values (at least one from a router; constant fills,
``*_like`` fills and ``arange`` count as known, built on first use) runs a second time on the real CPU values
(sizes of tokens·k·E at most; anything above ``LIMIT`` elements is not replayed) and its outputs keep the
results; data-dependent ops among them take their output shapes from the replay. Ops mixing known values
with unknown data (the hidden states) run on fake tensors only: their shapes never depend on values, except
boolean-mask indexing and ``masked_select``, whose sizes come from the known mask. An in-place write that
cannot be replayed (unknown data written into a known tensor, or a write through a view of it) makes every
known tensor on that storage unknown again, and the worst-case policies take over from there.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, \
    unset_fake_temporarily
from torch.utils._pytree import tree_map

from torchbudget.engine.ops.values import ATTRIBUTE, Known, StorageCell, known_record

aten = torch.ops.aten

LIMIT = 1 << 24     # elements: a known value (or a replay's output) larger than this is not kept

EXPERT_COUNT_ATTRIBUTES = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts",
                           "n_experts", "num_routed_experts")

_ROUTERS = {aten.topk, aten.argmax, aten.max}
_CREATION = {aten.zeros, aten.ones, aten.full, aten.empty, aten.empty_strided, aten.zeros_like, aten.ones_like,
             aten.full_like, aten.empty_like, aten.new_zeros, aten.new_ones, aten.new_full, aten.new_empty,
             aten.new_empty_strided, aten.arange, aten.scalar_tensor}
_EMPTY = {aten.empty, aten.empty_strided, aten.empty_like, aten.new_empty, aten.new_empty_strided}
# output shapes (or a Python value) that depend on the input values: taken from the replay
_DATA_DEPENDENT = {aten.nonzero, aten.argwhere, aten.masked_select, aten._local_scalar_dense, aten._unique2,
                   aten.unique_dim, aten.unique_consecutive, aten._unique, aten.bincount, aten.repeat_interleave,
                   aten.index}

_WRITTEN: dict = {}


def _written_arguments(func) -> tuple[tuple[int, str], ...]:
    """(position, name) of the arguments ``func`` writes to (in-place self, out=)."""
    found = _WRITTEN.get(func)
    if found is None:
        found = _WRITTEN[func] = tuple((i, a.name) for i, a in enumerate(func._schema.arguments)
                                       if a.alias_info is not None and a.alias_info.is_write)
    return found


def assignment(tokens: int, k: int, experts: int, routing: str) -> torch.Tensor:
    """The (tokens, k) expert indices of ``routing`` (module docstring)."""
    if routing == "skewed":
        return torch.arange(k).expand(tokens, k).contiguous()
    return torch.arange(tokens * k).reshape(tokens, k) % experts


def expert_loads(tokens: int, k: int, experts: int, routing: str) -> list[int]:
    """Token-expert pairs per expert under ``routing`` (the bincount of ``assignment``)."""
    if routing == "skewed":
        return [tokens if e < k else 0 for e in range(experts)]
    q, r = divmod(tokens * k, experts)
    return [q + (1 if e < r else 0) for e in range(experts)]


def describe(routing: str, experts: int, k: int, tokens: int, paths: list[str]) -> str:
    names = [path or "the model's top level" for path in paths]   # a loss's re-routing (router aux loss)
    where = f"{names[0]}…{names[-1]} ({len(names)} routers)" if len(names) > 2 else ", ".join(names)
    if routing == "skewed":
        rest = f", 0 to the other {experts - k}" if experts > k else ""
        return (f"MoE routing: skewed (worst case), every token to the same {k} of {experts} experts "
                f"(0–{k - 1}); {tokens} tokens -> {tokens} per expert on those {k}{rest} in {where}")
    q, r = divmod(tokens * k, experts)
    if r == 0:
        spread = f"{q} per expert"
    else:
        first = f"expert 0" if r == 1 else f"experts 0–{r - 1}"
        spread = f"{q + 1} to {first}, {q} to the other {experts - r}"
    return (f"MoE routing: balanced, {k} of {experts} experts per token (pair t·k+j -> expert (t·k+j) mod "
            f"{experts}); {tokens} tokens x {k} = {tokens * k} pairs -> {spread} in {where}")


class RoutingValues:
    def __init__(self, routing: str = "balanced", where: Callable[[], str] | None = None,
                 module_at: Callable[[str], nn.Module | None] | None = None):
        self.routing = routing
        self.where = where
        self.module_at = module_at
        self.sites: dict[tuple[int, int, int], list[str]] = {}   # (experts, k, tokens) -> router paths
        self.active = False                                        # a router's values exist
        self._cells: dict[int, tuple[StorageCell, weakref.ref]] = {}
        self._declared: dict[int, frozenset] = {}

    # ---------------------------------------------------------------------------------------------- report
    def lines(self) -> list[str]:
        return [describe(self.routing, e, k, t, paths) for (e, k, t), paths in self.sites.items()]

    # ------------------------------------------------------------------------------------------ dispatch
    def run(self, func, args, kwargs):
        """The op's output when known values are involved, else NotImplemented (the caller runs it)."""
        packet = func.overloadpacket
        if packet in _ROUTERS:
            return self._router(func, args, kwargs)
        if packet in _CREATION:
            return self._creation(func, args, kwargs)
        written = _written_arguments(func)
        if not self.active:
            if written:
                self._invalidate_written(func, args, kwargs, written)
            return NotImplemented
        inputs = _tensors((args, tuple(kwargs.values())) if kwargs else args)
        records = [known_record(t) for t in inputs]
        if not records or all(r is None for r in records):
            if written:
                self._invalidate_written(func, args, kwargs, written)
            return NotImplemented
        if any(r is None for r in records) or not any(r.value is not None for r in records):
            out = self._partly_known(func, args, kwargs)
            if written:
                self._invalidate_written(func, args, kwargs, written)
            return out
        values = {id(t): self._value(r) for t, r in zip(inputs, records)}
        if any(v is None for v in values.values()):
            if written:
                self._invalidate_written(func, args, kwargs, written)
            return NotImplemented
        real_args = _replaced(args, values)
        real_kwargs = {name: _replaced(value, values) for name, value in kwargs.items()}
        if packet is aten._local_scalar_dense:     # .item(); a whole tensor's first value for .tolist()
            if not real_args[0].numel():
                return NotImplemented
            with unset_fake_temporarily():
                return real_args[0].reshape(-1)[0].item()
        if packet in _DATA_DEPENDENT:
            return self._from_replay(func, args, kwargs, real_args, real_kwargs, written)
        try:
            out = func(*args, **kwargs)
        except (DynamicOutputShapeException, DataDependentOutputException):
            return self._from_replay(func, args, kwargs, real_args, real_kwargs, written)
        if sum(t.numel() for t in _tensors(out)) > LIMIT:
            self._invalidate_written(func, args, kwargs, written)
            return out
        try:
            with unset_fake_temporarily():
                real_out = func(*real_args, **real_kwargs)
        except Exception:  # noqa: BLE001  (our values are a model: a kernel refusing them must not kill the trace)
            self._invalidate_written(func, args, kwargs, written)
            return out
        self._attach(out, real_out)
        return out

    def _from_replay(self, func, args, kwargs, real_args, real_kwargs, written):
        try:
            with unset_fake_temporarily():
                real_out = func(*real_args, **real_kwargs)
        except Exception:  # noqa: BLE001
            self._invalidate_written(func, args, kwargs, written)
            return NotImplemented
        if not isinstance(real_out, (torch.Tensor, tuple, list)):
            if isinstance(real_out, (bool, int, float)):
                return real_out          # .item()
            return NotImplemented
        out = tree_map(lambda r: torch.empty_strided(r.shape, r.stride(), dtype=r.dtype, device="cpu")
                       if isinstance(r, torch.Tensor) else r, real_out)
        self._attach(out, real_out)
        return out

    # -------------------------------------------------------------------------------------------- routers
    def _router(self, func, args, kwargs):
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        scores = args[0]
        if packet is aten.topk:
            k = args[1] if len(args) > 1 else kwargs["k"]
            dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
            indices, keepdim = out[1], True
        elif packet is aten.argmax:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
            k, indices = 1, out
        elif func is aten.max.dim:
            dim = args[1] if len(args) > 1 else kwargs["dim"]
            keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
            k, indices = 1, out[1]
        else:
            return out
        if dim is None or not isinstance(scores, torch.Tensor) or not scores.is_floating_point() or scores.dim() == 0:
            return out
        dim = dim % scores.dim()
        experts = scores.shape[dim]
        tokens = scores.numel() // experts if experts else 0
        if experts < 2 or not 1 <= k <= experts or tokens == 0 or tokens * k > LIMIT:
            return out
        path = self.where() if self.where is not None else ""
        if not self._declares(path or "", experts):
            return out
        rest = [s for i, s in enumerate(scores.shape) if i != dim]
        with unset_fake_temporarily():     # real CPU values, not fake ones
            values = assignment(tokens, k, experts, self.routing)
            values = values.reshape(*rest, k).movedim(-1, dim) if keepdim else values.reshape(indices.shape)
            values = values.contiguous()
        if tuple(values.shape) != tuple(indices.shape):
            return out
        self._set(indices, values)
        self.active = True
        paths = self.sites.setdefault((experts, k, tokens), [])
        if path not in paths:
            paths.append(path)
        return out

    def _declares(self, path: str, experts: int) -> bool:
        """The innermost module on ``path`` that declares an expert count has exactly ``experts``."""
        if self.module_at is None:
            return False
        parts = path.split(".") if path else []
        for depth in range(len(parts), -1, -1):
            module = self.module_at(".".join(parts[:depth]))
            if module is None:
                continue
            counts = self._declared.get(id(module))
            if counts is None:
                counts = self._declared[id(module)] = _declared_counts(module)
            if counts:
                return experts in counts
        return False

    # ------------------------------------------------------------------------------------------ constants
    def _creation(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.numel() <= LIMIT:
            # *_like / new_* read only their tensor argument's metadata: keep that, never the fake tensor
            # (holding it would keep its storage alive and move its free in the trace)
            args, kwargs = tree_map(lambda x: _Like(x) if isinstance(x, torch.Tensor) else x, (args, kwargs))
            setattr(out, ATTRIBUTE, Known(None, self._cell(out), recipe=_Recipe(func, args, kwargs, out)))
        return out

    def _value(self, record: Known) -> torch.Tensor | None:
        if record.value is None and record.recipe is not None:
            with unset_fake_temporarily():
                try:
                    record.value = record.recipe()
                except Exception:  # noqa: BLE001
                    record.value = None
            record.recipe = None
            if record.value is None:
                record.cell.valid = False
        return record.value

    # ------------------------------------------------------------------------------- partly known inputs
    def _partly_known(self, func, args, kwargs):
        """Boolean-mask indexing and masked_select of unknown data by a known mask: sizes from the mask."""
        packet = func.overloadpacket
        if packet is aten.index and len(args) > 1 and known_record(args[0]) is None:
            indices, expanded = [], False
            for index in args[1]:
                mask = _known_value(index) if isinstance(index, torch.Tensor) else None
                if mask is not None and index.dtype in (torch.bool, torch.uint8):
                    with unset_fake_temporarily():
                        columns = [column.contiguous() for column in mask.nonzero().unbind(1)]
                    for column in columns:
                        fake = index.new_empty((column.shape[0],), dtype=torch.long)
                        self._set(fake, column)
                        indices.append(fake)
                    expanded = True
                else:
                    indices.append(index)
            if expanded and not any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                                    for i in indices):
                return func(args[0], indices)
        if packet is aten.masked_select and known_record(args[0]) is None:
            mask = _known_value(args[1])
            if mask is not None:
                shape = torch.broadcast_shapes(args[0].shape, args[1].shape)
                with unset_fake_temporarily():
                    count = int(mask.expand(shape).sum())
                return args[0].new_empty((count,))
        return NotImplemented

    # ------------------------------------------------------------------------------------------ bookkeeping
    def _cell(self, t: torch.Tensor) -> StorageCell:
        storage = t.untyped_storage()
        key = storage._cdata
        entry = self._cells.get(key)
        if entry is None or entry[1]() is None:
            cell = StorageCell()
            self._cells[key] = (cell, weakref.ref(storage, lambda _ref, key=key: self._cells.pop(key, None)))
            return cell
        return entry[0]

    def _set(self, fake: torch.Tensor, value: torch.Tensor) -> None:
        setattr(fake, ATTRIBUTE, Known(value, self._cell(fake)))

    def _attach(self, out, real_out) -> None:
        fakes, reals = _tensors(out), _tensors(real_out)
        if len(fakes) != len(reals):
            return
        for fake, real in zip(fakes, reals):
            if (isinstance(fake, torch.Tensor) and isinstance(real, torch.Tensor)
                    and tuple(fake.shape) == tuple(real.shape) and real.numel() <= LIMIT):
                self._set(fake, real)

    def _invalidate_written(self, func, args, kwargs, written) -> None:
        for position, name in written:
            target = kwargs.get(name) if name in kwargs else (args[position] if position < len(args) else None)
            for t in _tensors(target):
                try:
                    key = t.untyped_storage()._cdata
                except (RuntimeError, NotImplementedError, TypeError):
                    continue
                entry = self._cells.get(key)
                if entry is not None:
                    entry[0].valid = False


class _Like:
    """A tensor argument of a creation op, by its metadata."""

    __slots__ = ("shape", "stride", "dtype")

    def __init__(self, t: torch.Tensor):
        self.shape, self.stride, self.dtype = tuple(t.shape), tuple(t.stride()), t.dtype

    def real(self) -> torch.Tensor:
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype)


class _Recipe:
    """Builds a constant's real values on first use: the same creation op, run on real CPU tensors."""

    __slots__ = ("func", "args", "kwargs", "shape", "stride", "dtype")

    def __init__(self, func, args, kwargs, out: torch.Tensor):
        self.func, self.args, self.kwargs = func, args, kwargs
        self.shape, self.stride, self.dtype = tuple(out.shape), tuple(out.stride()), out.dtype

    def __call__(self) -> torch.Tensor | None:
        args, kwargs = tree_map(lambda x: x.real() if isinstance(x, _Like) else x, (self.args, self.kwargs),
                                is_leaf=lambda x: isinstance(x, _Like))
        value = self.func(*args, **kwargs)
        if self.func.overloadpacket in _EMPTY:   # garbage values: any will do, zeros are reproducible
            value.zero_()
        if tuple(value.shape) != self.shape or value.dtype != self.dtype:
            return None
        return value if tuple(value.stride()) == self.stride else value.as_strided(self.shape, self.stride)


def _known_value(t) -> torch.Tensor | None:
    record = known_record(t)
    return None if record is None else record.value


def _tensors(x, found: list | None = None) -> list[torch.Tensor]:
    """The tensors in an op's arguments or result (flat, or in lists/tuples); faster than pytree."""
    found = [] if found is None else found
    if isinstance(x, torch.Tensor):
        found.append(x)
    elif isinstance(x, (tuple, list)):
        for item in x:
            _tensors(item, found)
    return found


def _replaced(x, values: dict):
    """``x`` with every tensor replaced by ``values[id(tensor)]``."""
    if isinstance(x, torch.Tensor):
        return values[id(x)]
    if isinstance(x, (tuple, list)):
        return type(x)(_replaced(item, values) for item in x)
    return x


def _int_attributes(module: nn.Module) -> set[int]:
    found = set()
    for name in EXPERT_COUNT_ATTRIBUTES:
        value = module.__dict__.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            found.add(value)
    return found


def _declared_counts(module: nn.Module) -> frozenset:
    counts = _int_attributes(module)
    for name, child in module.named_children():
        counts |= _int_attributes(child)
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)) and "expert" in name.lower():
            counts.add(len(child))
    return frozenset(counts)


__all__ = ["LIMIT", "RoutingValues", "assignment", "describe", "expert_loads"]

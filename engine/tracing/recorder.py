"""The dispatch-level pass: one OpRecord per aten op, storage lifetimes, data-dependent policies."""
from __future__ import annotations

import torch
from functools import lru_cache

from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode

from torchbudget.engine.errors import UserError
from torchbudget.engine.inputs import dtype_name
from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpRecord, Phase, TensorMeta
from torchbudget.engine.tracing.errors import translate_op_error
from torchbudget.engine.tracing.modules import ForwardNodeMap, ModuleStack
from torchbudget.engine.tracing.policies import DataDependentPolicies, fast_tolist
from torchbudget.engine.tracing.storage import StorageTracker

aten = torch.ops.aten


# Metadata queries, not kernels: prim.device/prim.layout answer "which device?" with no tensor out, and
# aten.sym_* read sizes. They are run but not recorded (they would only inflate bytes_read).
_METADATA_OPS = {aten.sym_size, aten.sym_stride, aten.sym_numel, aten.sym_storage_offset}


_INPLACE_FOREACH: dict = {}


def _is_inplace_foreach(func) -> bool:
    """``aten._foreach_X_``: updates its list in place and returns nothing."""
    known = _INPLACE_FOREACH.get(func)
    if known is None:
        schema = func._schema
        known = _INPLACE_FOREACH[func] = (schema.name.startswith("aten::_foreach_") and schema.name.endswith("_")
                                          and not schema.returns)
    return known


# Fresh optimizer state: ``zeros_like(p)`` / ``empty_like(p)`` of a fake parameter with no other argument than
# preserve_format. Its output is a new tensor of p's shape, dtype, strides and device; building it straight
# (what the fake kernel ends with) skips the mode's cache-key work, ~0.4 ms per state tensor on a 70B step.
_LIKE = {aten.zeros_like.default, aten.empty_like.default}
_PLAIN = {"memory_format": torch.preserve_format, "pin_memory": False, "dtype": None, "layout": None, "device": None}


def _fresh_like(func, args, kwargs):
    """The fake output of a plain ``zeros_like``/``empty_like``, or None when the call is not that plain one."""
    if func not in _LIKE or len(args) != 1 or not isinstance(args[0], FakeTensor):
        return None
    if any(value is not _PLAIN.get(key, _PLAIN) for key, value in kwargs.items()):
        return None
    src = args[0]
    if not src.is_contiguous() or src.is_neg() or src.is_conj() or src.dim() == 0:
        return None
    with unset_fake_temporarily():
        meta = torch.empty_strided(src.shape, src.stride(), dtype=src.dtype, device="meta")
    return FakeTensor(src.fake_mode, meta, src.device)


def _has_constants(tensors) -> bool:
    return any(getattr(t, "constant", None) is not None for t in tensors)


def _collect_tensors(items, found: list) -> list:
    """Tensors in op arguments/results (flat values or lists/tuples of them); faster than pytree."""
    for item in items:
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            _collect_tensors(item, found)
    return found


def tensor_meta(t: torch.Tensor) -> TensorMeta:
    return TensorMeta(tuple(t.shape), dtype_name(t.dtype), t.numel() * t.element_size())


def _compute_dtype(inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> str:
    for t in (*inputs, *outputs):
        if t.dtype.is_floating_point or t.dtype.is_complex:
            return dtype_name(t.dtype)
    tensors = inputs or outputs
    return dtype_name(tensors[0].dtype) if tensors else ""


class Recorder(TorchDispatchMode):
    """Records every aten op dispatched below autograd (so backward and optimizer ops too)."""

    def __init__(self, modules: ModuleStack, convention: str = "default", moe_routing: str = "balanced",
                 attention_flops: str = "full"):
        super().__init__()
        self.modules = modules
        self.convention = convention
        self.attention_flops = attention_flops   # engine.vocab.ATTENTION_FLOPS: how fused attention is counted
        self.storage = StorageTracker()
        self.nodes = ForwardNodeMap()
        self.policies = DataDependentPolicies(moe_routing, where=self._module_path, module_at=modules.module_at)
        self.ops: list[OpRecord] = []
        self.formula_errors: dict[str, str] = {}
        # the last op failure, translated while its module is still running; the original exception
        # propagates untouched (the model may catch it), trace_model reports the translation
        self.failure: tuple[BaseException, UserError] | None = None

    def __enter__(self):
        self._fast_tolist = fast_tolist()   # one dispatch per .tolist(), not one per element (policies.py)
        self._fast_tolist.__enter__()
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            return super().__exit__(exc_type, exc_value, traceback)
        finally:
            self._fast_tolist.__exit__(None, None, None)

    @property
    def phase(self) -> Phase:
        return self.storage.phase

    @phase.setter
    def phase(self, value: Phase) -> None:
        self.storage.phase = value

    def _module_path(self) -> str:
        path = self.modules.current
        if path is not None:
            return path
        if self.phase is Phase.BACKWARD:
            path = self.nodes.backward_path()
        return path if path is not None else ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "prim" or func.overloadpacket in _METADATA_OPS:
            return func(*args, **kwargs)
        path = self._module_path()
        try:
            if self.phase is Phase.OPTIMIZER and _is_inplace_foreach(func) and not _has_constants(args[0]):
                # torch.optim's in-place foreach updates on fake tensors change no shape, allocate nothing
                # and return None; the fake kernel would only re-derive that per tensor (~0.1 s per step).
                # Fake scalars that carry a value (Adam's step counters) still go through it.
                out = None
            elif self.phase is Phase.OPTIMIZER and (fresh := _fresh_like(func, args, kwargs)) is not None:
                out = fresh
            else:
                out = self.policies.maybe_run(func, args, kwargs)
                if out is NotImplemented:
                    out = func(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, UserError):
                self.failure = (exc, translate_op_error(exc, func, args, path, self.modules))
            raise
        if self.phase is Phase.FORWARD:
            self.nodes.note_forward(path)
        self._record(func, args, kwargs, out, path)
        return out

    def _record(self, func, args, kwargs, out, path: str) -> None:
        inputs = _collect_tensors(args, [])
        if kwargs:
            _collect_tensors(kwargs.values(), inputs)
        outputs = _collect_tensors((out,), [])
        index = len(self.ops)
        name = str(func)
        try:
            counted = registry.count(func, args, kwargs, out, self.convention, self.attention_flops)
        except Exception as exc:  # noqa: BLE001  (a formula bug must not kill the trace; it is reported)
            self.formula_errors.setdefault(name, f"{type(exc).__name__}: {exc}")
            counted = registry.UNCOUNTED
        in_metas = tuple(tensor_meta(t) for t in inputs)
        out_metas = tuple(tensor_meta(t) for t in outputs)
        self.ops.append(OpRecord(
            index=index, op=name, module_path=path, phase=self.phase,
            inputs=in_metas, outputs=out_metas,
            bytes_read=sum(m.nbytes for m in in_metas), bytes_written=sum(m.nbytes for m in out_metas),
            macs=counted.macs, flops=counted.flops, status=counted.status, kind=counted.op_kind,
            compute_dtype=_compute_dtype(inputs, outputs), launches_kernel=launches_kernel(name),
        ))
        self.storage.op_index = index
        for t in outputs:
            self.storage.track(t, index)


# allocation-only ops: no kernel runs, no bytes move
_NO_KERNEL_PREFIXES = ("aten.empty", "aten.new_empty", "aten.lift_fresh", "aten._local_scalar_dense")


@lru_cache(maxsize=None)
def launches_kernel(op_name: str) -> bool:
    """False for views/aliases (torch marks them ``is_view``) and bare allocations."""
    if op_name.startswith(_NO_KERNEL_PREFIXES):
        return False
    parts = op_name.split(".")
    if len(parts) == 3 and parts[0] == "aten":
        packet = getattr(torch.ops.aten, parts[1], None)
        overload = getattr(packet, parts[2], None) if packet is not None else None
        if overload is not None and getattr(overload, "is_view", False):
            return False
    return True


__all__ = ["Recorder", "launches_kernel", "tensor_meta"]

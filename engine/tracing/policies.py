"""Worst-case policies for data-dependent ops, applied when the tensor holds no data (meta/fake).

Each policy replaces the op's output with an empty tensor of the assumed shape (same device/dtype
rules as the real op) and is named in ``AnalysisResult.policies``. Real tensors run the real op."""
from __future__ import annotations

import contextlib
import math
import threading

import torch
from torch._subclasses.fake_tensor import FakeTensor

aten = torch.ops.aten

NONZERO = "nonzero/argwhere: every element assumed nonzero -> output (numel, ndim)"
MASKED_SELECT = "masked_select: every mask element assumed true -> output (broadcast numel,)"
BOOL_INDEX = "boolean-mask indexing x[mask]: every mask element assumed true"
# One group, not numel groups: code loops over the distinct values (torchvision's per-class NMS) and
# selects each group with nonzero/where, which the nonzero policy makes select every element, so one
# iteration already does the all-elements worst case; numel iterations would multiply it (and hang).
UNIQUE = ("unique: a single distinct value assumed -> output (1,), counts (1,) (group-selection ops "
          "then take every element, so a loop over groups does the full work once)")
NMS = "torchvision nms: every box assumed kept -> output (num_boxes,)"
SCALAR = ".item()/bool()/int() of a data-less tensor: assumed False for bool, 1 for integers, 1.0 for floats"


def _no_data(t) -> bool:
    return isinstance(t, torch.Tensor) and (t.device.type == "meta" or isinstance(t, FakeTensor))


def _long(like: torch.Tensor, shape) -> torch.Tensor:
    return like.new_empty(tuple(shape), dtype=torch.long)


_PACKETS = {aten.nonzero, aten.argwhere, aten.masked_select, aten._local_scalar_dense, aten._unique2,
            aten.unique_dim, aten.unique_consecutive, aten._unique, aten.index}


class DataDependentPolicies:
    def __init__(self):
        self.applied: dict[str, None] = {}   # ordered set of policy texts
        # off for our own optimizer step: Adam reads its step counter with .item() (1 = the first step
        # is exact), which is no assumption about the user's model
        self.reporting = True

    def maybe_run(self, func, args, kwargs):
        """The policy's output, or NotImplemented when the op is not data-dependent here."""
        packet = func.overloadpacket
        if (packet not in _PACKETS and func.namespace != "torchvision") or not args or not _no_data(args[0]):
            return NotImplemented
        x = args[0]
        if packet in (aten.nonzero, aten.argwhere):
            return self._use(NONZERO, _long(x, (x.numel(), x.dim())))
        if packet is aten.masked_select:
            shape = torch.broadcast_shapes(x.shape, args[1].shape)
            return self._use(MASKED_SELECT, x.new_empty((math.prod(shape),)))
        if packet is aten._local_scalar_dense:
            value = False if x.dtype == torch.bool else (1.0 if x.dtype.is_floating_point else 1)
            return self._use(SCALAR, value)
        if packet in (aten._unique2, aten.unique_dim, aten.unique_consecutive, aten._unique):
            return self._use(UNIQUE, self._unique(func, x, args, kwargs))
        if packet is aten.index and _has_bool_index(args[1]):
            return self._use(BOOL_INDEX, func(x, _expand_bool_indices(args[1])))
        if func.name() == "torchvision::nms":
            return self._use(NMS, _long(x, (x.shape[0],)))
        return NotImplemented

    def _use(self, policy: str, out):
        if self.reporting:
            self.applied[policy] = None
        return out

    @staticmethod
    def _unique(func, x, args, kwargs):
        packet = func.overloadpacket
        if packet is aten.unique_dim or (packet is aten.unique_consecutive and kwargs.get("dim") is not None):
            dim = args[1] if packet is aten.unique_dim else kwargs["dim"]
            shape = list(x.shape)
            rows, shape[dim] = shape[dim], 1
            return x.new_empty(shape), _long(x, (rows,)), _long(x, (1,))
        out = x.new_empty((1,) if x.numel() else (0,))
        if packet is aten._unique:
            return out, _long(x, x.shape)
        return out, _long(x, x.shape), _long(x, out.shape)


def _has_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


def _expand_bool_indices(indices) -> list:
    """A k-dim boolean mask is k integer index tensors of length mask.numel() when all are true."""
    expanded = []
    for index in indices:
        if isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8):
            expanded.extend(_long(index, (index.numel(),)) for _ in range(index.dim()))
        else:
            expanded.append(index)
    return expanded


# ------------------------------------------------------------------------------------------------ tolist
# torch's FakeTensor.tolist unbinds the tensor and calls .item() on every element: per element one fake view
# and one dispatched _local_scalar_dense that the recorder records (150,528 of each for a 1x3x224x224
# input: ~20 s, and as many op records). Under the SCALAR policy every element reads the same value, so one
# _local_scalar_dense dispatch on the whole tensor gives the same list: the policy is applied (and named)
# once, and one op is recorded reading the whole tensor, as a real tolist's one device-to-host copy does.
_original_tolist = FakeTensor.tolist
_tracing = threading.local()     # per thread: is a recorder of this thread active?
_install_lock = threading.Lock()
_installed = 0                   # active recorders, all threads: the patch is in place while > 0


def _nested(value, shape: tuple[int, ...]):
    if len(shape) == 1:
        return [value] * shape[0]
    return [_nested(value, shape[1:]) for _ in range(shape[0])]


def _tolist(self):
    if not getattr(_tracing, "depth", 0) or self.dim() == 0 or self.numel() == 0:
        return _original_tolist(self)   # not ours, or trivially cheap (a scalar's .item(), empty lists)
    return _nested(aten._local_scalar_dense.default(self), tuple(self.shape))


@contextlib.contextmanager
def fast_tolist():
    """While active (a recorder is entered in this thread), ``FakeTensor.tolist`` costs one dispatch."""
    global _installed
    with _install_lock:
        _installed += 1
        FakeTensor.tolist = _tolist
    _tracing.depth = getattr(_tracing, "depth", 0) + 1
    try:
        yield
    finally:
        _tracing.depth -= 1
        with _install_lock:
            _installed -= 1
            if _installed == 0:
                FakeTensor.tolist = _original_tolist

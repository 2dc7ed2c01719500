"""Worst-case policies for data-dependent ops, applied when the tensor holds no data (meta/fake).

Each policy replaces the op's output with an empty tensor of the assumed shape (same device/dtype
rules as the real op) and is named in ``AnalysisResult.policies``. Real tensors run the real op.
Mixture-of-experts routing is not a worst case but a model of the router's choice (``routing.py``): the
values it gives a router's indices decide the data-dependent ops downstream of it, before any worst case."""
from __future__ import annotations

import contextlib
import math
import threading

import torch
from torch._subclasses.fake_tensor import FakeTensor

from torchbudget.engine.ops.values import known_list, known_values
from torchbudget.engine.tracing.routing import RoutingValues

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
# Not data-dependent, a meta-kernel gap: torch 2.14.1's meta for _grouped_mm (_meta_registrations.py,
# _meta_grouped_mm_common) accepts bf16 (and fp16 with a cuBLASLt grouped GEMM, CUDA >= 13.3 only), while the
# kernels accept fp32/bf16/fp16 (ATen/native/GroupedMMUtils.h: _grouped_mm_validate_inputs, "Expected mat_a to
# be Float32, BFloat16 or Float16 matrix"): the CUDA kernel's fast path is bf16 on sm90/sm100, everything else
# runs _grouped_mm_fallback (offs.cpu(), then one mm_out per group into the output): the same MACs, no other
# allocation. transformers (integrations/moe.py, _can_use_grouped_mm) takes grouped_mm in every dtype on CUDA
# sm80+ and on CPU with torch > 2.10.
GROUPED_MM = ("grouped_mm in {dtypes}: torch's meta kernel accepts only bfloat16, the CUDA/CPU kernels run it "
              "(one mm per group: torch's _grouped_mm_fallback); output shaped and counted as theirs")


def _no_data(t) -> bool:
    return isinstance(t, torch.Tensor) and (t.device.type == "meta" or isinstance(t, FakeTensor))


def _long(like: torch.Tensor, shape) -> torch.Tensor:
    return like.new_empty(tuple(shape), dtype=torch.long)


_PACKETS = {aten.nonzero, aten.argwhere, aten.masked_select, aten._local_scalar_dense, aten._unique2,
            aten.unique_dim, aten.unique_consecutive, aten._unique, aten.index, aten._grouped_mm}


class DataDependentPolicies:
    def __init__(self, moe_routing: str = "balanced", where=None, module_at=None):
        self._applied: dict[str, None] = {}   # ordered set of policy texts
        self._grouped_dtypes: dict[str, None] = {}
        # off for our own optimizer step: Adam reads its step counter with .item() (1 = the first step
        # is exact), which is no assumption about the user's model
        self.reporting = True
        # off for our own optimizer step too: no router runs there, and following the known values of its
        # ~3 small tensors per parameter (step counters) cost ~0.5 ms each on a 70B model
        self.following_values = True
        self.routing = RoutingValues(moe_routing, where=where, module_at=module_at)

    @property
    def applied(self) -> dict[str, None]:
        """Every policy the trace took, in order; the MoE routing lines (one per router shape) last."""
        applied = dict(self._applied)
        if self._grouped_dtypes:
            applied[GROUPED_MM.format(dtypes="/".join(self._grouped_dtypes))] = None
        applied.update(dict.fromkeys(self.routing.lines()))
        return applied

    def maybe_run(self, func, args, kwargs):
        """The policy's output, or NotImplemented when the op is not data-dependent here."""
        if self.following_values:
            out = self.routing.run(func, args, kwargs)
            if out is not NotImplemented:
                return out
        packet = func.overloadpacket
        if (packet not in _PACKETS and func.namespace != "torchvision") or not args or not _no_data(args[0]):
            return NotImplemented
        if packet is aten._grouped_mm:
            return self._grouped_mm(func, args, kwargs)
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
            self._applied[policy] = None
        return out

    def _grouped_mm(self, func, args, kwargs):
        """fp32/fp16 _grouped_mm: the kernels' checks and output (GROUPED_MM); bf16 goes to torch's meta."""
        a, b = args[0], args[1]
        if a.dtype not in (torch.float32, torch.float16):
            return NotImplemented
        offs = args[2] if len(args) > 2 else kwargs.get("offs")
        bias = args[3] if len(args) > 3 else kwargs.get("bias")
        out_dtype = args[4] if len(args) > 4 else kwargs.get("out_dtype")
        torch._check(b.dtype in (torch.float32, torch.float16, torch.bfloat16),
                     lambda: f"Expected mat_b to be Float32, BFloat16 or Float16 matrix, got {b.dtype}")
        torch._check(b.dtype == a.dtype, lambda: f"expected mat1 and mat2 to have the same dtype, but got: "
                                                 f"{a.dtype} != {b.dtype}")   # the fallback's mm
        torch._check(a.dim() in (2, 3) and b.dim() in (2, 3), lambda: "mat_a and mat_b have to be 2 or 3d")
        if a.dim() == 3 or b.dim() == 3:
            torch._check(a.shape[-1] == b.shape[-2], lambda: "contraction dimension of mat_a and mat_b must match")
        torch._check((offs is not None) == (a.dim() == 2 or b.dim() == 2),
                     lambda: "Have to provide offsets if there is a 2d matrix, or no offset if both matrices are 3d")
        if offs is not None:
            torch._check(offs.dim() == 1 and offs.dtype == torch.int32, lambda: "Offsets have to be 1D int32")
        torch._check(bias is None, lambda: "Bias not supported yet")
        torch._check(out_dtype in (None, a.dtype), lambda: "Grouped gemm output dtype must match `mat_a` dtype")
        if a.dim() == 2:
            size = [offs.shape[0], a.shape[0], b.shape[1]] if b.dim() == 2 else [a.shape[0], b.shape[-1]]
        else:
            size = [a.shape[1], b.shape[1]] if b.dim() == 2 else [a.shape[0], a.shape[1], b.shape[-1]]
        if b.dim() == 3:
            torch._check(offs is None or offs.shape[0] == b.shape[0], lambda: "matrix batch sizes have to match")
        # create_grouped_gemm_output_tensor (CUDA): the last dim padded to a 16-byte stride
        alignment = 16 // a.element_size()
        padded = size[:-1] + [(size[-1] + alignment - 1) // alignment * alignment]
        stride = [1] * len(padded)
        for i in range(len(padded) - 2, -1, -1):
            stride[i] = stride[i + 1] * padded[i + 1]
        if self.reporting:
            self._grouped_dtypes[str(a.dtype).removeprefix("torch.")] = None
        return torch.empty_strided(size, stride, dtype=a.dtype, device=a.device)

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


def _reshape_list(flat: list, shape: tuple[int, ...]):
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0]
    return [_reshape_list(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _tolist(self):
    if not getattr(_tracing, "depth", 0) or self.dim() == 0 or self.numel() == 0:
        return _original_tolist(self)   # not ours, or trivially cheap (a scalar's .item(), empty lists)
    known = known_values(self)
    first = aten._local_scalar_dense.default(self)   # the one recorded read of the whole tensor
    if known is not None and tuple(known.shape) == tuple(self.shape):
        flat = known_list(self)         # modelled values (MoE routing: token counts per expert)
        return _reshape_list(flat, tuple(self.shape))
    return _nested(first, tuple(self.shape))


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

"""CUDA scaled_dot_product_attention of torch 2.14.1, replayed on fake CPU tensors.

On CPU tensors ``F.scaled_dot_product_attention`` runs the CPU kernels (with dropout the math path, which
keeps B·H·Sq·Sk scores in fp32). This module decides what the same call does on a CUDA GPU of a given
compute capability and then runs *that* backend's aten op, which has meta kernels and autograd formulas,
so a fake-CPU trace records the GPU's ops, bytes and saved tensors.

Two halves, each a replica of one C++ file of torch 2.14.1 (``torch.version.git_version``
5c4886908584029761b579af026dcfb627c84070, the wheel this project pins):

* :func:`select_backend` — ``sdp::select_sdp_backend`` / ``priority_order`` / ``check_prefer_cudnn_attention``
  and the ``can_use_{cudnn,flash,mem_efficient}_attention`` filter lists of
  ``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp`` (+ the inline filters of
  ``sdp_utils_cpp.h``). Read from pytorch/pytorch at 001f694aef6f922b4fdf6d27d59162d27bf3df58 (the copy the
  search index holds) and checked against the 2.14.1 ``libtorch_cuda.so`` (symbols, constants and
  call order of every filter list): identical except that 2.14.1 adds one filter, the cuDNN "decode"
  check (``is_cudnn_attention_decode_disabled``), reconstructed from its disassembly. The
  ``sdp_utils_cpp.h`` filters are the installed 2.14.1 header itself.
* :func:`run_backend` / :func:`scaled_dot_product_attention` — the CUDA branch of
  ``at::native::scaled_dot_product_attention`` (``aten/src/ATen/native/transformers/attention.cpp``):
  unbatched (3-d) inputs get a batch dimension, a boolean mask becomes an additive one, flash pads the
  head dim to a multiple of 8 (scale from the original size) and slices the output back, efficient
  attention pads/expands the mask, GQA is passed through to the fused kernels (they support it) and
  expanded by ``repeat_interleave`` in the math path. The math path is the composite
  ``_scaled_dot_product_attention_math`` replayed in Python with its CUDA behaviour: fp16/bf16 inputs are
  upcast to fp32 (unless ``allow_fp16_bf16_reduction_math_sdp``), the mask is added in place, and dropout
  is the fused ``native_dropout`` (bool mask) as ``at::dropout`` picks on CUDA — on CPU the same composite
  keeps a float mask and (under a dispatch mode) adds the mask out of place.

The GPU's runtime switches (``torch.backends.cuda.enable_flash_sdp``..., ``sdpa_kernel`` contexts in the
model's code, the priority order, deterministic algorithms) are read from this process when a call
happens, as the GPU run would read them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

aten = torch.ops.aten

TORCH_VERSION = "2.14.1"
TORCH_GIT = "5c4886908584029761b579af026dcfb627c84070"
SDP_UTILS_COMMIT = "001f694aef6f922b4fdf6d27d59162d27bf3df58"
# torch.backends.cudnn.version() of the torch 2.14.1+cu130 wheel (nvidia-cudnn-cu13 9.24.0)
DEFAULT_CUDNN_VERSION = 92400

CUDNN, FLASH, EFFICIENT, MATH = "cudnn", "flash", "efficient", "math"
BACKENDS = (CUDNN, FLASH, EFFICIENT, MATH)
ATTENTION_CHOICES = ("auto", FLASH, EFFICIENT, CUDNN, MATH)
_OVERRIDEABLE = "overrideable"
_SDP_ENUM = {0: MATH, 1: FLASH, 2: EFFICIENT, 3: CUDNN, 4: _OVERRIDEABLE}   # at::SDPBackend
_DEFAULT_ORDER = (FLASH, EFFICIENT, MATH, CUDNN, _OVERRIDEABLE)             # at::Context::sdp_priority_order
_CUDNN_FIRST = (CUDNN, FLASH, EFFICIENT, MATH)                                # priority_order() when preferred


class SdpaNoKernelError(RuntimeError):
    """No backend is usable (the model disabled the ones that would be): the GPU run raises too."""


@dataclass(frozen=True)
class Target:
    """The GPU the trace stands for."""

    capability: tuple[int, int]
    cudnn_version: int = DEFAULT_CUDNN_VERSION
    # TORCH_CUDNN_SDPA_DEPRIORITIZED=1 on the target machine (check_prefer_cudnn_attention)
    cudnn_deprioritized: bool = False

    @property
    def sm(self) -> str:
        major, minor = self.capability
        return f"sm{major}{minor}"


@dataclass(frozen=True)
class RuntimeFlags:
    """The at::globalContext() state the filters read (user-visible switches)."""

    flash: bool = True
    efficient: bool = True
    cudnn: bool = True
    math: bool = True
    fa3: bool = False
    deterministic: bool = False
    deterministic_warn_only: bool = False
    priority: tuple[str, ...] = _DEFAULT_ORDER

    @classmethod
    def current(cls) -> "RuntimeFlags":
        c = torch._C
        fa3 = getattr(c, "_get_fa3_sdp_enabled", lambda: False)()
        return cls(flash=c._get_flash_sdp_enabled(), efficient=c._get_mem_efficient_sdp_enabled(),
                   cudnn=c._get_cudnn_sdp_enabled(), math=c._get_math_sdp_enabled(), fa3=bool(fa3),
                   deterministic=torch.are_deterministic_algorithms_enabled(),
                   deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
                   priority=tuple(_SDP_ENUM.get(int(b), _OVERRIDEABLE) for b in c._get_sdp_priority_order()))


@dataclass(frozen=True)
class Rejection:
    """One failed filter: ``check`` is the C++ function name, ``reason`` a readable sentence."""

    backend: str
    check: str
    reason: str

    def __str__(self) -> str:
        return f"{self.backend}: {self.reason}"


@dataclass(frozen=True)
class SdpaChoice:
    backend: str
    rejected: tuple[Rejection, ...]        # the backends tried before ``backend``, in priority order
    order: tuple[str, ...]                 # the priority order used
    requested: str = "auto"                # the what-if override
    override_rejection: Rejection | None = None   # why the requested backend was not usable
    target: Target | None = None
    dtype: torch.dtype | None = None
    head_dim: tuple[int, int] = (0, 0)      # (q/k, v)
    seq: tuple[int, int] = (0, 0)           # (q, kv)

    @property
    def fell_back(self) -> bool:
        return self.override_rejection is not None


# --------------------------------------------------------------------------------------------------
# sdp_params: shapes/strides/dtypes only (the filters never touch data)

@dataclass(frozen=True)
class _T:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    offset: int
    requires_grad: bool
    nested: bool = False
    strided: bool = True

    @classmethod
    def of(cls, t: torch.Tensor) -> "_T":
        nested = bool(t.is_nested)
        if nested:
            return cls(tuple(), tuple(), t.dtype, 0, t.requires_grad, nested=True)
        return cls(tuple(int(s) for s in t.shape), tuple(int(s) for s in t.stride()), t.dtype,
                   int(t.storage_offset()), bool(t.requires_grad), strided=t.layout == torch.strided)

    def dim(self) -> int:
        return len(self.shape)

    def size(self, i: int) -> int:
        return self.shape[i]

    def unsqueeze0(self) -> "_T":
        first = self.shape[0] * self.stride[0] if self.shape else 1
        return replace(self, shape=(1, *self.shape), stride=(first, *self.stride))

    @property
    def element_size(self) -> int:
        return self.dtype.itemsize

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class _Params:
    query: _T
    key: _T
    value: _T
    attn_mask: _T | None
    dropout: float
    is_causal: bool
    enable_gqa: bool
    grad_enabled: bool


def _params(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa, grad_enabled) -> _Params:
    q, k, v = _T.of(query), _T.of(key), _T.of(value)
    m = _T.of(attn_mask) if attn_mask is not None else None
    p = _Params(q, k, v, m, float(dropout_p), bool(is_causal), bool(enable_gqa), bool(grad_enabled))
    return _normalize_unbatched(p)


def _normalize_unbatched(p: _Params) -> _Params:
    """sdp::normalize_unbatched_input (sdp_utils_cpp.h, 2.14.1): 3-d dense inputs get a batch dim."""
    if all(not t.nested and t.strided and t.dim() == 3 for t in (p.query, p.key, p.value)):
        m = p.attn_mask
        while m is not None and m.dim() < 4:
            m = m.unsqueeze0()
        p = replace(p, query=p.query.unsqueeze0(), key=p.key.unsqueeze0(), value=p.value.unsqueeze0(), attn_mask=m)
    return p


def _input_requires_grad(p: _Params) -> bool:
    return (p.query.requires_grad or p.key.requires_grad or p.value.requires_grad) and p.grad_enabled


def _nested(p: _Params) -> bool:
    return p.query.nested or p.key.nested or p.value.nested


def _sm_in(cap: tuple[int, int], lo: tuple[int, int], hi: tuple[int, int]) -> bool:
    return lo <= cap <= hi


def _dtype_name(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


# --------------------------------------------------------------------------------------------------
# filters: each returns None (pass) or a reason. Names are the C++ functions'.

def check_tensor_shapes(p, t, f):
    dims = (p.query.dim(), p.key.dim(), p.value.dim())
    if not (dims[0] == dims[1] == dims[2] == 4):
        return f"needs 4-d query/key/value, got {dims[0]}-d/{dims[1]}-d/{dims[2]}-d"
    return None


def _check_grouped_query_attention(p, requires_same_num_heads):
    qh, kh, vh = p.query.size(-3), p.key.size(-3), p.value.size(-3)
    if requires_same_num_heads and kh != vh:
        return f"key and value must have the same number of heads for GQA, got {kh} and {vh}"
    if kh == 0 or qh % kh != 0 or (not requires_same_num_heads and (vh == 0 or qh % vh != 0)):
        return f"GQA: key/value heads ({kh}/{vh}) must divide query heads ({qh})"
    return None


def _batch_size_and_num_heads_dense(supports_gqa: bool, requires_same_num_heads: bool, supports_mqa: bool):
    def check_batch_size_and_num_heads_dense(p, t, f):
        qb, kb, vb = p.query.size(0), p.key.size(0), p.value.size(0)
        if not (qb == kb == vb):
            return f"query/key/value batch sizes differ ({qb}/{kb}/{vb})"
        qh, kh, vh = p.query.size(-3), p.key.size(-3), p.value.size(-3)
        if p.enable_gqa and supports_gqa:
            return _check_grouped_query_attention(p, requires_same_num_heads)
        if not (qh == kh == vh):
            if supports_mqa and qh > 0 and kh == 1 and vh == 1:
                return None
            return f"query/key/value head counts differ ({qh}/{kh}/{vh}) and enable_gqa is off"
        return None
    return check_batch_size_and_num_heads_dense


def check_nonzero_sequence_lengths_dense(p, t, f):
    if p.query.size(-2) == 0 or p.key.size(-2) == 0:
        return "zero-length query or key sequence"
    return None


def _last_dim_stride_equals_1_dense(ignore_singleton_dim: bool):
    def check_last_dim_stride_equals_1_dense(p, t, f):
        ok = p.query.stride[-1] == 1 and p.key.stride[-1] == 1 and p.value.stride[-1] == 1
        if ignore_singleton_dim:
            ok = ok or p.query.size(-1) == 1
        mask_ok = p.attn_mask is None or not p.attn_mask.stride or p.attn_mask.stride[-1] == 1   # CUDA, not CPU
        if not (ok and mask_ok):
            return "the last dimension of query/key/value (and of a mask) must have stride 1"
        return None
    return check_last_dim_stride_equals_1_dense


def check_for_attn_mask(p, t, f):
    if p.attn_mask is not None:
        return "an explicit attn_mask is not supported (only is_causal)"
    return None


def check_attn_mask_shape(p, t, f):
    m = p.attn_mask
    if m is None:
        return None
    if m.requires_grad:
        return "attn_mask requires grad"
    b, h, sq, sk = p.query.size(0), p.query.size(1), p.query.size(2), p.key.size(2)

    def compatible(mask_dim, dim):
        return mask_dim == dim or mask_dim == 1

    bad = f"attn_mask of shape {tuple(m.shape)} is not (Sq|1, Sk|1) or (B|1, H|1, Sq|1, Sk|1)"
    if m.dim() < 2 or not compatible(m.size(-2), sq) or not compatible(m.size(-1), sk):
        return bad
    if m.dim() == 2:
        return None
    if m.dim() == 4 and compatible(m.size(0), b) and compatible(m.size(1), h):
        return None
    return bad


def _runtime(name: str, attr: str):
    def check(p, t, f):
        return None if getattr(f, attr) else f"disabled at runtime (torch.backends.cuda / sdpa_kernel)"
    check.__name__ = name
    return check


check_runtime_disabled_flash = _runtime("check_runtime_disabled_flash", "flash")
check_runtime_disabled_mem_efficient = _runtime("check_runtime_disabled_mem_efficient", "efficient")
check_runtime_disabled_cudnn = _runtime("check_runtime_disabled_cudnn", "cudnn")


def _check_tensor_dtype(p, allowed, what):
    d = p.query.dtype
    if not (d == p.key.dtype == p.value.dtype and d in allowed):
        names = ", ".join(_dtype_name(a) for a in allowed)
        return f"{what} needs query/key/value dtype in {{{names}}}, got {_dtype_name(d)}"
    return None


# ---- flash

def check_head_dim_size_flash(p, t, f):
    dq, dk, dv = p.query.size(-1), p.key.size(-1), p.value.size(-1)
    if not (dq == dk == dv and dq <= 256):
        if dq == dk == dv:
            return f"head dim {dq} > 256"
        return f"query/key/value head dims differ ({dq}/{dk}/{dv})"
    return None


def check_flash_attention_hardware_support(p, t, f):
    if not _sm_in(t.capability, (8, 0), (12, 1)):
        return f"needs sm80…sm121, the target is {t.sm}"
    return None


def check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120(p, t, f):
    sm86_89 = _sm_in(t.capability, (8, 6), (8, 9))
    sm120_121 = _sm_in(t.capability, (12, 0), (12, 1))
    if _input_requires_grad(p) and (sm86_89 or sm120_121):
        d = p.query.size(-1)
        if d <= 192 or (p.dropout <= 0.0 and d > 224):
            return None
        return (f"training with head dim {d} (in (192, 224], or (224, 256] with dropout) is not supported "
                f"on {t.sm}")
    return None


def check_flash_causal_non_square_seqlens(p, t, f):
    if p.is_causal and p.query.size(-2) != p.key.size(-2):
        return f"is_causal with Sq {p.query.size(-2)} != Sk {p.key.size(-2)}"
    return None


def check_dtypes_low_precision(p, t, f, what="cuDNN"):
    allowed = (torch.float16, torch.bfloat16) if t.capability[0] >= 8 else (torch.float16,)
    return _check_tensor_dtype(p, allowed, f"{what} on {t.sm}")


def check_dtypes_flash_attention(p, t, f):
    if t.capability[0] >= 9 and f.fa3:
        return _check_tensor_dtype(p, (torch.float8_e4m3fn, torch.float16, torch.bfloat16), "FA3")
    return check_dtypes_low_precision(p, t, f, "flash")


# ---- memory-efficient

def check_mem_efficient_hardware_support(p, t, f):
    if not _sm_in(t.capability, (5, 0), (12, 1)):
        return f"needs sm50…sm121, the target is {t.sm}"
    return None


def _minimum_gemm_alignment(p, t) -> int:
    major = t.capability[0]
    is_half = p.query.dtype in (torch.float16, torch.bfloat16)
    use_tc = major >= 8 or (major >= 7 and is_half)
    mn = 4 if major >= 8 else 1
    if use_tc:
        mn = max(mn, 128 // (16 if is_half else 32))
    return mn


def check_head_dim_size_mem_efficient(p, t, f):
    dq, dk, dv = p.query.size(-1), p.key.size(-1), p.value.size(-1)
    a = _minimum_gemm_alignment(p, t)
    if not (dq == dk and dq % a == 0 and dq > 0 and dv % a == 0 and dv > 0):
        if dq != dk:
            return f"query/key head dims differ ({dq}/{dk})"
        return f"head dims {dq}/{dv} not divisible by {a} ({_dtype_name(p.query.dtype)} on {t.sm})"
    return None


def check_data_ptr_alignment_mem_efficient(p, t, f):
    if _nested(p) or t.capability[0] < 8:
        return None
    align = _minimum_gemm_alignment(p, t) * p.query.element_size
    for name, x in (("query", p.query), ("key", p.key), ("value", p.value)):
        if x.numel != 0 and (x.offset * x.element_size) % align != 0:
            return f"{name} storage offset × element size is not a multiple of {align} bytes"
    return None


def check_dtypes_mem_efficient(p, t, f):
    if t.capability[0] >= 8:
        return _check_tensor_dtype(p, (torch.float16, torch.float32, torch.bfloat16), f"efficient on {t.sm}")
    return _check_tensor_dtype(p, (torch.float16, torch.float32), f"efficient on {t.sm}")


# ---- cuDNN

def _is_sm90_or_sm10x(t) -> bool:
    major, minor = t.capability
    return (major == 9 and minor == 0) or major == 10


def _is_unsupported_sm107(t) -> bool:
    return t.capability == (10, 7) and t.cudnn_version <= 92500


def is_cudnn_attention_decode_disabled(t) -> bool:
    """2.14.1 (libtorch_cuda.so disassembly): cuDNN 9.19…9.25.0, except 9.24.1…9.24.99, on SM 10.x/11.x."""
    v = t.cudnn_version
    return t.capability[0] in (10, 11) and 91900 <= v <= 92500 and not (92401 <= v <= 92499)


def check_cudnn_dropout_version(p, t, f):
    if p.dropout > 0.0 and 91100 < t.cudnn_version < 91400:
        return f"cuDNN {t.cudnn_version} (9.11–9.13) does not support dropout in SDPA"
    return None


def check_cudnn_deterministic(p, t, f):
    if f.deterministic and not f.deterministic_warn_only:
        return "deterministic algorithms are on (cuDNN SDPA is not deterministic)"
    return None


def check_cudnn_hardware_support(p, t, f):
    if not _sm_in(t.capability, (8, 0), (12, 1)):
        return f"needs sm80…sm121, the target is {t.sm}"
    return None


def check_cudnn_dropout(p, t, f):
    if p.dropout * 16.0 != math.floor(p.dropout * 16.0):
        return f"dropout_p={p.dropout:g} is not a multiple of 1/16"
    return None


def check_for_nested_inputs(p, t, f):
    if _nested(p):
        return "nested tensors (experimental cuDNN support is off by default)"
    return None


def check_cudnn_tensor_shapes(p, t, f):
    b, h = p.query.size(0), p.query.size(1)
    if not (b <= 65535 and h <= 65535):
        return f"batch {b} or heads {h} > 65535"
    s_q, s_k = p.query.size(2), p.key.size(2)
    d_qk, d_v = p.query.size(3), p.value.size(3)
    v = t.cudnn_version
    if v < 8903:
        return "needs cuDNN >= 8.9.3"
    if v < 8906 and p.dropout != 0.0:
        return "dropout needs cuDNN >= 8.9.6"
    if s_q == 1 and is_cudnn_attention_decode_disabled(t):
        return f"decode (Sq = 1) is disabled on {t.sm} for cuDNN {v} (9.19–9.25.0 except 9.24.1)"
    limit = 128
    if _is_sm90_or_sm10x(t) and not _is_unsupported_sm107(t) and v > 92200:
        limit = 256   # kCuDNNFrontendSupportsD256: true in the 2.14.1 build (the 256 branch is compiled in)
    elif _is_sm90_or_sm10x(t) and v >= 91100 and d_qk == 192 and d_v == 128:
        limit = 192
    if not (d_qk <= limit and d_v <= limit):
        return f"head dim {max(d_qk, d_v)} > {limit} ({t.sm}, cuDNN {v})"
    if d_qk % 8 or d_v % 8:
        return f"head dims {d_qk}/{d_v} not multiples of 8"
    if v < 8906 and s_k % 64:
        return "Sk not a multiple of 64 needs cuDNN >= 8.9.6"
    if v < 90000:
        if s_q < 64:
            return "Sq < 64 needs cuDNN >= 9.0"
        if p.dropout != 0.0 and (s_q % 64 or s_k % 64):
            return "Sq/Sk not multiples of 64 with dropout need cuDNN >= 9.0"
    if s_k == 1:
        return "key/value sequence length 1"
    if p.dropout != 0.0 and s_q == 1:
        return "query sequence length 1 with dropout"
    return None


def check_cudnn_d256_bprop_head_dim(p, t, f):
    if not _input_requires_grad(p):
        return None
    d_qk, d_v = p.query.size(3), p.value.size(3)
    supports_d256 = t.cudnn_version > 92200 and _is_sm90_or_sm10x(t) and not _is_unsupported_sm107(t)
    if supports_d256:
        ok = (d_qk <= 128 and d_v <= 128) or (d_qk == 192 and d_v == 128) or (d_qk == 256 and d_v == 256)
        if not ok:
            return f"backward with head dims {d_qk}/{d_v} is not supported on {t.sm}"
    return None


# ---- the filter lists (can_use_*_attention, in C++ order)

_FLASH_GENERAL = (check_runtime_disabled_flash, check_tensor_shapes, check_for_attn_mask, check_head_dim_size_flash,
                  check_flash_attention_hardware_support,
                  check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120,
                  check_flash_causal_non_square_seqlens, check_dtypes_flash_attention)
_FLASH_DENSE = (_batch_size_and_num_heads_dense(True, True, True), check_nonzero_sequence_lengths_dense,
                _last_dim_stride_equals_1_dense(True))
_EFF_GENERAL = (check_runtime_disabled_mem_efficient, check_mem_efficient_hardware_support, check_tensor_shapes,
                check_head_dim_size_mem_efficient, check_data_ptr_alignment_mem_efficient)
_EFF_DENSE = (check_nonzero_sequence_lengths_dense, _last_dim_stride_equals_1_dense(False),
              _batch_size_and_num_heads_dense(True, True, True))
_EFF_LAST = (check_dtypes_mem_efficient,)
_CUDNN_FIRST_CHECK = (check_cudnn_dropout_version,)
_CUDNN_GENERAL = (check_runtime_disabled_cudnn, check_for_nested_inputs, check_tensor_shapes, check_cudnn_deterministic,
                  check_dtypes_low_precision, check_attn_mask_shape, check_cudnn_hardware_support,
                  check_cudnn_dropout)
_CUDNN_DENSE = (check_nonzero_sequence_lengths_dense, _last_dim_stride_equals_1_dense(True),
                _batch_size_and_num_heads_dense(True, False, True), check_cudnn_tensor_shapes,
                check_cudnn_d256_bprop_head_dim)

FILTERS = {
    FLASH: _FLASH_GENERAL + _FLASH_DENSE,
    EFFICIENT: _EFF_GENERAL + _EFF_DENSE + _EFF_LAST,
    CUDNN: _CUDNN_FIRST_CHECK + _CUDNN_GENERAL + _CUDNN_DENSE,
}


def _nested_unsupported(p, t, f):
    return "nested tensors are not modelled"


def can_use(backend: str, p: _Params, target: Target, flags: RuntimeFlags) -> Rejection | None:
    """None when ``backend`` can run these inputs on ``target``, else the first failed filter."""
    if backend == MATH:
        return None
    checks = FILTERS[backend]
    if _nested(p):
        checks = (checks[0], _nested_unsupported)
    for check in checks:
        reason = check(p, target, flags)
        if reason is not None:
            return Rejection(backend, check.__name__, reason)
    return None


def priority_order(target: Target, flags: RuntimeFlags) -> tuple[str, ...]:
    """priority_order(): the Context's order; on first use CUDA puts cuDNN first where preferred
    (check_prefer_cudnn_attention, CUDA >= 13 build: cuDNN > 9.15.0 on SM 9.x and 10.x). A user order
    (sdpa_kernel(..., set_priority=True)) is kept."""
    if flags.priority == _DEFAULT_ORDER and _prefer_cudnn(target):
        return _CUDNN_FIRST
    return flags.priority


def _prefer_cudnn(target: Target) -> bool:
    return (not target.cudnn_deprioritized and target.cudnn_version > 91500
            and target.capability[0] in (9, 10))


def select_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                   scale: float | None = None, enable_gqa: bool = False, *,
                   capability: tuple[int, int], cudnn_version: int = DEFAULT_CUDNN_VERSION,
                   attention: str = "auto", flags: RuntimeFlags | None = None,
                   grad_enabled: bool | None = None, target: Target | None = None) -> SdpaChoice:
    """The backend ``F.scaled_dot_product_attention`` picks on a CUDA GPU of ``capability`` (after the
    3-d → 4-d normalisation), plus why every backend tried before it was rejected.

    ``attention`` forces a backend (what ``sdpa_kernel([X])`` would do): when X cannot run these inputs
    PyTorch raises; here the choice falls back to ``auto`` and ``override_rejection`` says why.
    Raises :class:`SdpaNoKernelError` when nothing is usable (the model disabled the rest)."""
    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {ATTENTION_CHOICES}, got {attention!r}")
    target = target or Target(tuple(capability), cudnn_version)
    flags = flags or RuntimeFlags.current()
    grad = torch.is_grad_enabled() if grad_enabled is None else grad_enabled
    p = _params(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa, grad)
    order = tuple(b for b in priority_order(target, flags) if b != _OVERRIDEABLE)
    info = dict(target=target, dtype=p.query.dtype,
                head_dim=(p.query.size(-1) if p.query.dim() else 0, p.value.size(-1) if p.value.dim() else 0),
                seq=(p.query.size(-2) if p.query.dim() > 1 else 0, p.key.size(-2) if p.key.dim() > 1 else 0))
    override_rejection = None
    if attention != "auto":
        forced_flags = replace(flags, **{attention: True}) if attention != MATH else flags
        rejection = can_use(attention, p, target, forced_flags)
        if rejection is None:
            return SdpaChoice(attention, (), order, requested=attention, **info)
        override_rejection = rejection
    rejected: list[Rejection] = []
    for backend in order:
        if backend == MATH:
            if flags.math:
                return SdpaChoice(MATH, tuple(rejected), order, requested=attention,
                                  override_rejection=override_rejection, **info)
            rejected.append(Rejection(MATH, "userEnabledMathSDP", "disabled at runtime"))
            continue
        rejection = can_use(backend, p, target, flags)
        if rejection is None:
            return SdpaChoice(backend, tuple(rejected), order, requested=attention,
                              override_rejection=override_rejection, **info)
        rejected.append(rejection)
    reasons = "; ".join(str(r) for r in rejected)
    raise SdpaNoKernelError(f"No available kernel. Aborting execution. (on {target.sm}: {reasons})")


# --------------------------------------------------------------------------------------------------
# running the chosen backend: the CUDA branch of at::native::scaled_dot_product_attention

def _validate_sdpa_input(query, key, value, attn_mask) -> None:
    if not (query.dtype == key.dtype == value.dtype):
        raise RuntimeError(f"Expected query, key, and value to have the same dtype, but got query.dtype: "
                           f"{query.dtype} key.dtype: {key.dtype} and value.dtype: {value.dtype} instead.")
    if not (query.device == key.device == value.device):
        raise RuntimeError("Expected query, key, and value to have the same device type")
    if query.dim() < 2 or key.dim() < 2 or value.dim() < 2:
        raise RuntimeError("Expected query, key, and value to all be  at least 2 dimensional, but got "
                           f"query.dim: {query.dim()} key.dim: {key.dim()} and value.dim: {value.dim()} instead.")
    if attn_mask is not None:
        if attn_mask.dtype not in (torch.bool, torch.float32, query.dtype):
            raise RuntimeError(f"Expected attn_mask dtype to be bool or float or to match query dtype, but got "
                               f"attn_mask.dtype: {attn_mask.dtype} and  query.dtype: {query.dtype} instead.")


def convert_boolean_attn_mask(attn_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """2.14.1: ``where(mask, 0.0, scalar_tensor(-inf, dtype, device=mask.device))`` (from the
    libtorch_cpu.so disassembly: one where_ScalarSelf, the -inf constant); float masks pass through."""
    if attn_mask is None or attn_mask.dtype != torch.bool:
        return attn_mask
    neg_inf = aten.scalar_tensor.default(-math.inf, dtype=dtype, device=attn_mask.device)
    return aten.where.ScalarSelf(attn_mask, 0.0, neg_inf)


def _pad_last_dim(t: torch.Tensor, alignment: int) -> torch.Tensor:
    last = t.size(-1)
    if last % alignment == 0:
        return t
    return aten.pad.default(t, [0, alignment - last % alignment])


def _aligned_tensor(t: torch.Tensor, alignment: int) -> bool:
    return all(t.stride(i) % alignment == 0 for i in range(t.dim() - 1)) and t.stride(-1) == 1


def preprocess_mask(mask, query, key) -> torch.Tensor:
    """Memory-efficient attention wants a bias whose strides are multiples of 8: pad and slice back."""
    result = mask
    if not _aligned_tensor(mask, 8):
        last = mask.size(-1)
        padded = aten.pad.default(mask, [0, 8 - last % 8])
        result = aten.slice.Tensor(padded, -1, 0, last)
    return aten.expand.default(result, [query.size(0), query.size(1), query.size(2), key.size(2)])


def _any_requires_grad(*tensors) -> bool:
    return any(t is not None and t.requires_grad for t in tensors) and torch.is_grad_enabled()


def math_attention_cuda(query_, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False) -> torch.Tensor:
    """``_scaled_dot_product_attention_math`` as a CUDA GPU runs it (the composite's ops, with the
    mask added in place and dropout by the fused kernel, as no dispatch mode is active there)."""
    origin = query_.dtype
    upcast = not torch._C._get_math_sdp_allow_fp16_bf16_reduction()

    def acc(t):
        return aten._to_copy.default(t, dtype=torch.float32) if (
            upcast and t.dtype in (torch.float16, torch.bfloat16) and not t.is_nested) else t

    query_acc, key_acc, value_acc = acc(query_), acc(key), acc(value)
    negative = scale is not None and scale < 0.0
    base = abs(scale) if negative else scale
    scaling_factor = math.sqrt(base if base is not None else 1.0 / math.sqrt(query_acc.size(-1)))
    query = aten.mul.Scalar(query_acc, -scaling_factor if negative else scaling_factor)
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when "
                               "is_causal=True")
        L, S = query.size(-2), key_acc.size(-2)
        causal = aten.tril.default(aten.ones.default([L, S], dtype=torch.bool, device=query.device))
        attn_mask = convert_boolean_attn_mask(causal, query.dtype)
    key_e, value_e = key_acc, value_acc
    if enable_gqa:
        qh, kh, vh = query.size(-3), key_acc.size(-3), value_acc.size(-3)
        if not (qh == kh == vh):
            if qh % kh or qh % vh:
                raise RuntimeError("Number of heads in key and value must divide the number of heads in ")
            key_e = aten.repeat_interleave.self_int(key_acc, qh // kh, -3)
            value_e = aten.repeat_interleave.self_int(value_acc, qh // vh, -3)
    attn = aten.matmul.default(query, aten.mul.Scalar(aten.transpose.int(key_e, -2, -1), scaling_factor))
    if attn_mask is not None:
        attn = aten.add_.Tensor(attn, attn_mask)
    attn = aten._safe_softmax.default(attn, -1)
    if dropout_p > 0.0:
        # at::dropout: the fused kernel on CUDA (is_fused_kernel_acceptable), a bool mask
        if 0.0 < dropout_p < 1.0 and attn.numel() > 0:
            attn = aten.native_dropout.default(attn, dropout_p, True)[0]
        else:
            attn = aten.dropout.default(attn, dropout_p, True)
    if origin == attn.dtype:
        return aten.matmul.default(attn, value_e)
    # make_tuple(matmul(attn, v).to(origin), attn.to(origin)): GCC builds the second element first
    # (libtorch_cpu.so call order); the caller drops it after the composite returns
    weights = aten._to_copy.default(attn, dtype=origin)
    out = aten._to_copy.default(aten.matmul.default(attn, value_e), dtype=origin)
    del weights
    return out


def run_backend(choice: SdpaChoice | str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """The switch of at::native::scaled_dot_product_attention for a CUDA device, on 4-d (already
    normalised) inputs. Autograd works: every op called has a derivative formula."""
    backend = choice.backend if isinstance(choice, SdpaChoice) else choice
    attn_mask = convert_boolean_attn_mask(attn_mask, query.dtype)
    if backend == CUDNN:
        lse = _any_requires_grad(query, key, value)
        return aten._scaled_dot_product_cudnn_attention.default(
            query, key, value, attn_mask, lse, dropout_p, is_causal, False, scale=scale)[0]
    if backend == FLASH:
        og_size = query.size(-1)
        q, k, v = (_pad_last_dim(t, 8) for t in (query, key, value))
        og_scale = scale if scale is not None else 1.0 / math.sqrt(og_size)
        out = aten._scaled_dot_product_flash_attention.default(q, k, v, dropout_p, is_causal, False,
                                                                scale=og_scale)[0]
        if out.size(-1) != og_size:
            out = aten.slice.Tensor(out, -1, 0, og_size)
        return out
    if backend == EFFICIENT:
        lse = _any_requires_grad(query, key, value, attn_mask)
        if attn_mask is not None:
            attn_mask = preprocess_mask(attn_mask, query, key)
        return aten._scaled_dot_product_efficient_attention.default(
            query, key, value, attn_mask, lse, dropout_p, is_causal, scale=scale)[0]
    if backend == MATH:
        return math_attention_cuda(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    raise ValueError(f"unknown backend {backend!r}")


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
                                 *, capability: tuple[int, int], cudnn_version: int = DEFAULT_CUDNN_VERSION,
                                 attention: str = "auto", flags: RuntimeFlags | None = None,
                                 target: Target | None = None) -> tuple[torch.Tensor, SdpaChoice]:
    """``F.scaled_dot_product_attention`` as torch 2.14.1 runs it on a CUDA GPU of ``capability``:
    (attention output, the backend choice). Call it on fake CPU tensors (the CUDA kernels' meta
    implementations run; real CPU tensors cannot run them)."""
    target = target or Target(tuple(capability), cudnn_version)
    if all(t.dim() == 3 and t.layout == torch.strided and not t.is_nested for t in (query, key, value)):
        q, k, v = (aten.unsqueeze.default(t, 0) for t in (query, key, value))
        m = attn_mask
        while m is not None and m.dim() < 4:
            m = aten.unsqueeze.default(m, 0)
        out, choice = scaled_dot_product_attention(q, k, v, m, dropout_p, is_causal, scale, enable_gqa,
                                                   capability=capability, attention=attention, flags=flags,
                                                   target=target)
        return aten.squeeze.dim(out, 0), choice
    _validate_sdpa_input(query, key, value, attn_mask)
    choice = select_backend(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                            capability=capability, attention=attention, flags=flags, target=target)
    return run_backend(choice, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa), choice


def describe(choice: SdpaChoice) -> str:
    """'flash (sm90, bfloat16, head dim 64)'."""
    dq, dv = choice.head_dim
    head = f"head dim {dq}" if dq == dv else f"head dims {dq}/{dv}"
    sm = choice.target.sm if choice.target else "?"
    dtype = _dtype_name(choice.dtype) if choice.dtype is not None else "?"
    return f"{choice.backend} ({sm}, {dtype}, {head})"


__all__ = ["TORCH_VERSION", "TORCH_GIT", "SDP_UTILS_COMMIT", "DEFAULT_CUDNN_VERSION", "BACKENDS",
           "ATTENTION_CHOICES", "CUDNN", "FLASH", "EFFICIENT", "MATH", "Target", "RuntimeFlags", "Rejection",
           "SdpaChoice", "SdpaNoKernelError", "select_backend", "run_backend", "scaled_dot_product_attention",
           "math_attention_cuda", "convert_boolean_attn_mask", "preprocess_mask", "priority_order", "can_use",
           "is_cudnn_attention_decode_disabled", "describe", "FILTERS"]

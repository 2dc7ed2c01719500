"""The CUDA autocast policy of torch 2.14.1: which aten op runs in which dtype under
``torch.autocast("cuda", dtype)``, and the cast semantics of each policy.

Source (torch 2.14.1, git 5c4886908584029761b579af026dcfb627c84070):

* the op lists are the macros of ``ATen/autocast_mode.h`` as installed by the 2.14.1 wheel
  (``torch/include/ATen/autocast_mode.h``: ``AT_FORALL_LOWER_PRECISION_FP`` line 820, ``AT_FORALL_FP32``
  855, ``AT_FORALL_FP32_SET_OPT_DTYPE`` 916, ``AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE`` 929,
  ``AT_FORALL_PROMOTE`` 946), which ``aten/src/ATen/autocast_mode.cpp`` registers for the ``Autocast``
  (CUDA) key in one ``TORCH_LIBRARY_IMPL(aten, Autocast, m)`` block, plus that block's CUDA-only extras:
  ``cudnn_convolution``/``cudnn_convolution_transpose`` (lower_precision_fp), ``linalg_matrix_sqrth``
  (fp32) and ``binary_cross_entropy`` (banned: raises). ``_cudnn_rnn`` is registered by
  ``aten/src/ATen/native/cudnn/AutocastRNN.cpp`` (not reachable from a CPU trace).
* the op set was checked against the dispatcher of the installed wheel: the ops with an
  ``AutocastCUDA`` kernel are exactly these (``tests/test_target_semantics.py``), and each policy was
  checked by running ops under the real CUDA autocast on fake CUDA tensors (forward only).
* the cast semantics are ``WrapFunction_`` / ``cached_cast`` / ``promote_type`` / ``set_opt_dtype`` /
  ``type_from_firstarg`` of the same header and ``cached_cast`` of ``autocast_mode.cpp``.

Every policy casts only *eligible* tensors: floating point, not float64 (``is_eligible``); the device
test (``is_cuda``) is taken as true, the trace's CPU tensors standing for the GPU's.
"""
from __future__ import annotations

import weakref
from enum import Enum

import torch


class Policy(str, Enum):
    LOWER_PRECISION_FP = "lower_precision_fp"   # cast floating inputs to the autocast dtype
    FP32 = "fp32"                               # cast floating inputs to float32
    FP32_SET_OPT_DTYPE = "fp32_set_opt_dtype"   # dtype=float32 unless given (first arg eligible)
    FP32_APPEND_DTYPE = "fp32_append_dtype"     # norm: redispatch with dtype=float32 appended
    PROMOTE = "promote"                         # widest floating input dtype
    BANNED = "banned"                           # raises (binary_cross_entropy)


_L, _F, _S, _A, _P = (Policy.LOWER_PRECISION_FP, Policy.FP32, Policy.FP32_SET_OPT_DTYPE,
                      Policy.FP32_APPEND_DTYPE, Policy.PROMOTE)

# key: "op" (the default overload) or "op.overload", as registered (KERNEL1 / KERNEL2 names)
LOWER_PRECISION_FP = (   # AT_FORALL_LOWER_PRECISION_FP
    "_convolution.deprecated", "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d.input", "conv_transpose3d.input", "convolution", "prelu", "addmm", "addmv", "addr",
    "matmul", "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul",
    "linalg_multi_dot", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell", "gru_cell",
    "rnn_tanh_cell", "rnn_relu_cell", "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
)
LOWER_PRECISION_FP_CUDA_ONLY = ("cudnn_convolution", "cudnn_convolution_transpose")
FP32 = (   # AT_FORALL_FP32
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
    "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm",
    "native_layer_norm", "rms_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim",
    "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
    "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_nearest2d", "_upsample_nearest_exact2d",
    "upsample_nearest3d", "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
    "_upsample_bilinear2d_aa", "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa",
)
FP32_CUDA_ONLY = ("linalg_matrix_sqrth",)
FP32_SET_OPT_DTYPE = (   # AT_FORALL_FP32_SET_OPT_DTYPE
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum", "linalg_vector_norm",
    "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList",
)
FP32_APPEND_DTYPE = ("norm.Scalar", "norm.ScalarOpt_dim")   # AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE
PROMOTE = (   # AT_FORALL_PROMOTE
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler", "index_put", "tensordot",
    "scatter_add",
)
BANNED = ("binary_cross_entropy",)

CUDA_POLICIES: dict[str, Policy] = {
    **{k: _L for k in LOWER_PRECISION_FP + LOWER_PRECISION_FP_CUDA_ONLY},
    **{k: _F for k in FP32 + FP32_CUDA_ONLY},
    **{k: _S for k in FP32_SET_OPT_DTYPE},
    **{k: _A for k in FP32_APPEND_DTYPE},
    **{k: _P for k in PROMOTE},
    **{k: Policy.BANNED for k in BANNED},
}

# per overload packet (what a torch-level builtin like ``torch.sum`` resolves to at call time): every
# listed overload of a packet has the same policy, so the packet's policy is the overload's
PACKET_POLICIES: dict[str, Policy] = {key.split(".")[0]: policy for key, policy in CUDA_POLICIES.items()}

BCE_BANNED_MESSAGE = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
    "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
    "In this case, combine the two layers using torch.nn.functional.binary_cross_entropy_with_logits\n"
    "or torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
    "safe to autocast.")


def policy_of(name: str, overload: str | None = None) -> Policy | None:
    """The policy of ``aten::name[.overload]``; ``overload=None``: whichever overload a builtin call resolves
    to (the packet's policy). Unlisted ops fall through autocast (run as called)."""
    if overload is None:
        return PACKET_POLICIES.get(name)
    return CUDA_POLICIES.get(name if overload in ("default", "") else f"{name}.{overload}")


def is_eligible(t) -> bool:
    """``is_eligible(arg, CUDA)``: a defined floating tensor that is not float64 (device taken as CUDA)."""
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


class CastCache:
    """autocast_mode.cpp's ``cached_casts``: lower-precision casts of float32 leaf tensors that require grad
    (the fp32 master weights), keyed by the source tensor, kept until the outermost autocast exits
    (``clear``). The source is held weakly (C++ holds a weak_intrusive_ptr)."""

    def __init__(self):
        self._casts: dict[int, tuple[weakref.ref, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, arg: torch.Tensor) -> torch.Tensor | None:
        hit = self._casts.get(id(arg))
        if hit is not None and hit[0]() is arg:
            self.hits += 1
            return hit[1]
        return None

    def put(self, arg: torch.Tensor, casted: torch.Tensor) -> None:
        self.misses += 1
        self._casts[id(arg)] = (weakref.ref(arg), casted)

    def clear(self) -> None:
        self._casts.clear()

    def __len__(self) -> int:
        return len(self._casts)


def cached_cast(to_type: torch.dtype, arg, lower: torch.dtype, cache: CastCache | None,
                cache_enabled: bool = True):
    """``cached_cast``: cast an eligible tensor (or each tensor of a list/tuple) to ``to_type``; cache it
    when it is a float32 leaf requiring grad cast to the autocast dtype. Anything else passes through."""
    if isinstance(arg, (list, tuple)) and any(isinstance(a, torch.Tensor) for a in arg):
        return type(arg)(cached_cast(to_type, a, lower, cache, cache_enabled) for a in arg)
    if not (is_eligible(arg) and arg.dtype != to_type):
        return arg
    can_try_cache = (cache is not None and cache_enabled and to_type == lower and arg.dtype == torch.float32
                     and arg.requires_grad and arg.is_leaf and not arg._is_view())
    if can_try_cache:
        hit = cache.get(arg)
        if hit is not None:
            return hit
        casted = arg.to(to_type)
        cache.put(arg, casted)
        return casted
    return arg.to(to_type)


def promote_type(lower: torch.dtype, args) -> torch.dtype:
    """``promote_type``: float32 if any eligible input is float32, the autocast dtype if all are; float64
    inputs are ignored; a third floating dtype (e.g. fp16 under a bf16 autocast) is an error, as in C++."""
    current = lower
    for arg in args:
        items = arg if isinstance(arg, (list, tuple)) else (arg,)
        for t in items:
            if not is_eligible(t):
                continue
            nxt = t.dtype
            if current == torch.float32 or nxt == torch.float32:
                current = torch.float32
            elif current == lower and nxt == lower:
                current = lower
            else:
                raise RuntimeError("Unexpected floating ScalarType in at::autocast::prioritize")
    return current


def _first_tensor(args, kwargs):
    if args:
        return args[0]
    for name in ("input", "self"):
        if name in kwargs:
            return kwargs[name]
    return None


def _dtype_given(args, kwargs) -> bool:
    if kwargs.get("dtype") is not None:
        return True
    return any(isinstance(a, torch.dtype) for a in args)


def _set_dtype(args, kwargs, dtype: torch.dtype, dtype_position: int | None):
    """Set the output dtype: positionally when the call already passed that slot (as None), else as
    the ``dtype`` keyword."""
    if dtype_position is not None and len(args) > dtype_position and args[dtype_position] is None:
        args = (*args[:dtype_position], dtype, *args[dtype_position + 1:])
        return args, kwargs
    return args, {**kwargs, "dtype": dtype}


# softmax(self, dim, dtype=None) / log_softmax: dtype may be positional (index 2, self included)
_POSITIONAL_DTYPE = {"softmax": 2, "log_softmax": 2}


def apply_policy(policy: Policy, name: str, lower: torch.dtype, args: tuple, kwargs: dict,
                 cache: CastCache | None, cache_enabled: bool = True) -> tuple[tuple, dict]:
    """The arguments ``WrapFunction_<policy>::call`` passes on: casts (lower_precision_fp, fp32, promote)
    or the output dtype (fp32_set_opt_dtype, fp32_append_dtype). BANNED raises."""
    if policy is Policy.BANNED:
        raise RuntimeError(BCE_BANNED_MESSAGE)
    if policy in (Policy.LOWER_PRECISION_FP, Policy.FP32, Policy.PROMOTE):
        if policy is Policy.LOWER_PRECISION_FP:
            to = lower
        elif policy is Policy.FP32:
            to = torch.float32
        else:
            to = promote_type(lower, (*args, *kwargs.values()))
        args = tuple(cached_cast(to, a, lower, cache, cache_enabled) for a in args)
        kwargs = {k: cached_cast(to, v, lower, cache, cache_enabled) for k, v in kwargs.items()}
        return args, kwargs
    first = _first_tensor(args, kwargs)
    if policy is Policy.FP32_SET_OPT_DTYPE:
        if is_eligible(first) and not _dtype_given(args, kwargs):
            return _set_dtype(args, kwargs, torch.float32, _POSITIONAL_DTYPE.get(name))
        return args, kwargs
    if policy is Policy.FP32_APPEND_DTYPE:
        if _dtype_given(args, kwargs) or not isinstance(first, torch.Tensor):
            return args, kwargs   # norm.*_dtype overloads: not autocast
        out = torch.float32 if is_eligible(first) else first.dtype
        return args, {**kwargs, "dtype": out}
    raise ValueError(policy)


def registered_cuda_autocast_ops() -> set[str]:
    """The aten ops with an ``AutocastCUDA`` kernel in the running torch (for checks), as "op[.overload]"."""
    found = set()
    for qualified in torch._C._dispatch_get_all_op_names():
        if not qualified.startswith("aten::"):
            continue
        try:
            if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "AutocastCUDA"):
                found.add(qualified[len("aten::"):])
        except RuntimeError:
            continue
    return found


__all__ = ["Policy", "CUDA_POLICIES", "PACKET_POLICIES", "policy_of", "is_eligible", "CastCache", "cached_cast",
           "promote_type", "apply_policy", "registered_cuda_autocast_ops", "BCE_BANNED_MESSAGE"]

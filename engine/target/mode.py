"""``CudaSemantics``: make a fake-CPU trace run what a CUDA GPU runs.

A :class:`torch.overrides.TorchFunctionMode` entered inside the FakeTensorMode, around the model's forward:

* ``F.scaled_dot_product_attention`` runs the backend torch 2.14.1 picks on the target GPU (see ``sdpa.py``);
* autocast follows the CUDA op lists (``autocast.py``) instead of the CPU ones. The mode keeps the
  *CPU* autocast switch (``torch.is_autocast_enabled("cpu")``) as the state of the GPU's autocast: it sets it
  (and the CUDA one, which user code may read) on entry when ``autocast_dtype`` is given, and model code that
  says ``torch.autocast(x.device.type, enabled=False)`` — ``"cpu"`` in the trace — turns it off as it would
  turn off CUDA autocast on the GPU. The C++ CPU autocast kernels never run while the mode is active (each
  call goes out under an ``ExcludeDispatchKeyGuard(AutocastCPU)``), so only the CUDA lists apply;
* the two CUDA-only branches of composites that change saved bytes: ``dropout`` takes the fused kernel
  (``native_dropout``, a bool mask; the CPU path keeps an input-dtype mask), and ``softmax``/``log_softmax``
  of fp16 to fp32 run ``_softmax(x, dim, half_to_float=True)`` (no fp32 copy of the input).

Dispatch: inside ``__torch_function__`` PyTorch 2.14 pops the mode (``_pop_mode_temporarily`` for Python
APIs, ``StashTorchFunctionModeGuard`` for builtins), so calling ``func`` runs it *once*, its insides unseen —
like autocast, which excludes its own key inside its kernel. For builtins (one aten op each) that is what we
want. Python-level torch functions (``F.layer_norm``, ``F.normalize``, ``Tensor.__rdiv__``...) are instead
re-dispatched with the mode pushed back (``torch._C._skip_one_hop_torch_function``), so the aten-level calls
inside them are each seen, as the dispatcher-level autocast sees them. (A Python method that ends in its
C twin, ``Tensor.unflatten`` -> ``super().unflatten``, comes back with the same ``func``; that second call
is run as the builtin.)

Nothing global is patched. On exit the mode pops itself and restores the autocast switches, nesting and
cache, also when the forward raised.
"""
from __future__ import annotations

import contextlib
import types as _pytypes
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode

from torchbudget.engine.target import autocast as ac
from torchbudget.engine.target import composites, sdpa

aten = torch.ops.aten

_ALIASES = {"__matmul__": "matmul"}
_SDPA = "scaled_dot_product_attention"
_SDPA_PARAMS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA_DEFAULTS = (None, None, None, None, 0.0, False, None, False)


# CUDA-only kernels a CPU-keyed fake tensor cannot reach (the dispatcher decomposes at AutogradCPU first)
_UNMODELLED = {
    "rms_norm": ("rms_norm: recorded as the CPU decomposition (pow, mean, rsqrt, mul: more saved tensors); "
                 "CUDA runs the fused _fused_rms_norm, which saves only the input and rstd"),
}


def _resolve(func) -> tuple[str | None, str | None]:
    """(aten op name, overload or None when a builtin resolves it at call time)."""
    if isinstance(func, torch._ops.OpOverload):
        ns, _, name = func._schema.name.partition("::")
        return (name, func._overloadname or "default") if ns == "aten" else (None, None)
    if isinstance(func, torch._ops.OpOverloadPacket):
        ns, _, name = func._qualified_op_name.partition("::")
        return (name, None) if ns == "aten" else (None, None)
    name = getattr(func, "__name__", None)
    return _ALIASES.get(name, name), None


def _is_python_function(func) -> bool:
    return isinstance(func, (_pytypes.FunctionType, _pytypes.MethodType))


def _bind(names, defaults, args, kwargs) -> list:
    values = list(defaults)
    for i, a in enumerate(args):
        values[i] = a
    for k, v in kwargs.items():
        if k not in names:
            raise TypeError(f"unexpected keyword argument {k!r}")
        values[names.index(k)] = v
    return values


def _no_cpu_autocast():
    return torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU))


def _autocast_nesting() -> int:
    level = torch.autocast_increment_nesting() - 1
    torch.autocast_decrement_nesting()
    return level


@dataclass(frozen=True)
class SdpaCall:
    choice: sdpa.SdpaChoice
    where: str | None
    recompute: bool = False


class CudaSemantics(TorchFunctionMode):
    """Run a fake-CPU trace with CUDA semantics for SDPA and autocast (and two CUDA composite branches).

    ``capability``: the target GPU's compute capability, e.g. ``(9, 0)``. ``autocast_dtype``: enter as if the
    forward ran under ``torch.autocast("cuda", autocast_dtype)`` (None: no autocast unless the model enters
    one). ``attention``: "auto" or a backend to force as a what-if (falls back to auto, with a note, when it
    cannot run the inputs). ``where``: a callable giving the running module's path, for the notes.

    Read ``notes`` (human-readable lines for ``AnalysisResult.policies``), ``sdpa_calls`` and
    ``autocast_counts`` after (or during) the run.
    """

    def __init__(self, capability: tuple[int, int], autocast_dtype: torch.dtype | None = None,
                 attention: str = "auto", *, cudnn_version: int = sdpa.DEFAULT_CUDNN_VERSION,
                 cache_enabled: bool = True, where: Callable[[], str | None] | None = None,
                 cudnn_deprioritized: bool = False, _parent: "CudaSemantics | None" = None):
        super().__init__()
        if attention not in sdpa.ATTENTION_CHOICES:
            raise ValueError(f"attention must be one of {sdpa.ATTENTION_CHOICES}, got {attention!r}")
        if autocast_dtype is not None and autocast_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"CUDA autocast supports float16 and bfloat16, got {autocast_dtype}")
        self.target = sdpa.Target(tuple(capability), cudnn_version, cudnn_deprioritized)
        self.autocast_dtype = autocast_dtype
        self.attention = attention
        self.cache_enabled = cache_enabled
        self.where = where
        self._parent = _parent
        self._records = _parent._records if _parent is not None else _Records()
        self.cache = ac.CastCache()
        self._saved = None
        self._entered = False
        self._owns_autocast = False
        self._python_calls: list = []

    # ---- results ------------------------------------------------------------------------------------

    @property
    def sdpa_calls(self) -> list[SdpaCall]:
        return self._records.sdpa

    @property
    def autocast_counts(self) -> Counter:
        """(policy, op name) -> calls that policy changed or checked."""
        return self._records.autocast

    @property
    def notes(self) -> list[str]:
        return self._records.notes(self.target, self.autocast_dtype)

    # ---- entering / leaving -------------------------------------------------------------------------

    def __enter__(self):
        if self._entered:
            raise RuntimeError("CudaSemantics is not reentrant; make a new one (or use recompute_context())")
        self._saved = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                       torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"),
                       torch.is_autocast_cache_enabled())
        self._owns_autocast = self.autocast_dtype is not None
        try:
            if self._owns_autocast:
                for device in ("cpu", "cuda"):
                    torch.set_autocast_enabled(device, True)
                    torch.set_autocast_dtype(device, self.autocast_dtype)
                torch.set_autocast_cache_enabled(self.cache_enabled)
                torch.autocast_increment_nesting()
            torch._C._push_on_torch_function_stack(self)
        except BaseException:
            self._restore()
            raise
        self._entered = True
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            top = torch._C._pop_torch_function_stack()
            if top is not self:   # someone left a mode on top of ours: put it back and fail loudly
                torch._C._push_on_torch_function_stack(top)
                raise RuntimeError("CudaSemantics exited while another torch function mode was on top of it")
        finally:
            self._entered = False
            self.cache.clear()
            self._restore()

    def _restore(self) -> None:
        if self._saved is None:
            return
        cpu_on, cpu_dtype, cuda_on, cuda_dtype, cache_on = self._saved
        if self._owns_autocast:
            torch.set_autocast_enabled("cpu", cpu_on)
            torch.set_autocast_dtype("cpu", cpu_dtype)
            torch.set_autocast_enabled("cuda", cuda_on)
            torch.set_autocast_dtype("cuda", cuda_dtype)
            torch.set_autocast_cache_enabled(cache_on)
            if torch.autocast_decrement_nesting() == 0:
                torch.clear_autocast_cache()
        self._saved = None

    @contextlib.contextmanager
    def _reentered(self):
        """Push this mode back for the inner calls of a Python-level function (handlers run popped)."""
        torch._C._push_on_torch_function_stack(self)
        try:
            yield
        finally:
            torch._C._pop_torch_function_stack()

    def recompute_context(self) -> "CudaSemantics":
        """The mode for activation-checkpoint recomputation during backward: same target and override,
        autocast from the switches checkpoint restores, records shared with this one (marked recompute).
        Use as ``checkpoint(fn, ..., use_reentrant=False, context_fn=sem.checkpoint_context_fn())``."""
        child = CudaSemantics(self.target.capability, None, self.attention, cudnn_version=self.target.cudnn_version,
                              cache_enabled=self.cache_enabled, where=self.where,
                              cudnn_deprioritized=self.target.cudnn_deprioritized, _parent=self)
        return child

    def checkpoint_context_fn(self) -> Callable[[], tuple]:
        return lambda: (contextlib.nullcontext(), self.recompute_context())

    # ---- the handler --------------------------------------------------------------------------------

    def _autocast_dtype_now(self) -> torch.dtype | None:
        if not torch.is_autocast_enabled("cpu"):
            return None
        if self._owns_autocast and not torch.is_autocast_enabled("cuda"):
            return None   # model code said torch.autocast("cuda", enabled=False)
        return torch.get_autocast_dtype("cpu")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # A Python-level torch function is re-dispatched so its inner calls are seen. Its own C twin
        # (``Tensor.unflatten`` -> ``super().unflatten``: the builtin reports the Python method as the
        # public API) arrives back here with the same func: that one is the op itself, run it as a builtin.
        if _is_python_function(func) and not (self._python_calls and self._python_calls[-1] is func):
            self._python_calls.append(func)
            try:
                with self._reentered():
                    return torch._C._skip_one_hop_torch_function(func, types, args, kwargs)
            finally:
                self._python_calls.pop()
        name, overload = _resolve(func)
        lower = self._autocast_dtype_now()
        if lower is None and len(self.cache) and _autocast_nesting() == 0:
            self.cache.clear()   # the outermost autocast (the model's own) has exited
        if name == _SDPA:
            return self._sdpa(func, args, kwargs, lower)
        if lower is not None and name in composites.REPLAYS and overload in (None, "default"):
            out = self._replay(name, args, kwargs)
            if out is not NotImplemented:
                return out
            self._records.unmodelled[f"{name} with class weights and label smoothing: inner casts not "
                                     "replayed (run as one call)"] += 1
        if name in _UNMODELLED:
            self._records.unmodelled[_UNMODELLED[name]] += 1
        cache_enabled = torch.is_autocast_cache_enabled()
        with _no_cpu_autocast():
            if lower is not None and "out" not in kwargs:
                policy = ac.policy_of(name, overload) if name else None
                if policy is not None:
                    args, kwargs = ac.apply_policy(policy, name, lower, args, kwargs, self.cache, cache_enabled)
                    self._records.autocast[(policy.value, name)] += 1
            if name in ("dropout",) and overload in (None, "default"):
                out = self._fused_dropout(args, kwargs)
                if out is not NotImplemented:
                    return out
            if name in ("softmax", "log_softmax") and overload in (None, "int"):
                out = self._half_to_float(name, args, kwargs)
                if out is not NotImplemented:
                    return out
            return func(*args, **kwargs)

    def _replay(self, name, args, kwargs):
        names, defaults = composites.SIGNATURES[name]
        values = _bind(names, defaults, args, {("self" if k == "input" else k): v for k, v in kwargs.items()})
        with self._reentered():
            out = composites.REPLAYS[name](*values)
        if out is not NotImplemented:
            self._records.replayed[name] += 1
        return out

    def _sdpa(self, func, args, kwargs, lower):
        q, k, v, mask, dropout_p, is_causal, scale, enable_gqa = _bind(_SDPA_PARAMS, _SDPA_DEFAULTS, args, kwargs)
        if any(t.is_nested for t in (q, k, v)):
            self._records.unmodelled["scaled_dot_product_attention on nested tensors: CPU semantics kept"] += 1
            with _no_cpu_autocast():
                return func(*args, **kwargs)
        with _no_cpu_autocast():
            if lower is not None:
                cache_enabled = torch.is_autocast_cache_enabled()
                q, k, v, mask = (ac.cached_cast(lower, t, lower, self.cache, cache_enabled) for t in (q, k, v, mask))
                self._records.autocast[(ac.Policy.LOWER_PRECISION_FP.value, _SDPA)] += 1
            out, choice = sdpa.scaled_dot_product_attention(
                q, k, v, mask, float(dropout_p), bool(is_causal), scale, bool(enable_gqa),
                capability=self.target.capability, attention=self.attention, target=self.target)
        where = self.where() if self.where is not None else None
        self._records.sdpa.append(SdpaCall(choice, where, recompute=self._parent is not None))
        return out

    def _fused_dropout(self, args, kwargs):
        """at::dropout on CUDA: ``native_dropout`` when training with 0 < p < 1 on a non-empty input."""
        try:
            x, p, train = _bind(("input", "p", "train"), (None, 0.5, True), args, kwargs)
        except (TypeError, IndexError):
            return NotImplemented
        if not (isinstance(x, torch.Tensor) and train and 0.0 < p < 1.0 and x.numel() > 0):
            return NotImplemented
        self._records.fused_dropout += 1
        return aten.native_dropout.default(x, float(p), bool(train))[0]

    def _half_to_float(self, name, args, kwargs):
        """softmax/log_softmax on CUDA: fp16 input with dtype=float32 goes to _softmax(half_to_float)."""
        try:
            x, dim, dtype = _bind(("input", "dim", "dtype"), (None, None, None),
                                  args, {("input" if k == "self" else k): v for k, v in kwargs.items()})
        except (TypeError, IndexError):
            return NotImplemented
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.float16 and dtype == torch.float32
                and isinstance(dim, int)):
            return NotImplemented
        self._records.half_to_float += 1
        op = aten._softmax.default if name == "softmax" else aten._log_softmax.default
        return op(x, dim, True)


def active_semantics() -> "CudaSemantics | None":
    """The innermost CudaSemantics on the torch-function mode stack (None outside one)."""
    for mode in reversed(torch.overrides._get_current_function_mode_stack()):
        if isinstance(mode, CudaSemantics):
            return mode
    return None


def checkpoint_context_fn() -> Callable[[], tuple]:
    """For ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False, context_fn=...)`` called during a
    forward under CudaSemantics: recomputation then runs under CUDA semantics too (otherwise it runs the
    CPU ops and checkpoint raises "Recomputed values ... have different metadata"). Outside a
    CudaSemantics it is the default (no contexts)."""
    sem = active_semantics()
    if sem is None:
        return lambda: (contextlib.nullcontext(), contextlib.nullcontext())
    return sem.checkpoint_context_fn()


class _Records:
    def __init__(self):
        self.sdpa: list[SdpaCall] = []
        self.autocast: Counter = Counter()
        self.replayed: Counter = Counter()
        self.unmodelled: Counter = Counter()
        self.fused_dropout = 0
        self.half_to_float = 0

    def notes(self, target: sdpa.Target, autocast_dtype: torch.dtype | None) -> list[str]:
        lines = [self._sdpa_note(group) for group in self._sdpa_groups()]
        if self.autocast:
            by_policy: dict[str, Counter] = {}
            for (policy, name), n in self.autocast.items():
                by_policy.setdefault(policy, Counter())[name] += n
            parts = []
            for policy in ac.Policy:
                ops = by_policy.get(policy.value)
                if ops:
                    listed = ", ".join(f"{name} ×{n}" for name, n in ops.most_common())
                    parts.append(f"{policy.value} ×{sum(ops.values())} ({listed})")
            dtype = sdpa._dtype_name(autocast_dtype) if autocast_dtype is not None else "the model's"
            lines.append(f"autocast: CUDA op lists of torch {sdpa.TORCH_VERSION} ({dtype}): " + "; ".join(parts))
        if self.replayed:
            lines.append("autocast inside C++ composites replayed: "
                         + ", ".join(f"{n} ×{c}" for n, c in self.replayed.most_common()))
        if self.fused_dropout:
            lines.append(f"dropout: CUDA's fused kernel (native_dropout, bool mask) ×{self.fused_dropout}")
        if self.half_to_float:
            lines.append(f"softmax of fp16 to fp32: CUDA's half_to_float kernel (no fp32 input copy) "
                         f"×{self.half_to_float}")
        lines.extend(f"{text} ×{n}" for text, n in self.unmodelled.items())
        return lines

    def _sdpa_groups(self):
        groups: dict[tuple, list[SdpaCall]] = {}
        for call in self.sdpa:
            c = call.choice
            key = (c.backend, c.dtype, c.head_dim, tuple(str(r) for r in c.rejected), c.requested,
                   str(c.override_rejection) if c.override_rejection else None, c.target)
            groups.setdefault(key, []).append(call)
        return groups.values()

    @staticmethod
    def _sdpa_note(calls: list[SdpaCall]) -> str:
        first = calls[0].choice
        forward = [c for c in calls if not c.recompute]
        n = len(forward) or len(calls)
        text = f"attention: {sdpa.describe(first)} ×{n}"
        recomputed = len(calls) - len(forward)
        if forward and recomputed:
            text += f" (+{recomputed} recomputed by checkpointing)"
        paths = list(dict.fromkeys(c.where for c in calls if c.where))
        if paths:
            text += " in " + (f"{paths[0]}…{paths[-1]}" if len(paths) > 2 else ", ".join(paths))
        if first.override_rejection is not None:
            text += (f"; attention={first.requested} requested but not usable "
                     f"({first.override_rejection.reason}), fell back to auto")
        elif first.requested != "auto":
            text += f" (forced: attention={first.requested})"
        if first.rejected:
            text += "; not " + "; not ".join(str(r) for r in first.rejected)
        return text


__all__ = ["CudaSemantics", "SdpaCall", "active_semantics", "checkpoint_context_fn"]

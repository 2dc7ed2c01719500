"""Generation steps through the model's own KV cache (transformers' ``Cache`` classes): prefill and decode.

* **prefill** — one forward over the prompt (batch x seq token ids) with ``use_cache=True``: the cache object
  the model creates (``DynamicCache`` for transformers' decoders) is filled; its tensors are KV_CACHE, alive
  when the step ends (what a server keeps for the decode steps that follow).
* **decode** — the new tokens (batch x 1 ids: one per sequence) against a cache of ``context_len`` tokens. That
  cache is the one the model's own prefill of the context leaves — the prefill runs first, on fake tensors and
  unrecorded — compacted to what it holds between decode steps (a sliding-window layer keeps its window, not a
  view of the whole prompt); its tensors are allocations before the first op (KV_CACHE), like the weights.
  Position ids are ``context .. context + new - 1`` per sequence (what ``generate`` passes); no attention mask
  is passed (sequences unpadded: an all-ones mask is one transformers' SDPA path drops).
* ``kv_dtype`` what-ifs store the cache in another dtype: ``fp8`` is transformers' own ``QuantizedCache``
  (``backend="fp8"``: float8_e4m3fn codes and one float32 scale per layer for keys and values), ``int8`` a
  layer built the same way (int8 codes and one float16 scale per token and KV head), ``bf16``/``fp16`` a plain
  cast. Like transformers' quantized caches, each update dequantises the layer's whole cache to the compute
  dtype for attention: that copy is a temporary of the step (a fused kernel such as vLLM's reads the stored
  codes directly and has none).

Nothing here records ops: engine/trace.py runs the step under its recorder and tracks the tensors named here."""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torchbudget.engine.errors import TraceError, UserError
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.results import GENERATION_WARNING
from torchbudget.engine.tracing.policies import DataDependentPolicies, fast_tolist
from torchbudget.engine.vocab import InputKind

CACHE_ARGUMENTS = ("cache", "past_key_values")   # transformers >= 5; before 5 (and remote code)
ATTENTION_MASK = "attention_mask"
_KV_STORAGE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def forward_parameters(model: torch.nn.Module) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}


def training_kwargs(model: torch.nn.Module) -> dict:
    """A training step builds no KV cache: ``use_cache=False`` where the forward takes it (transformers'
    decoders otherwise default to their config's ``use_cache=True`` and concatenate every layer's keys and
    values into a cache nobody reads)."""
    return {"use_cache": False} if "use_cache" in forward_parameters(model) else {}


def cache_argument(model: torch.nn.Module, mode: str) -> str:
    """The forward's cache argument, or one clear error: the model has no KV cache to fill or read."""
    params = forward_parameters(model)
    name = next((n for n in CACHE_ARGUMENTS if n in params), None)
    if name is None:
        raise UserError(f"--mode {mode} needs a model with a KV cache (a transformers decoder, whose forward takes "
                        f"'cache'); {type(model).__name__}'s forward takes no cache", field="mode")
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(f"--mode {mode} of encoder-decoder models ({type(model).__name__}: a self-attention and a "
                        "cross-attention cache) is not supported yet; decoder-only models are", field="mode")
    return name


def token_input(specs: Sequence[InputSpec], mode: str) -> int:
    """Index of the token ids: the input named input_ids, else the first token input that is not a mask."""
    candidates = [i for i, s in enumerate(specs) if s.kind is InputKind.TOKENS and s.name != ATTENTION_MASK]
    named = [i for i in candidates if specs[i].name == "input_ids"]
    if not (named or candidates):
        shapes = ", ".join(s.text() for s in specs) or "none"
        raise UserError(f"--mode {mode} needs token ids (batch x tokens, an integer input such as 8x1:int64); "
                        f"inputs: {shapes}", field="input")
    return (named or candidates)[0]


def step_shapes(specs: Sequence[InputSpec], options) -> list[tuple[int, ...]]:
    """The shapes the traced step's inputs have: as given, except that in decode an input named
    ``attention_mask`` covers the context and the new tokens (what transformers expect)."""
    shapes = [tuple(s.shape) for s in specs]
    tokens = [s for s in specs if s.kind is InputKind.TOKENS and s.name != ATTENTION_MASK]
    if options.mode == "decode" and tokens:   # (no token ids: prepare says what is missing, after the model)
        new = specs[token_input(specs, options.mode)].shape[1]
        for i, s in enumerate(specs):
            if s.name == ATTENTION_MASK and s.kind is InputKind.TOKENS:
                shapes[i] = (s.shape[0], options.context_len + new)
    return shapes


class _PoliciesOnly(TorchDispatchMode):
    """The trace's worst-case policies for data-dependent ops, recording nothing: the untraced prefill that
    fills a decode step's cache runs the model's code on fake tensors too."""

    def __init__(self):
        super().__init__()
        self.policies = DataDependentPolicies()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self.policies.maybe_run(func, args, kwargs)
        return func(*args, **kwargs) if out is NotImplemented else out


@contextlib.contextmanager
def untraced():
    with fast_tolist(), _PoliciesOnly():
        yield


# --------------------------------------------------------------------------------------- cache layers
def _transformers_cache():
    try:
        from transformers import cache_utils
    except ImportError as exc:   # a model whose forward takes `cache` came from transformers
        raise UserError(f"generation modes need transformers ({exc})", field="mode") from None
    return cache_utils


_LAYER_CLASSES: dict[str, type] = {}


def _layer_class(kind: str) -> type:
    """Cache layers for the int8 and cast what-ifs, built on transformers' own DynamicLayer (made once, on
    first use: transformers is imported only for generation)."""
    if kind in _LAYER_CLASSES:
        return _LAYER_CLASSES[kind]
    cache_utils = _transformers_cache()

    class Int8Layer(cache_utils.BaseQuantizedLayer):
        """int8 codes and one float16 scale per token and KV head (symmetric: absmax over the head dimension
        / 127), appended as tokens arrive; the whole layer is dequantised for attention on each update, through
        float32 as transformers' Fp8QuantizedLayer does."""

        def lazy_initialization(self, key_states, value_states):
            super().lazy_initialization(key_states, value_states)
            self._quantized_keys = self._quantize(key_states)
            self._quantized_values = self._quantize(value_states)

        def _quantize(self, tensor):
            scale = (tensor.abs().amax(dim=-1, keepdim=True).float() / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
            return (tensor.float() / scale).round().to(torch.int8), scale.to(torch.float16)

        def _dequantize(self, qtensor):
            codes, scale = qtensor
            return (codes.float() * scale.float()).to(self.keys.dtype)

        def update(self, key_states, value_states, *args, **kwargs):
            self.cumulative_length += key_states.shape[-2]
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                return key_states, value_states
            new_keys, new_values = self._quantize(key_states), self._quantize(value_states)
            self._quantized_keys = tuple(torch.cat([a, b], dim=-2) for a, b in zip(self._quantized_keys, new_keys))
            self._quantized_values = tuple(torch.cat([a, b], dim=-2)
                                           for a, b in zip(self._quantized_values, new_values))
            return self._dequantize(self._quantized_keys), self._dequantize(self._quantized_values)

    class CastLayer(cache_utils.DynamicLayer):
        """Keys and values stored in ``storage_dtype``; returned in the compute dtype on each update."""

        storage_dtype = torch.bfloat16

        def lazy_initialization(self, key_states, value_states):
            super().lazy_initialization(key_states.to(self.storage_dtype), value_states.to(self.storage_dtype))

        def update(self, key_states, value_states, *args, **kwargs):
            dtype = key_states.dtype
            keys, values = super().update(key_states.to(self.storage_dtype), value_states.to(self.storage_dtype))
            return keys.to(dtype), values.to(dtype)

    _LAYER_CLASSES.update(int8=Int8Layer, cast=CastLayer)
    return _LAYER_CLASSES[kind]


def _layer_types(model: torch.nn.Module) -> list[str]:
    cache_utils = _transformers_cache()
    config = model.config.get_text_config(decoder=True)
    return cache_utils.get_layer_types_and_kwargs(config)[0]


def what_if_cache(model: torch.nn.Module, kv_dtype: str, model_dtype: torch.dtype | None):
    """The cache a ``--kv-dtype`` what-if runs with, or None for the model's own: ``auto``, or bf16/fp16 when
    the whole model runs in that dtype already (``model_dtype``; None under autocast, where keys and values
    may come out in float32: transformers' rotary embedding promotes keys to its float32 cos/sin)."""
    if kv_dtype == "auto" or _KV_STORAGE.get(kv_dtype) == model_dtype:
        return None
    cache_utils = _transformers_cache()
    if getattr(model, "config", None) is None:
        raise UserError(f"--kv-dtype {kv_dtype} needs a transformers model (its config names the cache layers)",
                        field="kv_dtype")
    types = _layer_types(model)
    other = sorted(set(types) - {"full_attention"})
    if other:
        raise UserError(f"--kv-dtype {kv_dtype}: quantized and cast caches hold full-attention layers only (as "
                        f"transformers' QuantizedCache); this model also has {', '.join(other)} layers",
                        field="kv_dtype")
    if kv_dtype == "fp8":
        return cache_utils.QuantizedCache(backend="fp8", config=model.config)
    if kv_dtype == "int8":
        layer = _layer_class("int8")
        return cache_utils.Cache(layers=[layer() for _ in types])
    name = f"{kv_dtype.upper()}Layer"
    if name not in _LAYER_CLASSES:   # one class per dtype (a class per trace would pile up while gc is paused)
        _LAYER_CLASSES[name] = type(name, (_layer_class("cast"),), {"storage_dtype": _KV_STORAGE[kv_dtype]})
    return cache_utils.Cache(layers=[_LAYER_CLASSES[name]() for _ in types])


# ------------------------------------------------------------------------------------- cache contents
def _is_cache_part(obj) -> bool:
    cache_utils = _transformers_cache()
    parts = tuple(getattr(cache_utils, name) for name in ("Cache", "CacheLayerMixin", "LinearAttentionCacheLayerMixin",
                                                          "DummyLayer") if hasattr(cache_utils, name))
    return isinstance(obj, parts)


def cache_tensors(cache) -> list[torch.Tensor]:
    """Every tensor a cache object holds (its layers' keys and values, quantized codes and scales, recurrent
    states, an encoder-decoder cache's two caches), each once."""
    found: dict[int, torch.Tensor] = {}
    _walk(cache, 0, found)
    return list(found.values())


def _walk(obj, depth: int, found: dict) -> None:
    # a module-level function, not a closure: a recursive closure is a reference cycle, and the trace runs
    # with the garbage collector paused, so it would keep every tensor it saw alive
    if isinstance(obj, torch.Tensor):
        found.setdefault(id(obj), obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _walk(item, depth, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            _walk(item, depth, found)
    elif depth < 4 and _is_cache_part(obj):
        for item in vars(obj).values():
            _walk(item, depth + 1, found)


def find_cache(output, model: torch.nn.Module):
    """The cache object in a model's output (``CausalLMOutputWithPast.cache`` / ``past_key_values``)."""
    values = output.values() if isinstance(output, Mapping) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        if _is_cache_part(value):
            return value
    raise UserError(f"{type(model).__name__} returned no KV cache with use_cache=True", field="mode")


def _compacted(obj):
    """A view holding less than its storage, copied to a storage of its own; tuples element-wise."""
    if isinstance(obj, torch.Tensor):
        own = obj.numel() * obj.element_size()
        return obj.clone() if own < obj.untyped_storage().nbytes() else obj
    if isinstance(obj, tuple):
        return tuple(_compacted(item) for item in obj)
    return obj


def compact(cache) -> None:
    """What the cache holds between decode steps: a prefill leaves a sliding-window layer's keys as a view of
    the whole prompt's states, which the first decode step replaces by the window alone."""
    layers = getattr(cache, "layers", None)
    caches = [cache] if layers is not None else [c for c in vars(cache).values() if _is_cache_part(c)]
    for one in caches:
        for layer in getattr(one, "layers", ()):
            for name, value in list(vars(layer).items()):
                if isinstance(value, (torch.Tensor, tuple)):
                    setattr(layer, name, _compacted(value))


# ---------------------------------------------------------------------------------------- the step
@dataclass
class GenerationStep:
    """What the traced generation step is given beyond the user's inputs."""

    kwargs: dict                                  # forward keyword arguments: the cache, use_cache, position ids
    cache: object | None                          # the cache passed in (None: the model creates its own)
    context_tensors: list[torch.Tensor] = field(default_factory=list)   # decode: the cache before the step
    extra_inputs: list[torch.Tensor] = field(default_factory=list)      # position ids
    description: str = ""                          # one line for AnalysisResult.policies
    warnings: list[str] = field(default_factory=list)                   # for AnalysisResult.warnings

    def take_context(self) -> list[torch.Tensor]:
        """The context's tensors, handed over once: no reference stays here to keep them alive once the step's
        update replaces them."""
        tensors, self.context_tensors = self.context_tensors, []
        return tensors

    def cache_after(self, output, model: torch.nn.Module) -> list[torch.Tensor]:
        """The tensors the cache holds when the step ends."""
        return cache_tensors(self.cache if self.cache is not None else find_cache(output, model))


Runner = Callable[[tuple, dict], object]


def prepared_or_explained(model: torch.nn.Module, specs: Sequence[InputSpec], options, *, where: str = "",
                          **kwargs) -> GenerationStep:
    """``prepare``, with a failure of the model's own prefill of the context (not a UserError) told in one line
    (``where``: " on <strategy>" for a distributed trace)."""
    try:
        return prepare(model, specs, options, **kwargs)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  (the model's own prefill of the context failed)
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TraceError(f"filling the KV cache of {options.context_len} token(s) (the model's own prefill){where} "
                         f"failed: {type(exc).__name__}: {message}") from exc


def prepare(model: torch.nn.Module, specs: Sequence[InputSpec], options, *, use_names: bool,
            model_dtype: torch.dtype | None, run_untraced: Runner,
            make_input: Callable[[InputSpec, tuple[int, ...]], torch.Tensor]) -> GenerationStep:
    """The cache and keyword arguments of a prefill or decode step. For decode, ``run_untraced(args, kwargs)``
    runs the model's forward unrecorded (stand-ins in place, the target's semantics, no grad) to fill the
    context's cache. Call inside the trace's FakeTensorMode, before recording starts."""
    mode = options.mode
    cache_arg = cache_argument(model, mode)
    params = forward_parameters(model)
    ids = token_input(specs, mode)
    batch, new = specs[ids].shape
    kwargs = {"use_cache": True} if "use_cache" in params else {}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1      # what generate passes: the next token's logits only
    cache = what_if_cache(model, options.kv_dtype, model_dtype)
    step = GenerationStep(kwargs, cache)
    if mode == "decode":
        context = options.context_len
        prompt = [make_input(s, (s.shape[0], context) if s.kind is InputKind.TOKENS else s.shape) for s in specs]
        cache = step.cache = _prefilled(model, specs, prompt, cache, cache_arg, kwargs, use_names, run_untraced)
        compact(cache)
        step.context_tensors = cache_tensors(cache)
        if "position_ids" in params:
            positions = torch.arange(context, context + new, dtype=torch.long).expand(batch, new).contiguous()
            kwargs["position_ids"] = positions
            step.extra_inputs.append(positions)
    if cache is not None:
        kwargs[cache_arg] = cache
    step.description = _description(model, mode, batch, new, options, cache)
    limit, total = max_positions(model), options.context_len + new
    if limit is not None and total > limit:
        what = f"a prompt of {new:,} tokens" if mode == "prefill" else \
            f"{total:,} positions (context {options.context_len:,} + {new:,} new)"
        step.warnings.append(f"{GENERATION_WARNING}{what} exceed the model's {limit:,} positions "
                             "(max_position_embeddings): beyond what it was built for")
    return step


def max_positions(model: torch.nn.Module) -> int | None:
    """The positions the model is built for (its config's max_position_embeddings), None when unknown."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _prefilled(model, specs, tensors: list, cache, cache_arg: str, kwargs: dict, use_names: bool, run: Runner):
    """The cache after the model's own prefill of the context (token inputs at its length; unrecorded)."""
    call_kwargs = {k: v for k, v in kwargs.items() if k != "position_ids"}
    if cache is not None:
        call_kwargs[cache_arg] = cache
    if use_names:
        args, call_kwargs = (), {**{s.name: t for s, t in zip(specs, tensors)}, **call_kwargs}
    else:
        args = tuple(tensors)
    output = run(args, call_kwargs)
    return cache if cache is not None else find_cache(output, model)


def _description(model, mode: str, batch: int, new: int, options, cache) -> str:
    kind = type(cache).__name__ if cache is not None else "the model's own cache (use_cache=True)"
    dtype = "" if options.kv_dtype == "auto" else f", stored as {options.kv_dtype}"
    if mode == "prefill":
        return f"prefill: {batch} sequence(s) x {new} prompt token(s) fill {kind}{dtype}; only the last position's " \
               "logits are computed (logits_to_keep=1, as generate does)"
    layers = ", ".join(f"{n} x{c}" for n, c in _layer_counts(cache))
    return (f"decode: {batch} sequence(s) x {new} new token(s) against a {type(cache).__name__} of "
            f"{options.context_len} token(s) ({layers}{dtype}), filled by the model's own prefill (not recorded)")


def _layer_counts(cache) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    layers = getattr(cache, "layers", None)
    if layers is None:
        layers = [layer for c in vars(cache).values() if _is_cache_part(c) for layer in getattr(c, "layers", ())]
    for layer in layers:
        counts[type(layer).__name__] = counts.get(type(layer).__name__, 0) + 1
    return list(counts.items())


__all__ = ["GenerationStep", "prepare", "training_kwargs", "step_shapes", "untraced", "cache_tensors",
           "what_if_cache", "find_cache"]

"""The public entry point, as easy as thop's ``profile``::

    from torchbudget.engine.api import analyze
    result = analyze("resnet50", "8x3x224x224", dtype="bf16")
    result = analyze(my_module, (torch.randn(1, 3, 32, 32),))

A live module is traced without being changed (parameters, buffers, flags and hooks are left as found)."""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Mapping, Sequence

import torch
from torch import nn

from torchbudget.engine import trace, vocab
from torchbudget.engine.errors import InputSpecError, UserError
from torchbudget.engine.hf_catalog import position_warning, positions_exceeded
from torchbudget.engine.inputs import InputSpec, dtype_name, parse_inputs
from torchbudget.engine.results import AnalysisResult, TraceOptions
from torchbudget.engine.sources import LoadedModel, guess_default_inputs, load_model
from torchbudget.engine.workload import Workload

InputsLike = str | Sequence | Mapping | torch.Tensor | None


def analyze(model: str | nn.Module, inputs: InputsLike = None, *, dtype: str = "fp32", mode: str = "infer",
            optimizer: str | None = "adamw", precision: str | None = None, checkpointing: bool = False,
            convention: str = "default", model_kwargs: Mapping | None = None, optimizer_impl: str = "auto",
            attention: str = "auto", target: str | None = None, lora_rank: int = 0, lora_targets=(),
            base_dtype: str = "auto", freeze=(), grad_accum: int = 1, moe_routing: str = "balanced",
            strategy: str = "none", world_size: int = 1, tp_size: int = 1,
            sequence_parallel: bool = False) -> AnalysisResult:
    """Count ``model`` (a torchvision name, ``path/file.py:Name`` or a live ``nn.Module``) at ``inputs``.

    ``inputs``: a shape string (``"1x3x224x224"``, ``"ids=1x128:int64,mask=1x128:int64"``), a sequence of
    ``InputSpec``, real tensors or shapes, or a dict name -> tensor/shape; None uses the model's default.
    ``dtype`` is shorthand for ``precision`` (which also takes tf32 and the ``-amp`` variants). ``target``:
    whose kernels to model (``"sm90"``, ``"sm75"``, ``"cpu"``; default: engine.vocab.DEFAULT_TARGET).
    Fine-tuning (docs/trace.md): ``lora_rank``/``lora_targets`` (peft LoRA adapters), ``base_dtype`` (frozen
    weights: bf16, fp16, int8, nf4), ``freeze`` (parameter-name globs), ``grad_accum`` (micro-batches per step).
    A live module is never changed: LoRA and quantised layers go on a meta copy.
    ``moe_routing``: how top-k routers send tokens to experts (``"balanced"``, ``"skewed"``; docs/trace.md).
    Several GPUs (docs/distributed.md): ``strategy`` (ddp, fsdp, fsdp-grad-op, zero1, tp, fsdp+tp), ``world_size``,
    ``tp_size``, ``sequence_parallel``: rank 0's step under torch's own wrappers (on a meta copy of a live module)."""
    options = make_options(dtype=dtype, mode=mode, optimizer=optimizer, precision=precision,
                           checkpointing=checkpointing, convention=convention, optimizer_impl=optimizer_impl,
                           attention=attention, target=target, lora_rank=lora_rank, lora_targets=lora_targets,
                           base_dtype=base_dtype, freeze=freeze, grad_accum=grad_accum, moe_routing=moe_routing,
                           strategy=strategy, world_size=world_size, tp_size=tp_size,
                           sequence_parallel=sequence_parallel)
    if isinstance(model, nn.Module):
        if model_kwargs:
            raise UserError("model_kwargs only apply when the model is given by name or file", field="model")
        name = type(model).__name__
        defaults = guess_default_inputs(model, getattr(model, "example_input_shapes", None))
        return _trace_live(model, _resolve_inputs(inputs, defaults, name), options, name)
    if not isinstance(model, str):
        raise UserError(f"model must be a name, a path/to/file.py:Name or an nn.Module, not {type(model).__name__}",
                        field="model")
    loaded = load_model(model, model_kwargs)
    defaults = for_mode(loaded.default_inputs, options.mode)
    return _trace_loaded(loaded, _resolve_inputs(inputs, defaults, loaded.name), options)


def analyze_workload(workload: Workload) -> AnalysisResult:
    """The planner's and the GUI's entry point: a saved workload -> its analysis."""
    loaded = load_model(workload.model, workload.model_kwargs)
    inputs = workload.inputs or _resolve_inputs(None, for_mode(loaded.default_inputs, workload.options.mode),
                                                loaded.name)
    try:
        result = _trace_loaded(loaded, inputs, workload.options, workload.forward_kwargs)
    except UserError as exc:   # a model with learned positions cannot run past them: say why it broke
        beyond = positions_exceeded(workload.model, workload.model_kwargs, inputs)
        if beyond:
            raise type(exc)(f"{exc} ({beyond})", field=exc.field) from exc
        raise
    warning = position_warning(workload.model, workload.model_kwargs, inputs)
    if warning:   # past the config's positions: counted, with a warning (not an error)
        result = replace(result, warnings=(*result.warnings, warning))
    return result


def default_inputs(model: str, model_kwargs: Mapping | None = None, mode: str | None = None) -> tuple[InputSpec, ...]:
    """The input a model is analysed at when none is given (for the GUI's input field), in ``mode``
    (``for_mode``: decode's default is one new token per sequence)."""
    return for_mode(load_model(model, model_kwargs).default_inputs, mode)


def for_mode(inputs: tuple[InputSpec, ...], mode: str | None) -> tuple[InputSpec, ...]:
    """A model's default inputs for ``mode``: in decode, one new token per sequence (the KV cache holds the
    context, --context), not the default prompt length; unchanged otherwise or without token inputs."""
    if mode != "decode" or not inputs:
        return tuple(inputs)
    workload = Workload("", tuple(inputs))
    return workload.with_seq_len(1).inputs if workload.seq_len is not None else tuple(inputs)


def make_options(*, dtype: str = "fp32", mode: str = "infer", optimizer: str | None = "adamw",
                 precision: str | None = None, checkpointing: bool = False, convention: str = "default",
                 optimizer_impl: str = "auto", attention: str = "auto", target: str | None = None,
                 lora_rank: int = 0, lora_targets=(), base_dtype: str = "auto", freeze=(),
                 grad_accum: int = 1, moe_routing: str = "balanced", strategy: str = "none", world_size: int = 1,
                 tp_size: int = 1, sequence_parallel: bool = False) -> TraceOptions:
    """TraceOptions from keyword spellings (engine.vocab normalises and names the bad field)."""
    return TraceOptions(mode=mode, precision=precision or dtype or "fp32", optimizer=optimizer,
                        checkpointing=bool(checkpointing), convention=convention, optimizer_impl=optimizer_impl,
                        attention=attention, target=target or vocab.DEFAULT_TARGET, lora_rank=lora_rank,
                        lora_targets=lora_targets, base_dtype=base_dtype, freeze=freeze, grad_accum=grad_accum,
                        moe_routing=moe_routing, strategy=strategy, world_size=world_size, tp_size=tp_size,
                        sequence_parallel=sequence_parallel)


def _spec_from(value, name: str | None = None) -> InputSpec:
    if isinstance(value, InputSpec):
        return InputSpec(value.shape, value.dtype, name or value.name)
    if isinstance(value, torch.Tensor):
        return InputSpec(tuple(value.shape), dtype_name(value.dtype), name)
    if isinstance(value, str):
        specs = parse_inputs(value)
        if len(specs) != 1:
            raise InputSpecError(f"{value!r} describes {len(specs)} inputs where one was expected")
        return InputSpec(specs[0].shape, specs[0].dtype, name or specs[0].name)
    if isinstance(value, (tuple, list, torch.Size)) and value and all(isinstance(d, int) for d in value):
        if any(d <= 0 for d in value):
            raise InputSpecError(f"input shape {tuple(value)} has a dimension that is not a positive integer")
        return InputSpec(tuple(value), "float32", name)
    raise InputSpecError(f"cannot use a {type(value).__name__} as a model input; "
                         "give a shape string, a shape tuple, an InputSpec or a tensor")


def _resolve_inputs(inputs: InputsLike, defaults: tuple[InputSpec, ...], model_name: str) -> tuple[InputSpec, ...]:
    if inputs is None:
        if not defaults:
            raise InputSpecError(f"{model_name} has no known default input; give one, e.g. 1x3x224x224")
        return tuple(defaults)
    if isinstance(inputs, str):
        return parse_inputs(inputs)
    if isinstance(inputs, (InputSpec, torch.Tensor)):
        return (_spec_from(inputs),)
    if isinstance(inputs, Mapping):
        if not inputs:
            raise InputSpecError("the input dict is empty")
        return tuple(_spec_from(value, str(key)) for key, value in inputs.items())
    if isinstance(inputs, (tuple, list, torch.Size)):
        if not inputs:
            raise InputSpecError("no model input given")
        if all(isinstance(d, int) for d in inputs):  # one shape: (1, 3, 224, 224)
            return (_spec_from(inputs),)
        if all(isinstance(item, str) for item in inputs):
            return parse_inputs(list(inputs))
        return tuple(_spec_from(item) for item in inputs)
    raise InputSpecError(f"cannot use a {type(inputs).__name__} as model inputs")


def _trace_loaded(loaded: LoadedModel, inputs: tuple[InputSpec, ...], options: TraceOptions,
                  forward_kwargs: Mapping | None = None) -> AnalysisResult:
    names = {spec.name for spec in inputs if spec.name}
    clash = sorted(names & set(forward_kwargs or {}))
    if clash:
        raise InputSpecError(f"--forward-kwargs {clash[0]!r} is also an input; give it one way")
    context = loaded.trace_context() if loaded.trace_context is not None else contextlib.nullcontext([])
    with context as notes:
        result = _trace(loaded.module, inputs, options, loaded.name, {**loaded.forward_kwargs, **(forward_kwargs or {})})
    extra = tuple(loaded.notes) + tuple(notes)
    return replace(result, policies=result.policies + extra) if extra else result


def _trace(module: nn.Module, inputs: tuple[InputSpec, ...], options: TraceOptions, name: str,
           forward_kwargs: Mapping | None = None) -> AnalysisResult:
    if options.distributed:   # rank 0 under torch's own wrappers: the module must be ours (built for this trace)
        from torchbudget.engine.distributed.trace import trace_distributed

        return trace_distributed(module, inputs, options, model_name=name, forward_kwargs=forward_kwargs)
    return trace.trace_model(module, inputs, options, model_name=name, forward_kwargs=forward_kwargs)


def _meta_copy(module: nn.Module) -> nn.Module:
    """A copy of a live module whose parameters and buffers are on meta (no memory): the distributed trace
    wraps and materialises the module it gets, which must never be the user's."""
    import copy

    memo = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


def _trace_live(module: nn.Module, inputs: tuple[InputSpec, ...], options: TraceOptions, name: str) -> AnalysisResult:
    if options.distributed:
        return _trace(_meta_copy(module), inputs, options, name)
    return trace.trace_model(module, inputs, options, model_name=name)

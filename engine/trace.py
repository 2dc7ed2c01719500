"""trace_model: count a model exactly on data-less (fake CPU) tensors, inference and training alike.

One TorchDispatchMode pass records every aten op (module, phase, shapes, bytes, MACs/FLOPs from the
formula registry) and every storage's lifetime. The user's module runs with stand-in parameters/buffers
swapped in for the step (``torch.nn.utils.stateless``, as ``torch.func.functional_call`` does, but for
backward too) and is left exactly as it was. For a CUDA target the forward runs under
``engine.target.CudaSemantics``: the GPU's SDPA kernels and autocast lists (docs/target.md)."""
from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.stateless import _reparametrize_module
from torch.utils._pytree import tree_leaves
from torch.utils._python_dispatch import _disable_current_modes

from torchbudget.engine import finetune, vocab
from torchbudget.engine.process import freeze_startup_objects  # noqa: F401 - its old home
from torchbudget.engine.errors import InputSpecError, ShapeMismatchError, TraceError, UserError
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.meta_params import StandIns, empty_maker, make_stand_ins, names_for
from torchbudget.engine.ops.attention import CAUSAL_NOTE
from torchbudget.engine.target import CudaSemantics
from torchbudget.engine.results import AnalysisResult, Phase, TraceOptions
from torchbudget.engine.tracing import assemble, generation, hf_masks, training, unroll
from torchbudget.engine.tracing.errors import looks_like_shapes
from torchbudget.engine.tracing.modules import ModuleStack
from torchbudget.engine.tracing.recorder import Recorder

def _not_built_yet(options: TraceOptions) -> str | None:
    """Options the workload vocabulary knows (issue 10's LLM workloads) whose tracing is not built yet: an
    error, never a silently ignored setting."""
    unbuilt: dict[str, bool] = {}   # all of issue 10's options are traced now; the next unbuilt one goes here
    named = [name for name, asked in unbuilt.items() if asked]
    return ", ".join(named) if named else None


def precision_dtypes(precision: str) -> tuple[torch.dtype, torch.dtype | None]:
    """(parameter/input dtype, autocast dtype or None) of an engine.vocab precision."""
    chosen = vocab.precision(precision)
    return getattr(torch, chosen.param_dtype), getattr(torch, chosen.autocast_dtype) if chosen.autocast_dtype else None


def _cast(dtype: torch.dtype):
    return lambda original: dtype if original.is_floating_point else original


# Module hooks, the MHA fast-path switch and the logger level are process-wide: traces from several
# threads (the GUI's pool) run one at a time.
_TRACE_LOCK = threading.Lock()



# FakeTensorMode logs a traceback for every failing meta kernel; the failure reaches the user as a
# ShapeMismatchError/TraceError instead, so that logger is quieted for the trace.
_FAKE_LOG = logging.getLogger("torch._subclasses.fake_tensor")
_LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def _restored_state(model: torch.nn.Module):
    """Train/eval flags of every submodule, the MHA fast-path switch, the fake-tensor logger level and
    the garbage collector come back as they were."""
    flags = [(m, m.training) for m in model.modules()]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    log_level = _FAKE_LOG.level
    gc_was_enabled = gc.isenabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)  # a GPU would take the same unfused path we count
        _FAKE_LOG.setLevel(logging.CRITICAL)
        gc.disable()   # frees come from reference counts only: the same event order on every run
        yield
    finally:
        if gc_was_enabled:
            gc.enable()
        _FAKE_LOG.setLevel(log_level)
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for module, flag in flags:
            module.training = flag


@dataclass
class _Run:
    """What one traced step leaves behind for the assembly."""

    stack: ModuleStack
    recorder: Recorder
    roles: assemble.StorageRoles
    stand_ins: StandIns
    input_bytes: int = 0
    output_bytes: int = 0
    semantics: object = None     # CudaSemantics (its notes go into the result's policies) or a CPU context
    generation: object = None    # engine.tracing.generation.GenerationStep of a prefill/decode step
    notes: tuple[str, ...] = ()  # decisions taken for the model's own code (hf_masks)
    checkpointing: tuple[str, ...] = ()   # the activation-checkpointing note (engine.tracing.training)
    shallow_grads: dict = field(default_factory=dict)   # a shallow step (engine.tracing.unroll): storage -> parameter
    pending_grads: dict = field(default_factory=dict)   # ... gradients made for the blocks that did not run


def trace_model(model: torch.nn.Module, inputs: Sequence[InputSpec], options: TraceOptions = TraceOptions(),
                *, model_name: str = "", input_names: bool | None = None,
                forward_kwargs: Mapping[str, object] | None = None, unroll_blocks: bool | None = None) -> AnalysisResult:
    """``forward_kwargs``: non-tensor keyword arguments for forward (``use_cache=False``...). ``unroll_blocks``:
    trace identical repeated blocks once and replicate them (engine.tracing.unroll): None when the model has
    at least unroll.MIN_BLOCKS of them, True for any count, False never (the result is the same)."""
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"expected a torch.nn.Module, got {type(model).__name__}", field="model")
    unbuilt = _not_built_yet(options)
    if unbuilt:
        raise UserError(f"not supported yet: {unbuilt}", field="mode")
    inputs = tuple(inputs)
    use_names = all(spec.name for spec in inputs) if input_names is None else input_names
    if use_names and not all(spec.name for spec in inputs):
        raise InputSpecError("input_names=True needs a name on every input")
    started = time.perf_counter()
    # Fake CPU tensors (meta storage, CPU dispatch) for every trace, inference included: on plain meta
    # tensors SDPA takes the math path (materializing the score matrix) and autocast does nothing, while
    # CPU — like a GPU — picks the flash kernel; one choice everywhere keeps infer and train consistent.
    with _TRACE_LOCK:
        # LoRA / quantised layers: a meta copy of the module (engine.finetune); else the module itself
        prepared = finetune.prepare(model, options, *precision_dtypes(options.precision))
        traced = prepared.module
        kwargs = dict(forward_kwargs or {})
        step = None
        repeated = unroll.plan(traced, generation=options.generation) if unroll_blocks is None else (
            unroll.plan(traced, generation=options.generation, min_blocks=0) if unroll_blocks else None)
        if repeated is not None:
            try:
                step = _unrolled_step(traced, inputs, options, use_names, prepared, kwargs, repeated)
            except Exception as why:  # noqa: BLE001  (traced in full below: the same answer, slower)
                _LOG.log(logging.INFO if isinstance(why, unroll.NotPeriodic) else logging.WARNING,
                         "tracing %s in full: %s", model_name or type(model).__name__, why)
        if step is None:
            with _restored_state(traced), FakeTensorMode(allow_non_fake_inputs=True) as fake_mode:
                traced.train(options.training)
                run = _run_step(traced, inputs, options, use_names, fake_mode, prepared, kwargs)
            step = _Step(run, run.recorder.ops, run.recorder.storage.lives, run.roles, run.stack.stats,
                         _policies(run, options, prepared, inputs))
    run, ops = step.run, step.ops
    run.stack.stats = step.stats
    first_owner = {id(p): name.rpartition(".")[0] for name, p in traced.named_parameters()}
    nodes = assemble.module_nodes(traced, model_name or type(model).__name__, ops, run.stack, first_owner,
                                  _trains(run.stand_ins))
    uncounted, coverage, flop_coverage = assemble.uncounted(ops)
    warnings = tuple(f"formula for {op} failed ({why}); counted as uncounted"
                     for op, why in run.recorder.formula_errors.items())
    warnings += tuple(run.generation.warnings) if run.generation else ()
    return AnalysisResult(
        model_name=model_name or type(model).__name__, inputs=inputs, options=options,
        totals=assemble.totals(ops, nodes, run.stand_ins.params, run.stand_ins.buffers,
                               run.input_bytes, run.output_bytes, numel=run.stand_ins.numel,
                               weight_extras=run.stand_ins.weight_buffers),
        modules=nodes, ops=tuple(ops), storage_events=assemble.storage_events(step.lives, step.roles),
        uncounted_ops=uncounted, coverage=coverage, flop_coverage=flop_coverage, warnings=warnings,
        policies=step.policies,
        trace_seconds=time.perf_counter() - started,
        target_dependent=not isinstance(run.semantics, CudaSemantics) or bool(run.semantics.sdpa_calls),
    )


def _policies(run: "_Run", options: TraceOptions, prepared: finetune.Prepared, inputs) -> tuple[str, ...]:
    return (((run.generation.description,) if run.generation else ())
            + tuple(run.recorder.policies.applied) + run.notes + _semantics_notes(run.semantics, options)
            + run.checkpointing
            + prepared.notes + training.grad_accum_notes(options, inputs)
            + ((CAUSAL_NOTE,) if options.attention_flops == "causal" else ()))


@dataclass
class _Step:
    """A traced step, ready for the assembly: its run, and the ops/lifetimes/statistics/notes to assemble
    (the run's own, or those replicated from a shallow run)."""

    run: "_Run"
    ops: list
    lives: list
    roles: assemble.StorageRoles
    stats: dict
    policies: tuple[str, ...]


def _unrolled_step(model: torch.nn.Module, inputs: tuple[InputSpec, ...], options: TraceOptions, use_names: bool,
                   prepared: finetune.Prepared, forward_kwargs: dict, repeated: unroll.Plan) -> _Step:
    """The step of a model with identical repeated blocks, from shallow steps (engine.tracing.unroll); raises
    unroll.NotPeriodic when the model does not allow it (the caller then traces in full)."""
    runs = {}
    for depth in (unroll.SHALLOW, unroll.CHECK):
        try:
            with _restored_state(model), FakeTensorMode(allow_non_fake_inputs=True) as fake_mode:
                model.train(options.training)
                runs[depth] = _run_step(model, inputs, options, use_names, fake_mode, prepared, forward_kwargs,
                                        shallow=(repeated, depth), optimizer=depth == unroll.SHALLOW)
        except Exception as exc:  # noqa: BLE001  (the model does not run cut short: the full trace decides)
            raise unroll.NotPeriodic(f"the {depth}-block step failed: {type(exc).__name__}: {exc}") from exc
    shallow = {depth: unroll.Shallow(run.recorder.ops, run.recorder.storage.lives, run.roles, run.stack.stats,
                                     run.shallow_grads, run.pending_grads) for depth, run in runs.items()}
    train = options.training
    checked = unroll.unroll(shallow[unroll.SHALLOW], repeated, unroll.CHECK, training=train, check=True)
    deeper = shallow[unroll.CHECK]
    if unroll.canonical(checked.ops, checked.lives, checked.roles, checked.stats) != unroll.canonical(
            deeper.ops, deeper.lives, deeper.roles, deeper.stats):
        raise unroll.NotPeriodic(f"the {unroll.CHECK}-block step is not the {unroll.SHALLOW}-block step replicated")
    run = runs[unroll.SHALLOW]
    notes = unroll.extrapolate(_policies(run, options, prepared, inputs),
                               _policies(runs[unroll.CHECK], options, prepared, inputs), repeated.count)
    if run.recorder.formula_errors != runs[unroll.CHECK].recorder.formula_errors:
        raise unroll.NotPeriodic("formula failures differ")
    full = unroll.unroll(shallow[unroll.SHALLOW], repeated, repeated.count, training=train)
    return _Step(run, full.ops, full.lives, full.roles, full.stats, notes + (repeated.note(),))


def _run_step(model: torch.nn.Module, inputs: tuple[InputSpec, ...], options: TraceOptions, use_names: bool,
              fake_mode: FakeTensorMode, prepared: finetune.Prepared, forward_kwargs: dict | None = None, *,
              shallow: tuple[unroll.Plan, int] | None = None, optimizer: bool = True) -> _Run:
    """Forward (and for training: loss, backward, optimizer step) under the recorder. Call inside the
    FakeTensorMode: every tensor made here is a fake CPU tensor. ``shallow`` (plan, depth): run the model's
    first ``depth`` repeated blocks only (engine.tracing.unroll); ``optimizer``: False leaves the step out."""
    train = options.training
    param_dtype, autocast_dtype = precision_dtypes(options.precision)
    stand_ins = make_stand_ins(model, device="cpu", param_dtype=_cast(param_dtype),
                               buffer_dtype=_cast(param_dtype) if autocast_dtype is None else (lambda d: d),
                               requires_grad=train, fake_mode=fake_mode, param_plan=prepared.param_plan,
                               weight_buffers=prepared.weight_buffers)

    def make_input(spec: InputSpec, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape, dtype=param_dtype if spec.is_floating else spec.torch_dtype)

    shapes = generation.step_shapes(inputs, options) if options.generation else [s.shape for s in inputs]
    tensors = [make_input(s, shape) for s, shape in zip(inputs, shapes)]
    # before recording: a decode step's cache of the context, filled by the model's own (unrecorded) prefill
    step = _generation_step(model, inputs, options, use_names, stand_ins, autocast_dtype, make_input) \
        if options.generation else None
    stack = ModuleStack(model)
    recorder = Recorder(stack, options.convention, options.moe_routing, options.attention_flops)
    run = _Run(stack, recorder, assemble.StorageRoles(), stand_ins,
               input_bytes=sum(t.numel() * t.element_size() for t in tensors))
    recorder, roles = run.recorder, run.roles
    for ids, group in ((roles.weights, [p for _, p, _ in stand_ins.params] + [t for _, t in stand_ins.weight_buffers]),
                       (roles.buffers, [b for _, b in stand_ins.buffers]),
                       (roles.inputs, tensors + (step.extra_inputs if step else [])),
                       (roles.gradients, training.accumulated_gradients(stand_ins, options, fake_mode))):
        for t in group:
            if recorder.storage.track(t, -1):
                ids.add(recorder.storage.storage_id(t))
    if step is not None:   # the cache alone holds its tensors from here: the step's own update frees them
        _track_at_start(recorder, roles.kv_cache, step.take_context())
    recorder.nodes.leaf_owner = {id(p): name.rpartition(".")[0] for name, p, _ in stand_ins.params}
    # activation checkpointing (asked for, or the model's own): a view with the regions wrapped; its copies of
    # the modules on the way to them are attributed to the paths they stand for
    plan = training.checkpoint_plan(model, options.checkpointing) if train else None
    base = unroll.shallow_view(model, *shallow) if shallow else model
    runnable = training.checkpointed_view(base, plan) if plan is not None else base
    if runnable is not model:
        stack.paths.update(training.view_paths(runnable, model))
    if plan is not None:
        run.checkpointing = (training.checkpoint_note(plan),)
    args, kwargs = ((), {s.name: t for s, t in zip(inputs, tensors)}) if use_names else (tuple(tensors), {})
    # training: no KV cache (use_cache=False); then the model's and the user's keyword arguments (--forward-kwargs
    # may ask for use_cache=True); a generation step's cache arguments last (the mode defines the cache)
    kwargs.update(generation.training_kwargs(model) if train and not step else {})
    kwargs.update(forward_kwargs or {})
    kwargs.update(step.kwargs if step else {})
    run.generation = step
    semantics = _target_semantics(options, autocast_dtype, lambda: stack.current)
    run.semantics = semantics
    try:
        with stack, recorder, (contextlib.nullcontext() if train else torch.no_grad()), \
                hf_masks.one_sequence_per_row() as masks:
            # the stand-ins replace the module's tensors for forward AND backward: activation
            # checkpointing recomputes forward code in backward, which must find them (and never the user's
            # own tensors, which it would update in place); the module is restored on the way out
            with _reparametrize_module(runnable, names_for(runnable, stand_ins), tie_weights=True, strict=False):
                with semantics:
                    output = runnable(*args, **kwargs)
                roles.forward_end_seq = recorder.storage.seq
                stack.recording = False
                if step is not None:   # what the cache holds when the step ends: KV_CACHE, not activations
                    _add_roles(recorder, roles.kv_cache, step.cache_after(output, model))
                run.output_bytes = sum(t.numel() * t.element_size() for t in tree_leaves(output)
                                       if isinstance(t, torch.Tensor))
                if train:
                    outputs = [output]
                    del output   # a training loop drops the output once the loss exists: before the step
                    backward_done = _backward(recorder, roles, stand_ins, outputs)
                    if shallow and optimizer:
                        _shallow_gradients(run, shallow[0], fake_mode)
            if train and optimizer:
                # kept in a local: its state must stay alive until the recording closes
                optimizer = _optimizer_step(recorder, roles, backward_done, options)  # noqa: F841
        run.notes = (hf_masks.NOTE,) if masks.used else ()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  (an op failed, or Python code in forward raised)
        raise _forward_error(exc, stack, recorder) from exc
    finally:
        recorder.storage.close()   # storages dying after this point (the optimizer's too) are not events
    return run


def _shallow_gradients(run: _Run, repeated: unroll.Plan, fake_mode: FakeTensorMode) -> None:
    """A shallow step (engine.tracing.unroll): which parameter each gradient backward made belongs to, then a
    gradient for every trainable parameter of the blocks that did not run (the optimizer steps them all)."""
    storage, layer = run.recorder.storage, unroll.block_of(repeated)
    empty = empty_maker("cpu", fake_mode)
    with _disable_current_modes():   # made, not recorded: no op of the step makes them
        _make_gradients(run, storage, layer, empty)


def _make_gradients(run: _Run, storage, layer, empty) -> None:
    for name, p, trains in run.stand_ins.params:
        if not trains or not p.requires_grad:
            continue
        if p.grad is not None:
            run.shallow_grads[storage.storage_id(p.grad)] = (name,)
        elif (layer(name) or (-1,))[0] >= unroll.SHALLOW:
            p.grad = empty(p.shape, p.dtype)
            storage.track(p.grad, storage.op_index)
            sid = storage.storage_id(p.grad)
            run.roles.gradients.add(sid)
            run.pending_grads[sid] = (name,)


def _track_at_start(recorder: Recorder, ids: set[int], tensors: list) -> None:
    """Allocations before the first op (like the weights); the list is emptied, so no reference is left here."""
    while tensors:
        t = tensors.pop()
        if recorder.storage.track(t, -1):
            ids.add(recorder.storage.storage_id(t))


def _add_roles(recorder: Recorder, ids: set[int], tensors) -> None:
    for t in tensors:
        sid = recorder.storage.storage_id(t)
        if sid is not None:
            ids.add(sid)


def _generation_step(model: torch.nn.Module, inputs: tuple[InputSpec, ...], options: TraceOptions, use_names: bool,
                     stand_ins: StandIns, autocast_dtype, make_input) -> generation.GenerationStep:
    """The cache and keyword arguments of a prefill/decode step (engine.tracing.generation). A decode step's
    context is filled by the model's own prefill, run here unrecorded: stand-ins swapped in, the target's
    semantics (autocast decides the cache's dtype), no grad."""
    def run_untraced(args: tuple, kwargs: dict):
        with _reparametrize_module(model, names_for(model, stand_ins), tie_weights=True, strict=False), \
                torch.no_grad(), _target_semantics(options, autocast_dtype, lambda: None), generation.untraced():
            return model(*args, **kwargs)

    param_dtype, _ = precision_dtypes(options.precision)
    return generation.prepared_or_explained(model, inputs, options, where="", use_names=use_names,
                                            model_dtype=None if autocast_dtype else param_dtype,
                                            run_untraced=run_untraced, make_input=make_input)


def _trains(stand_ins: StandIns):
    """Whether the step trains a module parameter: the stand-in's decision (--freeze, LoRA), by identity."""
    trainable = {id(t) for _, t, trains in stand_ins.params if trains}
    return lambda p: id(stand_ins.original_ids.get(id(p))) in trainable


def _target_semantics(options: TraceOptions, autocast_dtype, where):
    """What the target device runs around the forward: CUDA's SDPA backends and autocast lists
    (engine.target, docs/target.md) for a CUDA target; CPU autocast for the cpu target. ``where``: the running
    module's path, for the notes."""
    target = vocab.parse_target(options.target)
    if target.kind == "cuda":
        return CudaSemantics(target.capability, autocast_dtype, options.attention, where=where)
    return torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()


def _backward(recorder: Recorder, roles: assemble.StorageRoles, stand_ins, outputs: list) -> list:
    """Loss and backward; the output is dropped as soon as the loss holds what backward needs. Returns
    the trainable stand-ins."""
    recorder.phase = Phase.BACKWARD   # the loss exists only to seed backward: its ops belong there
    loss = training.scalar_loss(outputs.pop())
    loss.backward()
    del loss
    trainable = [p for _, p, trainable in stand_ins.params if trainable]
    for p in trainable:
        if p.grad is not None:
            recorder.storage.track(p.grad, recorder.storage.op_index)
            roles.gradients.add(recorder.storage.storage_id(p.grad))
    return trainable


def _optimizer_step(recorder: Recorder, roles: assemble.StorageRoles, trainable: list,
                    options: TraceOptions) -> torch.optim.Optimizer | None:
    if options.optimizer is None:
        return None
    recorder.phase = Phase.OPTIMIZER
    recorder.policies.reporting = recorder.policies.following_values = False
    optimizer = training.make_optimizer(options.optimizer, trainable, options.optimizer_impl)
    optimizer.step()
    for t in training.optimizer_state_tensors(optimizer):
        roles.optimizer_state.add(recorder.storage.storage_id(t))
    return optimizer


def _semantics_notes(semantics, options: TraceOptions) -> tuple[str, ...]:
    notes = tuple(semantics.notes) if isinstance(semantics, CudaSemantics) else ()
    if options.attention != "auto" and not isinstance(semantics, CudaSemantics):
        notes += (f"attention {options.attention}: a what-if for CUDA targets; the cpu target runs CPU kernels",)
    return notes


def _forward_error(exc: Exception, stack: ModuleStack, recorder: Recorder) -> UserError:
    cause: BaseException | None = exc
    while cause is not None:   # an op failed: the recorder translated it where it happened
        if recorder.failure is not None and recorder.failure[0] is cause:
            return recorder.failure[1]
        cause = cause.__cause__ or cause.__context__
    path = stack.failure_path or ""
    module = stack.module_at(path)
    where = f"{path or 'the top level'} ({type(module).__name__})" if module is not None else (path or "the model")
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, TypeError) and "forward()" in message and "argument" in message:
        return InputSpecError(f"{where} does not accept these inputs: {message}")
    if isinstance(exc, (RuntimeError, ValueError, IndexError, AssertionError)) and looks_like_shapes(message):
        return ShapeMismatchError(f"shapes broke at {where}: {type(exc).__name__}: {message}")
    return TraceError(f"tracing failed in {where}: {type(exc).__name__}: {message}")


__all__ = ["trace_model", "freeze_startup_objects", "precision_dtypes"]


# -- for engine.distributed (issue 11): a distributed trace runs under the same lock, state guard, target
# semantics and error translation as this one; it applies torch's own wrappers instead of the stand-ins above
TRACE_LOCK = _TRACE_LOCK
restored_state = _restored_state
target_semantics = _target_semantics
semantics_notes = _semantics_notes
forward_error = _forward_error

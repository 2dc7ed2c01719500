"""``trace_distributed``: one training (or inference) step of rank 0 under the strategy's real wrappers.

The model is ours (built on meta by engine.sources for this trace): it is materialised on fake CPU tensors,
wrapped (DDP / fully_shard / ZeroRedundancyOptimizer / parallelize_module, engine.distributed.strategies) on
a fake process group of the workload's world size (engine.distributed.session), then run with
engine.tracing's recorder (one ``DistributedRecorder``: local shards, collectives, FSDP's in-place storage
resizes) under the target GPU's semantics. The result is an ordinary ``AnalysisResult`` of rank 0 (per-rank
storage events, so engine.memory simulates per-rank memory and the caching allocator as for one GPU) plus
``AnalysisResult.distributed``: the strategy, the process groups and every collective."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from types import SimpleNamespace
import warnings as pywarnings
from typing import Sequence

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_leaves

from torchbudget.engine import finetune, vocab
from torchbudget.engine import trace as single
from torchbudget.engine.errors import InputSpecError, UserError
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.ops.collective import register_fsdp_ops
from torchbudget.engine.quantized import QUANTIZED_BASE_DTYPES
from torchbudget.engine.results import AnalysisResult, DistributedInfo, MemoryCategory, Phase, TraceOptions
from torchbudget.engine.target import CudaSemantics
from torchbudget.engine.tracing import assemble, generation, hf_masks, training
from torchbudget.engine.tracing.modules import ModuleStack
from torchbudget.engine.distributed import strategies, unrolled
from torchbudget.engine.tracing import unroll
from torchbudget.engine.tracing.blocks import find_blocks
from torchbudget.engine.distributed.recorder import DistributedRecorder
from torchbudget.engine.distributed.session import fake_cluster

_LOG = logging.getLogger(__name__)


def _mesh_dims(options: TraceOptions) -> tuple[str, ...]:
    return {"fsdp": ("dp",), "fsdp-grad-op": ("dp",), "tp": ("tp",), "fsdp+tp": ("dp", "tp")}.get(options.strategy, ())


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def trace_distributed(model: nn.Module, inputs: Sequence[InputSpec], options: TraceOptions, *,
                      model_name: str = "", input_names: bool | None = None,
                      forward_kwargs=None) -> AnalysisResult:
    """Rank 0's step of ``model`` (built on meta, owned by this trace: it is materialised and wrapped in place)."""
    if not options.distributed:
        raise ValueError("trace_distributed needs a distributed strategy in the options")
    unbuilt = single._not_built_yet(options)
    if unbuilt:
        raise UserError(f"not supported yet: {unbuilt}", field="mode")
    unbuilt = []
    if finetune.needed(options):
        if vocab.strategy(options.strategy).tensor_parallel:   # peft's layers are not the nn.Linear TP splits
            unbuilt += [flag for flag, used in (("--lora-rank", options.lora_rank), ("--freeze", options.freeze),
                                                ("--base-dtype", options.base_dtype != "auto")) if used]
        elif options.base_dtype in QUANTIZED_BASE_DTYPES:    # QLoRA + FSDP needs bitsandbytes' quant_storage
            unbuilt.append(f"--base-dtype {options.base_dtype}")
    if unbuilt:
        raise UserError(f"not supported yet: {', '.join(unbuilt)} with --strategy {options.strategy} (plan the "
                        "fine-tuning on one GPU, or with ddp, zero1 or fsdp)", field="strategy")
    if options.generation and not vocab.strategy(options.strategy).serves:   # TraceOptions refuses it first
        raise UserError(f"--mode {options.mode} is planned with --strategy tp, not {options.strategy}",
                        field="strategy")
    inputs = tuple(inputs)
    use_names = all(spec.name for spec in inputs) if input_names is None else input_names
    if use_names and not all(spec.name for spec in inputs):
        raise InputSpecError("input_names=True needs a name on every input")
    register_fsdp_ops()
    started = time.perf_counter()
    param_dtype, autocast_dtype = single.precision_dtypes(options.precision)
    # fine-tuning: engine.finetune's per-parameter plan, as on one GPU (LoRA: peft on a meta copy, before any
    # wrapper; the frozen base in --base-dtype, not trained: sharded like any parameter, no gradient, no state)
    tuned = finetune.prepare(model, options, param_dtype, autocast_dtype)
    model = tuned.module
    plans = {name: tuned.param_plan(name, p) for name, p in model.named_parameters(remove_duplicate=False)} \
        if tuned.param_plan else {}
    global_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    global_bytes = sum(p.numel() * (plans[name].dtype.itemsize if name in plans else
                                    param_dtype.itemsize if p.is_floating_point() else p.element_size())
                       for name, p in model.named_parameters())
    repeated = unrolled.eligible(model, options, ELEMENTWISE_OPTIMIZERS)
    if repeated is not None:
        try:
            return _unrolled(model, inputs, options, use_names, dict(forward_kwargs or {}), plans, repeated,
                             model_name, tuned, global_params, global_bytes, started)
        except Exception as why:  # noqa: BLE001  (traced in full below: the same answer, slower)
            _LOG.log(logging.INFO if isinstance(why, unroll.NotPeriodic) else logging.WARNING,
                     "tracing %s in full: %s", model_name or type(model).__name__, why)
    recorder, stack, run, groups = _step(model, inputs, options, use_names, dict(forward_kwargs or {}), plans)
    return _result(model, model_name, inputs, options, tuned, recorder.ops, recorder.storage.lives, run["roles"],
                   stack.stats, recorder.collectives, recorder.formula_errors, run, groups, run["params"],
                   global_params, global_bytes, run["local_param_bytes"], _policies(recorder, run, options, tuned),
                   started, tree=stack.named_modules())


def _step(model, inputs, options, use_names, forward_kwargs, plans, pending_for=None):
    """One traced step of ``model`` (materialised and wrapped here): (recorder, module stack, run, groups)."""
    param_dtype, autocast_dtype = single.precision_dtypes(options.precision)
    with single.TRACE_LOCK, single.restored_state(model), pywarnings.catch_warnings(), \
            fake_cluster(options.world_size, options.tp_size, _mesh_dims(options)) as cluster, \
            FakeTensorMode(allow_non_fake_inputs=True) as fake_mode:
        # FSDP2 warns that the root returned a view (an in-place op on it would skip its pre-backward hook):
        # the trace does no such thing, and the user's terminal is no place for it
        pywarnings.filterwarnings("ignore", message="FSDP2-wrapped module")
        model.train(options.training)
        stack = ModuleStack(model)
        recorder = DistributedRecorder(stack, options.convention, fake_mode, cluster, options.moe_routing,
                                       options.attention_flops)
        cluster.resize_listener = recorder.on_resize
        try:
            run = _run(model, inputs, options, use_names, recorder, stack, cluster, param_dtype, autocast_dtype,
                       forward_kwargs, plans, pending_for(fake_mode) if pending_for else None)
        finally:
            cluster.resize_listener = None
        groups = {label: ranks for label, ranks in cluster.group_ranks.items()}
    return recorder, stack, run, groups


def _policies(recorder, run, options, tuned) -> tuple[str, ...]:
    step = run.get("generation")
    return (((step.description,) if step else ()) + tuple(recorder.policies.applied)
            + single.semantics_notes(run["semantics"], options) + tuple(run["notes"]) + tuned.notes)


def _result(model, model_name, inputs, options, tuned, ops, lives, roles, stats, collectives, formula_errors, run,
            groups, params, global_params, global_bytes, local_bytes, policies, started, notes=None,
            tree=None) -> AnalysisResult:
    """``tree``: (path, module) of the model as its ops are attributed (before the wrappers: a checkpointed
    block's rows under its own path, not its wrapper's ``inner``); default ``model.named_modules()``."""
    tree = list(tree if tree is not None else model.named_modules())
    first_owner: dict[int, str] = {}
    for path, module in tree:
        for p in module._parameters.values():
            if p is not None:
                first_owner.setdefault(id(p), path)
    nodes = assemble.module_nodes(model, model_name, ops, SimpleNamespace(stats=stats), first_owner,
                                  named_modules=lambda: iter(tree))
    uncounted, coverage, flop_coverage = assemble.uncounted(ops)
    warnings = tuple(f"formula for {op} failed ({why}); counted as uncounted" for op, why in formula_errors.items())
    step = run.get("generation")
    warnings += tuple(step.warnings) if step else ()
    info = DistributedInfo(
        strategy=options.strategy, world_size=options.world_size, tp_size=options.tp_size, groups=groups,
        collectives=tuple(collectives), method="traced", global_params=global_params,
        global_param_bytes=global_bytes, local_param_bytes=local_bytes,
        notes=tuple(run["notes"]) if notes is None else notes)
    semantics = run["semantics"]
    return AnalysisResult(
        model_name=model_name or type(model).__name__, inputs=inputs, options=options,
        totals=assemble.totals(ops, nodes, params, run["buffers"], run["input_bytes"], run["output_bytes"]),
        modules=nodes, ops=tuple(ops), storage_events=assemble.storage_events(lives, roles),
        uncounted_ops=uncounted, coverage=coverage, flop_coverage=flop_coverage, warnings=warnings,
        policies=policies, trace_seconds=time.perf_counter() - started,
        target_dependent=not isinstance(semantics, CudaSemantics) or bool(semantics.sdpa_calls),
        distributed=info,
    )


def _unrolled(model, inputs, options, use_names, forward_kwargs, plans, repeated, model_name, tuned,
              global_params, global_bytes, started) -> AnalysisResult:
    """FSDP's step from shallow steps of 3 and 4 blocks (engine.distributed.unrolled); raises
    unroll.NotPeriodic when the model does not allow it."""
    steps = {}
    for depth in (repeated.shallow, repeated.check):
        shallow = unrolled.shallow_model(model, repeated, depth)
        made = []

        def pending_for(fake_mode, depth=depth, made=made):
            made.append(unrolled.Pending(repeated, depth, fake_mode, optimizer=depth == repeated.shallow))
            return made[0]

        try:
            recorder, stack, run, groups = _step(shallow, inputs, options, use_names, forward_kwargs, plans, pending_for)
        except Exception as exc:  # noqa: BLE001  (the model does not run cut short: the full trace decides)
            raise unroll.NotPeriodic(f"the {depth}-block step failed: {type(exc).__name__}: {exc}") from exc
        pending = made[0]
        steps[depth] = (shallow, recorder, stack, run, groups, pending,
                        unroll.Shallow(recorder.ops, recorder.storage.lives, run["roles"], stack.stats,
                                       pending.grads, pending.pending_grads, pending.order))
    _, recorder, _, run, groups, pending, first = steps[repeated.shallow]
    _, recorder4, _, run4, _, _, deeper = steps[repeated.check]
    inserted = unroll.insertions(first, deeper, repeated, training=True)
    checked = unroll.unroll(first, repeated, repeated.check, training=True, check=True, inserted=inserted)
    same = unroll.canonical(checked.ops, checked.lives, checked.roles, checked.stats, start_free=True) == \
        unroll.canonical(deeper.ops, deeper.lives, deeper.roles, deeper.stats, start_free=True)
    if not same or _collectives(recorder.collectives, checked, check=True) != [
            replace(c) for c in recorder4.collectives if c.phase is not Phase.OPTIMIZER]:
        raise unroll.NotPeriodic(f"the {repeated.check}-block step is not the {repeated.shallow}-block step replicated")
    if recorder.formula_errors != recorder4.formula_errors:
        raise unroll.NotPeriodic("formula failures differ")
    full_note = strategies.checkpoint_note(find_blocks(model))

    def notes(lines, depth):
        shallow_note = strategies.checkpoint_note(find_blocks(unroll.shallow_view(model, repeated, depth)))
        return tuple(full_note + n[len(shallow_note):] if n.startswith(shallow_note) else n for n in lines)

    def grown(of3, of4):
        return unroll.extrapolate(notes(of3, repeated.shallow), notes(of4, repeated.check), repeated.count,
                                  repeated.shallow)

    policies = grown(_policies(recorder, run, options, tuned), _policies(recorder4, run4, options, tuned)) \
        + (repeated.note(),)
    info_notes = grown(tuple(run["notes"]), tuple(run4["notes"]))
    full = unroll.unroll(first, repeated, repeated.count, training=True, inserted=inserted)
    params = list(run["params"]) + [(name, template, trains) for name, _, trains, template in pending.params]
    local_bytes = run["local_param_bytes"] + sum(recorder.storage.lives[sid].nbytes for sid in pending.weight_sids)
    return _result(model, model_name, inputs, options, tuned, full.ops, full.lives, full.roles, full.stats,
                   _collectives(recorder.collectives, full), recorder.formula_errors, run, groups, params,
                   global_params, global_bytes, local_bytes, policies, started, info_notes)


def _collectives(calls, unrolled_step, check: bool = False) -> list:
    """The shallow step's collectives at their ops in the replicated step (each copied op, its collective)."""
    by_op = {c.op_index: c for c in calls}
    out = []
    for index, source in enumerate(unrolled_step.sources):
        call = by_op.get(source)
        if call is not None and not (check and call.phase is Phase.OPTIMIZER):
            out.append(replace(call, op_index=index, module_path=unrolled_step.ops[index].module_path))
    return out


def _materialise(model: nn.Module, options: TraceOptions, param_dtype: torch.dtype, autocast_dtype,
                 plans: dict | None = None) -> None:
    """Fake CPU parameters and buffers in the precision's dtypes (inside the FakeTensorMode: no memory).
    ``plans``: {parameter name: engine.meta_params.ParamPlan} of a fine-tuning workload (engine.finetune: the
    adapters fp32 and trained, the frozen base in its dtype and not trained). Tied parameters stay tied
    (``to_empty`` makes one tensor per module that held one)."""
    plans = plans or {}
    places: dict[int, list] = {}    # the meta parameter -> every (module, attribute, full name) holding it
    for path, module in model.named_modules(remove_duplicate=False):
        for name, p in module._parameters.items():
            if p is not None:
                places.setdefault(id(p), []).append((module, name, f"{path}.{name}" if path else name))
    model.to_empty(device="cpu")
    for holders in places.values():
        module, name, full = holders[0]
        p = module._parameters[name]
        plan = plans.get(full)
        if plan is not None:
            dtype, trains = plan.dtype, plan.trainable and options.training
        else:
            dtype, trains = (param_dtype if p.is_floating_point() else p.dtype), p.requires_grad
        if dtype != p.dtype or trains != p.requires_grad:
            p = nn.Parameter(p.to(dtype), requires_grad=trains and (dtype.is_floating_point or dtype.is_complex))
        for module, name, _ in holders:
            module._parameters[name] = p
    if param_dtype != torch.float32 and autocast_dtype is None:
        for module in model.modules():
            for name, b in list(module._buffers.items()):
                if b is not None and b.is_floating_point():
                    module._buffers[name] = b.to(param_dtype)
    if not options.training:
        model.requires_grad_(False)


def _run(model, inputs, options, use_names, recorder, stack, cluster, param_dtype, autocast_dtype,
         forward_kwargs: dict, plans: dict | None = None, pending=None) -> dict:
    """``pending`` (engine.distributed.unrolled.Pending): a shallow step's tensors of the blocks it does not run."""
    train = options.training
    storage = recorder.storage
    roles = assemble.StorageRoles()
    _materialise(model, options, param_dtype, autocast_dtype, plans)
    recorder.setup = True
    with recorder:   # set-up: storages only (DDP's buckets, FSDP's shards), no ops
        try:
            prepared = strategies.prepare(model, options, cluster, autocast_dtype=autocast_dtype)
            # gradient accumulation: the gradients the traced micro-batch starts with (the sum so far)
            accumulated = strategies.accumulated_gradients(model, prepared, options)
        finally:
            recorder.setup = False
    storage.forget_dead()   # the full parameters FSDP replaced, DDP's broadcast buffer: before the step
    setup_survivors = {life.storage_id for life in storage.lives}
    params = prepared.params
    for _, p, _ in params:
        storage.track(_local(p), -1)
        roles.weights.update(storage.sids_of(_local(p)))
    buffers = [(name, b) for name, b in model.named_buffers()]
    for _, b in buffers:
        storage.track(_local(b), -1)
        roles.buffers.update(storage.sids_of(_local(b)))
    for grad in accumulated:
        roles.gradients.update(storage.sids_of(grad))
    del accumulated
    # what the wrappers keep besides the parameters: DDP's gradient buckets; FSDP's padded shard storage
    leftover = setup_survivors - roles.weights - roles.buffers - roles.gradients
    (roles.gradients if options.strategy in ("ddp", "zero1") else roles.weights).update(leftover)
    if pending is not None:
        pending.weights(params, storage, roles)
        pending.order = pending.start_order(params, storage, storage.lives)
    def make_input(spec: InputSpec, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape, dtype=param_dtype if spec.is_floating else spec.torch_dtype)

    shapes = generation.step_shapes(inputs, options) if options.generation else [s.shape for s in inputs]
    tensors = [make_input(s, shape) for s, shape in zip(inputs, shapes)]
    # serving (tensor parallel): the KV cache the step starts with, filled by the model's own prefill of the
    # context on the wrapped model (rank 0's heads: 1/tp of the KV heads), unrecorded
    step = _generation_step(model, prepared, inputs, options, use_names, autocast_dtype, make_input) \
        if options.generation else None
    for t in tensors + (step.extra_inputs if step else []):
        storage.track(t, -1)
        roles.inputs.update(storage.sids_of(t))
    if step is not None:   # the cache alone holds its tensors from here: the step's own update frees them
        context = step.take_context()
        while context:
            t = context.pop()
            storage.track(t, -1)
            roles.kv_cache.update(storage.sids_of(t))
            del t
    notes = list(prepared.notes)
    if train and options.grad_accum > 1:
        notes.append(strategies.grad_accum_note(options, inputs[0].shape[0] if inputs and inputs[0].shape else 1))
    local: dict[int, int] = {}   # rank 0's parameter storages (its shards), each once: what a step reads
    for _, p, _ in params:
        held = _local(p).untyped_storage()
        local[held._cdata] = held.nbytes()
    run = {"params": params, "buffers": buffers, "roles": roles, "notes": notes,
           "local_param_bytes": sum(local.values()),
           "input_bytes": sum(t.numel() * t.element_size() for t in tensors), "output_bytes": 0}
    # by the parameters' own objects (a DTensor and its local shard, both alive for the whole step): to_local()
    # makes a new tensor per call, whose id another object could take (backward ops attributed at random)
    recorder.nodes.leaf_owner = {key: name.rpartition(".")[0] for name, p, _ in params
                                 for key in (id(p), id(getattr(p, "_local_tensor", p)))}
    args, kwargs = ((), {s.name: t for s, t in zip(inputs, tensors)}) if use_names else (tuple(tensors), {})
    kwargs.update(generation.training_kwargs(model) if train else {})
    kwargs.update(forward_kwargs)
    kwargs.update(step.kwargs if step else {})   # a generation step's cache arguments last (the mode defines it)
    run["generation"] = step
    semantics = single.target_semantics(options, autocast_dtype if prepared.autocast else None,
                                        lambda: stack.current)
    run["semantics"] = semantics
    try:
        with stack, recorder, (contextlib.nullcontext() if train else torch.no_grad()), \
                hf_masks.one_sequence_per_row() as masks:
            with semantics:
                output = prepared.runnable(*args, **kwargs)
            roles.forward_end_seq = storage.seq
            stack.recording = False
            if step is not None:   # what the cache holds when the step ends: KV_CACHE, not activations
                for t in step.cache_after(output, model):
                    roles.kv_cache.update(storage.sids_of(t))
            run["output_bytes"] = sum(t.numel() * t.element_size() for t in tree_leaves(output)
                                      if isinstance(t, torch.Tensor))
            if train:
                outputs = [output]
                del output
                recorder.phase = Phase.BACKWARD
                loss = training.scalar_loss(outputs.pop())
                loss.backward()
                del loss
                trainable = [p for _, p, t in params if t]
                for p in trainable:
                    if p.grad is not None:
                        grad = _local(p.grad)
                        storage.track(grad, storage.op_index)
                        roles.gradients.update(storage.sids_of(grad))
                if pending is not None:
                    pending.gradients(params, storage, roles)
                optimizer = _optimizer_step(recorder, roles, prepared, options, pending) \
                    if pending is None or pending.optimizer else None  # noqa: F841 - kept alive
        run["notes"] += [hf_masks.NOTE] if masks.used else []
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise single.forward_error(exc, stack, recorder) from exc
    finally:
        storage.close()
    for sid, role in recorder.role_sids.items():
        _add_role(roles, role, (sid,))
    _add_role(roles, MemoryCategory.WEIGHTS, recorder.resized_sids)   # FSDP's gathered (unsharded) parameters
    return run


def _generation_step(model, prepared, inputs, options, use_names: bool, autocast_dtype, make_input
                     ) -> generation.GenerationStep:
    """The cache and keyword arguments of a prefill/decode step on the wrapped model (engine.tracing.generation);
    a decode step's context is filled by the model's own prefill, run here unrecorded (the target's semantics,
    no grad), on the same fake process group: its keys and values are rank 0's KV heads."""
    autocast = autocast_dtype if prepared.autocast else None

    def run_untraced(args: tuple, kwargs: dict):
        with torch.no_grad(), single.target_semantics(options, autocast, lambda: None), generation.untraced():
            return prepared.runnable(*args, **kwargs)

    param_dtype, _ = single.precision_dtypes(options.precision)
    return generation.prepared_or_explained(model, inputs, options, where=f" on {options.strategy}",
                                            use_names=use_names, model_dtype=None if autocast else param_dtype,
                                            run_untraced=run_untraced, make_input=make_input)


def _add_role(roles: assemble.StorageRoles, role: MemoryCategory, sids) -> None:
    target = {MemoryCategory.WEIGHTS: roles.weights, MemoryCategory.GRADIENTS: roles.gradients}[role]
    taken = roles.weights | roles.buffers | roles.inputs | roles.gradients | roles.optimizer_state
    target.update(s for s in sids if s not in taken)


# optimizers whose update is elementwise per parameter (no reduction over a parameter's elements): on a sharded
# DTensor each rank runs exactly the same ops on its local shard, so the step runs on the shards directly
ELEMENTWISE_OPTIMIZERS = frozenset({"adamw", "adam", "sgd", "sgd-momentum"})


def _local_groups(groups: list, optimizer: str) -> list:
    """The optimizer's param groups, with each DTensor parameter replaced by its local shard (the same storage,
    its local gradient as ``.grad``) when the update is elementwise. DTensor would desugar every op of the step
    into the same op on the local shards (what the recorder sees either way), but only after propagating the
    sharding of each foreach op over every parameter on global-shaped shadows: most of an FSDP trace's time on
    an 8B model, and none of its ops or memory. Optimizers with reductions (Adafactor's row and column means,
    8-bit AdamW's block statistics) keep the DTensors."""
    from torch.distributed.tensor import DTensor

    if optimizer not in ELEMENTWISE_OPTIMIZERS:
        return groups
    local_groups = []
    for group in groups:
        sharded = [p for p in group["params"] if isinstance(p, DTensor)]
        if any(p.grad is not None and (not isinstance(p.grad, DTensor) or p.grad.placements != p.placements)
               for p in sharded):   # a gradient laid out unlike its parameter: DTensor redistributes it
            local_groups.append(group)
            continue
        params = []
        for p in group["params"]:
            if isinstance(p, DTensor):
                # the shard itself (no op: nothing recorded), its gradient's shard as .grad
                local = p._local_tensor
                local.grad = None if p.grad is None else p.grad._local_tensor
                params.append(local)
            else:
                params.append(p)
        local_groups.append({**group, "params": params})
    return local_groups


def _optimizer_step(recorder, roles, prepared, options, pending=None):
    if options.optimizer is None or not prepared.optimizer_groups:
        return None
    recorder.phase = Phase.OPTIMIZER
    recorder.policies.reporting = recorder.policies.following_values = False
    if prepared.zero:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        spec = training.make_optimizer(options.optimizer, [torch.empty(1, requires_grad=True)], options.optimizer_impl)
        import inspect

        accepted = inspect.signature(type(spec).__init__).parameters   # defaults hold more than __init__ takes
        defaults = {k: v for k, v in spec.defaults.items() if k in accepted and k != "differentiable"}
        params = [p for group in prepared.optimizer_groups for p in group["params"]]
        optimizer = ZeroRedundancyOptimizer(params, optimizer_class=type(spec), **defaults)
        optimizer.step()
        state_of = optimizer.optim
    else:
        groups = _local_groups(prepared.optimizer_groups, options.optimizer)
        if pending is not None:
            groups = pending.extend(groups, prepared.params)
        optimizer = training.make_optimizer(options.optimizer, groups, options.optimizer_impl)
        optimizer.step()
        state_of = optimizer
    for t in training.optimizer_state_tensors(state_of):
        roles.optimizer_state.update(recorder.storage.sids_of(_local(t)))
    return optimizer

"""PyTorch's own wrappers, applied to a model built for the trace: DDP, FSDP2 (``fully_shard``), ZeRO-1
(``ZeroRedundancyOptimizer``), tensor parallel (``parallelize_module``) and FSDP + TP on a 2-D mesh.

The model is materialised on fake tensors first (``to_empty``: no memory, no values), so the wrappers own the
parameters exactly as in a real job; the caller's recorder is in set-up mode meanwhile (engine.distributed.recorder).

Granularity, shared by FSDP units and activation checkpointing: the repeated **blocks** of
engine.tracing.blocks.find_blocks (a decoder's layers, ResNet's stages' blocks, ViT's encoder layers);
everything else (embeddings, final norm, head) belongs to the root unit."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from torchbudget.engine import vocab
from torchbudget.engine.errors import UserError
from torchbudget.engine.tracing import training
from torchbudget.engine.tracing.blocks import find_blocks, is_leaf as _is_leaf, own_checkpointing

# Megatron-style tensor parallel: projections into the wide space are split by output feature (column-wise),
# the projections back by input feature (row-wise): one all-reduce after each pair in forward, one in backward
COLWISE = frozenset({"q", "k", "v", "q_proj", "k_proj", "v_proj", "wq", "wk", "wv", "query", "key", "value",
                     "gate", "up", "gate_proj", "up_proj", "w1", "w3", "fc1", "fc_in", "dense_h_to_4h", "w_in"})
ROWWISE = frozenset({"o", "o_proj", "wo", "out_proj", "down", "down_proj", "w2", "fc2", "fc_out", "dense_4h_to_h",
                     "w_out"})


def _set_child(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    owner._modules[name] = new


def checkpoint_blocks(model: nn.Module, blocks: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Each block runs under non-reentrant activation checkpointing (engine.tracing.training.Checkpointed, with
    the target's semantics in the recomputation), wrapped before the data-parallel wrapper as torchtitan does.
    Returns the wrappers (they become the FSDP units)."""
    wrapped = []
    for path, block in blocks:
        wrapper = training.Checkpointed(block)
        _set_child(model, path, wrapper)
        wrapped.append((path, wrapper))
    return wrapped


def checkpoint_note(blocks: list[tuple[str, nn.Module]]) -> str:
    if not blocks:
        return "activation checkpointing: no repeated blocks found; nothing recomputed"
    names = [p for p, _ in blocks]
    shown = names if len(names) <= 6 else names[:3] + ["…"] + names[-2:]
    return f"activation checkpointing: {len(names)} block(s) recomputed in backward ({', '.join(shown)})"


@dataclass
class Prepared:
    """The wrapped model to run, its optimizer's parameters, and what the output should say."""

    runnable: nn.Module
    params: list = field(default_factory=list)                # (name, parameter, trainable), the model's own
    optimizer_groups: list = field(default_factory=list)      # param groups for the real optimizer
    zero: bool = False                                        # ZeroRedundancyOptimizer around the optimizer
    autocast: bool = True                                     # autocast the forward (amp without FSDP's policy)
    notes: list[str] = field(default_factory=list)


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _ddp(model: nn.Module, prepared: Prepared, world: int) -> nn.Module:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    try:   # the steady state's buckets: 1 MiB first, then 25 MiB (iteration 1 uses one bucket for everything)
        wrapped = DDP(model, bucket_cap_mb_list=[1, 25])
    except TypeError:    # an older torch without per-bucket caps
        wrapped = DDP(model)

    def allreduce(state, bucket):
        # DDP's default hook (divide, all-reduce the bucket in place), run synchronously: the fake process
        # group's futures carry no value
        buffer = bucket.buffer()
        buffer.div_(world)
        dist.all_reduce(buffer)
        done = torch.futures.Future()
        done.set_result(buffer)
        return done

    wrapped.register_comm_hook(None, allreduce)
    prepared.notes.append("DDP: gradient buckets 1 MiB then 25 MiB (the steady state's rebuilt buckets), "
                          "gradient_as_bucket_view=False (torch's default: buckets are a second copy of the gradients)")
    return wrapped


def _fsdp(model: nn.Module, units: list[tuple[str, nn.Module]], mesh, *, reshard: bool, mixed: torch.dtype | None,
          prepared: Prepared) -> nn.Module:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=mixed, reduce_dtype=torch.float32) if mixed else MixedPrecisionPolicy()
    for _, unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
    # the root as ``fully_shard(model)`` leaves it (reshard_after_forward=None): FULL_SHARD's root keeps its
    # gathered parameters from forward to backward (torch's heuristic: they would be gathered again at once)
    fully_shard(model, mesh=mesh, reshard_after_forward=None if reshard else False, mp_policy=policy)
    prepared.autocast = mixed is None
    what = "FULL_SHARD (reshard after forward)" if reshard else "SHARD_GRAD_OP (no reshard after forward)"
    prepared.notes.append(f"FSDP2 fully_shard {what} over {mesh.size()} rank(s): {len(units)} block unit(s) + the root"
                          + (f"; MixedPrecisionPolicy(param_dtype={str(mixed).removeprefix('torch.')}, "
                             "reduce_dtype=float32) instead of autocast" if mixed else ""))
    if not units:
        prepared.notes.append("FSDP: no repeated blocks found, so the whole model is one unit (all its parameters "
                              "are gathered at once)")
    return model


def _block_input(sequence_parallel: bool):
    """``PrepareModuleInput`` before an attention or MLP module (torchtitan's plan): its input made one
    replicated DTensor for all its column-wise projections, so their input gradients are summed locally and
    all-reduced once in backward (Megatron's ``f``), not once per projection. Under sequence parallel the input
    (a norm's output, sharded along the sequence) is all-gathered to the full sequence first, so q/k/v are
    full-sequence and rotary embeddings, masks and reshapes computed for the full sequence match. The input comes
    positionally (an MLP) or as ``hidden_states=`` (transformers' attention)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import PrepareModuleInput

    given = Shard(1) if sequence_parallel else Replicate()

    class BlockInput(PrepareModuleInput):
        def __init__(self):
            super().__init__(input_layouts=(given,), desired_input_layouts=(Replicate(),),
                             input_kwarg_layouts={"hidden_states": given},
                             desired_input_kwarg_layouts={"hidden_states": Replicate()})

        def _prepare_input_fn(self, inputs, device_mesh):
            if not isinstance(inputs, tuple):
                inputs = (inputs,)
            if not inputs:   # called with keywords only: hidden_states= is prepared by the keyword path
                return inputs
            return (self._prepare_input_arg(inputs[0], device_mesh, given, Replicate()), *inputs[1:])

    return BlockInput()


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower() and _is_leaf(module)


def tp_plan(model: nn.Module, blocks: list[tuple[str, nn.Module]], tp: int, sequence_parallel: bool,
            gather_logits: bool = False) -> dict:
    """{module path: ParallelStyle} for parallelize_module (torchtitan's Llama plan, found by projection names).
    ``gather_logits`` (serving): an untied head's vocabulary-sharded logits are all-gathered (torchtitan's plan
    without loss parallel: ``output_layouts=Replicate()``), so every rank samples the next token from all of them;
    training keeps them sharded (loss parallel).

    Without sequence parallel (Megatron): column-wise projections take the replicated hidden states, row-wise
    ones all-reduce their output. With it (torchtitan's ``parallelize_llama``, torch's TP tutorial): the
    residual stream is sharded along the sequence (dim 1) between the blocks' parallel regions: the embedding
    reduce-scatters its output to Shard(1), the blocks' norms and the final norm run ``SequenceParallel``, each
    attention / MLP module all-gathers its input (``PrepareModuleInput``), its row-wise projection
    reduce-scatters back to Shard(1), and the head all-gathers its input. The stream stays a DTensor (global
    shape) between the styles, so a transformers model's positions, rotary embeddings and masks, derived from
    the embeddings' shape, are those of the full sequence."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, PrepareModuleOutput,
                                                   RowwiseParallel, SequenceParallel)

    if not blocks:
        raise UserError("tensor parallel needs a model made of repeated transformer blocks (a ModuleList of "
                        "layers); this model has none", field="strategy")
    plan: dict = {}
    seq = Shard(1)
    for path, block in blocks:
        col, row = [], []
        for sub, module in block.named_modules():
            leaf = sub.rpartition(".")[2]
            if isinstance(module, nn.Linear):
                if leaf in COLWISE:
                    col.append((sub, module))
                elif leaf in ROWWISE:
                    row.append((sub, module))
        if not col or not row:
            raise UserError(f"tensor parallel: {path} ({type(block).__name__}) has no projections it can split "
                            f"(column-wise: {', '.join(sorted(COLWISE)[:8])}…; row-wise: "
                            f"{', '.join(sorted(ROWWISE)[:6])}…, as nn.Linear)", field="strategy")
        # the modules whose input is gathered once for all their column-wise projections (attention, MLP)
        gathered = {sub.rpartition(".")[0] for sub, _ in col} - {""}
        for sub, module in col:
            if module.out_features % tp:
                raise UserError(f"tensor parallel degree {tp} does not divide the {module.out_features} output "
                                f"features of {path}.{sub}", field="tp_size")
            owner = sub.rpartition(".")[0]
            head_dim = getattr(block.get_submodule(owner), "head_dim", None) if owner else None
            if isinstance(head_dim, int) and head_dim > 0 and (module.out_features // tp) % head_dim:
                raise UserError(f"tensor parallel degree {tp} does not divide the {module.out_features // head_dim} "
                                f"heads of {path}.{sub} ({module.out_features} features, heads of {head_dim}): "
                                "each rank needs whole heads (with grouped-query attention, whole KV heads)",
                                field="tp_size")
            # a projection directly in the block takes its own input (torch's tests' feed_forward.w1)
            plan[f"{path}.{sub}"] = ColwiseParallel(input_layouts=seq) if sequence_parallel and not owner \
                else ColwiseParallel()
        for sub, module in row:
            if module.in_features % tp:
                raise UserError(f"tensor parallel degree {tp} does not divide the {module.in_features} input "
                                f"features of {path}.{sub}", field="tp_size")
            plan[f"{path}.{sub}"] = RowwiseParallel(output_layouts=seq, use_local_output=False) \
                if sequence_parallel else RowwiseParallel()
        for owner in sorted(gathered):
            plan[f"{path}.{owner}"] = _block_input(sequence_parallel)
        if sequence_parallel:
            for sub, module in block.named_modules():   # the block's own norms (not a q/k norm inside attention)
                if sub and _is_norm(module) and not any(sub.startswith(g + ".") for g in gathered):
                    plan[f"{path}.{sub}"] = SequenceParallel()
    inside = tuple(p + "." for p, _ in blocks)
    embeddings = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Embedding) and not p.startswith(inside)]
    if embeddings:
        epath, embed = max(embeddings, key=lambda pm: pm[1].num_embeddings)
        heads = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Linear) and not p.startswith(inside)
                 and m.out_features == embed.num_embeddings]
        tied = any(h.weight is embed.weight for _, h in heads)
        if not tied:
            plan[epath] = RowwiseParallel(input_layouts=Replicate(), output_layouts=seq, use_local_output=False) \
                if sequence_parallel else RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
            for hpath, _ in heads:   # training: logits stay sharded by vocabulary (loss parallel)
                plan[hpath] = ColwiseParallel(input_layouts=seq if sequence_parallel else Replicate(),
                                              output_layouts=Replicate() if gather_logits else Shard(-1),
                                              use_local_output=True)
        elif sequence_parallel:   # a tied embedding and head stay whole: the stream is split and gathered around
            plan[epath] = PrepareModuleOutput(output_layouts=Replicate(), desired_output_layouts=seq,
                                              use_local_output=False)
            for hpath, _ in heads:
                plan[hpath] = PrepareModuleInput(input_layouts=seq, desired_input_layouts=Replicate(),
                                                 use_local_output=True)
    elif sequence_parallel:
        raise UserError("sequence parallel needs the model's token embedding (an nn.Embedding outside the blocks) "
                        "to shard the sequence after it; this model has none", field="sequence_parallel")
    if sequence_parallel:
        for p, m in model.named_modules():
            if p and not p.startswith(inside) and _is_norm(m):
                plan[p] = SequenceParallel()
    return plan


def _tensor_parallel(model: nn.Module, blocks, mesh, tp: int, sequence_parallel: bool, prepared: Prepared,
                     gather_logits: bool = False) -> None:
    from torch.distributed.tensor.parallel import parallelize_module

    plan = tp_plan(model, blocks, tp, sequence_parallel, gather_logits)
    parallelize_module(model, mesh, plan)
    from torch.distributed.tensor.parallel import PrepareModuleInput

    styles: dict[str, int] = {}
    for style in plan.values():   # torch's style names (BlockInput is a PrepareModuleInput)
        name = "PrepareModuleInput" if isinstance(style, PrepareModuleInput) else type(style).__name__
        styles[name] = styles.get(name, 0) + 1
    prepared.notes.append(f"tensor parallel over {tp} rank(s): " + ", ".join(f"{n} {s}" for s, n in styles.items())
                          + (" (sequence parallel)" if sequence_parallel else ""))


def prepare(model: nn.Module, options, cluster, *, autocast_dtype: torch.dtype | None) -> Prepared:
    """Wrap ``model`` (materialised, ours) for ``options.strategy`` on ``cluster``'s fake process group."""
    strategy = options.strategy
    prepared = Prepared(model)
    blocks = find_blocks(model)
    # the model's own (transformers) gradient checkpointing: switched off here (the model is ours), its
    # blocks checkpointed by us instead: never twice, and the recompute under the target's semantics
    own, _, _ = own_checkpointing(model)
    for path in own:
        model.get_submodule(path).gradient_checkpointing = False
    # torchtitan's order: tensor parallel on the bare blocks (its plan names their submodules), then activation
    # checkpointing around them, then FSDP over the checkpointed blocks
    if vocab.strategy(strategy).tensor_parallel:
        _tensor_parallel(model, blocks, cluster.submesh("tp"), options.tp_size, options.sequence_parallel, prepared,
                         gather_logits=options.generation)
    if options.training and (options.checkpointing or own):
        units = checkpoint_blocks(model, blocks)
        prepared.notes.append(checkpoint_note(blocks) + (
            "" if not own else "; the model's own gradient checkpointing is switched off in the trace (the same "
            "blocks checkpointed once)" if options.checkpointing else
            "; asked for by the model itself (transformers gradient_checkpointing_enable), traced per block"))
    else:
        units = blocks
    runnable = model
    if strategy in ("fsdp", "fsdp-grad-op", "fsdp+tp"):
        try:
            runnable = _fsdp(model, units, cluster.submesh("dp"), reshard=strategy != "fsdp-grad-op",
                             mixed=autocast_dtype, prepared=prepared)
        except (ValueError, RuntimeError, AssertionError, NotImplementedError) as exc:
            raise UserError(f"FSDP cannot wrap this model: {type(exc).__name__}: {_first_line(exc)}",
                            field="strategy") from None
    elif strategy in ("ddp", "zero1"):
        runnable = _ddp(model, prepared, cluster.world_size)
        prepared.zero = strategy == "zero1"
    prepared.runnable = runnable
    prepared.params = [(name, p, p.requires_grad) for name, p in model.named_parameters()]
    trainable = [p for _, p, t in prepared.params if t]
    from torch.distributed.tensor import DTensor

    sharded = [p for p in trainable if isinstance(p, DTensor)]
    plain = [p for p in trainable if not isinstance(p, DTensor)]
    # foreach kernels cannot mix DTensors and plain tensors (TP leaves norms unsharded): one group each
    prepared.optimizer_groups = [{"params": g} for g in (sharded, plain) if g]
    return prepared


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------------------------------ gradient accumulation
def _fsdp_param_groups(model: nn.Module):
    """FSDP2's parameter groups (one per ``fully_shard`` unit), from the units' states."""
    for module in model.modules():
        get_state = getattr(module, "_get_fsdp_state", None)
        if get_state is None:
            continue
        yield from getattr(get_state(), "_fsdp_param_groups", ())


def accumulated_gradients(model: nn.Module, prepared: Prepared, options) -> list[torch.Tensor]:
    """Gradient accumulation (``grad_accum`` K > 1) on rank 0: the gradients the traced micro-batch starts with
    (the sum of the micro-batches before it), set as the parameters' ``.grad``; returns their local storages'
    tensors. Call in the recorder's set-up mode (allocations before the first op), after ``prepare``.

    * FSDP2 (default ``set_requires_gradient_sync(True)``): every micro-batch reduce-scatters and the sharded
      gradient accumulates (``foreach_reduce``: ``grad._local_tensor += new_sharded_grad``). The first micro-batch
      leaves, per parameter group, one flat buffer of the group's padded shards (the reduce-scatter output, in
      the group's original dtype) with each trainable parameter's sharded gradient a view of it
      (``FSDPParam.to_sharded_dtensor``): laid out here the same way. Traced micro-batch: 2..K.
    * DDP / ZeRO-1: micro-batches 1..K-1 run under ``no_sync()`` (plain AccumulateGrad: one full gradient per
      parameter), the K-th all-reduces: traced micro-batch K.
    * Tensor parallel (plain parameters and DTensors): one gradient per parameter, rank 0's local shard."""
    if not options.training or options.grad_accum <= 1:
        return []
    from torch.distributed.tensor import DTensor

    grads: list[torch.Tensor] = []
    covered: set[int] = set()
    for group in _fsdp_param_groups(model):
        trained = [fp for fp in group.fsdp_params if fp.sharded_param.requires_grad]
        if not trained:
            continue
        dtype = getattr(group, "_orig_dtype", None) or trained[0].sharded_param.dtype
        flat = torch.empty(sum(fp.padded_sharded_param_size.numel() for fp in trained), dtype=dtype)
        offset = 0
        for fp in trained:
            view = torch.as_strided(flat, fp.sharded_size, fp.contiguous_sharded_stride, offset)
            fp.sharded_param.grad = fp.to_sharded_dtensor(view)
            covered.add(id(fp.sharded_param))
            offset += fp.padded_sharded_param_size.numel()
        grads.append(flat)
    for _, p, trains in prepared.params:
        if not trains or id(p) in covered:
            continue
        if isinstance(p, DTensor):
            local = torch.empty_like(p._local_tensor)
            p.grad = DTensor.from_local(local, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                        stride=p.stride())
        else:
            local = torch.empty_like(p)
            p.grad = local
        covered.add(id(p))
        grads.append(local)
    return grads


def grad_accum_note(options, batch: int) -> str:
    """What a distributed gradient-accumulation trace is (for the result's policies)."""
    k = options.grad_accum
    dp = options.world_size // options.tp_size
    head = (f"gradient accumulation: {k} micro-batches of {batch} per rank per optimizer step (global batch "
            f"{k} x {batch} x {dp} data-parallel replica(s) = {k * batch * dp}); ")
    strategy = options.strategy
    if strategy in ("ddp", "zero1"):
        return head + (f"DDP's no_sync() on micro-batches 1..{k - 1} (local full gradients accumulate, no "
                       f"all-reduce), the trace is micro-batch {k}: the accumulated gradients alive from its start, "
                       "its buckets all-reduced once per optimizer step; step time counts "
                       f"{k} forward+backward passes and one optimizer step")
    if strategy in ("fsdp", "fsdp-grad-op", "fsdp+tp"):
        tp = "; tensor-parallel collectives in every micro-batch too" if strategy == "fsdp+tp" else ""
        return head + ("FSDP2's default (gradient sync on): every micro-batch all-gathers and reduce-scatters, "
                       "accumulating into the sharded gradients; the trace is micro-batch 2.."
                       f"{k}: sharded gradients alive from its start; communication and step time count {k} "
                       f"micro-batches' collectives and one optimizer step{tp}")
    return head + (f"every micro-batch runs the tensor-parallel collectives; the trace is micro-batch 2..{k}: "
                   f"gradients (rank 0's shards) alive from its start; communication and step time count {k} "
                   "micro-batches and one optimizer step")

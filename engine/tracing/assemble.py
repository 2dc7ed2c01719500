"""Assemble the recorded ops, storage lifetimes and module stats into an AnalysisResult."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from torchbudget.engine.inputs import dtype_name
from torchbudget.engine.results import (
    MemoryCategory, ModuleNode, OpRecord, OpStatus, Phase, StorageEvent, Totals, UncountedOp, frozen_map,
)
from torchbudget.engine.tracing.modules import ModuleStack
from torchbudget.engine.tracing.storage import StorageLife


@dataclass
class StorageRoles:
    """Identities known once the trace ran; everything else is classified by lifetime."""

    weights: set[int] = field(default_factory=set)
    buffers: set[int] = field(default_factory=set)
    inputs: set[int] = field(default_factory=set)
    kv_cache: set[int] = field(default_factory=set)      # the KV cache a generation step starts with / fills
    gradients: set[int] = field(default_factory=set)
    optimizer_state: set[int] = field(default_factory=set)
    forward_end_seq: int | None = None   # event counter when the model's forward returned


def categorize(life: StorageLife, roles: StorageRoles) -> MemoryCategory:
    sid = life.storage_id
    for ids, category in ((roles.weights, MemoryCategory.WEIGHTS), (roles.buffers, MemoryCategory.BUFFERS),
                          (roles.inputs, MemoryCategory.INPUTS), (roles.kv_cache, MemoryCategory.KV_CACHE),
                          (roles.gradients, MemoryCategory.GRADIENTS),
                          (roles.optimizer_state, MemoryCategory.OPTIMIZER_STATE)):
        if sid in ids:
            return category
    end = roles.forward_end_seq
    if (life.alloc_phase is Phase.FORWARD and end is not None and life.alloc_seq < end
            and (life.free_seq is None or life.free_seq > end)):
        return MemoryCategory.ACTIVATIONS
    return MemoryCategory.TEMPORARIES


def storage_events(lives: list[StorageLife], roles: StorageRoles) -> tuple[StorageEvent, ...]:
    timed = []
    for life in lives:
        category = categorize(life, roles)
        timed.append((life.alloc_seq, StorageEvent(life.alloc_index, "alloc", life.storage_id, life.nbytes,
                                                   category, life.alloc_phase)))
        if life.free_seq is not None:
            timed.append((life.free_seq, StorageEvent(life.free_index, "free", life.storage_id, life.nbytes,
                                                      category, life.free_phase)))
    timed.sort(key=lambda pair: pair[0])
    return tuple(event for _, event in timed)


def _ancestors(path: str):
    """path itself, then each ancestor up to the root ''."""
    yield path
    while path:
        path = path.rpartition(".")[0]
        yield path


def _rollup(ops: list[OpRecord], phase: Phase, attr: str) -> tuple[dict[str, int], dict[str, int]]:
    own: dict[str, int] = defaultdict(int)
    for op in ops:
        if op.phase is phase:
            own[op.module_path] += getattr(op, attr)
    inclusive: dict[str, int] = defaultdict(int)
    for path, value in own.items():
        for ancestor in _ancestors(path):
            inclusive[ancestor] += value
    return own, inclusive


def module_nodes(model: torch.nn.Module, model_name: str, ops: list[OpRecord], stack: ModuleStack,
                 first_owner: dict[int, str], trains=None, named_modules=None) -> tuple[ModuleNode, ...]:
    """``trains(parameter) -> bool``: whether the step trains it (default: its ``requires_grad``; the trace
    passes its own decision, which --freeze changes without touching the module). ``named_modules``: the
    module tree to list (default ``model.named_modules``; a distributed trace lists the tree its ops were
    attributed to, from before the wrappers)."""
    trains = trains or (lambda p: p.requires_grad)
    macs_own, macs = _rollup(ops, Phase.FORWARD, "macs")
    flops_own, flops = _rollup(ops, Phase.FORWARD, "flops")
    _, backward_flops = _rollup(ops, Phase.BACKWARD, "flops")
    _, read = _rollup(ops, Phase.FORWARD, "bytes_read")
    _, written = _rollup(ops, Phase.FORWARD, "bytes_written")
    named = list((named_modules or model.named_modules)())
    children: dict[str, list[str]] = defaultdict(list)
    for path, _ in named[1:]:
        children[path.rpartition(".")[0]].append(path)
    nodes = []
    for path, module in named:
        subtree = list(module.parameters())
        stats = stack.stats.get(path)
        nodes.append(ModuleNode(
            path=path,
            name=(model_name or type(model).__name__) if path == "" else path.rpartition(".")[2],
            type_name=type(module).__name__,
            depth=0 if path == "" else path.count(".") + 1,
            parent=None if path == "" else path.rpartition(".")[0],
            children=tuple(children.get(path, ())),
            output_shapes=stats.output_shapes if stats else (),
            calls=stats.calls if stats else 0,
            params_own=sum(p.numel() for p in module.parameters(recurse=False) if first_owner.get(id(p)) == path),
            params=sum(p.numel() for p in subtree),
            trainable_params=sum(p.numel() for p in subtree if trains(p)),
            macs_own=macs_own.get(path, 0), macs=macs.get(path, 0),
            flops_own=flops_own.get(path, 0), flops=flops.get(path, 0),
            backward_flops=backward_flops.get(path, 0),
            bytes_read=read.get(path, 0), bytes_written=written.get(path, 0),
            activation_bytes=stats.output_bytes if stats else 0,
        ))
    return tuple(nodes)


def estimated_flops(op: OpRecord) -> int:
    """FLOPs of an op without a formula, guessed from its shapes: a contraction when two inputs of rank
    >= 2 share the first one's last dimension (2 x output elements x that dimension: matmul-like kernels
    such as _grouped_mm), else one per output element (the least an elementwise kernel does)."""
    out = sum(math.prod(t.shape) for t in op.outputs)
    matrices = [t for t in op.inputs if len(t.shape) >= 2]
    if len(matrices) >= 2 and op.outputs and len(op.outputs[0].shape) >= 2:
        k = matrices[0].shape[-1]
        if k in matrices[1].shape[-2:]:
            return 2 * math.prod(op.outputs[0].shape) * k
    return out


def uncounted(ops: list[OpRecord]) -> tuple[tuple[UncountedOp, ...], float, float]:
    """(uncounted ops by estimated weight, share of op calls covered, share of FLOPs covered)."""
    calls: dict[str, int] = defaultdict(int)
    guessed: dict[str, int] = defaultdict(int)
    modules: dict[str, dict[str, None]] = defaultdict(dict)
    counted = 0
    for op in ops:
        if op.status is OpStatus.UNCOUNTED:
            calls[op.op] += 1
            guessed[op.op] += estimated_flops(op)
            modules[op.op][op.module_path] = None
        else:
            counted += op.flops
    listing = tuple(UncountedOp(name, calls[name], tuple(modules[name]), guessed[name])
                    for name in sorted(calls, key=lambda n: (-guessed[n], -calls[n], n)))
    coverage = 1.0 - sum(calls.values()) / len(ops) if ops else 1.0
    total = counted + sum(guessed.values())
    return listing, coverage, (counted / total if total else 1.0)


def totals(ops: list[OpRecord], nodes: tuple[ModuleNode, ...], params: list[tuple[str, torch.Tensor, bool]],
           buffers: list[tuple[str, torch.Tensor]], input_bytes: int, output_bytes: int, *,
           numel=None, weight_extras: list[tuple[str, torch.Tensor]] = ()) -> Totals:
    """``numel(stand-in)``: the elements a parameter counts as (a quantised weight's logical count, not its
    packed bytes); ``weight_extras``: quantisation scales, in the weights' bytes but not in the counts."""
    numel = numel or (lambda t: t.numel())
    by_dtype: dict[str, int] = defaultdict(int)
    for p in [p for _, p, _ in params] + [t for _, t in weight_extras]:
        by_dtype[dtype_name(p.dtype)] += p.numel() * p.element_size()
    sums: dict[tuple[Phase, str], int] = defaultdict(int)
    for op in ops:
        sums[op.phase, "macs"] += op.macs
        sums[op.phase, "flops"] += op.flops
        sums[op.phase, "read"] += op.bytes_read
        sums[op.phase, "written"] += op.bytes_written
    return Totals(
        params=sum(numel(p) for _, p, _ in params),
        trainable_params=sum(numel(p) for _, p, trainable in params if trainable),
        buffers=sum(b.numel() for _, b in buffers),
        param_bytes=sum(by_dtype.values()),
        buffer_bytes=sum(b.numel() * b.element_size() for _, b in buffers),
        param_bytes_by_dtype=frozen_map(by_dtype),
        macs=sums[Phase.FORWARD, "macs"], flops=sums[Phase.FORWARD, "flops"],
        backward_flops=sums[Phase.BACKWARD, "flops"], optimizer_flops=sums[Phase.OPTIMIZER, "flops"],
        input_bytes=input_bytes, output_bytes=output_bytes,
        activation_bytes=sum(n.activation_bytes for n in nodes if not n.children),
        bytes_read=sums[Phase.FORWARD, "read"], bytes_written=sums[Phase.FORWARD, "written"],
    )

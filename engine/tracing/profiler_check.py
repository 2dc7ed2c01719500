"""Reference peak memory of a real CPU run, from torch.profiler's allocation events: what the trace's
storage events must reproduce. Used by tests and the trace benchmark, never by the trace itself."""
from __future__ import annotations

import gc

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import OpTree
from torch.utils._pytree import tree_leaves

from torchbudget.engine.results import AnalysisResult


def replay_peak_bytes(result: AnalysisResult) -> int:
    """Largest live tensor bytes when replaying the trace's storage events (no allocator rounding)."""
    live = peak = 0
    for event in result.storage_events:
        live += event.nbytes if event.kind == "alloc" else -event.nbytes
        peak = max(peak, live)
    return peak


def profiled_peak_bytes(model: torch.nn.Module, inputs: list[torch.Tensor], mode: str,
                        optimizer: torch.optim.Optimizer | None = None) -> int:
    """Peak live CPU tensor bytes of one real step (weights, buffers, inputs counted as live at start)."""
    baseline = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers(), *inputs))
    model.train(mode == "train")
    # the garbage collector is emptied first and paused during the step (as during a trace): a collection
    # inside the profile would free tensors made before it (cyclic garbage of earlier work), which the running
    # sum would subtract from this step's peak
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            if mode == "train":
                out = model(*inputs)
                loss = sum(t.float().sum() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
                loss.backward()
                del out, loss
                if optimizer is not None:
                    optimizer.step()
            else:
                with torch.no_grad():
                    out = model(*inputs)
    finally:
        if was_enabled:
            gc.enable()
    return baseline + allocation_peak_bytes(allocation_events(prof))


def allocation_events(prof, device_type: str | None = None) -> list:
    """The profiler's allocation/free events (OpTree nodes) in time order, optionally of one device type."""
    return [e for e in OpTree(prof.profiler.kineto_results).sorted_nodes
            if e.typed[0] == _EventType.Allocation and (device_type is None or e.typed[1].device.type == device_type)]


def allocation_peak_bytes(allocations, exclude_kernel_scratch: bool = True) -> int:
    """Largest running sum of the events' sizes (+size alloc, -size free), kernel scratch left out."""
    scratch = kernel_scratch_ids(allocations) if exclude_kernel_scratch else set()
    live = peak = 0
    for event in allocations:
        if id(event) not in scratch:
            live += event.typed[1].alloc_size   # negative for a free
            peak = max(peak, live)
    return peak


def kernel_scratch_ids(allocations) -> set[int]:
    """ids of the profiler allocation events (and their frees) that are freed inside the same op call
    that made them (oneDNN weight/layout reorders, im2col columns), or a kernel's private copy of an operand
    (CPU ``mm`` of a stride-0 operand: ``aten::mm`` -> ``clone`` -> ``empty_like`` -> ``empty``, freed by the
    ``mm`` call): kernel-private scratch that no aten op a trace records returns; its GPU counterpart is
    the cuDNN/cuBLAS workspace, which the planner models separately. ``allocations`` are OpTree allocation
    nodes in time order (shared with bench/profiler_reference.py)."""
    open_by_ptr: dict[int, object] = {}
    scratch: set[int] = set()
    for event in allocations:
        fields = event.typed[1]
        if fields.alloc_size > 0:
            open_by_ptr[fields.ptr] = event
        else:
            alloc = open_by_ptr.pop(fields.ptr, None)
            if alloc is not None and alloc.parent is not None and (
                    alloc.parent is event.parent or _operand_copy_of(alloc.parent, event.parent)):
                scratch.update((id(alloc), id(event)))
    return scratch


# the ops a kernel's .contiguous()/.clone() of an operand runs (the allocation sits in the innermost)
_COPY_OPS = frozenset({"aten::contiguous", "aten::clone", "aten::empty_like", "aten::empty", "aten::empty_strided"})


def _operand_copy_of(node, kernel) -> bool:
    """Whether profiler node ``node`` is a copy a kernel op call ``kernel`` made inside itself: only copy
    ops between them, and ``kernel`` an aten op that runs a kernel (no CompositeImplicitAutograd kernel; a
    composite op's copies are ops a dispatch-mode trace records one by one)."""
    if kernel is None or not kernel.name.startswith("aten::") or _decomposes(kernel.name):
        return False
    while node is not None and node is not kernel:
        if node.name not in _COPY_OPS:
            return False
        node = node.parent
    return node is kernel


_DECOMPOSES: dict[str, bool] = {}


def _decomposes(name: str) -> bool:
    """Whether aten op ``name`` (its default overload, else any) has a CompositeImplicitAutograd kernel: it runs
    as other ops, which a trace records one by one; an unknown name counts as decomposing (nothing is taken
    as scratch)."""
    if name not in _DECOMPOSES:
        packet = getattr(torch.ops.aten, name.removeprefix("aten::"), None)
        try:
            names = packet.overloads() if packet else []
            overloads = [name] if "default" in names else [f"{name}.{o}" for o in names]
            _DECOMPOSES[name] = not overloads or any(
                torch._C._dispatch_has_kernel_for_dispatch_key(o, "CompositeImplicitAutograd") for o in overloads)
        except RuntimeError:
            _DECOMPOSES[name] = True
    return _DECOMPOSES[name]

"""Reference peak memory of a real CPU run, from torch.profiler's allocation events: what the trace's
storage events must reproduce. Used by tests and the trace benchmark, never by the trace itself."""
from __future__ import annotations

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
    that made them (oneDNN weight/layout reorders, im2col columns): kernel-private scratch that no aten
    op returns; its GPU counterpart is the cuDNN/cuBLAS workspace, which the planner models separately.
    ``allocations`` are OpTree allocation nodes in time order (shared with bench/profiler_reference.py)."""
    open_by_ptr: dict[int, object] = {}
    scratch: set[int] = set()
    for event in allocations:
        fields = event.typed[1]
        if fields.alloc_size > 0:
            open_by_ptr[fields.ptr] = event
        else:
            alloc = open_by_ptr.pop(fields.ptr, None)
            if alloc is not None and alloc.parent is not None and alloc.parent is event.parent:
                scratch.update((id(alloc), id(event)))
    return scratch

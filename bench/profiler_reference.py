"""Reference peaks from a real CPU run measured by torch.profiler (``profile_memory=True``), not our trace.

The workload is the one the trace models: eval + no_grad for inference; for training, train mode, the
loss ``sum(out.float().sum())``, backward, and one step of the real optimizer with foreach=True, starting
from no gradients and no optimizer state (iteration 1). The peak is the bytes alive before the step
(parameters, buffers, inputs: distinct storages) plus the largest running sum of the profiler's
allocation events (each carries +size or -size), in time order, by default without CPU-kernel scratch."""
from __future__ import annotations

import contextlib

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import OpTree

from engine.tracing.profiler_check import kernel_scratch_ids
from engine.tracing.training import checkpointed_view, make_optimizer, scalar_loss


def _storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _allocation_deltas(prof, exclude_kernel_scratch: bool) -> list[int]:
    """+size / -size of every CPU allocation event in time order, optionally without kernel scratch
    (allocations freed inside the op call that made them: see ``kernel_scratch_ids``)."""
    events = [e for e in OpTree(prof.profiler.kineto_results).sorted_nodes
              if e.typed[0] == _EventType.Allocation and e.typed[1].device.type == "cpu"]
    scratch = kernel_scratch_ids(events) if exclude_kernel_scratch else set()
    return [e.typed[1].alloc_size for e in events if id(e) not in scratch]


def profiled_peak_bytes(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], *, mode: str = "infer",
                        optimizer: str | None = "adamw", autocast_dtype: torch.dtype | None = None,
                        checkpointing: bool = False, exclude_kernel_scratch: bool = True) -> int:
    """Largest live CPU bytes during one real step, pre-existing tensors (weights, inputs) included."""
    train = mode == "train"
    model.train(train)
    for p in model.parameters():
        p.grad = None
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad]) if train and optimizer \
        else None
    amp = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    runnable = checkpointed_view(model) if train and checkpointing else model
    baseline = _storage_bytes([*model.parameters(), *model.buffers(), *inputs])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        if train:
            with amp:
                output = runnable(*inputs)
            scalar_loss(output).backward()
            if opt is not None:
                opt.step()
        else:
            with torch.no_grad(), amp:
                model(*inputs)
    live = peak = 0
    for delta in _allocation_deltas(prof, exclude_kernel_scratch):
        live += delta
        peak = max(peak, live)
    return baseline + peak

"""Reference peaks from a real CPU run measured by torch.profiler (``profile_memory=True``), not our trace.

The workload is the one the trace models: eval + no_grad for inference; for training, train mode, the
loss ``sum(out.float().sum())``, backward, and one step of the real optimizer with foreach=True, starting
from no gradients and no optimizer state (iteration 1). The peak is the bytes alive before the step
(parameters, buffers, inputs: distinct storages) plus the largest running sum of the profiler's
allocation events (each carries +size or -size), in time order."""
from __future__ import annotations

import contextlib

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from engine.tracing.training import make_optimizer, scalar_loss


def _storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _allocation_deltas(prof) -> list[int]:
    events, stack = [], list(reversed(prof.profiler.kineto_results.experimental_event_tree()))
    while stack:  # pre-order walk, then a stable sort by start time
        event = stack.pop()
        if event.typed[0] == _EventType.Allocation and event.typed[1].device.type == "cpu":
            events.append((event.start_time_ns, len(events), event.typed[1].alloc_size))
        stack.extend(reversed(event.children))
    return [size for _, _, size in sorted(events)]


def profiled_peak_bytes(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], *, mode: str = "infer",
                        optimizer: str | None = "adamw", autocast_dtype: torch.dtype | None = None) -> int:
    """Largest live CPU bytes during one real step, pre-existing tensors (weights, inputs) included."""
    train = mode == "train"
    model.train(train)
    for p in model.parameters():
        p.grad = None
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad]) if train and optimizer \
        else None
    amp = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    baseline = _storage_bytes([*model.parameters(), *model.buffers(), *inputs])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        if train:
            with amp:
                output = model(*inputs)
            scalar_loss(output).backward()
            if opt is not None:
                opt.step()
        else:
            with torch.no_grad(), amp:
                model(*inputs)
    live = peak = 0
    for delta in _allocation_deltas(prof):
        live += delta
        peak = max(peak, live)
    return baseline + peak

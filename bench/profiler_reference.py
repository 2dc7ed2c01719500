"""Reference peaks from a real CPU run measured by torch.profiler (``profile_memory=True``), not our trace.

The workload is the one the trace models: eval + no_grad for inference; for training, train mode, the
loss ``sum(out.float().sum())`` (the output dropped once the loss exists), backward, and one step of the
real optimizer with foreach=True, starting from no gradients and no optimizer state (iteration 1). The
peak is the bytes alive before the step (parameters, buffers, inputs: distinct storages) plus the largest
running sum of the profiler's allocation events (each carries +size or -size), in time order, by default
without CPU-kernel scratch."""
from __future__ import annotations

import contextlib

import torch
from torch.profiler import ProfilerActivity, profile

from torchbudget.engine.tracing.profiler_check import allocation_events, allocation_peak_bytes
from torchbudget.engine.tracing.training import checkpointed_view, make_optimizer, scalar_loss


def _storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


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
            loss = scalar_loss(output)
            del output   # dropped once the loss exists, as a training loop (and the trace) does: an LLM's
            loss.backward()   # logits are not alive in backward and the optimizer step
            del loss
            if opt is not None:
                opt.step()
        else:
            with torch.no_grad(), amp:
                model(*inputs)
    return baseline + allocation_peak_bytes(allocation_events(prof, "cpu"), exclude_kernel_scratch)

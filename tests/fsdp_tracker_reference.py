"""The reference for tests/test_distributed_vs_tracker.py: torch's own FSDPMemTracker
(torch.distributed._tools.fsdp2_mem_tracker) on a fake setup of tests/models/tiny_llms.py's Llama, written with
torch's APIs only (none of engine.distributed): a fake process group of N ranks, the model materialised on
FakeTensors, ``fully_shard`` on each decoder layer and then on the model (torch's defaults, the amp precisions as
``MixedPrecisionPolicy(param_dtype, reduce_dtype=float32)``), checkpointing by torch's ``checkpoint_wrapper``,
AdamW (foreach), one training step tracked in full: forward, ``logits.float().sum()``, backward, ``step()``,
``zero_grad()``. Iteration 1 is the first step; iteration 2 is tracked after an untracked first step (the
optimizer state exists from the start).

Two things make the fake setup measure what an eager run measures:

* DTensor's sharding propagation runs each op on global-shaped fake tensors in ``detect_fake_mode()``'s mode.
  In an eager run that is a fresh mode of its own, which the tracker skips (its ops are not in the mode it was
  entered under). Under an outer FakeTensorMode it would be the outer mode, and the tracker would count every
  global-shaped shadow as memory: AdamW's foreach step on the 8x larger global shapes put the peak at 8.3 MB
  (OptState 7.75 MB) on this model. Here, as in engine.distributed.session, propagation gets a fresh mode.
* transformers' packed-sequence check reads position ids; a real run finds one sequence per row and skips the
  4-D mask, a FakeTensor cannot answer and keeps it. The reference decides as the real run does
  (engine.tracing.hf_masks.one_sequence_per_row, which changes only that decision).

Run as ``python -m tests.fsdp_tracker_reference WORLD PRECISION ITERATION CHECKPOINTING`` (a process of its own:
the process group, the patch and the tracker's fake collectives stay out of the test process); prints the peak
snapshot as JSON (bytes by the tracker's categories and ``Total``)."""
from __future__ import annotations

import json
import sys


def peak_snapshot(world: int, precision: str, iteration: int, checkpointing: bool, model=None,
                  tokens: tuple[int, int] = (2, 16)) -> dict[str, int]:
    """The tracker's peak snapshot; ``model``: a decoder built on meta with ``.model.layers`` (default: the
    tiny Llama), run on ``tokens`` = (batch, sequence) input ids."""
    import torch
    import torch.distributed as dist
    import torch.distributed.tensor._sharding_prop as sharding_prop
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from tests.models.tiny_llms import TinyLlama
    from torchbudget.engine.tracing import hf_masks

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        propagation = FakeTensorMode(allow_non_fake_inputs=True)
        sharding_prop.detect_fake_mode = lambda *args, **kwargs: propagation
        low = {"bf16-amp": torch.bfloat16, "fp16-amp": torch.float16}.get(precision)
        policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32) if low else MixedPrecisionPolicy()
        model = TinyLlama() if model is None else model   # on meta
        with FakeTensorMode(allow_non_fake_inputs=True):
            model.to_empty(device="cpu")
            layers = model.model.layers
            if checkpointing:
                for i in range(len(layers)):
                    layers[i] = checkpoint_wrapper(layers[i])
            for layer in layers:
                fully_shard(layer, mesh=mesh, mp_policy=policy)
            fully_shard(model, mesh=mesh, mp_policy=policy)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
            input_ids = torch.randint(0, 512, tokens)

            def step():
                with hf_masks.one_sequence_per_row():
                    out = model(input_ids=input_ids, use_cache=False)
                    loss = out.logits.float().sum()
                    del out
                    loss.backward()
                    del loss
                    optimizer.step()
                    optimizer.zero_grad()

            for _ in range(iteration - 1):
                step()
            tracker = FSDPMemTracker(model, optimizer)
            tracker.track_inputs((input_ids,))
            with tracker:
                step()
            (snapshot,) = tracker.get_tracker_snapshot("peak").values()
            return {getattr(k, "value", str(k)): int(v) for k, v in snapshot.items()}
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    world, precision, iteration, checkpointing = sys.argv[1:5]
    print(json.dumps(peak_snapshot(int(world), precision, int(iteration), checkpointing == "1")))

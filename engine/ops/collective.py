"""torch.distributed's ops: collectives (c10d's process-group ops, the functional collectives, their autograd
variants) and FSDP2's copy kernels. None does arithmetic on the GPU's cores: collectives are tagged
``OpKind.COLLECTIVE`` and timed on the interconnect by engine.distributed.comm (bus-bandwidth formulas), never
on the roofline; FSDP2's copy-in/copy-out kernels move bytes (``OpKind.MEMORY``). ``wait_tensor`` only waits.

FSDP2's ops (``torch.ops.fsdp``) exist once ``torch.distributed.fsdp`` is imported (0.6 s): the distributed
trace and the docs table call ``register_fsdp_ops``; one-GPU traces never meet them."""
from __future__ import annotations

import torch

from torchbudget.engine.ops.registry import is_known_zero, register_zero
from torchbudget.engine.ops.shapes import ops
from torchbudget.engine.results import OpKind

C10D_COLLECTIVES = [
    "allreduce_", "allreduce_coalesced_", "allgather_", "_allgather_base_", "allgather_coalesced_",
    "allgather_into_tensor_coalesced_", "reduce_scatter_", "_reduce_scatter_base_", "reduce_scatter_tensor_coalesced_",
    "broadcast_", "reduce_", "alltoall_", "alltoall_base_", "gather_", "scatter_", "send", "recv_", "recv_any_source_",
    "barrier", "monitored_barrier_",
]
FUNCTIONAL_COLLECTIVES = [
    "all_reduce", "all_reduce_", "all_reduce_coalesced", "all_reduce_coalesced_", "all_gather_into_tensor",
    "all_gather_into_tensor_out", "all_gather_into_tensor_coalesced", "reduce_scatter_tensor",
    "reduce_scatter_tensor_coalesced", "all_to_all_single", "broadcast", "broadcast_",
]
AUTOGRAD_COLLECTIVES = ["all_to_all_single", "reduce_scatter_tensor", "all_gather_into_tensor"]
FSDP_COPIES = ["all_gather_copy_in", "split_with_sizes_copy", "chunk_cat"]

register_zero(*ops(*C10D_COLLECTIVES, namespace=torch.ops.c10d), op_kind=OpKind.COLLECTIVE)
register_zero(*ops(*FUNCTIONAL_COLLECTIVES, namespace=torch.ops._c10d_functional), op_kind=OpKind.COLLECTIVE)
register_zero(*ops(*AUTOGRAD_COLLECTIVES, namespace=torch.ops._c10d_functional_autograd), op_kind=OpKind.COLLECTIVE)
register_zero(*ops("wait_tensor", namespace=torch.ops._c10d_functional), op_kind=OpKind.VIEW)


def register_fsdp_ops() -> None:
    """FSDP2's copy kernels (all-gather copy-in, copy-out, reduce-scatter chunk-cat); idempotent."""
    import torch.distributed.fsdp  # noqa: F401 - defines torch.ops.fsdp

    todo = [op for op in ops(*FSDP_COPIES, namespace=torch.ops.fsdp) if not is_known_zero(op)]
    if todo:
        register_zero(*todo, op_kind=OpKind.MEMORY)

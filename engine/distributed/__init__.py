"""Several GPUs (issue 11): DDP, FSDP2, ZeRO-1, tensor parallel and FSDP + TP, traced through torch.distributed
itself on a fake process group (rank 0's step: per-rank memory from the same simulation as one GPU), with the
collectives timed on the cluster's interconnect. docs/distributed.md.

Imports torch.distributed only when a distributed trace runs: ``engine.distributed.trace`` (the trace) and
``engine.distributed.comm`` / ``engine.distributed.plan`` (arithmetic on its result, no torch)."""

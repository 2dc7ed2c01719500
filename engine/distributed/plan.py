"""The distributed half of a plan (no torch): the cluster, rank 0's communication timed on it, the step time
with the overlap model (engine.distributed.comm), and what the job processes per second. docs/distributed.md."""
from __future__ import annotations

from dataclasses import dataclass

from torchbudget.engine import vocab
from torchbudget.engine.distributed import comm
from torchbudget.engine.distributed.links import build_cluster, link_for
from torchbudget.engine.results import AnalysisResult
from torchbudget.hardware.spec import GpuSpec


@dataclass(frozen=True)
class ClusterChoice:
    """What the user chose about the cluster beyond GPU and world size (None: hardware.cluster's defaults)."""
    gpus_per_node: int | None = None
    intra: str | None = None          # interconnect name inside a node
    inter: str | None = None          # between nodes


@dataclass(frozen=True)
class DistributedPlan:
    strategy: str
    world_size: int
    tp_size: int
    method: str                       # "traced" (torch's wrappers on a fake process group) | "formula"
    cluster: str                      # one line: GPUs, nodes, links
    gpus_per_node: int
    intra: str
    inter: str
    comm: comm.CommReport
    global_batch: int                 # samples per optimizer step over the job (per-rank micro-batch x gradient
                                      # accumulation steps x data-parallel replicas)
    tokens_per_sample: int            # token inputs: the sequence length; else 0
    notes: tuple[str, ...] = ()

    @property
    def dp_size(self) -> int:
        return self.world_size // self.tp_size

    @property
    def grad_accum(self) -> int:
        return self.comm.grad_accum

    @property
    def step_ms(self) -> float:
        """One optimizer step: K micro-batches' forward and backward (gradient accumulation) and the optimizer."""
        return self.comm.step_ms

    @property
    def samples_per_s(self) -> float:
        return self.global_batch / (self.step_ms / 1000.0) if self.step_ms > 0 else 0.0

    @property
    def tokens_per_s(self) -> float | None:
        return self.samples_per_s * self.tokens_per_sample if self.tokens_per_sample else None

    @property
    def scaling_efficiency(self) -> float:
        """Compute / (compute + exposed communication): the share of the step each GPU spends computing."""
        return self.comm.compute_ms / self.step_ms if self.step_ms > 0 else 1.0


def communication_bytes(result: AnalysisResult, per_communicator: int) -> int:
    """NCCL buffers of rank 0: one set per process group that runs collectives."""
    info = result.distributed
    if info is None:
        return 0
    groups = {c.group for c in info.collectives} or {"world"}
    return len(groups) * per_communicator if info.world_size > 1 else 0


def _tokens_per_sample(result: AnalysisResult) -> int:
    first = result.inputs[0] if result.inputs else None
    if first is not None and vocab.input_kind(tuple(first.shape), first.dtype) is vocab.InputKind.TOKENS:
        return int(first.shape[1])
    return 0


def distributed_plan(result: AnalysisResult, gpu: GpuSpec, op_ms, choice: ClusterChoice | None = None
                     ) -> DistributedPlan:
    info = result.distributed
    choice = choice or ClusterChoice()
    cluster = build_cluster(gpu, info.world_size, gpus_per_node=choice.gpus_per_node, intra=choice.intra,
                            inter=choice.inter)
    report = comm.timeline(result, op_ms, lambda label: link_for(cluster, info.groups, label), method=info.method)
    return DistributedPlan(
        strategy=info.strategy, world_size=info.world_size, tp_size=info.tp_size, method=info.method,
        cluster=cluster.describe() if hasattr(cluster, "describe") else f"{info.world_size}x {gpu.name}",
        gpus_per_node=cluster.gpus_per_node, intra=cluster.intra.name, inter=cluster.inter.name, comm=report,
        global_batch=result.batch_size * report.grad_accum * info.dp_size,
        tokens_per_sample=_tokens_per_sample(result),
        notes=tuple(info.notes))


__all__ = ["ClusterChoice", "DistributedPlan", "communication_bytes", "distributed_plan"]

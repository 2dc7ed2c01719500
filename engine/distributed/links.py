"""The cluster a distributed plan runs on: hardware.cluster's ``Cluster`` (N GPUs of one kind, G per node, a
link inside a node and one between them), and which link each of rank 0's process groups crosses."""
from __future__ import annotations

from torchbudget.hardware.spec import GpuSpec

from torchbudget.hardware.cluster import Cluster


def build_cluster(gpu: GpuSpec, world_size: int, *, gpus_per_node: int | None = None, intra: str | None = None,
                  inter: str | None = None) -> Cluster:
    return Cluster.build(gpu, world_size, gpus_per_node, intra, inter)


def link_for(cluster: Cluster, groups, label: str):
    """The Interconnect a collective over rank 0's ``label`` group ("world", "dp", "tp") crosses."""
    ranks = tuple(groups.get(label) or groups.get("world") or range(cluster.world_size))
    return cluster.link(ranks)


__all__ = ["Cluster", "build_cluster", "link_for"]

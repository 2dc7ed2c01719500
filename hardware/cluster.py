"""Several GPUs as one piece of hardware: N GPUs of one kind, G per node, a link inside a node and one between
nodes. Ranks fill nodes in order (rank r sits on node r // G), as torchrun numbers them."""
from __future__ import annotations

from dataclasses import dataclass

from torchbudget.hardware.errors import ClusterError
from torchbudget.hardware.interconnect import (Interconnect, default_inter_node, default_intra_node,
                                               find_interconnect)
from torchbudget.hardware.spec import GpuSpec

# GPUs per node when none is given: an HGX/DGX board (8), or the interconnect's domain when that is another
# size (GB200 NVL72: 72 GPUs share one NVLink domain; H200 NVL: bridge groups of 4).
DEFAULT_GPUS_PER_NODE = 8
MAX_WORLD_SIZE = 1_000_000


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            is_whole = float(value) == int(value)  # "8", 8.0
        except (TypeError, ValueError, OverflowError):
            is_whole = False
        if not is_whole or isinstance(value, bool):
            raise ClusterError(f"{what} must be a whole number, got {value!r}")
        value = int(value)
    if value < 1:
        raise ClusterError(f"{what} must be at least 1, got {value}")
    if value > MAX_WORLD_SIZE:
        raise ClusterError(f"{what} {value:,} is implausible (at most {MAX_WORLD_SIZE:,})")
    return value


@dataclass(frozen=True)
class Cluster:
    gpu: GpuSpec
    world_size: int
    gpus_per_node: int
    intra: Interconnect
    inter: Interconnect

    @property
    def nodes(self) -> int:
        return -(-self.world_size // self.gpus_per_node)

    def node_of(self, rank: int) -> int:
        return rank // self.gpus_per_node

    def link(self, group_ranks: tuple[int, ...]) -> Interconnect:
        """The slowest link a collective over ``group_ranks`` crosses: ``intra`` when every rank is on one node,
        else ``inter``."""
        ranks = tuple(group_ranks)
        if not ranks:
            raise ValueError("a process group has at least one rank")
        bad = [r for r in ranks if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < self.world_size]
        if bad:
            raise ValueError(f"ranks {bad[:4]} are outside a world of {self.world_size}")
        return self.intra if len({self.node_of(r) for r in ranks}) == 1 else self.inter

    @classmethod
    def build(cls, gpu: GpuSpec, world_size: int, gpus_per_node: int | None = None,
              intra: str | Interconnect | None = None, inter: str | Interconnect | None = None) -> "Cluster":
        """Defaults filled and the whole checked: ClusterError / UnknownInterconnectError in one line."""
        world_size = _count(world_size, "world size")
        intra_link = find_interconnect(intra) if intra is not None else default_intra_node(gpu)
        inter_link = find_interconnect(inter) if inter is not None else default_inter_node()
        if gpus_per_node is None:
            gpus_per_node = min(world_size, intra_link.domain_gpus or DEFAULT_GPUS_PER_NODE)
        gpus_per_node = _count(gpus_per_node, "GPUs per node")
        if world_size > gpus_per_node and world_size % gpus_per_node:
            raise ClusterError(f"world size {world_size} is not a whole number of nodes of {gpus_per_node} GPUs "
                               f"(use a multiple of {gpus_per_node}, or set the GPUs per node)")
        in_a_node = min(world_size, gpus_per_node)
        if intra_link.domain_gpus is not None and in_a_node > intra_link.domain_gpus:
            raise ClusterError(f"{in_a_node} GPUs per node exceed {intra_link.name}'s domain of "
                               f"{intra_link.domain_gpus} GPUs (use at most {intra_link.domain_gpus} GPUs per node, "
                               "or another intra-node interconnect)")
        if world_size > gpus_per_node and inter_link.domain_gpus is not None and world_size > inter_link.domain_gpus:
            raise ClusterError(f"{world_size} GPUs exceed {inter_link.name}'s domain of {inter_link.domain_gpus} GPUs "
                               "between nodes (pick a network such as InfiniBand NDR)")
        return cls(gpu=gpu, world_size=world_size, gpus_per_node=gpus_per_node, intra=intra_link, inter=inter_link)

    def describe(self) -> str:
        """One line: "16x H100 SXM: 2 nodes of 8, NVLink 4 inside a node, InfiniBand NDR between nodes"."""
        text = f"{self.world_size}x {self.gpu.name}"
        if self.nodes == 1:
            return text + (f" on {self.intra.name}" if self.world_size > 1 else "")
        return (f"{text}: {self.nodes} nodes of {self.gpus_per_node}, {self.intra.name} inside a node, "
                f"{self.inter.name} between nodes")

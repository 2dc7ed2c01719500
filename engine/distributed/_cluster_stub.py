"""A stand-in for hardware.cluster / hardware.interconnect (the contract of issue 11's hardware half) while
that branch is not merged: two links, NVLink 4 inside a node and InfiniBand NDR between nodes."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interconnect:
    name: str
    kind: str
    bandwidth_gb_s: float
    efficiency: float
    latency_us: float
    source: str


_LINKS = {
    "nvlink4": Interconnect("NVLink 4", "nvlink", 450.0, 0.80, 10.0, "NVIDIA H100 datasheet (stub)"),
    "infinibandndr": Interconnect("InfiniBand NDR", "infiniband", 50.0, 0.80, 20.0, "NVIDIA ConnectX-7 (stub)"),
    "pcie4x16": Interconnect("PCIe 4 x16", "pcie", 32.0, 0.70, 15.0, "PCI-SIG (stub)"),
}


def find_interconnect(name):
    if isinstance(name, Interconnect):
        return name
    from torchbudget.errors import UserError

    key = "".join(c for c in str(name).lower() if c.isalnum())
    if key not in _LINKS:
        raise UserError(f"unknown interconnect {name!r}", field="interconnect")
    return _LINKS[key]


@dataclass(frozen=True)
class Cluster:
    gpu: object
    world_size: int
    gpus_per_node: int
    intra: Interconnect
    inter: Interconnect

    @property
    def nodes(self) -> int:
        return -(-self.world_size // self.gpus_per_node)

    def link(self, group_ranks):
        return self.intra if len({r // self.gpus_per_node for r in group_ranks}) == 1 else self.inter

    @classmethod
    def build(cls, gpu, world_size, gpus_per_node=None, intra=None, inter=None):
        return cls(gpu, world_size, gpus_per_node or min(world_size, 8),
                   find_interconnect(intra or "nvlink4"), find_interconnect(inter or "infinibandndr"))

    def describe(self) -> str:
        return f"{self.world_size}x {self.gpu.name}"

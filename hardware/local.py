"""Detected devices (hardware.nvml) as GpuSpecs: matched to a database entry, or derived.

A matched device keeps the entry's peaks and bandwidth (rated boost clock, as the datasheet) but
takes its memory from NVML: total = NVML total, usable = NVML free - CUDA context (origin "live"). An unknown
device gets peaks from hardware.derive (origin "derived"). A MIG instance is its parent entry
scaled to the instance: its own memory, compute scaled by its SM share and bandwidth by its
memory share.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

from torchbudget.hardware.derive import architecture_for, derive_peak_tflops, is_half_rate_name
from torchbudget.hardware.names import name_key
from torchbudget.hardware.nvml import LocalGpu, MemoryReading, MigInstance, ProbeResult
from torchbudget.hardware.spec import GpuSpec


def match_device(nvml_name: str, database: Iterable[GpuSpec]) -> GpuSpec | None:
    """The database entry whose NVML names (or, failing that, name/aliases) equal ``nvml_name``."""
    key = name_key(nvml_name)
    specs = list(database)
    for spec in specs:
        if any(name_key(n) == key for n in spec.nvml_names):
            return spec
    for spec in specs:
        if key in {name_key(spec.name), *(name_key(a) for a in spec.aliases)}:
            return spec
    return None


def _usable(memory: MemoryReading) -> int:
    """A detected GPU offers what NVML reports free now (other processes' memory is already taken out)."""
    return memory.free_bytes


def _live(entry: GpuSpec, gpu: LocalGpu) -> GpuSpec:
    memory = {}
    if gpu.memory is not None:
        memory = {"memory_bytes": gpu.memory.total_bytes, "available_memory_bytes": _usable(gpu.memory)}
    return dataclasses.replace(entry, origin="live", local_index=gpu.index, **memory)


def _derived(gpu: LocalGpu) -> GpuSpec:
    clock = gpu.sm_clock_rated_boost_mhz or gpu.sm_clock_max_mhz
    peaks = derive_peak_tflops(gpu.compute_capability, gpu.sm_count, clock,
                               half_rate_fp32_accumulate=is_half_rate_name(gpu.name))
    memory = gpu.memory
    return GpuSpec(
        name=gpu.name,
        vendor="NVIDIA",
        memory_bytes=memory.total_bytes if memory else 0,
        available_memory_bytes=_usable(memory) if memory else 0,
        bandwidth_gbs=round(gpu.bandwidth_gbs or 0.0, 1),  # 0 = unknown
        peak_tflops=peaks,
        architecture=architecture_for(gpu.compute_capability),
        compute_capability=gpu.compute_capability,
        sm_count=gpu.sm_count,
        boost_clock_mhz=clock,
        tdp_w=round(gpu.power_limit_w) if gpu.power_limit_w else None,
        nvml_names=(gpu.name,),
        source="derived from NVML: SM count x clock x FLOPs/clock/SM (hardware/derive.py)",
        origin="derived",
        local_index=gpu.index,
    )


def _mig_profile(instance: MigInstance) -> str:
    # NVML names a MIG device "<parent name> MIG 1g.10gb"
    if instance.name and " MIG " in instance.name:
        return instance.name.rsplit(" MIG ", 1)[1]
    return f"#{instance.index}"


def _mig(parent: GpuSpec, gpu: LocalGpu, instance: MigInstance) -> GpuSpec:
    parent_sm = gpu.sm_count or parent.sm_count
    compute_share = instance.sm_count / parent_sm if instance.sm_count and parent_sm else None
    memory_share = (instance.memory.total_bytes / parent.memory_bytes
                    if instance.memory and parent.memory_bytes else None)
    peaks = {k: (v * compute_share if v is not None and compute_share else v) for k, v in parent.peak_tflops.items()}
    return dataclasses.replace(
        parent,
        name=f"{parent.name} MIG {_mig_profile(instance)}",
        memory_bytes=instance.memory.total_bytes if instance.memory else parent.memory_bytes,
        available_memory_bytes=_usable(instance.memory) if instance.memory else parent.available_memory_bytes,
        bandwidth_gbs=parent.bandwidth_gbs * memory_share if memory_share else parent.bandwidth_gbs,
        peak_tflops=peaks,
        sm_count=instance.sm_count or parent.sm_count,
        nvml_names=(instance.name,) if instance.name else (),
        aliases=(),
        origin=parent.origin,
    )


def specs_from_probe(result: ProbeResult, database: Iterable[GpuSpec]) -> tuple[GpuSpec, ...]:
    database = tuple(database)
    specs: list[GpuSpec] = []
    for gpu in result.devices:
        entry = match_device(gpu.name, database)
        device = _live(entry, gpu) if entry is not None else _derived(gpu)
        if gpu.mig_enabled and gpu.mig_instances:
            # CUDA sees the MIG instances, not the whole GPU: the parent's full size is not usable
            parent = dataclasses.replace(device, memory_bytes=gpu.memory.total_bytes) if gpu.memory else device
            specs.extend(_mig(parent, gpu, instance) for instance in gpu.mig_instances)
        else:
            specs.append(device)
    return tuple(specs)

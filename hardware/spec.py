"""The immutable description of one GPU that the planner consumes. The planner never queries NVML."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

# dtypes a peak can be given for; "fp32" is the non-tensor (CUDA core) rate
PEAK_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")

# torch dtype name -> the peak to use for tensor-core eligible ops (matmul/conv/attention)
TENSOR_PEAK_FOR_DTYPE = {
    "float32": "fp32", "float16": "fp16", "bfloat16": "bf16",
    "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "int8": "int8",
}


@dataclass(frozen=True)
class GpuSpec:
    name: str                                  # canonical, e.g. "H100 SXM"
    vendor: str                                # "NVIDIA" | "AMD" | "Apple"
    memory_bytes: int                          # total device memory
    available_memory_bytes: int                # offered to a new process before CUDA starts: NVML free (live),
                                               # total - driver reserve (what-if); the planner takes out the rest
    bandwidth_gbs: float                       # GB/s, 1 GB = 1e9 B
    peak_tflops: Mapping[str, float | None]    # dense peaks by PEAK_DTYPES key; None = unsupported
    memory_type: str = ""
    architecture: str = ""
    compute_capability: str | None = None
    sm_count: int | None = None
    boost_clock_mhz: int | None = None
    tdp_w: int | None = None
    nvml_names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    source: str = ""
    interconnect: str = ""                     # its usual intra-node link, a name in resources/interconnects.toml
                                               # ("" = by compute capability: hardware.interconnect.default_intra_node)
    origin: str = "database"                   # "database" | "user" | "live" | "derived"
    local_index: int | None = None             # NVML index for a detected device

    def __post_init__(self):
        object.__setattr__(self, "peak_tflops", MappingProxyType(dict(self.peak_tflops)))

    def peak_flops_per_s(self, dtype: str, *, tensor_core: bool, tf32: bool = False) -> float:
        """FLOP/s for an op computing in torch dtype name ``dtype``.

        Non-matmul ops run on CUDA cores at the fp32 (or fp16/bf16 vector) rate; matmul-like ops use
        the dense tensor rate of their dtype; fp32 matmuls use tf32 only when ``tf32`` is allowed.
        Falls back to the fp32 rate where a tensor rate is unknown."""
        fp32 = self.peak_tflops.get("fp32") or 0.0
        key = "fp32"
        if tensor_core:
            key = TENSOR_PEAK_FOR_DTYPE.get(dtype, "fp32")
            if key == "fp32" and tf32:
                key = "tf32"
        rate = self.peak_tflops.get(key) or fp32
        return rate * 1e12

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gbs * 1e9

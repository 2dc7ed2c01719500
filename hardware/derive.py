"""Peak rates of a GPU that is not in the database, from its SM count, clock and architecture.

peak FLOP/s = SM count x clock x FLOPs per clock per SM. The table below is dense (no sparsity),
per SM (per CU for AMD), and counts an FMA as 2 FLOPs. Tensor rates are the full rate with FP32
accumulate as sold on data-centre/workstation parts; GeForce cards (and a few derivatives such as
A10G, L40) run FP16/BF16/TF32/FP8 with FP32 accumulate — what PyTorch uses — at half that rate.
INT8 is not halved. AMD's CDNA 3 vector FP32 counts packed FP32 (as its datasheet). Sources: NVIDIA architecture whitepapers (Volta, Turing, Ampere GA100 and GA102,
Ada, Hopper, Blackwell) and the AMD CDNA 2/3 whitepapers; each row reproduces the published
datasheet peaks of the GPUs in resources/gpus.toml to within 10% (checked by tests).
"""
from __future__ import annotations

from torchbudget.hardware.spec import PEAK_DTYPES

# compute capability (or AMD gfx target) -> (architecture, {dtype: FLOPs per clock per SM})
FLOPS_PER_CLOCK_PER_SM: dict[str, tuple[str, dict[str, int]]] = {
    "6.0": ("Pascal GP100", {"fp32": 128}),
    "6.1": ("Pascal GP10x", {"fp32": 256}),
    "7.0": ("Volta", {"fp32": 128, "fp16": 1024}),
    "7.5": ("Turing", {"fp32": 128, "fp16": 1024, "int8": 2048}),
    "8.0": ("Ampere GA100", {"fp32": 128, "tf32": 1024, "fp16": 2048, "bf16": 2048, "int8": 4096}),
    "8.6": ("Ampere GA10x", {"fp32": 256, "tf32": 512, "fp16": 1024, "bf16": 1024, "int8": 2048}),
    "8.7": ("Ampere Orin", {"fp32": 256, "tf32": 1024, "fp16": 2048, "bf16": 2048, "int8": 4096}),
    "8.9": ("Ada Lovelace", {"fp32": 256, "tf32": 512, "fp16": 1024, "bf16": 1024, "fp8": 2048, "int8": 2048}),
    "9.0": ("Hopper", {"fp32": 256, "tf32": 2048, "fp16": 4096, "bf16": 4096, "fp8": 8192, "int8": 8192}),
    "10.0": ("Blackwell", {"fp32": 256, "tf32": 4096, "fp16": 8192, "bf16": 8192, "fp8": 16384, "int8": 16384}),
    "12.0": ("Blackwell GB20x", {"fp32": 256, "tf32": 512, "fp16": 1024, "bf16": 1024, "fp8": 2048, "int8": 2048}),
    "gfx90a": ("CDNA 2", {"fp32": 128, "fp16": 1024, "bf16": 1024, "int8": 1024}),
    "gfx942": ("CDNA 3", {"fp32": 256, "tf32": 1024, "fp16": 2048, "bf16": 2048, "fp8": 4096, "int8": 4096}),
}

# rates that GeForce-class parts run at half speed with FP32 accumulate; GB20x (RTX 50) keeps FP8 at
# full rate (measured cuBLASLt FP8 on an RTX 5090 exceeds the half rate)
HALF_RATE_WITH_FP32_ACCUMULATE = ("tf32", "fp16", "bf16", "fp8")
HALF_RATE_OVERRIDES = {"12.0": ("tf32", "fp16", "bf16")}


def architecture_for(compute_capability: str | None) -> str:
    row = FLOPS_PER_CLOCK_PER_SM.get(compute_capability or "")
    return row[0] if row else ""


def sm_count_from_cores(cuda_cores: int | None, compute_capability: str | None) -> int | None:
    """NVML gives CUDA cores, not SMs: cores per SM = FP32 FLOPs per clock per SM / 2."""
    row = FLOPS_PER_CLOCK_PER_SM.get(compute_capability or "")
    if not cuda_cores or row is None:
        return None
    cores_per_sm = row[1]["fp32"] // 2
    return cuda_cores // cores_per_sm if cuda_cores % cores_per_sm == 0 else None


def derive_peak_tflops(compute_capability: str | None, sm_count: int | None, clock_mhz: float | None,
                       *, half_rate_fp32_accumulate: bool = False) -> dict[str, float | None]:
    """Dense peak TFLOPS by dtype; every value None when the architecture, SM count or clock is unknown."""
    row = FLOPS_PER_CLOCK_PER_SM.get(compute_capability or "")
    peaks: dict[str, float | None] = {dtype: None for dtype in PEAK_DTYPES}
    if row is None or not sm_count or not clock_mhz:
        return peaks
    halved = HALF_RATE_OVERRIDES.get(compute_capability, HALF_RATE_WITH_FP32_ACCUMULATE)
    for dtype, flops_per_clock in row[1].items():
        rate = sm_count * clock_mhz * 1e6 * flops_per_clock / 1e12
        if half_rate_fp32_accumulate and dtype in halved:
            rate /= 2
        peaks[dtype] = round(rate, 2)
    return peaks


def is_half_rate_name(nvml_name: str) -> bool:
    """GeForce cards halve the FP32-accumulate tensor rate; data-centre/workstation names do not."""
    return "geforce" in nvml_name.lower()

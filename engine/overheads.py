"""Per-GPU memory overheads and latency efficiency factors: named, documented, configurable defaults.

Where each default comes from is in docs/planner.md. They are public measurements and library
defaults, not measured in this project; ``main.py validate`` on a CUDA machine is how to recalibrate."""
from __future__ import annotations

from dataclasses import dataclass

from torchbudget.engine.allocator import AllocatorConfig
from torchbudget.errors import UserError

MIB = 2**20
KIB = 2**10

# NCCL's communication buffers (docs/hardware.md, "NCCL buffers"). Every connection of a channel to a peer gets
# one buffer per protocol (NVIDIA/nccl src/init.cc, computeBuffSizes; src/include/device.h):
#   Simple  NCCL_BUFFSIZE default 1 << 22 = 4 MiB (1 MiB on ARM hosts, e.g. Grace)
#   LL      NCCL_LL_LINES_PER_THREAD 8 x NCCL_LL_MAX_NTHREADS 512 x NCCL_STEPS 8 x 16 B = 512 KiB
#   LL128   NCCL_LL128_ELEMS_PER_THREAD 120 x NCCL_LL128_MAX_NTHREADS 640 x NCCL_STEPS 8 x 8 B = 4,915,200 B
NCCL_BUFFERS_PER_CONNECTION_BYTES = 4 * MIB + 512 * KIB + 120 * 640 * 8 * 8
# Channels: NCCL opens up to 32 on NVLink/NVSwitch (fewer on PCIe); a ring keeps 2 connections per channel
# (receive from the previous rank, send to the next) whatever the scale (NCCL maintainer, NVIDIA/nccl#864 and #986:
# "memory usage is linearly tied to the number of channels"). 32 x 2 x 9.19 MiB = 588 MiB per communicator, between
# the 544 MB (2 ranks) and 688 MB (3-4 ranks) each extra PyTorch process group took on 4x A100 NVLink (NVIDIA/nccl#964).
NCCL_CHANNELS = 32
NCCL_RING_CONNECTIONS_PER_CHANNEL = 2
NCCL_BYTES_PER_COMMUNICATOR = NCCL_CHANNELS * NCCL_RING_CONNECTIONS_PER_CHANNEL * NCCL_BUFFERS_PER_CONNECTION_BYTES


@dataclass(frozen=True)
class Overheads:
    # Memory a process holds once CUDA is initialised (driver context + PyTorch's kernels, lazy loading),
    # commonly 300-600 MiB by GPU and CUDA version. This is its one owner: GpuSpec.available_memory_bytes is
    # what the device offers before CUDA starts, and the verdict compares the whole footprint with it.
    cuda_context_bytes: int = 512 * MIB
    # cuBLAS workspace per handle/stream: PyTorch's default is 4096 KiB x 8 = 32 MiB on sm90
    # (CUBLAS_WORKSPACE_CONFIG), about 8 MiB before Hopper; we take the larger.
    cublas_workspace_bytes: int = 32 * MIB
    # Scratch space a cuDNN convolution algorithm asks for; only counted when the trace has convolutions.
    cudnn_workspace_bytes: int = 64 * MIB
    # PyTorch's CUDA caching allocator, replayed over the trace (engine/allocator.py, docs/allocator.md):
    # its settings as PYTORCH_CUDA_ALLOC_CONF gives them; None: no allocator (exact tensor bytes, as a CPU
    # profiler counts them).
    allocator: AllocatorConfig | None = AllocatorConfig()
    # NCCL buffers each process group (communicator) holds on every rank it spans, outside PyTorch's allocator;
    # 0 on one GPU (no communicator). Set NCCL_BUFFSIZE / fewer channels lower -> lower this.
    nccl_bytes_per_communicator: int = NCCL_BYTES_PER_COMMUNICATOR
    # process groups this rank runs collectives in: set by the planner for a distributed workload (0: one GPU)
    communicators: int = 0
    # "tight" when the requirement uses more than (1 - this) of the available memory.
    tight_threshold_fraction: float = 0.10

    def __post_init__(self):
        for name in ("cuda_context_bytes", "cublas_workspace_bytes", "cudnn_workspace_bytes",
                     "nccl_bytes_per_communicator", "communicators"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.tight_threshold_fraction < 1:
            raise ValueError("tight_threshold_fraction must be in [0, 1)")

    def communication_bytes(self, communicators: int) -> int:
        """NCCL buffer memory on one rank that belongs to ``communicators`` process groups (0 for none)."""
        if isinstance(communicators, bool) or not isinstance(communicators, int) or communicators < 0:
            raise ValueError(f"communicators must be a whole number >= 0, got {communicators!r}")
        return communicators * self.nccl_bytes_per_communicator

    @classmethod
    def none(cls) -> "Overheads":
        """No GPU overheads at all: the trace's own peak (for comparisons with a CPU profiler)."""
        return cls(cuda_context_bytes=0, cublas_workspace_bytes=0, cudnn_workspace_bytes=0, allocator=None,
                   nccl_bytes_per_communicator=0)

    @classmethod
    def with_alloc_conf(cls, text: str | None, **changes) -> "Overheads":
        """Overheads whose allocator follows a PYTORCH_CUDA_ALLOC_CONF string (UserError naming a bad key)."""
        try:
            config = AllocatorConfig.from_env_string(text or "")
        except ValueError as exc:
            raise UserError(f"allocator settings {text!r}: {exc}", field="alloc_conf") from None
        return cls(allocator=config, **changes)


@dataclass(frozen=True)
class Efficiency:
    """Shares of the datasheet peaks real kernels reach; the realistic estimate divides by them.
    Every factor is <= 1 and the launch overhead >= 0, so the estimate is never below the bound."""

    matmul_fraction_of_peak: float = 0.70       # large GEMMs (cuBLAS) on tensor cores
    conv_fraction_of_peak: float = 0.55         # cuDNN convolutions
    other_fraction_of_peak: float = 0.50        # elementwise / reductions on CUDA cores
    bandwidth_fraction: float = 0.80            # achievable share of DRAM bandwidth (STREAM-like copies)
    kernel_launch_overhead_us: float = 4.0      # per kernel; dominates tiny ops at small batch
    source: str = "defaults"                    # "defaults" | "calibrated on <gpu>"

    def __post_init__(self):
        for name in ("matmul_fraction_of_peak", "conv_fraction_of_peak", "other_fraction_of_peak",
                     "bandwidth_fraction"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.kernel_launch_overhead_us < 0:
            raise ValueError("kernel_launch_overhead_us must be >= 0")

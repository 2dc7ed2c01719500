"""Per-GPU memory overheads and latency efficiency factors: named, documented, configurable defaults.

Where each default comes from is in docs/planner.md. They are public measurements and library
defaults, not measured in this project; ``main.py validate`` on a CUDA machine is how to recalibrate."""
from __future__ import annotations

from dataclasses import dataclass

from torchbudget.engine.allocator import AllocatorConfig
from torchbudget.errors import UserError

MIB = 2**20


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
    # NCCL's buffers per communicator (several GPUs, docs/distributed.md): NCCL_BUFFSIZE (4 MiB, NCCL's default)
    # for each of its three protocols' channels is order 100 MiB on current GPUs; we take 4 MiB x 32 channels
    # (NCCL_MAX_NCHANNELS on Hopper) x 2 (ring send/receive) = 256 MiB per process group that runs collectives.
    nccl_bytes_per_communicator: int = 256 * MIB
    # this process's NCCL buffers: set by the planner for a distributed workload (communicators x the above)
    communication_bytes: int = 0
    # "tight" when the requirement uses more than (1 - this) of the available memory.
    tight_threshold_fraction: float = 0.10

    def __post_init__(self):
        for name in ("cuda_context_bytes", "cublas_workspace_bytes", "cudnn_workspace_bytes",
                     "nccl_bytes_per_communicator", "communication_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.tight_threshold_fraction < 1:
            raise ValueError("tight_threshold_fraction must be in [0, 1)")

    @classmethod
    def none(cls) -> "Overheads":
        """No GPU overheads at all: the trace's own peak (for comparisons with a CPU profiler)."""
        return cls(cuda_context_bytes=0, cublas_workspace_bytes=0, cudnn_workspace_bytes=0, allocator=None)

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

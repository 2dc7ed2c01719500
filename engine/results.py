"""The engine's plain, immutable results. The CLI, the GUI, exports and the planner read these;
nothing here formats or prints. Shapes are tuples, mappings are read-only, units are in names."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Mapping


class Phase(str, Enum):
    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


class OpStatus(str, Enum):
    COUNTED = "counted"      # a formula gave MACs/FLOPs (possibly 0 for an empty tensor)
    ZERO = "zero"            # known to do no arithmetic: views, reshapes, copies, allocation
    UNCOUNTED = "uncounted"  # no formula: reported, never silently zero


class MemoryCategory(str, Enum):
    WEIGHTS = "weights"
    BUFFERS = "buffers"
    INPUTS = "inputs"
    ACTIVATIONS = "activations"          # forward outputs alive when forward ends (saved for backward)
    TEMPORARIES = "temporaries"          # everything freed before it could matter across phases
    GRADIENTS = "gradients"              # parameter .grad storages
    OPTIMIZER_STATE = "optimizer_state"  # e.g. Adam exp_avg / exp_avg_sq, momentum buffers
    # per-GPU overheads, added by the planner (never by the trace)
    WORKSPACE = "workspace"
    CUDA_CONTEXT = "cuda_context"
    ALLOCATOR = "allocator"              # caching-allocator rounding and reserve


def frozen_map(d: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str   # "float32", "bfloat16", "int64", ...
    nbytes: int  # numel * element size (the view's bytes, not its storage's)


@dataclass(frozen=True)
class OpRecord:
    index: int               # position in the trace (0-based)
    op: str                  # overload name, e.g. "aten.convolution.default"
    module_path: str         # innermost owning module, e.g. "layer1.0.conv1"; "" for the root
    phase: Phase
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    bytes_read: int          # sum of input tensor bytes
    bytes_written: int       # sum of output tensor bytes
    macs: int
    flops: int
    status: OpStatus
    matmul_like: bool        # runs on tensor cores when the dtype allows (conv, mm, bmm, attention)
    compute_dtype: str       # dtype the arithmetic runs in (first floating input), for the peak lookup
    launches_kernel: bool = True   # False for views/aliases and bare allocations: no kernel, no bytes move


@dataclass(frozen=True)
class StorageEvent:
    """A storage allocation or free, placed after op ``op_index`` (-1: before the first op)."""

    op_index: int
    kind: str                # "alloc" | "free"
    storage_id: int          # stable within one trace
    nbytes: int              # storage bytes (before allocator rounding)
    category: MemoryCategory
    phase: Phase


@dataclass(frozen=True)
class ModuleNode:
    path: str                        # "" for the root, else "layer1.0.conv1"
    name: str                        # last path component ("conv1"), model name for the root
    type_name: str                   # "Conv2d"
    depth: int                       # root = 0
    parent: str | None
    children: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]   # forward outputs of the (last) call
    calls: int                       # forward calls (a reused module > 1)
    params_own: int                  # parameters registered directly on this module (shared counted once)
    params: int                      # inclusive, shared/tied counted once
    trainable_params: int            # inclusive
    macs_own: int                    # ops attributed to this module and not to a child (forward)
    macs: int                        # inclusive (forward)
    flops_own: int
    flops: int
    backward_flops: int              # inclusive, training traces only (0 otherwise)
    bytes_read: int                  # inclusive, forward ops
    bytes_written: int               # inclusive, forward ops
    activation_bytes: int            # bytes of this module's forward outputs


@dataclass(frozen=True)
class UncountedOp:
    op: str
    calls: int
    modules: tuple[str, ...]


@dataclass(frozen=True)
class Totals:
    params: int
    trainable_params: int
    buffers: int                                  # elements
    param_bytes: int
    buffer_bytes: int
    param_bytes_by_dtype: Mapping[str, int]       # {"float32": ...}
    macs: int                                     # forward
    flops: int                                    # forward
    backward_flops: int                           # 0 for inference traces
    optimizer_flops: int                          # 0 unless an optimizer step was traced
    input_bytes: int
    output_bytes: int                             # the model's final outputs
    activation_bytes: int                         # sum of every leaf module's forward outputs
    bytes_read: int                               # forward ops
    bytes_written: int                            # forward ops


@dataclass(frozen=True)
class TraceOptions:
    mode: str = "infer"               # "infer" | "train"
    precision: str = "fp32"           # fp32 | tf32 | fp16 | bf16 | fp16-amp | bf16-amp
    optimizer: str | None = "adamw"   # train only: sgd | sgd-momentum | adam | adamw | None
    checkpointing: bool = False       # train only: activation checkpointing what-if
    convention: str = "default"       # "default" | "thop" (the seed's thop 0.0.31 counts)


@dataclass(frozen=True)
class AnalysisResult:
    model_name: str
    inputs: tuple                     # tuple[InputSpec, ...]
    options: TraceOptions
    totals: Totals
    modules: tuple[ModuleNode, ...]   # pre-order, root first
    ops: tuple[OpRecord, ...]
    storage_events: tuple[StorageEvent, ...]
    uncounted_ops: tuple[UncountedOp, ...]
    coverage: float                   # share of ops (by count) that are counted or known-zero
    warnings: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()    # e.g. worst-case policy applied to data-dependent ops
    trace_seconds: float = 0.0

    @property
    def batch_size(self) -> int:
        return self.inputs[0].shape[0] if self.inputs else 1

    def module(self, path: str) -> ModuleNode:
        for node in self.modules:
            if node.path == path:
                return node
        raise KeyError(path)

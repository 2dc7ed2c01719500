"""The engine's plain, immutable results. The CLI, the GUI, exports and the planner read these;
nothing here formats or prints. Shapes are tuples, mappings are read-only, units are in names."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Mapping

from torchbudget.engine import vocab
from torchbudget.errors import UserError


class Phase(str, Enum):
    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


class OpStatus(str, Enum):
    COUNTED = "counted"      # a formula gave MACs/FLOPs (possibly 0 for an empty tensor)
    ZERO = "zero"            # known to do no arithmetic: views, reshapes, copies, allocation
    UNCOUNTED = "uncounted"  # no formula: reported, never silently zero


class OpKind(str, Enum):
    """What kind of kernel an op is: a tag each formula registers with (engine/ops), read by the planner
    (cuDNN workspace, efficiency factor) instead of matching op names."""
    MATMUL = "matmul"          # GEMMs (cuBLAS)
    CONV = "conv"              # convolutions (cuDNN)
    ATTENTION = "attention"    # fused attention kernels (flash, memory-efficient, cuDNN, MHA fast paths)
    NORM = "norm"              # batch/layer/group/RMS norm, softmax
    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"
    POOL = "pool"              # pooling and interpolation
    OPTIMIZER = "optimizer"    # foreach / fused optimizer kernels
    DETECTION = "detection"    # torchvision ops (NMS, RoI align)
    VIEW = "view"              # no kernel: views, metadata
    MEMORY = "memory"          # moves bytes, no arithmetic: copies, cat, gather, pad, sort
    ALLOCATION = "allocation"  # allocations and constant fills
    COLLECTIVE = "collective"  # torch.distributed collectives (c10d, functional): no FLOPs, timed on the
                               # interconnect (engine.distributed.comm), not on the GPU's roofline
    OTHER = "other"            # no formula: uncounted

    @property
    def matmul_like(self) -> bool:
        """Runs on tensor cores when the dtype allows."""
        return self in (OpKind.MATMUL, OpKind.CONV, OpKind.ATTENTION)


class MemoryCategory(str, Enum):
    WEIGHTS = "weights"
    BUFFERS = "buffers"
    INPUTS = "inputs"
    ACTIVATIONS = "activations"          # forward outputs alive when forward ends (saved for backward)
    TEMPORARIES = "temporaries"          # everything freed before it could matter across phases
    GRADIENTS = "gradients"              # parameter .grad storages
    OPTIMIZER_STATE = "optimizer_state"  # e.g. Adam exp_avg / exp_avg_sq, momentum buffers
    KV_CACHE = "kv_cache"                # keys and values of past tokens (prefill fills it, decode reads it)
    # per-GPU overheads, added by the planner (never by the trace)
    WORKSPACE = "workspace"
    CUDA_CONTEXT = "cuda_context"
    ALLOCATOR = "allocator"              # caching-allocator rounding and reserve
    COMMUNICATION = "communication"      # NCCL's buffers per communicator (several GPUs only)


# AnalysisResult.warnings of a prefill/decode trace that plans repeat as notes (a context beyond the model's
# positions): they start with this
GENERATION_WARNING = "generation: "


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
    kind: OpKind             # the registry's tag for this op (OTHER: no formula)
    compute_dtype: str       # dtype the arithmetic runs in (first floating input), for the peak lookup
    launches_kernel: bool = True   # False for views/aliases and bare allocations: no kernel, no bytes move

    @property
    def matmul_like(self) -> bool:
        """Runs on tensor cores when the dtype allows (conv, mm, bmm, attention)."""
        return self.kind.matmul_like


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
    estimated_flops: int = 0         # from the shapes (engine.tracing.assemble.estimated_flops), all calls


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
    """How the workload runs. Values are the canonical names of engine.vocab (normalised here, so two
    spellings of one workload are one cache key); options that only training has are cleared for
    inference (no optimizer, no checkpointing)."""

    mode: str = "infer"               # engine.vocab.MODES
    precision: str = "fp32"           # engine.vocab.PRECISIONS
    optimizer: str | None = "adamw"   # training only: engine.vocab.OPTIMIZERS, None = no optimizer step
    checkpointing: bool = False       # training only: activation checkpointing what-if
    convention: str = "default"       # engine.vocab.CONVENTIONS
    optimizer_impl: str = "auto"      # training only: engine.vocab.OPTIMIZER_IMPLS
    attention: str = "auto"           # engine.vocab.ATTENTION_BACKENDS (auto: the target's own choice)
    target: str = vocab.DEFAULT_TARGET   # whose kernels the trace models: "sm90", "sm75", "cpu"
    context_len: int = 0              # decode only: tokens already in the KV cache
    kv_dtype: str = "auto"            # generation only: engine.vocab.KV_DTYPES
    base_dtype: str = "auto"          # engine.vocab.BASE_DTYPES: storage of frozen (non-trainable) weights
    lora_rank: int = 0                # LoRA adapters of this rank (0: none)
    lora_targets: tuple[str, ...] = ()   # module-name patterns the adapters go on (empty: the model family's)
    freeze: tuple[str, ...] = ()      # parameter-name glob patterns made non-trainable
    grad_accum: int = 1               # training only: micro-batches per optimizer step
    moe_routing: str = "balanced"     # engine.vocab.MOE_ROUTINGS
    attention_flops: str = "full"     # engine.vocab.ATTENTION_FLOPS
    # several GPUs (engine.distributed): the trace is rank 0's step under the strategy's real wrappers
    strategy: str = "none"            # engine.vocab.STRATEGIES ("none": one GPU)
    world_size: int = 1               # GPUs in the job
    tp_size: int = 1                  # tensor-parallel degree (tp: the world size; fsdp+tp: --tp)
    sequence_parallel: bool = False   # tp / fsdp+tp: norms and residuals sharded along the sequence

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        put("mode", vocab.normalise_mode(self.mode))
        put("precision", vocab.normalise_precision(self.precision))
        put("convention", vocab.normalise_convention(self.convention))
        put("attention", vocab.normalise_attention(self.attention))
        put("target", vocab.normalise_target(self.target))
        # a bogus name is an error even where it would not matter (inference): nothing typed is ignored
        optimizer = vocab.normalise_optimizer(self.optimizer)
        optimizer_impl = vocab.normalise_optimizer_impl(self.optimizer_impl)
        training = vocab.is_training(self.mode)
        put("optimizer", optimizer if training else None)
        put("optimizer_impl", optimizer_impl if training else "auto")
        put("checkpointing", bool(self.checkpointing) and training)
        generation = vocab.is_generation(self.mode)
        context = vocab.check_count(self.context_len, "the KV-cache context length", "context_len", lowest=0)
        if self.mode == "decode" and context < 1:
            raise UserError("decode needs a KV cache to read: give a context length of at least 1 token",
                            field="context_len")
        put("context_len", context if self.mode == "decode" else 0)
        kv_dtype = vocab.normalise_kv_dtype(self.kv_dtype)
        put("kv_dtype", kv_dtype if generation else "auto")
        put("base_dtype", vocab.normalise_base_dtype(self.base_dtype))
        put("lora_rank", vocab.check_count(self.lora_rank, "the LoRA rank", "lora_rank", lowest=0))
        targets = vocab.normalise_names(self.lora_targets, "LoRA targets", "lora_targets")
        if targets and not self.lora_rank:
            raise UserError("LoRA targets need a LoRA rank (--lora-rank)", field="lora_targets")
        put("lora_targets", targets)
        freeze = vocab.normalise_names(self.freeze, "freeze patterns", "freeze")
        put("freeze", freeze if training else ())   # nothing trains outside training: nothing to freeze
        grad_accum = vocab.check_count(self.grad_accum, "gradient accumulation steps", "grad_accum", lowest=1)
        put("grad_accum", grad_accum if training else 1)
        put("moe_routing", vocab.normalise_moe_routing(self.moe_routing))
        put("attention_flops", vocab.normalise_attention_flops(self.attention_flops))
        strategy, world, tp, sp = vocab.normalise_parallelism(self.strategy, self.world_size, self.tp_size,
                                                             self.sequence_parallel, training=training,
                                                             mode=self.mode)
        put("strategy", strategy)
        put("world_size", world)
        put("tp_size", tp)
        put("sequence_parallel", sp)

    @property
    def training(self) -> bool:
        return vocab.is_training(self.mode)

    @property
    def generation(self) -> bool:
        return vocab.is_generation(self.mode)

    @property
    def distributed(self) -> bool:
        """A step of one rank among several GPUs (engine.distributed), not a single GPU's."""
        return self.strategy != "none"

    @property
    def dp_size(self) -> int:
        """Data-parallel replicas: how many different batches one step processes."""
        return self.world_size // self.tp_size


@dataclass(frozen=True)
class CollectiveCall:
    """One collective in the traced step of rank 0 (engine.distributed): what the bus-bandwidth formulas
    need. ``nbytes`` is the S of nccl-tests: the whole gathered/reduced buffer (all-gather: the output;
    reduce-scatter: the input; all-reduce and broadcast: the tensor)."""

    op_index: int                    # the OpRecord it is
    kind: str                        # all_reduce | all_gather | reduce_scatter | broadcast | all_to_all
    nbytes: int
    group_size: int
    group: str                       # "world", "dp" or "tp": which process group (engine.distributed.mesh)
    phase: Phase
    module_path: str


@dataclass(frozen=True)
class DistributedInfo:
    """How rank 0's step was obtained, and its collectives."""

    strategy: str
    world_size: int
    tp_size: int
    groups: Mapping[str, tuple[int, ...]]        # group name -> the global ranks in rank 0's group
    collectives: tuple[CollectiveCall, ...] = ()
    method: str = "traced"                       # "traced": the real wrappers on a fake process group
    global_params: int = 0                       # the model's parameters before sharding
    global_param_bytes: int = 0
    local_param_bytes: int = 0                   # rank 0's parameter storages (its shards, each once)
    notes: tuple[str, ...] = ()

    @property
    def dp_size(self) -> int:
        return self.world_size // self.tp_size


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
    coverage: float                   # share of op calls that are counted or known-zero
    warnings: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()    # e.g. worst-case policy applied to data-dependent ops
    trace_seconds: float = 0.0
    flop_coverage: float = 1.0        # counted FLOPs / (counted + uncounted ops' estimated FLOPs)
    target_dependent: bool = True     # False: no decision depended on the CUDA capability (no SDPA call), so
                                      # the trace holds for every CUDA target (engine.cache shares it)
    distributed: DistributedInfo | None = None   # several GPUs: rank 0's step (engine.distributed)

    @property
    def batch_size(self) -> int:
        return self.inputs[0].shape[0] if self.inputs else 1

    def module(self, path: str) -> ModuleNode:
        for node in self.modules:
            if node.path == path:
                return node
        raise KeyError(path)

"""The workload's vocabulary, owned here and nowhere else: modes, precisions, optimizers and their
implementations, attention backends, counting conventions, target devices and input kinds, each with
its label and tip, and the one place that turns what a user typed into the canonical value.

The CLI's choices, the GUI's combo boxes and the tables in docs/cli.md are generated from these tuples
(tests/test_vocab.py checks the docs). No torch import: dtypes are torch attribute names."""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from torchbudget.engine.errors import InputSpecError
from torchbudget.errors import UserError


@dataclass(frozen=True)
class Term:
    """One allowed value: its canonical spelling, a short label and a one-line tip."""

    name: str
    label: str
    tip: str


def _names(terms: tuple[Term, ...]) -> tuple[str, ...]:
    return tuple(t.name for t in terms)


def _normalise(value, terms: tuple[Term, ...], what: str, field: str, aliases: dict[str, str] | None = None) -> str:
    text = str(value).strip().lower() if value is not None else ""
    text = (aliases or {}).get(text, text)
    if text not in _names(terms):
        raise UserError(f"unknown {what} {value!r}; use one of: {', '.join(_names(terms))}", field=field)
    return text


# ---------------------------------------------------------------------------------------------- modes
MODES = (
    Term("infer", "inference", "Forward only, no gradients."),
    Term("train", "training", "One training step: forward, backward and the optimizer step."),
    Term("prefill", "prefill", "Serving: one forward over the prompt that fills the KV cache."),
    Term("decode", "decode", "Serving: one new token per sequence against a KV cache of --context tokens "
                             "(batch = concurrent sequences)."),
)
MODE_NAMES = _names(MODES)
TRAINING_MODES = frozenset({"train"})
GENERATION_MODES = frozenset({"prefill", "decode"})


def normalise_mode(value) -> str:
    return _normalise(value, MODES, "mode", "mode", {"inference": "infer", "training": "train",
                                                     "generate": "decode", "serve": "decode"})


def is_training(mode: str) -> bool:
    return mode in TRAINING_MODES


def is_generation(mode: str) -> bool:
    return mode in GENERATION_MODES


# ----------------------------------------------------------------------------------------- precisions
@dataclass(frozen=True)
class Precision(Term):
    param_dtype: str = "float32"          # parameters, floating buffers and float inputs
    autocast_dtype: str | None = None     # autocast's lower precision, None without autocast
    tensor_rate: str | None = None        # the GpuSpec peak its matmuls run at (None: fp32 CUDA cores)
    tf32: bool = False                    # fp32 matmuls on tensor cores in TF32


PRECISIONS = (
    Precision("fp32", "fp32", "32-bit floats everywhere; matmuls on CUDA cores (no TF32)."),
    Precision("tf32", "tf32", "fp32 storage, matmuls and convolutions on tensor cores in TF32.",
              tensor_rate="tf32", tf32=True),
    Precision("fp16", "fp16", "Model and inputs cast to float16.", "float16", tensor_rate="fp16"),
    Precision("bf16", "bf16", "Model and inputs cast to bfloat16.", "bfloat16", tensor_rate="bf16"),
    Precision("fp16-amp", "fp16 AMP", "Mixed precision: fp32 weights, autocast runs eligible ops in float16.",
              autocast_dtype="float16", tensor_rate="fp16"),
    Precision("bf16-amp", "bf16 AMP", "Mixed precision: fp32 weights, autocast runs eligible ops in bfloat16.",
              autocast_dtype="bfloat16", tensor_rate="bf16"),
)
PRECISION_NAMES = _names(PRECISIONS)
_PRECISION_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
                      "amp": "fp16-amp", "fp16amp": "fp16-amp", "bf16amp": "bf16-amp"}


def normalise_precision(value) -> str:
    return _normalise(value, PRECISIONS, "precision", "precision", _PRECISION_ALIASES)


def precision(name: str) -> Precision:
    return next(p for p in PRECISIONS if p.name == normalise_precision(name))


# ----------------------------------------------------------------------------------------- optimizers
@dataclass(frozen=True)
class Optimizer(Term):
    torch_class: str = ""                 # the torch.optim class
    kwargs: tuple[tuple[str, object], ...] = ()


OPTIMIZERS = (
    Optimizer("adamw", "AdamW", "Adam with decoupled weight decay: two state tensors per parameter.", "AdamW"),
    Optimizer("adam", "Adam", "Two state tensors per parameter (exp_avg, exp_avg_sq).", "Adam"),
    Optimizer("adamw-8bit", "AdamW 8-bit", "bitsandbytes' AdamW8bit: both moments stored in 8 bits with "
                                           "block-wise scales.", "AdamW"),
    Optimizer("adafactor", "Adafactor", "Factored second moment (row and column statistics), no first moment.",
              "Adafactor"),
    Optimizer("sgd-momentum", "SGD + momentum", "One momentum buffer per parameter (momentum 0.9).", "SGD",
              (("momentum", 0.9),)),
    Optimizer("sgd", "SGD", "No optimizer state.", "SGD"),
)
OPTIMIZER_NAMES = _names(OPTIMIZERS)
NO_OPTIMIZER = "none"    # how CLI and GUI spell "no optimizer step" (None in TraceOptions)


def normalise_optimizer(value) -> str | None:
    """Canonical optimizer name, or None for no optimizer step ("none", None, "")."""
    if value is None or str(value).strip().lower() in (NO_OPTIMIZER, ""):
        return None
    return _normalise(value, OPTIMIZERS, "optimizer", "optimizer")


def optimizer(name: str) -> Optimizer:
    return next(o for o in OPTIMIZERS if o.name == name)


@dataclass(frozen=True)
class OptimizerImpl(Term):
    torch_flags: tuple[tuple[str, bool], ...] = ()   # what the torch.optim constructor is given


OPTIMIZER_IMPLS = (
    OptimizerImpl("auto", "auto", "What torch.optim picks for CUDA parameters (torch 2.14: foreach; fused is "
                                  "opt-in).", (("foreach", True),)),
    OptimizerImpl("foreach", "foreach", "Multi-tensor kernels over lists of parameters: full-size temporaries per "
                                        "step.", (("foreach", True),)),
    OptimizerImpl("fused", "fused", "One fused kernel per parameter group (HF Trainer's adamw_torch_fused): "
                                    "no full-size temporaries.", (("fused", True), ("foreach", False))),
    OptimizerImpl("for-loop", "for-loop", "One parameter at a time: temporaries of one parameter only.",
                  (("foreach", False),)),
)
OPTIMIZER_IMPL_NAMES = _names(OPTIMIZER_IMPLS)


def optimizer_impl(name: str) -> OptimizerImpl:
    return next(i for i in OPTIMIZER_IMPLS if i.name == normalise_optimizer_impl(name))


def normalise_optimizer_impl(value) -> str:
    return _normalise(value if value is not None else "auto", OPTIMIZER_IMPLS, "optimizer implementation",
                      "optimizer_impl", {"forloop": "for-loop", "for_loop": "for-loop", "loop": "for-loop"})


# ------------------------------------------------------------------------------------ attention backends
ATTENTION_BACKENDS = (
    Term("auto", "auto", "The kernel PyTorch's CUDA dispatch picks on the target GPU (docs/target.md)."),
    Term("flash", "flash", "What-if: FlashAttention-2 (saves output + log-sum-exp: memory linear in sequence)."),
    Term("efficient", "memory-efficient", "What-if: xFormers-style memory-efficient attention."),
    Term("cudnn", "cuDNN", "What-if: cuDNN's fused attention."),
    Term("math", "math", "What-if: the unfused math path (scores and probabilities saved: quadratic memory)."),
)
ATTENTION_NAMES = _names(ATTENTION_BACKENDS)


def normalise_attention(value) -> str:
    return _normalise(value if value is not None else "auto", ATTENTION_BACKENDS, "attention backend", "attention",
                      {"mem-efficient": "efficient", "memory-efficient": "efficient", "mem_efficient": "efficient"})


# -------------------------------------------------------------------------------- LLM-specific options
KV_DTYPES = (
    Term("auto", "auto", "The KV cache in the dtype the model computes in."),
    Term("bf16", "bf16", "What-if: the KV cache stored in bfloat16."),
    Term("fp16", "fp16", "What-if: the KV cache stored in float16."),
    Term("fp8", "fp8", "What-if: the KV cache stored in 8-bit floats (1 byte per value)."),
    Term("int8", "int8", "What-if: the KV cache quantised to int8 (1 byte per value plus scales)."),
)
KV_DTYPE_NAMES = _names(KV_DTYPES)


def normalise_kv_dtype(value) -> str:
    return _normalise(value if value is not None else "auto", KV_DTYPES, "KV-cache dtype", "kv_dtype",
                      {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float8": "fp8"})


BASE_DTYPES = (
    Term("auto", "auto", "Frozen weights in the precision's dtype, like the rest of the model."),
    Term("bf16", "bf16", "Frozen base weights stored in bfloat16 (LoRA on a bf16 base)."),
    Term("fp16", "fp16", "Frozen base weights stored in float16."),
    Term("int8", "int8", "Frozen base weights quantised to 8 bits (LLM.int8-style: 1 byte per weight plus scales)."),
    Term("nf4", "nf4", "Frozen base weights in 4-bit NormalFloat (QLoRA: half a byte per weight plus block scales)."),
)
BASE_DTYPE_NAMES = _names(BASE_DTYPES)


def normalise_base_dtype(value) -> str:
    return _normalise(value if value is not None else "auto", BASE_DTYPES, "base dtype", "base_dtype",
                      {"bfloat16": "bf16", "float16": "fp16", "4bit": "nf4", "8bit": "int8"})


MOE_ROUTINGS = (
    Term("balanced", "balanced", "Mixture of experts: every token goes to exactly k experts, spread evenly."),
    Term("skewed", "skewed", "Mixture of experts, worst case: every token goes to the same k experts."),
)
MOE_ROUTING_NAMES = _names(MOE_ROUTINGS)


def normalise_moe_routing(value) -> str:
    return _normalise(value if value is not None else "balanced", MOE_ROUTINGS, "MoE routing", "moe_routing",
                      {"worst-case": "skewed", "worst": "skewed", "even": "balanced"})


ATTENTION_FLOPS = (
    Term("full", "full", "Attention counted as the full S x S product (what the kernels compute; FlopCounterMode)."),
    Term("causal", "causal", "Causal attention counted as the half-triangle (the Kaplan/Chinchilla 6ND-style rule)."),
)
ATTENTION_FLOPS_NAMES = _names(ATTENTION_FLOPS)


def normalise_attention_flops(value) -> str:
    return _normalise(value if value is not None else "full", ATTENTION_FLOPS, "attention FLOP convention",
                      "attention_flops", {"half": "causal", "square": "full"})


def normalise_names(value, what: str, field: str) -> tuple[str, ...]:
    """A list of names or glob patterns: a comma-separated string or a sequence -> a tuple (order kept)."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise UserError(f"{what} must be names, not {item!r}", field=field)
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return tuple(out)


def check_count(value, what: str, field: str, *, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise UserError(f"{what} must be a whole number >= {lowest}, got {value!r}", field=field)
    return value


# ----------------------------------------------------------------------------------- several GPUs
@dataclass(frozen=True)
class Strategy(Term):
    training_only: bool = False     # meaningless for inference (a replica per GPU, or only the optimizer sharded)
    tensor_parallel: bool = False   # uses a tensor-parallel group (--tp)
    communicators: int = 1          # process groups that run collectives (NCCL communicators per rank)
    serves: bool = False            # plans the generation modes (prefill, decode): tensor parallel only


STRATEGIES = (
    Strategy("none", "one GPU", "One GPU: the whole step on one device.", communicators=0),
    Strategy("ddp", "DDP", "DistributedDataParallel: a full replica on every GPU; gradients all-reduced in 25 MiB "
                           "buckets during backward.", training_only=True),
    Strategy("fsdp", "FSDP", "FSDP2 fully_shard, FULL_SHARD (reshard after forward, ZeRO-3): parameters, gradients "
                             "and optimizer state sharded; each block all-gathered in forward and again in backward."),
    Strategy("fsdp-grad-op", "FSDP grad-op", "FSDP2 fully_shard, SHARD_GRAD_OP (no reshard after forward, ZeRO-2-"
                                             "like): blocks stay gathered from forward to backward.",
             training_only=True),
    Strategy("zero1", "ZeRO-1", "DDP + torch's ZeroRedundancyOptimizer: only the optimizer state is sharded (whole "
                                "parameters per rank); updated parameters broadcast from their owners.",
             training_only=True),
    Strategy("tp", "tensor parallel", "parallelize_module on every GPU: attention q/k/v and MLP gate/up column-wise, "
                                      "o and down row-wise (Megatron-style), embedding and head sharded; for "
                                      "serving too (prefill, decode: heads and KV cache split across the GPUs).",
             tensor_parallel=True, serves=True),
    Strategy("fsdp+tp", "FSDP + TP", "2-D mesh: tensor parallel within groups of --tp GPUs, FSDP across the groups.",
             tensor_parallel=True, communicators=2),
)
STRATEGY_NAMES = _names(STRATEGIES)
_STRATEGY_ALIASES = {"single": "none", "1gpu": "none", "zero3": "fsdp", "full_shard": "fsdp", "full-shard": "fsdp",
                     "fsdp2": "fsdp", "shard_grad_op": "fsdp-grad-op", "shard-grad-op": "fsdp-grad-op",
                     "fsdp_grad_op": "fsdp-grad-op", "zero2": "fsdp-grad-op", "zero-1": "zero1",
                     "tensor-parallel": "tp", "fsdp-tp": "fsdp+tp", "2d": "fsdp+tp", "fsdp_tp": "fsdp+tp"}
MAX_WORLD_SIZE = 1 << 16


def normalise_strategy(value) -> str:
    return _normalise(value if value is not None else "none", STRATEGIES, "strategy", "strategy", _STRATEGY_ALIASES)


def strategy(name: str) -> Strategy:
    return next(s for s in STRATEGIES if s.name == normalise_strategy(name))


def normalise_parallelism(strategy_name, world_size, tp_size, sequence_parallel, *, training: bool,
                          mode: str | None = None) -> tuple[str, int, int, bool]:
    """(strategy, world size, tensor-parallel degree, sequence parallel), checked together: one UserError
    naming what does not fit (a world size the TP degree does not divide, --tp without a TP strategy, a
    strategy that does not serve with a generation ``mode``...)."""
    chosen = strategy(strategy_name)
    world = check_count(world_size, "the world size (number of GPUs)", "world_size", lowest=1)
    if world > MAX_WORLD_SIZE:
        raise UserError(f"the world size must be at most {MAX_WORLD_SIZE}, got {world}", field="world_size")
    tp = check_count(tp_size, "the tensor-parallel degree", "tp_size", lowest=1)
    if chosen.name == "none":
        if world != 1:
            raise UserError(f"--world-size {world} needs a --strategy ({', '.join(STRATEGY_NAMES[1:])})",
                            field="strategy")
    serving = mode is not None and is_generation(mode)
    if chosen.training_only and not training:
        why = (f"; serving (--mode {mode}) over several GPUs is planned with --strategy tp (a replica per GPU is "
               "the one-GPU plan)") if serving else ""
        raise UserError(f"the {chosen.name} strategy only applies to --mode train{why}", field="strategy")
    if serving and chosen.name != "none" and not chosen.serves:
        raise UserError(f"--mode {mode} is not planned with --strategy {chosen.name}: FSDP gathers every layer's "
                        "full weights again for each forward (each generated token), which serving avoids; use "
                        "--strategy tp (each GPU keeps its share of the weights, heads and KV cache)",
                        field="strategy")
    if serving and sequence_parallel:
        raise UserError(f"--sequence-parallel is not planned for --mode {mode}: serving runs tensor parallel "
                        "without it (a decode step's one new token per sequence cannot be split along the "
                        "sequence)", field="sequence_parallel")
    if chosen.name == "tp":
        if tp not in (1, world):
            raise UserError(f"the tp strategy uses every GPU for tensor parallel: --tp {tp} must equal the world "
                            f"size {world} (fsdp+tp combines a smaller TP degree with FSDP)", field="tp_size")
        tp = world
    elif chosen.name == "fsdp+tp":
        if tp < 2:
            raise UserError("fsdp+tp needs a tensor-parallel degree: --tp 2 or more", field="tp_size")
        if world % tp:
            raise UserError(f"world size {world} is not divisible by the tensor-parallel degree {tp}",
                            field="tp_size")
    elif tp != 1:
        raise UserError(f"--tp only applies to the tp and fsdp+tp strategies, not {chosen.name}", field="tp_size")
    if sequence_parallel and not chosen.tensor_parallel:
        raise UserError("sequence parallel only applies to the tp and fsdp+tp strategies", field="sequence_parallel")
    return chosen.name, world, tp, bool(sequence_parallel)


# ----------------------------------------------------------------------------------------- conventions
CONVENTIONS = (
    Term("default", "default", "TorchBudget's counts: one formula per aten op (docs/conventions.md)."),
    Term("thop", "thop", "thop 0.0.31's counts (the seed documents' reference numbers)."),
)
CONVENTION_NAMES = _names(CONVENTIONS)


def normalise_convention(value) -> str:
    return _normalise(value if value is not None else "default", CONVENTIONS, "convention", "convention")


# -------------------------------------------------------------------------------------- target devices
@dataclass(frozen=True)
class Target:
    """The device whose kernel choices the trace models: a CUDA compute capability, or the CPU.
    Spelled ``sm90`` / ``sm75`` / ``cpu`` in options, files and on the command line."""

    kind: str                                  # "cuda" | "cpu"
    capability: tuple[int, int] | None = None  # (major, minor) for CUDA

    @property
    def name(self) -> str:
        return "cpu" if self.kind == "cpu" else f"sm{self.capability[0]}{self.capability[1]}"

    @property
    def bf16_tensor_cores(self) -> bool:
        return self.kind == "cuda" and self.capability >= (8, 0)


DEFAULT_TARGET = "sm90"       # without a GPU chosen: a current datacenter GPU (H100 / H200 class)
DEFAULT_TARGET_LABEL = "sm90, H100/H200 class"
_TARGET_RE = re.compile(r"(?:sm_?|cuda:?)?(\d{1,2})\.?(\d)")


def parse_target(value) -> Target:
    text = str(value if value is not None else DEFAULT_TARGET).strip().lower()
    if text == "cpu":
        return Target("cpu")
    match = _TARGET_RE.fullmatch(text)
    if not match:
        raise UserError(f"unknown target device {value!r}; use a CUDA compute capability such as sm90, sm80, "
                        "sm75 (or 9.0), or cpu", field="target")
    major, minor = int(match.group(1)), int(match.group(2))
    if not 5 <= major <= 12:
        raise UserError(f"target device {value!r}: compute capability {major}.{minor} is outside what PyTorch "
                        "supports (5.0 to 12.x)", field="target")
    return Target("cuda", (major, minor))


def normalise_target(value) -> str:
    return parse_target(value).name


def target_for_capability(compute_capability: str | None, vendor: str = "NVIDIA") -> str:
    """The target a GPU's kernels follow: its compute capability ("8.9" -> "sm89"); the default for a GPU
    whose capability is unknown; the CPU's rules for other vendors, whose PyTorch backends we do not model."""
    if vendor != "NVIDIA":
        return "cpu"
    if not compute_capability:
        return DEFAULT_TARGET
    try:
        return normalise_target(compute_capability)
    except UserError:
        return DEFAULT_TARGET


# ---------------------------------------------------------------------------------------------- dtypes
# canonical names are torch's attribute names (torch.float32 ...): the tables stay free of torch, so the
# planner and the GUI's first verdict (from cached traces) never wait for PyTorch to import
DTYPE_ALIASES: dict[str, str] = {
    "fp32": "float32", "float32": "float32", "float": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp64": "float64", "float64": "float64", "double": "float64",
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32",
    "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
}
FLOATING_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64"})


def canonical_dtype(name: str) -> str:
    """'fp16' -> 'float16'; an unknown name raises InputSpecError listing the known ones."""
    try:
        return DTYPE_ALIASES[name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(DTYPE_ALIASES))
        raise InputSpecError(f"unknown dtype {name!r}; use one of: {known}") from None



# ---------------------------------------------------------------------------------------- input kinds
class InputKind(str, Enum):
    IMAGE = "image"      # floating, N x C x H x W (or N x C x T x H x W): has a resolution
    TOKENS = "tokens"    # integer ids, N x L: has a sequence length
    GENERIC = "generic"  # anything else: only a batch size


def input_kind(shape: tuple[int, ...], dtype: str) -> InputKind:
    floating = canonical_dtype(dtype) in FLOATING_DTYPES
    if floating and len(shape) >= 4:
        return InputKind.IMAGE
    if not floating and dtype != "bool" and len(shape) == 2:
        return InputKind.TOKENS
    return InputKind.GENERIC


# ---------------------------------------------------------------------------------------------- docs
def markdown_tables() -> str:
    """The tables docs/cli.md shows (checked by a test, so they never drift from the code)."""
    out = []
    for title, terms in (("mode", MODES), ("precision", PRECISIONS), ("optimizer", OPTIMIZERS),
                         ("optimizer implementation", OPTIMIZER_IMPLS), ("attention backend", ATTENTION_BACKENDS),
                         ("convention", CONVENTIONS), ("KV-cache dtype", KV_DTYPES), ("base dtype", BASE_DTYPES),
                         ("MoE routing", MOE_ROUTINGS), ("attention FLOPs", ATTENTION_FLOPS),
                         ("strategy", STRATEGIES)):
        out += [f"| {title} | meaning |", "|---|---|"]
        out += [f"| `{t.name}` | {t.tip} |" for t in terms]
        out.append("")
    return "\n".join(out).rstrip() + "\n"

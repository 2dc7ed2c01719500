"""Per-parameter precision and trainability for fine-tuning workloads: LoRA adapters (peft), ``--freeze`` globs,
the frozen base's storage (``--base-dtype``: bf16/fp16, or bitsandbytes-style nf4/int8 via engine.quantized).

``prepare(model, options)`` never changes the user's module. LoRA and quantised layers change the module tree,
so they are applied to a copy whose parameters and buffers are meta tensors (``copy.deepcopy`` with a memo
that maps each original tensor to a meta one: no weight is copied); ``--freeze`` and the base dtype are only
decisions about the stand-ins (engine.meta_params.ParamPlan). What it decided is stated in ``notes`` (the
result's policies)."""
from __future__ import annotations

import copy
import fnmatch
import itertools
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from torchbudget.engine.errors import UserError
from torchbudget.engine.meta_params import ParamPlan
from torchbudget.engine.quantized import QUANTIZED_BASE_DTYPES, quantized_linear, weight_storage

# The default --lora-targets: a model's attention projections, found by their module names across families
# (Llama/Mistral/Qwen/Gemma q_proj..o_proj, Phi-3 qkv_proj, GPT-NeoX/Falcon query_key_value, GPT-2 c_attn,
# MPT Wqkv, BERT query/key/value, T5 q/k/v/o, nn.MultiheadAttention's out_proj).
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv",
                         "query", "key", "value", "q", "k", "v", "o", "out_proj")
ALL_LINEAR = "all-linear"     # peft's keyword: every Linear layer but the output head
_BASE_FLOAT = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Prepared:
    """What the trace runs and how its stand-ins are made."""

    module: nn.Module                                   # the user's module, or a meta copy (adapters, quantised layers)
    param_plan: Callable[[str, torch.Tensor], ParamPlan] | None = None   # None: the precision's dtype for all
    weight_buffers: frozenset[str] = frozenset()        # quantisation state: stored with the weights
    notes: tuple[str, ...] = ()
    adapters: frozenset[str] = field(default_factory=frozenset)   # LoRA parameter names


def needed(options) -> bool:
    return bool(options.lora_rank or options.freeze or options.base_dtype != "auto")


def prepare(model: nn.Module, options, param_dtype: torch.dtype, autocast_dtype: torch.dtype | None) -> Prepared:
    if not needed(options):
        return Prepared(model)
    training = options.training
    compute_dtype = autocast_dtype or param_dtype
    base = options.base_dtype
    if base in _BASE_FLOAT and _BASE_FLOAT[base] != compute_dtype:
        raise UserError(f"--base-dtype {base} stores frozen weights in {_BASE_FLOAT[base]}, but --precision "
                        f"{options.precision} computes in {compute_dtype}: use --precision {base} or {base}-amp",
                        field="base_dtype")
    copied = bool(options.lora_rank) or base in QUANTIZED_BASE_DTYPES
    work = meta_copy(model) if copied else model
    notes: list[str] = []
    adapters: frozenset[str] = frozenset()
    if options.lora_rank:
        adapters, note = _inject_lora(work, options.lora_rank, options.lora_targets)
        notes.append(note)
    frozen_ids, note = _frozen_by_patterns(work, options.freeze)
    if note:
        notes.append(note)
    trains = {id(p): bool(p.requires_grad) and id(p) not in frozen_ids for p in work.parameters()}
    if training and not any(trains.values()):
        raise UserError("nothing left to train: every parameter is frozen"
                        + (f" (--freeze {','.join(options.freeze)})" if options.freeze else ""), field="freeze")
    adapter_ids = {id(p) for name, p in work.named_parameters() if name in adapters}
    frozen_in_step = {i for i, t in trains.items() if not (training and t)}
    if base != "auto" and training and not frozen_in_step:
        raise UserError(f"--base-dtype {base} sets how frozen weights are stored, but every parameter trains: "
                        "add --lora-rank or --freeze", field="base_dtype")
    weight_buffers: frozenset[str] = frozenset()
    storage: dict[int, tuple] = {}
    if base in QUANTIZED_BASE_DTYPES:
        weight_buffers, storage, note = _quantize(work, base, compute_dtype, frozen_in_step - adapter_ids)
        notes.append(note)
    elif base in _BASE_FLOAT:
        frozen_tensors = [p for p in work.parameters() if id(p) in frozen_in_step - adapter_ids
                          and p.is_floating_point()]
        notes.append(f"base weights {base}: {len(frozen_tensors)} frozen tensor(s), "
                     f"{sum(p.numel() for p in frozen_tensors):,} parameters, stored in "
                     f"{str(_BASE_FLOAT[base]).removeprefix('torch.')}")
    frozen_dtype = _BASE_FLOAT.get(base, param_dtype)

    def plan(name: str, p: torch.Tensor) -> ParamPlan:
        trainable = trains.get(id(p), bool(p.requires_grad))
        if id(p) in storage:
            return ParamPlan(compute_dtype, False, storage[id(p)])
        if not p.is_floating_point():
            return ParamPlan(p.dtype, trainable)
        if id(p) in adapter_ids:    # peft keeps adapters in fp32 (get_peft_model(autocast_adapter_dtype=True))
            return ParamPlan(torch.float32, trainable)
        return ParamPlan(param_dtype if training and trainable else frozen_dtype, trainable)

    return Prepared(work, plan, weight_buffers, tuple(notes), adapters)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are meta tensors (same shapes, dtypes and
    ``requires_grad``; tied tensors stay tied); the model and its tensors are not touched."""
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) not in memo:
            meta = torch.empty_like(t, device="meta")
            memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    try:
        return copy.deepcopy(model, memo)
    except Exception as exc:  # noqa: BLE001  (anything the model holds that cannot be copied)
        raise UserError(f"LoRA and quantised weights are applied to a copy of the model, but {type(model).__name__} "
                        f"cannot be copied: {type(exc).__name__}: {exc}", field="model") from None


# ------------------------------------------------------------------------------------------------ LoRA
def _matches(key: str, target: str) -> bool:
    """peft's rule for a list of target names (tuners_utils.check_target_module_exists)."""
    return key == target or key.endswith("." + target)


def _linear_like(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def default_lora_targets(model: nn.Module) -> tuple[str, ...]:
    """The attention projections by name (ATTENTION_PROJECTIONS) among the model's Linear layers."""
    found = {name.rpartition(".")[2] for name, m in model.named_modules() if _linear_like(m)}
    return tuple(n for n in ATTENTION_PROJECTIONS if n in found)


def _inject_lora(work: nn.Module, rank: int, targets: tuple[str, ...]) -> tuple[frozenset[str], str]:
    try:
        import peft
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer
    except ImportError:
        raise UserError("LoRA (--lora-rank) needs the peft package (pip install peft)", field="lora_rank") from None
    names = [name for name, _ in work.named_modules() if name]
    if targets == (ALL_LINEAR,):
        target_modules, how = ALL_LINEAR, "every Linear layer but the output head (all-linear)"
    elif targets:
        for target in targets:
            if target == ALL_LINEAR:
                raise UserError("--lora-targets all-linear cannot be combined with module names", field="lora_targets")
            if not any(_matches(name, target) for name in names):
                linear = sorted({n.rpartition(".")[2] for n, m in work.named_modules() if _linear_like(m)})
                raise UserError(f"--lora-targets: {target!r} matches no module (Linear layers are named "
                                f"{', '.join(linear[:12]) or 'nothing'}{', ...' if len(linear) > 12 else ''})",
                                field="lora_targets")
        target_modules, how = list(targets), ", ".join(targets)
    else:
        found = default_lora_targets(work)
        if not found:
            linear = sorted({n.rpartition(".")[2] for n, m in work.named_modules() if _linear_like(m)})
            raise UserError("LoRA: no attention projection found by name (q_proj, k_proj, v_proj, o_proj, qkv, "
                            "query/key/value, ...); name the modules with --lora-targets (Linear layers here: "
                            f"{', '.join(linear[:12]) or 'none'})", field="lora_targets")
        target_modules = [name for name, m in work.named_modules()
                          if _linear_like(m) and name.rpartition(".")[2] in found]
        how = f"{', '.join(found)}: the attention projections (default)"
    try:
        with torch.device("meta"):
            inject_adapter_in_model(LoraConfig(r=rank, target_modules=target_modules), work)
    except (ValueError, TypeError, RuntimeError) as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--lora-targets: peft cannot put LoRA on these modules: {line}", field="lora_targets") \
            from None
    layers = sum(isinstance(m, LoraLayer) for m in work.modules())
    adapters = frozenset(name for name, _ in work.named_parameters() if ".lora_" in name)
    adapter_params = sum(p.numel() for name, p in work.named_parameters() if name in adapters)
    defaults = LoraConfig(r=rank)
    note = (f"LoRA rank {rank} (peft {peft.__version__}) on {layers} module(s): {how}; {adapter_params:,} adapter "
            f"parameters in fp32, everything else frozen; lora_alpha {defaults.lora_alpha}, dropout "
            f"{defaults.lora_dropout:g} (peft's defaults)")
    return adapters, note


# ---------------------------------------------------------------------------------------------- freeze
def _frozen_by_patterns(work: nn.Module, patterns: tuple[str, ...]) -> tuple[set[int], str | None]:
    """ids of the parameters whose name (any of a tied parameter's names) matches a --freeze glob."""
    if not patterns:
        return set(), None
    named = list(work.named_parameters(remove_duplicate=False))
    frozen: set[int] = set()
    for pattern in patterns:
        hits = {id(p) for name, p in named if fnmatch.fnmatchcase(name, pattern)}
        if not hits:
            sample = ", ".join(name for name, _ in named[:3])
            raise UserError(f"--freeze: {pattern!r} matches no parameter name (names look like {sample})",
                            field="freeze")
        frozen |= hits
    unique = {id(p): p for _, p in named}
    count = sum(unique[i].numel() for i in frozen)
    return frozen, (f"--freeze {','.join(patterns)}: {len(frozen)} parameter tensor(s), {count:,} parameters "
                    "frozen (no gradient, no optimizer state)")


# ------------------------------------------------------------------------------------------ quantising
def _output_head(work: nn.Module) -> nn.Module | None:
    get = getattr(work, "get_output_embeddings", None)
    if callable(get):
        try:
            head = get()
        except Exception:  # noqa: BLE001  (a model without one may raise NotImplementedError)
            head = None
        if head is not None:
            return head
    return dict(work.named_modules()).get("lm_head")


def _quantize(work: nn.Module, base: str, compute_dtype: torch.dtype, frozen_ids: set[int]):
    """Replace every frozen ``nn.Linear`` (exactly that class: a subclass such as MHA's out_proj is used by its
    weight, not its forward) with engine.quantized's Linear4bit/Linear8bitLt, except the output head and weights
    tied to another module (transformers' get_keys_to_not_convert keeps those in full precision)."""
    head = _output_head(work)
    owners: dict[int, int] = {}
    for module in work.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    chosen, kept = [], []
    for name, module in work.named_modules():
        if type(module) is not nn.Linear:
            continue
        if module is head:
            kept.append(f"{name} (the output head)")
        elif owners.get(id(module.weight), 0) > 1:
            kept.append(f"{name} (tied to another module)")
        elif id(module.weight) in frozen_ids:
            chosen.append(name)
    if not chosen:
        raise UserError(f"--base-dtype {base}: no frozen nn.Linear weight to quantise (bitsandbytes quantises "
                        "Linear layers only)", field="base_dtype")
    weight_buffers, storage = set(), {}
    for name in chosen:
        parent_name, _, leaf = name.rpartition(".")
        parent = work.get_submodule(parent_name) if parent_name else work
        new = quantized_linear(parent._modules[leaf], base, compute_dtype)
        parent._modules[leaf] = new
        storage[id(new.weight)] = weight_storage(new)
        weight_buffers.update(f"{name}.{buffer}" for buffer, _ in new.named_buffers())
    label = ("bitsandbytes NF4, blocksize 64, double quantisation: 4.127 bits per weight" if base == "nf4"
             else "bitsandbytes LLM.int8: int8 + an fp32 scale per row, threshold 0")
    dtype = str(compute_dtype).removeprefix("torch.")
    compute = (f"the weight dequantised to {dtype} per call in forward and backward" if base == "nf4" else
               "int8 matmuls in forward, the weight dequantised per call in backward")
    note = f"base weights {base} ({label}): {len(chosen)} frozen Linear layer(s) quantised; {compute}"
    if kept:
        note += f"; not quantised: {', '.join(kept[:4])}{' ...' if len(kept) > 4 else ''}"
    return frozenset(weight_buffers), storage, note


__all__ = ["ATTENTION_PROJECTIONS", "Prepared", "default_lora_targets", "meta_copy", "needed", "prepare"]

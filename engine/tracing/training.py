"""The training step's pieces: the scalar loss, the optimizer, activation checkpointing."""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_leaves
from torch.utils.checkpoint import checkpoint

from torchbudget.engine import vocab
from torchbudget.engine.errors import TraceError, UserError
from torchbudget.engine.meta_params import empty_maker
from torchbudget.engine.optimizers8bit import AdamW8bit
from torchbudget.engine.target import checkpoint_context_fn
from torchbudget.engine.tracing import blocks



def scalar_loss(output) -> torch.Tensor:
    """Sum over every floating output that needs grad, each as ``out.float().sum()``: a stand-in for a
    real loss that gives every output element a gradient (the loss's own cost is negligible)."""
    parts = [t.float().sum() for t in tree_leaves(output)
             if isinstance(t, torch.Tensor) and t.dtype.is_floating_point and t.requires_grad]
    if not parts:
        raise TraceError("the model's output has no floating tensor that depends on trainable parameters, "
                         "so there is nothing to backpropagate", field="model")
    loss = parts[0]
    for part in parts[1:]:
        loss = loss + part
    return loss


def make_optimizer(name: str, params: list[torch.Tensor], impl: str = "auto") -> torch.optim.Optimizer:
    """The real torch.optim class (engine.vocab.OPTIMIZERS) with the implementation ``impl``
    (engine.vocab.OPTIMIZER_IMPLS). "auto" is what torch.optim picks for CUDA parameters
    (``_default_to_fused_or_foreach``: foreach in 2.14). Fake tensors are not plain Tensors, so torch itself
    would pick the for-loop for them: the choice is always passed explicitly. ``adamw-8bit`` is
    engine.optimizers8bit.AdamW8bit (bitsandbytes' state layout and per-parameter kernels)."""
    spec = vocab.optimizer(name)
    impl = vocab.normalise_optimizer_impl(impl)
    if name == "adamw-8bit":
        if impl not in ("auto", "for-loop"):
            raise UserError(f"--optimizer-impl {impl} does not apply to adamw-8bit: bitsandbytes runs its own "
                            "kernel per parameter (use auto)", field="optimizer_impl")
        return AdamW8bit(params, lr=1e-3)
    if name == "adafactor" and impl == "fused":
        raise UserError("torch.optim.Adafactor has no fused implementation; use foreach (auto) or for-loop",
                        field="optimizer_impl")
    flags = dict(vocab.optimizer_impl(impl).torch_flags)
    return getattr(torch.optim, spec.torch_class)(params, lr=1e-3, **dict(spec.kwargs), **flags)


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def accumulated_gradients(stand_ins, options, fake_mode) -> list[torch.Tensor]:
    """Gradient accumulation (``grad_accum`` K > 1): the traced micro-batch is one of 2..K, whose step starts
    with every trainable parameter's gradient alive (the sum so far); backward then adds into it in place
    (AccumulateGrad's ``grad += new``). Micro-batch 1 has no gradients at its start and never needs more
    memory than a later one, and the optimizer step follows the last: this is the micro-batch that decides
    the peak. Returns the gradients, already set as ``.grad`` of the stand-ins."""
    if not options.training or options.grad_accum <= 1:
        return []
    empty = empty_maker("cpu", fake_mode)
    grads = []
    for _, p, trains in stand_ins.params:
        if trains and p.requires_grad:
            p.grad = empty(p.shape, p.dtype)
            grads.append(p.grad)
    return grads


def grad_accum_notes(options, inputs) -> tuple[str, ...]:
    """What a grad-accumulation trace is, stated in the result's policies."""
    if not options.training or options.grad_accum <= 1:
        return ()
    k = options.grad_accum
    batch = inputs[0].shape[0] if inputs and inputs[0].shape else 1
    return (f"gradient accumulation: {k} micro-batches of {batch} per optimizer step (global batch {k * batch}); "
            f"the trace is micro-batch 2..{k}: gradients alive from its start and accumulated in place; latency "
            f"counts {k} forward+backward passes and one optimizer step",)


class Checkpointed(torch.nn.Module):
    """Runs ``inner`` under non-reentrant activation checkpointing."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        # context_fn: the recomputation in backward runs under the target's semantics too (same kernels,
        # same saved tensors as the forward it replays)
        return checkpoint(self.inner, *args, use_reentrant=False, context_fn=checkpoint_context_fn(), **kwargs)


_CONTAINERS = (torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.Sequential)


def _shown(paths) -> str:
    paths = list(paths)
    return ", ".join(paths if len(paths) <= 6 else paths[:3] + ["…"] + paths[-2:])


@dataclass(frozen=True)
class CheckpointPlan:
    """Which modules run as checkpointed regions, and why (the rule is stated in the note).

    rule: "blocks" (each repeated block of engine.tracing.blocks.find_blocks is a region: what transformers'
    gradient_checkpointing_enable, timm's set_grad_checkpointing and torch's checkpoint_wrapper recipes do),
    "top-level" (no repeated blocks: each top-level child with children is a region, leaf layers stay as they
    are) or "own" (not asked for, but the model checkpoints its own layers: transformers' flag, modelled)."""

    rule: str
    regions: tuple[str, ...]
    plain: tuple[str, ...] = ()           # top-level rule: top-level leaf children left as they are
    own: tuple[str, ...] = ()             # modules whose own gradient_checkpointing flag the view switches off
    own_layers: int = 0                   # how many of them are transformers' per-layer checkpointing layers
    own_kwargs: tuple = ()                # (key, value) the model's own checkpoint function passes


def _top_level(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    regions, plain = [], []
    for name, child in model._modules.items():
        if _is_leaf(child):
            plain.append(name)
        elif isinstance(child, _CONTAINERS) and not all(_is_leaf(sub) for sub in child._modules.values()):
            regions += [f"{name}.{key}" for key, sub in child._modules.items() if sub is not None]
        else:
            regions.append(name)
    return regions, plain


def checkpoint_plan(model: torch.nn.Module, requested: bool = True) -> CheckpointPlan | None:
    """The regions of ``checkpointed_view``; None when nothing is checkpointed (not requested, and the model
    does not checkpoint itself). Granularity:
    - each repeated block (engine.tracing.blocks.find_blocks) is a region: a decoder's layers, ViT's
      encoder layers, ResNet's stages' blocks; everything else (embeddings, final norm, head) keeps its
      activations;
    - a model without repeated blocks: each top-level child with children is one region (VGG ``features``),
      top-level leaf layers (stem conv, norms, in-place activations, head) are not checkpointed: an in-place
      layer cannot be checkpointed on its own input (a block has children by definition);
    - a model that checkpoints itself (transformers' ``gradient_checkpointing_enable()`` before it reaches us)
      has its flag switched off in the view and its layers become our regions: never checkpointed twice,
      and the recompute runs under the target's semantics (the model's own call of torch.utils.checkpoint
      passes no ``context_fn``). Not requested, its own layers are the regions (what its real run does)."""
    own, own_layers, own_kwargs = blocks.own_checkpointing(model)
    extra = dict(own=tuple(own), own_layers=len(own_layers), own_kwargs=tuple(sorted(own_kwargs.items())))
    found = [path for path, _ in blocks.find_blocks(model)]
    if not requested:
        if not own:
            return None
        return CheckpointPlan("own", tuple(own_layers or found), **extra)
    if found:
        return CheckpointPlan("blocks", tuple(found), **extra)
    regions, plain = _top_level(model)
    return CheckpointPlan("top-level", tuple(regions), tuple(plain), **extra)


def _is_leaf(module: torch.nn.Module | None) -> bool:
    return blocks.is_leaf(module)


def _viewed(module: torch.nn.Module, path: str, plan: CheckpointPlan) -> torch.nn.Module:
    """``module`` itself when nothing at or under ``path`` changes; else a shallow copy with its own
    ``_modules`` dict (and its own flag switched off), wrapped in Checkpointed when ``path`` is a region."""
    prefix = f"{path}." if path else ""
    below = any(p.startswith(prefix) and p != path for p in (*plan.regions, *plan.own))
    if below or path in plan.own:
        copy_ = copy.copy(module)
        if path in plan.own:
            object.__setattr__(copy_, "gradient_checkpointing", False)
        if below:
            object.__setattr__(copy_, "_modules", OrderedDict(
                (key, _viewed(sub, prefix + key, plan) if sub is not None else None)
                for key, sub in module._modules.items()))
        module = copy_
    return Checkpointed(module) if path in plan.regions else module


def checkpointed_view(model: torch.nn.Module, plan: CheckpointPlan | None = None) -> torch.nn.Module:
    """A shallow copy of ``model`` whose ``plan`` regions (default: ``checkpoint_plan(model)``) run under
    non-reentrant checkpointing. The user's module and its ``_modules`` dicts are not touched: every module on
    the way to a region is a shallow copy with its own dict (parameters shared: the trace's stand-ins reach
    both); ``view_paths`` gives the copies' module paths."""
    plan = checkpoint_plan(model) if plan is None else plan
    return _viewed(model, "", plan) if plan is not None else model


def view_paths(view: torch.nn.Module, model: torch.nn.Module) -> dict[int, str]:
    """id -> module path of the view's copies (each stands for the module of ``model`` at that path)."""
    paths = {}
    for path, module in model.named_modules():
        here = view
        for key in path.split(".") if path else ():
            here = here._modules.get(key) if here is not None else None
            while isinstance(here, Checkpointed):
                here = here.inner
        if here is not None and here is not module:
            paths[id(here)] = path
    return paths


def checkpoint_regions(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(checkpointed regions, top-level children left as they are) of ``checkpointed_view(model)``."""
    plan = checkpoint_plan(model)
    return list(plan.regions), list(plan.plain)


def checkpoint_note(plan: CheckpointPlan) -> str:
    """The granularity, stated in the output: which regions are recomputed in backward, and by which rule."""
    n = len(plan.regions)
    if plan.rule == "own":
        note = (f"activation checkpointing: the model's own (transformers gradient_checkpointing_enable, "
                f"{plan.own_layers} layer(s)): {n} region(s) recomputed in backward ({_shown(plan.regions)}), "
                "traced as non-reentrant torch.utils.checkpoint per layer")
    elif not n:
        note = "activation checkpointing: no region (every top-level child is a single layer); nothing recomputed"
    elif plan.rule == "blocks":
        note = (f"activation checkpointing: {n} region(s) recomputed in backward, one per repeated block "
                f"({_shown(plan.regions)})")
    else:
        note = (f"activation checkpointing: {n} region(s) recomputed in backward ({_shown(plan.regions)}): no "
                "repeated blocks, so each top-level child with children is a region")
        note += f"; kept as they are: {', '.join(plan.plain)}" if plan.plain else ""
    kwargs = dict(plan.own_kwargs)
    if plan.own and plan.rule != "own":
        note += (f"; the model's own gradient checkpointing ({plan.own_layers} layer(s)) is switched off in the "
                 "trace, so nothing is checkpointed twice")
    if plan.own and kwargs.get("use_reentrant", False):
        note += "; its use_reentrant=True is traced as non-reentrant (the same regions and saved inputs)"
    return note

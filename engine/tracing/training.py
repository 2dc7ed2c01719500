"""The training step's pieces: the scalar loss, the optimizer, activation checkpointing."""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch.utils._pytree import tree_leaves
from torch.utils.checkpoint import checkpoint

from torchbudget.engine import vocab
from torchbudget.engine.errors import TraceError, UserError
from torchbudget.engine.meta_params import empty_maker
from torchbudget.engine.optimizers8bit import AdamW8bit
from torchbudget.engine.target import checkpoint_context_fn



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


def _checkpointed_container(container: torch.nn.Module) -> torch.nn.Module:
    copy_ = copy.copy(container)
    object.__setattr__(copy_, "_modules", OrderedDict(
        (key, Checkpointed(sub) if sub is not None else None) for key, sub in container._modules.items()))
    return copy_


def _is_leaf(module: torch.nn.Module | None) -> bool:
    return module is None or not module._modules


def checkpointed_view(model: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of ``model`` with checkpointed regions (non-reentrant), granularity:
    - a top-level container (Sequential/ModuleList/ModuleDict) of blocks (non-leaf modules, e.g. ResNet
      stages, a decoder's layers): each block is one region;
    - a top-level container of leaf layers only (VGG ``features``), or any other top-level module with
      children (ViT ``encoder``): the whole child is one region;
    - top-level leaf layers (stem conv, norms, in-place activations, head) are not checkpointed: an
      in-place layer cannot be checkpointed on its own input.
    The user's module and its ``_modules`` dicts are not touched: the copies get their own dicts."""
    view = copy.copy(model)
    wrapped = OrderedDict()
    for name, child in model._modules.items():
        if _is_leaf(child):
            wrapped[name] = child
        elif isinstance(child, _CONTAINERS) and not all(_is_leaf(sub) for sub in child._modules.values()):
            wrapped[name] = _checkpointed_container(child)
        else:
            wrapped[name] = Checkpointed(child)
    object.__setattr__(view, "_modules", wrapped)
    return view


def checkpoint_regions(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(checkpointed regions, top-level children left as they are) of ``checkpointed_view(model)``."""
    regions, plain = [], []
    for name, child in model._modules.items():
        if _is_leaf(child):
            plain.append(name)
        elif isinstance(child, _CONTAINERS) and not all(_is_leaf(sub) for sub in child._modules.values()):
            regions += [f"{name}.{key}" for key, sub in child._modules.items() if sub is not None]
        else:
            regions.append(name)
    return regions, plain


def checkpoint_note(model: torch.nn.Module) -> str:
    """The granularity, stated in the output: which regions are recomputed in backward."""
    regions, plain = checkpoint_regions(model)
    if not regions:
        return "activation checkpointing: no region (every top-level child is a single layer); nothing recomputed"
    shown = regions if len(regions) <= 6 else regions[:3] + ["…"] + regions[-2:]
    note = f"activation checkpointing: {len(regions)} region(s) recomputed in backward ({', '.join(shown)})"
    return note + (f"; kept as they are: {', '.join(plain)}" if plain else "")

"""The training step's pieces: the scalar loss, the optimizer, activation checkpointing."""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch.utils._pytree import tree_leaves
from torch.utils.checkpoint import checkpoint

from engine.errors import TraceError

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")


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


def make_optimizer(name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The real torch.optim class with foreach=True (what CUDA runs by default; on CPU tensors torch
    would otherwise pick the per-parameter loop)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3, foreach=True)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, foreach=True)
    raise ValueError(name)


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


class Checkpointed(torch.nn.Module):
    """Runs ``inner`` under non-reentrant activation checkpointing."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return checkpoint(self.inner, *args, use_reentrant=False, **kwargs)


_CONTAINERS = (torch.nn.ModuleList, torch.nn.ModuleDict)


def checkpointed_view(model: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of ``model`` whose top-level children run checkpointed; children that are
    ModuleList/ModuleDict containers (e.g. a decoder's layers) get each element checkpointed instead.
    The user's module and its ``_modules`` dict are not touched: the copy gets its own dict."""
    view = copy.copy(model)
    wrapped = OrderedDict()
    for name, child in model._modules.items():
        if child is None:
            wrapped[name] = None
        elif isinstance(child, _CONTAINERS):
            container = copy.copy(child)
            object.__setattr__(container, "_modules", OrderedDict(
                (key, Checkpointed(sub) if sub is not None else None) for key, sub in child._modules.items()))
            wrapped[name] = container
        else:
            wrapped[name] = Checkpointed(child)
    object.__setattr__(view, "_modules", wrapped)
    return view

"""Data-less stand-ins for a module's parameters and buffers, keyed by the names functional_call uses.

One stand-in per original tensor object, so tied parameters (one Parameter under two names) stay one
storage. Call inside a FakeTensorMode with ``device="cpu"`` for fake tensors, or with ``device="meta"``.
Nothing is read from or written to the module: only names, shapes, dtypes and ``requires_grad``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class StandIns:
    by_name: dict[str, torch.Tensor] = field(default_factory=dict)          # every name (tied: same tensor)
    params: list[tuple[str, torch.Tensor, bool]] = field(default_factory=list)  # unique: name, stand-in, trainable
    buffers: list[tuple[str, torch.Tensor]] = field(default_factory=list)       # unique
    original_ids: dict[int, torch.Tensor] = field(default_factory=dict)     # id(original) -> stand-in


def make_stand_ins(model: torch.nn.Module, *, device: str, param_dtype: Callable[[torch.dtype], torch.dtype],
                   buffer_dtype: Callable[[torch.dtype], torch.dtype], requires_grad: bool) -> StandIns:
    out = StandIns()
    for name, p in model.named_parameters(remove_duplicate=False):
        stand_in = out.original_ids.get(id(p))
        if stand_in is None:
            trainable = bool(p.requires_grad)
            stand_in = torch.empty(p.shape, dtype=param_dtype(p.dtype), device=device,
                                   requires_grad=requires_grad and trainable)
            out.original_ids[id(p)] = stand_in
            out.params.append((name, stand_in, trainable))
        out.by_name[name] = stand_in
    for name, b in model.named_buffers(remove_duplicate=False):
        stand_in = out.original_ids.get(id(b))
        if stand_in is None:
            stand_in = torch.empty(b.shape, dtype=buffer_dtype(b.dtype), device=device)
            out.original_ids[id(b)] = stand_in
            out.buffers.append((name, stand_in))
        out.by_name[name] = stand_in
    return out


def names_for(module: torch.nn.Module, stand_ins: StandIns) -> dict[str, torch.Tensor]:
    """The stand-in dict for ``module``, which may be a shallow wrapper of the original (new names,
    same tensors): matched by the identity of the original tensors."""
    mapping = {}
    for name, t in (*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)):
        stand_in = stand_ins.original_ids.get(id(t))
        if stand_in is not None:
            mapping[name] = stand_in
    return mapping

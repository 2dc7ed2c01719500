"""Data-less stand-ins for a module's parameters and buffers, keyed by the names functional_call uses.

One stand-in per original tensor object, so tied parameters (one Parameter under two names) stay one
storage. Pass ``fake_mode`` for fake tensors on ``device`` (built directly from meta tensors: a third of a
small model's trace went into 300 ``torch.empty`` calls through the mode), or ``device="meta"`` alone.
Nothing is read from or written to the module: only names, shapes, dtypes and ``requires_grad``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily


@dataclass
class StandIns:
    by_name: dict[str, torch.Tensor] = field(default_factory=dict)          # every name (tied: same tensor)
    params: list[tuple[str, torch.Tensor, bool]] = field(default_factory=list)  # unique: name, stand-in, trainable
    buffers: list[tuple[str, torch.Tensor]] = field(default_factory=list)       # unique
    original_ids: dict[int, torch.Tensor] = field(default_factory=dict)     # id(original) -> stand-in


def _empty_maker(device: str, fake_mode: FakeTensorMode | None):
    if fake_mode is None:
        return lambda shape, dtype: torch.empty(shape, dtype=dtype, device=device)
    fake_device = torch.device(device)

    def make(shape, dtype):
        with unset_fake_temporarily():   # a plain meta tensor, then the fake wrapper the mode itself would build
            meta = torch.empty(shape, dtype=dtype, device="meta")
        return FakeTensor(fake_mode, meta, fake_device)
    return make


def make_stand_ins(model: torch.nn.Module, *, device: str, param_dtype: Callable[[torch.dtype], torch.dtype],
                   buffer_dtype: Callable[[torch.dtype], torch.dtype], requires_grad: bool,
                   fake_mode: FakeTensorMode | None = None) -> StandIns:
    out = StandIns()
    empty = _empty_maker(device, fake_mode)
    for name, p in model.named_parameters(remove_duplicate=False):
        stand_in = out.original_ids.get(id(p))
        if stand_in is None:
            trainable = bool(p.requires_grad)
            stand_in = empty(p.shape, param_dtype(p.dtype)).requires_grad_(requires_grad and trainable)
            out.original_ids[id(p)] = stand_in
            out.params.append((name, stand_in, trainable))
        out.by_name[name] = stand_in
    for name, b in model.named_buffers(remove_duplicate=False):
        stand_in = out.original_ids.get(id(b))
        if stand_in is None:
            stand_in = empty(b.shape, buffer_dtype(b.dtype))
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

"""Data-less stand-ins for a module's parameters and buffers, keyed by the names functional_call uses.

One stand-in per original tensor object, so tied parameters (one Parameter under two names) stay one
storage. Pass ``fake_mode`` for fake tensors on ``device`` (built directly from meta tensors: a third of a
small model's trace went into 300 ``torch.empty`` calls through the mode), or ``device="meta"`` alone.
Nothing is read from or written to the module: only names, shapes, dtypes and ``requires_grad``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily


@dataclass(frozen=True)
class ParamPlan:
    """How one parameter is stood in for: its dtype, whether it trains, and for a quantised weight the
    (shape, dtype) of what is stored instead (packed codes: the stand-in has that shape, the module keeps the
    logical one)."""

    dtype: torch.dtype
    trainable: bool
    storage: tuple[tuple[int, ...], torch.dtype] | None = None


@dataclass
class StandIns:
    by_name: dict[str, torch.Tensor] = field(default_factory=dict)          # every name (tied: same tensor)
    params: list[tuple[str, torch.Tensor, bool]] = field(default_factory=list)  # unique: name, stand-in, trainable
    buffers: list[tuple[str, torch.Tensor]] = field(default_factory=list)       # unique
    original_ids: dict[int, torch.Tensor] = field(default_factory=dict)     # id(original) -> stand-in
    weight_buffers: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # quantisation state: weights' bytes
    logical_numel: dict[int, int] = field(default_factory=dict)  # id(stand-in) -> elements it stands for (quantised)

    def numel(self, stand_in: torch.Tensor) -> int:
        """Elements a parameter stand-in counts as: the logical weight's for a quantised (packed) one."""
        return self.logical_numel.get(id(stand_in), stand_in.numel())


def empty_maker(device: str, fake_mode: FakeTensorMode | None):
    """``make(shape, dtype)``: an empty fake tensor on ``device`` (or a plain one without a fake mode)."""
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
                   fake_mode: FakeTensorMode | None = None,
                   param_plan: Callable[[str, torch.Tensor], ParamPlan] | None = None,
                   weight_buffers: Collection[str] = ()) -> StandIns:
    """``param_plan(name, parameter)`` decides per parameter (engine.finetune: LoRA adapters, frozen and
    quantised weights); without it every parameter gets ``param_dtype`` and trains when it requires grad.
    ``weight_buffers``: buffer names that are part of a quantised weight (its scales): kept in their dtype."""
    out = StandIns()
    empty = empty_maker(device, fake_mode)
    for name, p in model.named_parameters(remove_duplicate=False):
        stand_in = out.original_ids.get(id(p))
        if stand_in is None:
            plan = param_plan(name, p) if param_plan else ParamPlan(param_dtype(p.dtype), bool(p.requires_grad))
            if plan.storage is not None:
                stand_in = empty(*plan.storage)
                out.logical_numel[id(stand_in)] = p.numel()
            else:
                stand_in = empty(p.shape, plan.dtype).requires_grad_(requires_grad and plan.trainable)
            out.original_ids[id(p)] = stand_in
            out.params.append((name, stand_in, plan.trainable))
        out.by_name[name] = stand_in
    for name, b in model.named_buffers(remove_duplicate=False):
        stand_in = out.original_ids.get(id(b))
        if stand_in is None:
            extra = name in weight_buffers
            stand_in = empty(b.shape, b.dtype if extra else buffer_dtype(b.dtype))
            out.original_ids[id(b)] = stand_in
            (out.weight_buffers if extra else out.buffers).append((name, stand_in))
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

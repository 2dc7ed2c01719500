"""Matrix products: MACs = product of the output shape × the contracted dimension.
Bias / beta·input adds are folded in (no extra FLOP), as in the seed's conv formula.
``matmul``, ``linear`` and ``einsum`` are composite: on dispatch they arrive as mm/bmm/addmm/... ."""
from __future__ import annotations

from functools import partial

import math

import torch
from torch._subclasses.fake_tensor import FakeTensor

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import ops
from torchbudget.engine.ops.values import known_list

register = partial(registry.register, op_kind=OpKind.MATMUL)


@register(*ops("mm", "bmm"), kind="macs")
def mm_macs(args, kwargs, out) -> int:
    """out elements × K (the contracted dimension)."""
    return math.prod(out.shape) * args[0].shape[-1]


@register(*ops("addmm", "baddbmm", "_addmm_activation"), kind="macs")
def addmm_macs(args, kwargs, out) -> int:
    """out elements × K; the bias add is folded in."""
    return math.prod(out.shape) * args[1].shape[-1]


@register(*ops("addbmm"), kind="macs")
def addbmm_macs(args, kwargs, out) -> int:
    """batch × M × N × K (the batch is summed into one M×N output)."""
    b, m, k = args[1].shape
    return b * m * args[2].shape[-1] * k


@register(*ops("mv", "dot", "vdot"), kind="macs")
def mv_macs(args, kwargs, out) -> int:
    """Every element of the first operand is multiplied once."""
    return math.prod(args[0].shape)


@register(*ops("addmv"), kind="macs")
def addmv_macs(args, kwargs, out) -> int:
    """Every element of the matrix is multiplied once; the add is folded in."""
    return math.prod(args[1].shape)


@register(*ops("_scaled_mm"), kind="macs")
def scaled_mm_macs(args, kwargs, out) -> int:
    """M × N × K (fp8 matmul; the scaling is folded in)."""
    return math.prod(out.shape) * args[0].shape[-1]


def _offsets_end(offs, extent: int) -> int:
    """How many rows/columns of the grouped dimension fall in a group: the last offset when the trace knows
    the offsets' values (the MoE routing policy, engine/tracing/routing.py), else all of them (top-k routing
    gives every (token, slot) pair an expert, so the groups cover the whole dimension)."""
    values = known_list(offs)
    if values is None and isinstance(offs, torch.Tensor) and not isinstance(offs, FakeTensor) \
            and offs.device.type != "meta":
        values = offs.tolist()                     # a real tensor (counted outside a trace)
    if not values:
        return extent
    return max(0, min(extent, int(values[-1])))


def _grouped_macs(a, b, offs, k_scale: int = 1) -> int:
    if a.dim() == 3 and b.dim() == 3:              # batched: a regular bmm
        return a.shape[0] * a.shape[1] * b.shape[-1] * a.shape[-1] * k_scale
    if a.dim() == 2 and b.dim() == 3:              # rows of a grouped (the MoE forward): Σ m_g·K·N
        return _offsets_end(offs, a.shape[0]) * a.shape[1] * k_scale * b.shape[-1]
    if a.dim() == 3 and b.dim() == 2:              # columns of b grouped: Σ M·K·n_g
        return a.shape[1] * a.shape[2] * k_scale * _offsets_end(offs, b.shape[1])
    # 2d x 2d: the contraction grouped (a weight gradient): one M×N output per group, Σ M·k_g·N
    return a.shape[0] * _offsets_end(offs, a.shape[1]) * k_scale * b.shape[1]


@register(*ops("_grouped_mm"), kind="macs")
def grouped_mm_macs(args, kwargs, out) -> int:
    """Σ over groups of m_g × K × N (2d×3d; 3d×2d and 2d×2d alike), from the offsets' known values, else every row in a group"""
    offs = args[2] if len(args) > 2 else kwargs.get("offs")
    return _grouped_macs(args[0], args[1], offs)


@register(*ops("_scaled_grouped_mm"), kind="macs")
def scaled_grouped_mm_macs(args, kwargs, out) -> int:
    """as _grouped_mm (fp8/fp4 operands: packed fp4 holds 2 values per element of K); the scaling is folded in"""
    offs = args[4] if len(args) > 4 else kwargs.get("offs")
    packed = 2 if args[0].dtype == getattr(torch, "float4_e2m1fn_x2", None) else 1
    return _grouped_macs(args[0], args[1], offs, packed)

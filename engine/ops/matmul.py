"""Matrix products: MACs = product of the output shape × the contracted dimension.
Bias / beta·input adds are folded in (no extra FLOP), as in the seed's conv formula.
``matmul``, ``linear`` and ``einsum`` are composite: on dispatch they arrive as mm/bmm/addmm/... ."""
from __future__ import annotations

from functools import partial

import math

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import ops

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

"""Matrix products: MACs = product of the output shape × the contracted dimension."""
from __future__ import annotations

import math

import torch

from engine.ops.registry import register

aten = torch.ops.aten


@register(aten.mm, aten.bmm, kind="macs", matmul_like=True)
def mm_macs(args, kwargs, out) -> int:
    a = args[0]
    return math.prod(out.shape) * a.shape[-1]


@register(aten.addmm, aten.baddbmm, kind="macs", matmul_like=True)
def addmm_macs(args, kwargs, out) -> int:
    # bias add folded in (the seed's convention for conv/linear bias)
    a = args[1]
    return math.prod(out.shape) * a.shape[-1]

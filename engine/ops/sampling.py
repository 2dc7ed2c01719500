"""Grid samplers (``F.grid_sample``: spatial transformers, RAFT's correlation lookup).

Per output element (N · C · grid points), the same interpolation costs as upsampling: bilinear 9
(3 lerps of 3), bicubic 35, trilinear (3-d "bilinear") 21, nearest 0 (a gather). The grid's
coordinate arithmetic, shared by all channels, is not added. Backward: the forward's cost per
grad_output element for each requested gradient (grad_input, grad_grid), as convolution_backward."""
from __future__ import annotations

from functools import partial

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import numel, ops, out_numel

register = partial(registry.register, op_kind=OpKind.POOL)

# interpolation_mode: 0 bilinear, 1 nearest, 2 bicubic
COST_2D = {0: 9, 1: 0, 2: 35}
COST_3D = {0: 21, 1: 0}


def _forward(costs: dict[int, int]):
    def formula(args, kwargs, out) -> int:
        return costs[int(args[2])] * out_numel(out)
    formula.__doc__ = "per output element: " + ", ".join(
        f"{name} {costs[mode]}" for mode, name in ((0, "bilinear"), (1, "nearest"), (2, "bicubic")) if mode in costs)
    return formula


def _backward(costs: dict[int, int]):
    def formula(args, kwargs, out) -> int:  # (grad_output, input, grid, mode, padding, align_corners[, mask])
        mask = args[6] if len(args) > 6 else (True, True)
        return costs[int(args[3])] * numel(args[0]) * (int(bool(mask[0])) + int(bool(mask[1])))
    formula.__doc__ = "forward cost per grad_output element × requested gradients (grad_input, grad_grid)"
    return formula


register(*ops("grid_sampler_2d", "_grid_sampler_2d_cpu_fallback"))(_forward(COST_2D))
register(*ops("grid_sampler_3d"))(_forward(COST_3D))
register(*ops("grid_sampler_2d_backward", "_grid_sampler_2d_cpu_fallback_backward"))(_backward(COST_2D))
register(*ops("grid_sampler_3d_backward"))(_backward(COST_3D))

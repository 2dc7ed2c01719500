"""Pooling and upsampling.

Max/avg pooling: prod(kernel) FLOPs per output element (the seed's k²·C·Hout·Wout; one compare or
add per window tap, the average's divide counted as the last tap). Adaptive pooling: the exact sum
of PyTorch's window sizes (window i spans floor(i·in/out) .. ceil((i+1)·in/out)), i.e.
(in/out) per output element when out divides in. Backward: max-pool 1 per grad_output element
(scatter to the argmax), avg-pool the same window taps as forward.
Upsampling (per output element): linear 3, bilinear 9, bicubic 35, trilinear 21 (3 per lerp,
7 per cubic tap set); nearest is a gather: known-zero (memory only)."""
from __future__ import annotations

from functools import partial

import math

from torchbudget.engine.ops.pointwise import per_output_element
from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import expand_ints, first_tensor, numel, ops, out_numel

register = partial(registry.register, op_kind=OpKind.POOL)


def _pool(spatial: int, backward: bool = False):
    def formula(args, kwargs, out) -> int:
        if backward:  # (grad_output, self, kernel_size, ...): taps per grad_output element
            return math.prod(expand_ints(args[2], spatial)) * numel(args[0])
        return math.prod(expand_ints(args[1], spatial)) * out_numel(out)
    formula.__doc__ = "prod(kernel) × " + ("grad_output elements" if backward else "output elements")
    return formula


for _dims in (1, 2, 3):
    register(*ops(f"max_pool{_dims}d", f"max_pool{_dims}d_with_indices", f"avg_pool{_dims}d",
                  f"mkldnn_max_pool{_dims}d", f"quantized_max_pool{_dims}d"))(_pool(_dims))
    register(*ops(f"avg_pool{_dims}d_backward"))(_pool(_dims, backward=True))


@register(*ops("max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward",
               "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward", "max_pool2d_backward",
               "max_unpool2d", "max_unpool3d"))
def max_pool_backward_flops(args, kwargs, out) -> int:
    """1 × grad_output elements (scatter to the argmax)"""
    return numel(args[0])


def adaptive_window_sum(in_size: int, out_size: int) -> int:
    """Sum over PyTorch's adaptive windows of their lengths."""
    return sum(math.ceil((i + 1) * in_size / out_size) - (i * in_size) // out_size for i in range(out_size))


def adaptive_pool_flops(in_shape, out_shape, dims: int) -> int:
    """outer (batch × channels) × prod over the pooled dims of the window-length sums."""
    outer = math.prod(out_shape[: len(out_shape) - dims])
    return outer * math.prod(adaptive_window_sum(i, o) for i, o in zip(in_shape[-dims:], out_shape[-dims:]))


def _adaptive(dims: int, backward: bool = False):
    def formula(args, kwargs, out) -> int:
        if backward:  # (grad_output, self): same taps as forward, grad_output has the pooled shape
            return adaptive_pool_flops(args[1].shape, args[0].shape, dims)
        return adaptive_pool_flops(args[0].shape, first_tensor(out).shape, dims)
    formula.__doc__ = "exact sum of adaptive window sizes (≈ in/out taps per output element)"
    return formula


for _dims in (1, 2, 3):
    register(*ops(f"adaptive_avg_pool{_dims}d", f"_adaptive_avg_pool{_dims}d", f"adaptive_max_pool{_dims}d",
                  f"mkldnn_adaptive_avg_pool{_dims}d"))(_adaptive(_dims))
    register(*ops(f"_adaptive_avg_pool{_dims}d_backward", f"adaptive_avg_pool{_dims}d_backward"))(
        _adaptive(_dims, backward=True))


def _upsample_backward(cost: int):
    def formula(args, kwargs, out) -> int:
        return cost * numel(args[0])
    formula.__doc__ = f"{cost} × output elements (of grad_output)"
    return formula


for _name, _cost in (("upsample_linear1d", 3), ("upsample_bilinear2d", 9), ("_upsample_bilinear2d_aa", 9),
                     ("upsample_trilinear3d", 21), ("upsample_bicubic2d", 35), ("_upsample_bicubic2d_aa", 35)):
    register(*ops(_name))(per_output_element(_cost))
    register(*ops(_name + "_backward"))(_upsample_backward(_cost))

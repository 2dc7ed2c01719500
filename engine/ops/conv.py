"""Convolutions, forward and backward. MACs per (input or output) position × Cin/groups × kernel × Cout.

Regular conv: output positions × Cout × Cin/groups × prod(kernel) (the seed: C·k²·Hout·Wout·Cout).
Transposed conv: **input** positions × Cin × Cout/groups × prod(kernel) — every input element is
multiplied by every kernel tap once; counting output positions (thop, torchinfo) over-counts by
about stride². The bias add is folded in (no extra FLOP)."""
from __future__ import annotations

from functools import partial

import math

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import ops

register = partial(registry.register, op_kind=OpKind.CONV)


def conv_macs(x_shape, w_shape, out_shape, transposed: bool) -> int:
    """w_shape is [Cout, Cin/g, *k] for a regular conv and [Cin, Cout/g, *k] for a transposed one;
    either way MACs per position = w_shape[0] · w_shape[1] · prod(k)."""
    spatial = len(w_shape) - 2
    batched = len(x_shape) == spatial + 2
    batch = x_shape[0] if batched else 1
    positions = math.prod((x_shape if transposed else out_shape)[-spatial:]) if spatial else 1
    return batch * positions * math.prod(w_shape)


def _forward(transposed_index: int | None, transposed: bool = False):
    def formula(args, kwargs, out) -> int:
        is_transposed = bool(args[transposed_index]) if transposed_index is not None else transposed
        return conv_macs(args[0].shape, args[1].shape, out.shape, is_transposed)
    formula.__doc__ = ("input positions × Cin × Cout/groups × prod(k) when transposed, else "
                       "output positions × Cout × Cin/groups × prod(k)")
    return formula


# aten.convolution & co. carry the `transposed` flag as their 7th argument
register(*ops("convolution", "_convolution", "convolution_overrideable"),
         kind="macs")(_forward(6))
register(*ops("cudnn_convolution", "mkldnn_convolution", "_slow_conv2d_forward", "_conv_depthwise2d",
              "conv_depthwise3d", "slow_conv3d_forward", "slow_conv_dilated2d", "slow_conv_dilated3d",
              "miopen_convolution", "miopen_depthwise_convolution", "_nnpack_spatial_convolution",
              "thnn_conv2d"),
         kind="macs")(_forward(None, transposed=False))
register(*ops("cudnn_convolution_transpose", "slow_conv_transpose2d", "slow_conv_transpose3d",
              "miopen_convolution_transpose"),
         kind="macs")(_forward(None, transposed=True))


@register(*ops("convolution_backward", "convolution_backward_overrideable"), kind="macs")
def conv_backward_macs(args, kwargs, out) -> int:
    """forward MACs for grad_input (mask[0]) + forward MACs for grad_weight (mask[1]);
    grad_bias (a sum over grad_output) is folded in like the forward bias."""
    grad_out, x, w = args[0], args[1], args[2]
    transposed, output_mask = bool(args[7]), args[10]
    forward = conv_macs(x.shape, w.shape, grad_out.shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))

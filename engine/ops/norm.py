"""Normalisation and softmax, per element of the (first) output.

BatchNorm: 2 FLOPs per element in every mode (the seed's 2·C·H·W: a·x + b with the statistics
folded into a, b; training-mode statistics are not added, as in the seed and thop).
Layer/Group norm: 5 per element (mean 1, variance 2, normalise + affine 2); RMS norm: 4.
Softmax/log-softmax: 5 per element (max, subtract, exp, sum, divide); their backward 4.
Norm backwards: 2 × the forward count per element of grad_input (the usual backward ≈ 2× forward)."""
from __future__ import annotations

from functools import partial

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import numel, ops, out_numel

register = partial(registry.register, op_kind=OpKind.NORM)


def _per_input_element(cost: int, input_index: int = 0):
    def formula(args, kwargs, out) -> int:
        return cost * numel(args[input_index])
    formula.__doc__ = f"{cost} × input elements"
    return formula


register(*ops("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
              "_native_batch_norm_legit_functional", "cudnn_batch_norm", "miopen_batch_norm",
              "_batch_norm_with_update", "_batch_norm_no_update", "_batch_norm_with_update_functional"))(
    _per_input_element(2))
# backward(grad_out, input, ...): grad_input has the input's shape
register(*ops("native_batch_norm_backward", "cudnn_batch_norm_backward", "miopen_batch_norm_backward",
              "batch_norm_backward"))(_per_input_element(4, input_index=1))

register(*ops("native_layer_norm", "native_group_norm"))(_per_input_element(5))
register(*ops("native_layer_norm_backward", "native_group_norm_backward"))(
    _per_input_element(10, input_index=1))
register(*ops("_fused_rms_norm"))(_per_input_element(4))
register(*ops("_fused_rms_norm_backward"))(_per_input_element(8, input_index=1))


@register(*ops("_softmax", "_log_softmax", "_safe_softmax"))
def softmax_flops(args, kwargs, out) -> int:
    """5 × output elements (max, subtract, exp, sum, divide)"""
    return 5 * out_numel(out)


@register(*ops("_softmax_backward_data", "_log_softmax_backward_data"))
def softmax_backward_flops(args, kwargs, out) -> int:
    """4 × output elements (y∘g, row sum, subtract, multiply)"""
    return 4 * out_numel(out)

"""Elementwise ops: a fixed number of FLOPs per output element (in-place variants share the packet
entry only when they share the overload packet, so both spellings are listed).

Convention: every activation (incl. GELU, SiLU, Mish, ...) and its backward is 1 FLOP per element
(the seed's ReLU C·H·W); comparisons, selects (where, masked_fill) and random draws are 1 too."""
from __future__ import annotations

from functools import partial

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import ops, out_numel

register = partial(registry.register, op_kind=OpKind.ELEMENTWISE)

_ACTIVATIONS = [
    "relu", "relu_", "relu6", "threshold", "threshold_", "threshold_backward",
    "leaky_relu", "leaky_relu_", "leaky_relu_backward", "hardtanh", "hardtanh_", "hardtanh_backward",
    "sigmoid", "sigmoid_", "sigmoid_backward", "tanh", "tanh_", "tanh_backward",
    "silu", "silu_", "silu_backward", "hardswish", "hardswish_", "hardswish_backward",
    "hardsigmoid", "hardsigmoid_", "hardsigmoid_backward", "elu", "elu_", "elu_backward",
    "celu", "celu_", "selu", "selu_", "gelu", "gelu_", "gelu_backward", "mish", "mish_", "mish_backward",
    "softplus", "softplus_backward", "softshrink", "hardshrink", "log_sigmoid_forward",
    "log_sigmoid_backward", "_prelu_kernel", "_prelu_kernel_backward", "glu", "glu_backward",
    "rrelu_with_noise", "logit",
]
_ONE = [
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "neg_", "abs", "abs_",
    "exp", "exp_", "exp2", "expm1", "log", "log_", "log2", "log10", "log1p", "sqrt", "sqrt_", "rsqrt", "rsqrt_",
    "pow", "pow_", "reciprocal", "reciprocal_", "square", "sign", "sgn", "floor", "ceil", "round", "trunc",
    "frac", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "erf", "erfc", "erfinv",
    "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "maximum", "minimum",
    "fmod", "remainder", "floor_divide", "eq", "ne", "gt", "lt", "ge", "le", "isnan", "isinf",
    "logical_not", "logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not",
    "bitwise_xor", "__and__", "__or__", "__xor__",   # tensor parallel embedding's out-of-shard mask: a | b
    "logical_not_", "logical_and_", "logical_or_", "logical_xor_",   # clamp(min, max)'s backward mask
    "where", "masked_fill", "masked_fill_", "bernoulli", "bernoulli_", "uniform_", "normal_", "exponential_",
    "rand", "rand_like", "randn", "randn_like", "randint", "randint_like",
    "native_dropout_backward", "nan_to_num", "sigmoid_backward_", "xlogy", "copysign", "hypot",
]
_TWO = ["native_dropout"]  # draw the mask + scale
_THREE = ["addcmul", "addcmul_", "addcdiv", "addcdiv_", "lerp", "lerp_"]  # t1∘t2, ×value, +self


def per_output_element(cost: int):
    """A formula of ``cost`` FLOPs per output element (shared with pool.py and the thop preset)."""
    def formula(args, kwargs, out) -> int:
        return cost * out_numel(out)
    formula.__doc__ = f"{cost} × output elements"
    return formula


register(*ops(*_ACTIVATIONS))(per_output_element(1))
register(*ops(*_ONE))(per_output_element(1))
register(*ops(*_TWO))(per_output_element(2))
register(*ops(*_THREE))(per_output_element(3))

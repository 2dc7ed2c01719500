"""Optimizer ops. ``_foreach_X`` costs what ``X`` costs per element, summed over the tensor list
(``_foreach_mul_`` = total numel; addcmul/addcdiv/lerp 3 per element). Fused optimizers are the sum
of their foreach steps per parameter element: AdamW 14 (decay 1, lerp 3, mul 1, addcmul 3, sqrt 1,
div 1, add eps 1, addcdiv 3), Adam 14 (L2 add instead of decay), SGD 2 (4 with momentum)."""
from __future__ import annotations

from functools import partial

import torch

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import list_numel, ops

register = partial(registry.register, op_kind=OpKind.OPTIMIZER)


def _first_list(args) -> list:
    for a in args:
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
            return a
    return []


def _foreach(cost: int):
    def formula(args, kwargs, out) -> int:
        return cost * list_numel(_first_list(args))
    formula.__doc__ = f"{cost} × total elements of the tensor list"
    return formula


_ONE = ["add", "sub", "mul", "div", "sqrt", "rsqrt", "neg", "abs", "exp", "log", "sign", "reciprocal",
        "pow", "maximum", "minimum", "clamp_min", "clamp_max", "sigmoid", "tanh"]
_THREE = ["addcmul", "addcdiv", "lerp"]

register(*ops(*[f"_foreach_{n}" for n in _ONE] + [f"_foreach_{n}_" for n in _ONE]))(_foreach(1))
register(*ops(*[f"_foreach_{n}" for n in _THREE] + [f"_foreach_{n}_" for n in _THREE]))(_foreach(3))
register(*ops("_foreach_norm"))(_foreach(2))
register(*ops("_fused_adam_", "_fused_adamw_", "_fused_adam", "_fused_adamw"))(_foreach(14))


@register(*ops("_fused_sgd_", "_fused_sgd"))
def fused_sgd_flops(args, kwargs, out) -> int:
    """2 × parameter elements (4 with momentum buffers)"""
    momentum_buffers = args[2] if len(args) > 2 else kwargs.get("momentum_buffer_list", [])
    return (4 if momentum_buffers else 2) * list_numel(args[0])

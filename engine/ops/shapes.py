"""Small shape helpers shared by the formula modules (they read shapes only, never data)."""
from __future__ import annotations

import math

import torch

aten = torch.ops.aten


def ops(*names: str, namespace=aten) -> list:
    """The op packets that exist in this torch build (a formula must not fail on an older torch)."""
    return [getattr(namespace, n) for n in names if hasattr(namespace, n)]


def numel(t) -> int:
    return math.prod(t.shape) if isinstance(t, torch.Tensor) else 0


def first_tensor(x):
    """The first tensor in an op result (a tensor, or a tuple/list of them)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for item in x:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def out_numel(out) -> int:
    return numel(first_tensor(out))


def list_numel(tensors) -> int:
    """Total elements of a tensor list (the _foreach_* ops)."""
    return sum(numel(t) for t in tensors if isinstance(t, torch.Tensor))


def expand_ints(value, n: int) -> tuple[int, ...]:
    """kernel_size=3 or [3] or [3, 3] -> (3, 3) for an n-d op."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    return value * n if len(value) == 1 else value

"""Quantised weights and 8-bit optimizer state: the kernels bitsandbytes runs, as ``torchbudget::`` ops.

The trace never imports bitsandbytes. Where a QLoRA/LLM.int8 layer or bnb's AdamW8bit launches one of its
own kernels, the trace calls the op of the same name here: its fake kernel allocates exactly what bnb's
allocates (``torch.empty`` of the same shape and dtype in bitsandbytes/_ops.py and backends/cuda/ops.py at
bitsandbytes 95f9af3, Aug 2026), so the storage events and bytes moved are bnb's. No real kernel exists:
the trace runs on fake tensors only (a real tensor gets an uninitialised result of the right shape).

Formulas (per element of the full-size weight or parameter):
- ``dequantize_4bit``: 1 FLOP (a 16-entry table lookup times the block's absmax);
- ``dequantize_blockwise``: 1 FLOP (256-entry table times absmax);
- ``int8_vectorwise_quant``: 3 FLOPs per input element (row absmax, scale, round);
- ``int8_linear_matmul``: M·N·K MACs (an int8 GEMM on tensor cores);
- ``int8_mm_dequant``: 2 FLOPs per output element (row × column scale), +1 with a bias;
- ``optimizer_update_8bit_blockwise``: 20 per parameter element: AdamW's 14 (as the fused AdamW kernel,
  engine/ops/foreach.py) + 2 to dequantise both moments + 2 to rescale them by the new block absmax + 2 for
  the two block-absmax reductions; ``optimizer_update_32bit``: AdamW's 14."""
from __future__ import annotations

import math
from functools import partial
from typing import Optional, Sequence

import torch

from torchbudget.engine.ops import registry
from torchbudget.engine.ops.shapes import numel
from torchbudget.engine.results import OpKind

_LIB = "torchbudget"


# ------------------------------------------------------------------------------------------ weights
@torch.library.custom_op(f"{_LIB}::dequantize_4bit", mutates_args=())
def dequantize_4bit(packed: torch.Tensor, absmax: torch.Tensor, blocksize: int, shape: Sequence[int],
                    dtype: torch.dtype) -> torch.Tensor:
    """bitsandbytes::dequantize_4bit: packed 4-bit codes + fp32 block absmax -> the full-size weight."""
    return torch.empty(tuple(shape), dtype=dtype, device=packed.device)


@dequantize_4bit.register_fake
def _(packed, absmax, blocksize, shape, dtype):
    return packed.new_empty(tuple(shape), dtype=dtype)


@torch.library.custom_op(f"{_LIB}::dequantize_blockwise", mutates_args=())
def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int,
                         dtype: torch.dtype) -> torch.Tensor:
    """bitsandbytes::dequantize_blockwise: 8-bit codes (a 256-entry map) + per-block absmax -> ``dtype``
    (the nested absmax of double quantisation)."""
    return torch.empty(codes.shape, dtype=dtype, device=codes.device)


@dequantize_blockwise.register_fake
def _(codes, absmax, code, blocksize, dtype):
    return codes.new_empty(codes.shape, dtype=dtype)


@torch.library.custom_op(f"{_LIB}::int8_vectorwise_quant", mutates_args=())
def int8_vectorwise_quant(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes::int8_vectorwise_quant (threshold 0): int8 rows + one fp32 scale per row."""
    return (torch.empty(a.shape, dtype=torch.int8, device=a.device),
            torch.empty(a.shape[:-1], dtype=torch.float32, device=a.device))


@int8_vectorwise_quant.register_fake
def _(a):
    return a.new_empty(a.shape, dtype=torch.int8), a.new_empty(a.shape[:-1], dtype=torch.float32)


@torch.library.custom_op(f"{_LIB}::int8_linear_matmul", mutates_args=())
def int8_linear_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bitsandbytes::int8_linear_matmul: int8 (M, K) x int8 (N, K)^T -> int32 (M, N)."""
    return torch.empty((*a.shape[:-1], b.shape[0]), dtype=torch.int32, device=a.device)


@int8_linear_matmul.register_fake
def _(a, b):
    return a.new_empty((*a.shape[:-1], b.shape[0]), dtype=torch.int32)


@torch.library.custom_op(f"{_LIB}::int8_mm_dequant", mutates_args=())
def int8_mm_dequant(a: torch.Tensor, row_stats: torch.Tensor, col_stats: torch.Tensor,
                    bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """bitsandbytes::int8_mm_dequant: int32 -> float16 (its CUDA kernel's only output dtype)."""
    return torch.empty(a.shape, dtype=torch.float16, device=a.device)


@int8_mm_dequant.register_fake
def _(a, row_stats, col_stats, bias=None):
    return a.new_empty(a.shape, dtype=torch.float16)


# ------------------------------------------------------------------------------------------ optimizer
@torch.library.custom_op(f"{_LIB}::optimizer_update_8bit_blockwise",
                         mutates_args=("param", "state1", "state2", "absmax1", "absmax2"))
def optimizer_update_8bit_blockwise(param: torch.Tensor, grad: torch.Tensor, state1: torch.Tensor,
                                    state2: torch.Tensor, absmax1: torch.Tensor, absmax2: torch.Tensor,
                                    qmap1: torch.Tensor, qmap2: torch.Tensor) -> None:
    """bitsandbytes' block-wise 8-bit AdamW update (one kernel per parameter, everything in place)."""


@optimizer_update_8bit_blockwise.register_fake
def _(param, grad, state1, state2, absmax1, absmax2, qmap1, qmap2):
    return None


@torch.library.custom_op(f"{_LIB}::optimizer_update_32bit", mutates_args=("param", "state1", "state2"))
def optimizer_update_32bit(param: torch.Tensor, grad: torch.Tensor, state1: torch.Tensor,
                           state2: torch.Tensor) -> None:
    """bitsandbytes' 32-bit AdamW update (its path for parameters under min_8bit_size elements)."""


@optimizer_update_32bit.register_fake
def _(param, grad, state1, state2):
    return None


# ------------------------------------------------------------------------------------------ formulas
_ops = torch.ops.torchbudget
elementwise = partial(registry.register, op_kind=OpKind.ELEMENTWISE)


@elementwise(_ops.dequantize_4bit)
def dequantize_4bit_flops(args, kwargs, out) -> int:
    """1 × weight elements (table lookup × block absmax)"""
    return numel(out)


@elementwise(_ops.dequantize_blockwise)
def dequantize_blockwise_flops(args, kwargs, out) -> int:
    """1 × elements (table lookup × block absmax)"""
    return numel(out)


@elementwise(_ops.int8_vectorwise_quant)
def int8_quant_flops(args, kwargs, out) -> int:
    """3 × input elements (row absmax, scale, round)"""
    return 3 * numel(args[0])


@registry.register(_ops.int8_linear_matmul, op_kind=OpKind.MATMUL, kind="macs")
def int8_matmul_macs(args, kwargs, out) -> int:
    """M·N·K (int8 GEMM)"""
    a, b = args[0], args[1]
    return math.prod(a.shape[:-1]) * b.shape[0] * a.shape[-1]


@elementwise(_ops.int8_mm_dequant)
def int8_dequant_flops(args, kwargs, out) -> int:
    """2 × output elements (row × column scale), 3 with a bias"""
    bias = args[3] if len(args) > 3 else kwargs.get("bias")
    return (3 if bias is not None else 2) * numel(out)


@registry.register(_ops.optimizer_update_8bit_blockwise, op_kind=OpKind.OPTIMIZER)
def adamw_8bit_flops(args, kwargs, out) -> int:
    """20 × parameter elements (AdamW 14 + block-wise dequantise/requantise 6)"""
    return 20 * numel(args[0])


@registry.register(_ops.optimizer_update_32bit, op_kind=OpKind.OPTIMIZER)
def adamw_32bit_flops(args, kwargs, out) -> int:
    """14 × parameter elements (AdamW)"""
    return 14 * numel(args[0])

"""Quantised frozen base weights (``--base-dtype nf4|int8``), modelled on bitsandbytes without importing it.

What is stored (per ``nn.Linear`` weight of n = out × in elements; sources at bitsandbytes 95f9af3, Aug 2026):

* **nf4** — bnb ``Linear4bit``/``Params4bit`` defaults with ``quant_type="nf4"``: blocksize 64 and
  ``compress_statistics=True`` (double quantisation, the QLoRA recipe). ``functional.quantize_4bit`` and the
  CUDA kernel ``bitsandbytes::quantize_4bit`` (backends/cuda/ops.py) give: the packed codes, uint8
  ``((n + 1) // 2, 1)``; the block absmax quantised again by ``quantize_blockwise(absmax - offset,
  blocksize=256)``: uint8 ``(ceil(n / 64),)`` codes, fp32 ``(ceil(ceil(n / 64) / 256),)`` second-level absmax,
  the 256-entry fp32 map copied per weight (``code.to(A.device, copy=True)``) and the fp32 ``offset`` scalar;
  and the 16-entry fp32 NF4 table (``get_4bit_type``). Bytes = ceil(n/2) + ceil(n/64) + 4·ceil(ceil(n/64)/256)
  + 1024 + 4 + 64: 4.127 bits per weight for large n (the QLoRA paper's figure).
* **int8** — LLM.int8 (``Linear8bitLt(has_fp16_weights=False)``, ``Int8Params._quantize``:
  ``int8_vectorwise_quant``): int8 ``CB`` (out, in) and one fp32 scale per row ``SCB`` (out,). Bytes = n + 4·out.

The compute, as storage events (the transients are what decides the peak):

* nf4 forward (``Linear4bit.forward`` → ``matmul_4bit`` → ``gemm_4bit``, whose CUDA kernel takes the
  dequantise + ``F.linear`` fallback past M = 1536 rows, i.e. in training): input cast to the compute dtype,
  nested absmax dequantised to fp32 (n/64 floats) plus the offset, the whole weight dequantised to the
  compute dtype (a transient full-size copy), ``F.linear``; only the packed weight is saved for backward
  (``ctx.tensors = (None, B)``). Backward (``MatMul4Bit.backward``): the weight dequantised again, then
  ``grad_output @ W``. No weight gradient.
* int8 forward (``MatMul8bitLt.forward``, threshold 0: no outlier columns): input cast to fp16, row-wise int8
  quantisation (int8 copy of the input + fp32 row scales), int8 GEMM into int32, dequantised to fp16 and cast
  to the input dtype; the input is kept for backward. Backward: ``CB.to(dtype_A, copy=True).mul_(SCB / 127)``
  (a transient full-size copy of the weight) then ``grad_output @ W``. LLM.int8's outlier decomposition
  (threshold 6.0 in transformers) moves a data-dependent handful of columns to fp16: not modelled.

The compute dtype (``bnb_4bit_compute_dtype``) is the precision's: the autocast dtype under AMP, else the
parameter dtype."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchbudget.engine.ops import quantized as qops  # noqa: F401  (registers the torchbudget:: ops)

QUANTIZED_BASE_DTYPES = frozenset({"nf4", "int8"})
NF4_BLOCKSIZE = 64            # Params4bit's default blocksize
NESTED_BLOCKSIZE = 256        # quantize_4bit(compress_statistics=True): quantize_blockwise(absmax, blocksize=256)
DYNAMIC_MAP_SIZE = 256        # create_dynamic_map(): the 8-bit code of the nested absmax
NF4_TABLE_SIZE = 16           # get_4bit_type("nf4")
_ops = torch.ops.torchbudget


def _blocks(n: int, size: int) -> int:
    return -(-n // size)


def nf4_tensors(numel: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """name -> (shape, dtype) of what bitsandbytes stores for one nf4 weight of ``numel`` elements."""
    blocks = _blocks(numel, NF4_BLOCKSIZE)
    return {"weight": (((numel + 1) // 2, 1), torch.uint8),
            "absmax": ((blocks,), torch.uint8),
            "absmax2": ((_blocks(blocks, NESTED_BLOCKSIZE),), torch.float32),
            "code2": ((DYNAMIC_MAP_SIZE,), torch.float32),
            "offset": ((), torch.float32),
            "code": ((NF4_TABLE_SIZE,), torch.float32)}


def int8_tensors(out_features: int, in_features: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {"weight": ((out_features, in_features), torch.int8), "SCB": ((out_features,), torch.float32)}


def stored_bytes(base_dtype: str, out_features: int, in_features: int) -> int:
    """Bytes bitsandbytes keeps for one quantised (out_features × in_features) weight (the module docstring's
    formulas)."""
    tensors = (nf4_tensors(out_features * in_features) if base_dtype == "nf4"
               else int8_tensors(out_features, in_features))
    return sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size() for shape, dtype in tensors.values())


# ------------------------------------------------------------------------------------------------ nf4
def _dequantize_nf4(packed, absmax, absmax2, code2, offset, shape, dtype, *, in_place_offset: bool):
    """functional.dequantize_4bit (backward; offset added in place) or the gemm_4bit fallback (forward:
    ``absmax_dq + absmax_offset``): the nested absmax to fp32, then the full-size weight in ``dtype``."""
    scales = _ops.dequantize_blockwise(absmax, absmax2, code2, NESTED_BLOCKSIZE, torch.float32)
    scales = scales.add_(offset) if in_place_offset else scales + offset
    return _ops.dequantize_4bit(packed, scales, NF4_BLOCKSIZE, list(shape), dtype)


class _MatMul4Bit(torch.autograd.Function):
    """bitsandbytes' MatMul4Bit: dequantise, F.linear; backward dequantises again (no weight gradient)."""

    @staticmethod
    def forward(ctx, a, packed, bias, absmax, absmax2, code2, offset, shape):
        weight = _dequantize_nf4(packed, absmax, absmax2, code2, offset, shape, a.dtype, in_place_offset=False)
        out = F.linear(a, weight, bias)
        del weight
        ctx.save_for_backward(packed, absmax, absmax2, code2, offset)
        ctx.shape, ctx.dtype = shape, a.dtype
        return out

    @staticmethod
    def backward(ctx, grad_output):
        grad_a = None
        if ctx.needs_input_grad[0]:
            packed, absmax, absmax2, code2, offset = ctx.saved_tensors
            weight = _dequantize_nf4(packed, absmax, absmax2, code2, offset, ctx.shape, ctx.dtype,
                                     in_place_offset=True).to(grad_output.dtype)
            grad_a = torch.matmul(grad_output, weight)
        return grad_a, None, None, None, None, None, None, None


class Linear4bit(nn.Module):
    """Stands in for bitsandbytes' Linear4bit (nf4, double quantisation) in the trace's copy of the model. The
    module's ``weight`` is the logical (out, in) meta parameter (counts stay in weights, not packed bytes); the
    trace's stand-in for it is the packed uint8 storage, and the quantisation state is buffers."""

    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = compute_dtype
        self.weight = linear.weight
        self.bias = linear.bias
        for name, (shape, dtype) in nf4_tensors(linear.weight.numel()).items():
            if name != "weight":
                self.register_buffer(name, torch.empty(shape, dtype=dtype, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp_dtype = x.dtype
        x = x.to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        out = _MatMul4Bit.apply(x, self.weight, bias, self.absmax, self.absmax2, self.code2, self.offset,
                                (self.out_features, self.in_features))
        return out.to(inp_dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nf4"


# ----------------------------------------------------------------------------------------------- int8
class _MatMul8bitLt(torch.autograd.Function):
    """bitsandbytes' MatMul8bitLt with a frozen int8 weight and threshold 0."""

    @staticmethod
    def forward(ctx, a, cb, scb, bias):
        input_shape = a.shape
        a2 = a.reshape(-1, a.shape[-1]) if a.dim() == 3 else a
        ca, sca = _ops.int8_vectorwise_quant(a2.to(torch.float16))
        out32 = _ops.int8_linear_matmul(ca, cb)
        del ca
        out = _ops.int8_mm_dequant(out32, sca, scb, bias if bias is not None and bias.dtype == torch.float16 else None)
        del out32, sca
        if bias is not None and bias.dtype != torch.float16:
            out.add_(bias)
        out = out.to(a.dtype)
        ctx.a = a2              # ctx.tensors = (CAt, subA, A): the input stays alive until backward
        ctx.save_for_backward(cb, scb)
        ctx.grad_shape, ctx.dtype_a = input_shape, a.dtype
        return out.reshape(*input_shape[:-1], cb.shape[0])

    @staticmethod
    def backward(ctx, grad_output):
        grad_a = None
        if ctx.needs_input_grad[0]:
            cb, scb = ctx.saved_tensors
            if grad_output.dim() == 3:
                grad_output = grad_output.reshape(-1, grad_output.shape[-1]).contiguous()
            weight = cb.to(ctx.dtype_a, copy=True).mul_(scb.unsqueeze(1).mul(1.0 / 127.0))
            grad_a = torch.matmul(grad_output.to(ctx.dtype_a), weight).view(ctx.grad_shape)
        ctx.a = None
        return grad_a, None, None, None


class Linear8bitLt(nn.Module):
    """Stands in for bitsandbytes' Linear8bitLt(has_fp16_weights=False) in the trace's copy of the model."""

    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = compute_dtype
        self.weight = linear.weight
        self.bias = linear.bias
        shape, dtype = int8_tensors(self.out_features, self.in_features)["SCB"]
        self.register_buffer("SCB", torch.empty(shape, dtype=dtype, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)   # bnb casts the bias to the input's dtype
        return _MatMul8bitLt.apply(x, self.weight, self.SCB, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantized_linear(linear: nn.Linear, base_dtype: str, compute_dtype: torch.dtype) -> nn.Module:
    return (Linear4bit if base_dtype == "nf4" else Linear8bitLt)(linear, compute_dtype)


def weight_storage(module: nn.Module) -> tuple[tuple[int, ...], torch.dtype] | None:
    """(shape, dtype) the trace stores a quantised module's weight as; None for any other module."""
    if isinstance(module, Linear4bit):
        return nf4_tensors(module.weight.numel())["weight"]
    if isinstance(module, Linear8bitLt):
        return int8_tensors(module.out_features, module.in_features)["weight"]
    return None

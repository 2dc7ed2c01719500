"""Attention kernels: every SDPA backend and the MHA / encoder-layer fast paths.

MACs are the two matmuls (Q·Kᵀ and P·V; backward: the five matmuls incl. the recomputed scores),
via torch.utils.flop_counter's own shape formulas (GQA-aware). Causal masks are counted as the full
product, as FlopCounterMode does (what the kernels compute); the softmax inside a fused kernel is not added
(it is O(S²) vs the matmuls' O(S²·d)). The unfused "math" path decomposes into bmm + _softmax/_safe_softmax on
dispatch.

``--attention-flops causal`` (TraceOptions.attention_flops, the registry's ``attention-causal`` table): a fused
SDPA call with ``is_causal=True`` counts half its Sq×Sk products, forward and backward — FlashAttention's
benchmark convention, the one MFU figures in the Kaplan/Chinchilla style are compared with (exactly half:
the triangle's diagonal, Sq/2 more products, is not added). The convention cannot reach attention written as
matmuls — the math backend's bmm ops, a model's own ``q @ k.transpose``, a fused call given an explicit mask
tensor (padding, sliding windows, T5's position bias) — which carry no causal flag: those stay full."""
from __future__ import annotations

from functools import partial

from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import ops

register = partial(registry.register, op_kind=OpKind.ATTENTION)


@register(*ops("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
               "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention",
               "_scaled_dot_product_fused_attention_overrideable"),
          kind="macs")
def sdpa_macs(args, kwargs, out) -> int:
    """B·H·Sq·Sk·(Dqk + Dv) (Q·Kᵀ and P·V, causal counted full)."""
    q, k, v = args[0], args[1], args[2]
    return sdpa_flop_count(q.shape, k.shape, v.shape) // 2


@register(*ops("_scaled_dot_product_flash_attention_for_cpu_backward",
               "_scaled_dot_product_efficient_attention_backward",
               "_scaled_dot_product_flash_attention_backward",
               "_scaled_dot_product_cudnn_attention_backward",
               "_scaled_dot_product_fused_attention_overrideable_backward"),
          kind="macs")
def sdpa_backward_macs(args, kwargs, out) -> int:
    """five Sq×Sk matmuls: recomputed scores, dP, dV, dQ, dK."""
    grad_out, q, k, v = args[0], args[1], args[2], args[3]
    return sdpa_backward_flop_count(grad_out.shape, q.shape, k.shape, v.shape) // 2


def _mha_macs(query, key, embed_dim: int) -> int:
    """Q/K/V projections + Q·Kᵀ + P·V + output projection (batch-first [B, L, E])."""
    lq = query.shape[-2]
    lk = key.shape[-2]
    batch = query.shape[0] if query.dim() == 3 else 1
    e = embed_dim
    projections = batch * (lq * e * e + 2 * lk * e * e + lq * e * e)
    attention = 2 * batch * lq * lk * e
    return projections + attention


# ---------------------------------------------------------------------------- --attention-flops causal
CAUSAL_TABLE = "attention-causal"
CAUSAL_NOTE = ("attention FLOPs: causal convention: fused attention with is_causal counts half its Sq×Sk products; "
               "attention computed as matmuls or with a mask tensor is counted in full (docs/conventions.md)")
# where each fused kernel takes is_causal (its schema's position; kwargs otherwise)
_CAUSAL_ARG = {"_scaled_dot_product_flash_attention_for_cpu": 4, "_scaled_dot_product_efficient_attention": 6,
               "_scaled_dot_product_flash_attention": 4, "_scaled_dot_product_cudnn_attention": 6,
               "_scaled_dot_product_fused_attention_overrideable": 5,
               "_scaled_dot_product_flash_attention_for_cpu_backward": 7,
               "_scaled_dot_product_efficient_attention_backward": 11,
               "_scaled_dot_product_flash_attention_backward": 11,
               "_scaled_dot_product_cudnn_attention_backward": 14,
               "_scaled_dot_product_fused_attention_overrideable_backward": 13}


def _is_causal(args, kwargs, index: int) -> bool:
    return bool(args[index] if len(args) > index else kwargs.get("is_causal", False))


def _causal_formula(full, index: int):
    def formula(args, kwargs, out) -> int:
        macs = full(args, kwargs, out)
        return macs // 2 if _is_causal(args, kwargs, index) else macs
    formula.__doc__ = f"{(full.__doc__ or '').strip()} Half of it when is_causal (--attention-flops causal)."
    return formula


for _name, _index in _CAUSAL_ARG.items():
    register(*ops(_name), kind="macs", convention=CAUSAL_TABLE)(
        _causal_formula(sdpa_backward_macs if _name.endswith("_backward") else sdpa_macs, _index))


@register(*ops("_native_multi_head_attention"), kind="macs")
def native_mha_macs(args, kwargs, out) -> int:
    """B·(2·Lq + 2·Lk)·E² projections + 2·B·Lq·Lk·E attention (nn.MultiheadAttention fast path)."""
    return _mha_macs(args[0], args[1], int(args[3]))


@register(*ops("_transformer_encoder_layer_fwd"), kind="macs")
def encoder_layer_macs(args, kwargs, out) -> int:
    """self-attention as above + the two FFN linears B·L·E·F·2 (TransformerEncoderLayer fast path)."""
    src, embed_dim, ffn_weight_1 = args[0], int(args[1]), args[14]
    tokens = src.shape[0] * src.shape[1] if src.dim() == 3 else src.shape[0]
    ffn = 2 * tokens * ffn_weight_1.shape[0] * ffn_weight_1.shape[1]
    return _mha_macs(src, src, embed_dim) + ffn

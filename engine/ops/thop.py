"""Convention preset ``thop``: thop 0.0.31's module hooks, re-expressed per aten op.

thop's number is a MAC count ("flops" in its output), so every thop formula is registered as MACs.
Per op: convolution out_elements × (Cin/groups·prod(k) + 1 if bias) — also for transposed convs,
whose *output* elements thop counts; addmm/mm (nn.Linear) in_features per output element (our
default); batch norm 2 per input element (our default); leaky_relu 1 per element; avg_pool 1 per
output element; adaptive avg pool (prod(in // out) + 1) per output element (a 1×1 adaptive pool
dispatches as ``mean``: in + out elements, our default); upsample linear 5 / bilinear 11 /
bicubic 259 per output element. thop sees only the modules it has hooks for, so every other op
with a default formula (ReLU, max-pool, dropout, functional adds, softmax, bmm, backward and
optimizer ops) is 0 here. Known-zero and uncounted ops keep their status."""
from __future__ import annotations

import math

from torchbudget.engine.ops.pointwise import per_output_element
from torchbudget.engine.ops.registry import counted_packets, register
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import numel, ops

THOP = "thop"


@register(*ops("convolution", "_convolution", "convolution_overrideable"), kind="macs", op_kind=OpKind.CONV,
          convention=THOP)
def thop_conv_macs(args, kwargs, out) -> int:
    """output elements × (Cin/groups·prod(k) + [bias])"""
    x, w, bias, transposed, groups = args[0], args[1], args[2], bool(args[6]), int(args[8])
    cin_per_group = w.shape[0] // groups if transposed else w.shape[1]
    return numel(out) * (cin_per_group * math.prod(w.shape[2:]) + (1 if bias is not None else 0))


@register(*ops("_adaptive_avg_pool1d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d",
               "adaptive_avg_pool2d", "adaptive_avg_pool3d"), kind="macs", op_kind=OpKind.POOL, convention=THOP)
def thop_adaptive_avg_pool_macs(args, kwargs, out) -> int:
    """(prod(in // out) + 1) × output elements"""
    dims = len(args[1]) if isinstance(args[1], (list, tuple)) else 1
    kernel = [i // o for i, o in zip(args[0].shape[-dims:], out.shape[-dims:])]
    return (math.prod(kernel) + 1) * numel(out)


register(*ops("avg_pool1d", "avg_pool2d", "avg_pool3d"), kind="macs", op_kind=OpKind.POOL, convention=THOP)(per_output_element(1))
register(*ops("upsample_linear1d"), kind="macs", op_kind=OpKind.POOL, convention=THOP)(per_output_element(5))
register(*ops("upsample_bilinear2d"), kind="macs", op_kind=OpKind.POOL, convention=THOP)(per_output_element(11))
register(*ops("upsample_bicubic2d"), kind="macs", op_kind=OpKind.POOL, convention=THOP)(per_output_element(259))

# the default formulas thop agrees with (same count, thop reports it as MACs)
_SAME_AS_DEFAULT = {"aten.addmm", "aten.mm", "aten.native_batch_norm", "aten._native_batch_norm_legit",
                    "aten._native_batch_norm_legit_no_training", "aten.leaky_relu", "aten.leaky_relu_",
                    "aten.mean"}


def _thop_blind(args, kwargs, out) -> int:
    """0 (thop has no hook for it)"""
    return 0


def _register_thop_defaults() -> None:
    from torchbudget.engine.ops.registry import lookup
    for packet in counted_packets("default"):
        if str(packet) in _SAME_AS_DEFAULT:
            entry = lookup(packet)
            # re-registered as MACs: thop calls its count "flops" but it is a MAC count
            register(packet, kind="macs", op_kind=entry.op_kind, convention=THOP)(entry.formula)
        elif packet not in counted_packets(THOP):
            register(packet, kind="macs", op_kind=lookup(packet).op_kind, convention=THOP)(_thop_blind)


_register_thop_defaults()

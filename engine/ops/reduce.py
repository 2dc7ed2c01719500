"""Reductions, scans and scatter-accumulates: FLOPs per *input* element.

sum/amax/amin/max/min/prod/argmax/any/all/cumsum: 1 per input element; mean: 1 per input element
+ 1 divide per output element; var/std/norms: 2 per input element (+1 per output element for the
sqrt/divide); logsumexp: 3 per input element. Scatter-adds (index_add, scatter_add, embedding
backward, index_put with accumulate, col2im/fold): 1 per source element. Histograms (the token counts
per expert of a mixture-of-experts layer): bincount 1 per input element (its count increment, or the
weighted add), histc 4 (the bin position (x - min)·bins/(max - min): 3, and the increment). Negative
log-likelihood (cross-entropy after its log_softmax): 1 per target element (the picked log-probability summed,
or scattered back as the gradient)."""
from __future__ import annotations

from functools import partial

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import first_tensor, numel, ops, out_numel

register = partial(registry.register, op_kind=OpKind.REDUCTION)


@register(*ops("sum", "amax", "amin", "max", "min", "prod", "argmax", "argmin", "any", "all",
               "count_nonzero", "cumsum", "cumsum_", "cumprod", "cummax", "cummin", "aminmax", "nansum"))
def reduce_flops(args, kwargs, out) -> int:
    """1 × input elements"""
    return numel(args[0])


@register(*ops("mean", "nanmean"))
def mean_flops(args, kwargs, out) -> int:
    """input elements + output elements (sum, then divide)"""
    return numel(args[0]) + out_numel(out)


@register(*ops("var", "std", "var_mean", "std_mean", "linalg_vector_norm", "norm", "_foreach_norm_single"))
def variance_flops(args, kwargs, out) -> int:
    """2 × input elements + output elements"""
    return 2 * numel(args[0]) + out_numel(out)


@register(*ops("logsumexp"))
def logsumexp_flops(args, kwargs, out) -> int:
    """3 × input elements (subtract max, exp, add)"""
    return 3 * numel(args[0])


@register(*ops("index_add", "index_add_", "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_",
               "index_reduce"))
def scatter_add_flops(args, kwargs, out) -> int:
    """1 × source elements (args: self, dim, index, source)"""
    return numel(args[3])


@register(*ops("bincount"))
def bincount_flops(args, kwargs, out) -> int:
    """1 × input elements (one count increment, or weighted add, per element)"""
    return numel(args[0])


@register(*ops("histc"))
def histc_flops(args, kwargs, out) -> int:
    """4 × input elements (bin position (x - min)·bins/(max - min): 3, the count increment: 1)"""
    return 4 * numel(args[0])


@register(*ops("nll_loss_forward", "nll_loss2d_forward"))
def nll_loss_flops(args, kwargs, out) -> int:
    """1 × target elements (the picked log-probabilities summed; the mean's one divide not counted)"""
    return numel(args[1])


@register(*ops("nll_loss_backward", "nll_loss2d_backward"))
def nll_loss_backward_flops(args, kwargs, out) -> int:
    """1 × target elements (-grad_output / total weight scattered to each target's class)"""
    return numel(args[2])


@register(*ops("embedding_dense_backward", "embedding_backward"))
def embedding_backward_flops(args, kwargs, out) -> int:
    """1 × grad_output elements (rows scatter-added into the weight gradient)"""
    return numel(args[0])


@register(*ops("index_put", "index_put_", "_index_put_impl_"))
def index_put_flops(args, kwargs, out) -> int:
    """1 × value elements when accumulate=True (scatter-add); 0 for a plain indexed write (memory only)"""
    accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
    return numel(first_tensor(args[2])) if accumulate else 0


@register(*ops("col2im"))
def col2im_flops(args, kwargs, out) -> int:
    """1 × input (column) elements (overlapping patches summed into the image)"""
    return numel(args[0])

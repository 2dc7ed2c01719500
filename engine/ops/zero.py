"""Known-zero ops: no arithmetic. Three kinds, all reported with status ZERO:
views and metadata (no kernel at all), memory-only kernels (copy / concatenate / gather / pad /
nearest-upsample / embedding lookup / sort, topk, unique (comparisons only): they move bytes, which
the trace still records as bytes_read/bytes_written, but do no FLOPs), and allocation / constant fills."""
from __future__ import annotations

import torch

from torchbudget.engine.ops.registry import register_zero
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import ops

VIEWS = [
    "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "as_strided_", "t", "t_", "transpose",
    "transpose_", "permute", "expand", "slice", "select", "squeeze", "squeeze_", "unsqueeze", "unsqueeze_",
    "split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "unbind", "chunk", "narrow",
    "diagonal", "unfold", "alias", "detach", "detach_", "lift_fresh", "view_as_real", "view_as_complex",
    "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size",
    "_has_compatible_shallow_copy_type", "is_contiguous", "resize_", "set_", "_nested_tensor_size",
    "item", "_assert_async", "_assert_tensor_metadata", "_functional_assert_async",
]
MEMORY_ONLY = [
    "clone", "copy_", "_to_copy", "_copy_from", "_copy_from_and_resize", "lift_fresh_copy", "contiguous",
    "cat", "stack", "index_select", "gather", "index", "_unsafe_index", "take", "masked_select",
    "slice_backward", "select_backward", "slice_scatter", "select_scatter", "diagonal_scatter",
    "as_strided_scatter", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d", "roll", "flip", "repeat", "tile",
    "embedding", "scatter", "scatter_", "masked_scatter", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "native_channel_shuffle", "im2col", "tril", "triu", "nonzero", "sort", "topk",
    "_unique2", "_unique", "unique_dim", "unique_consecutive", "unique_dim_consecutive",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_nearest1d_backward",
    "upsample_nearest2d_backward", "upsample_nearest3d_backward", "_upsample_nearest_exact1d_backward",
    "_upsample_nearest_exact2d_backward", "_upsample_nearest_exact3d_backward",
    "_foreach_copy_", "_foreach_copy", "_to_dense", "to_dense",
]
ALLOCATION = [
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "ones",
    "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full", "fill", "fill_", "zero_",
    "_foreach_zero_", "scalar_tensor", "arange", "linspace", "eye", "_efficientzerotensor", "empty_permuted", "tensor",
]

register_zero(*ops(*VIEWS), op_kind=OpKind.VIEW)
register_zero(*ops(*MEMORY_ONLY), op_kind=OpKind.MEMORY)
register_zero(*ops(*ALLOCATION), op_kind=OpKind.ALLOCATION)
# profiler markers and device queries seen under a dispatch mode
register_zero(*ops("_record_function_enter", "_record_function_enter_new", "_record_function_exit",
                   namespace=torch.ops.profiler), op_kind=OpKind.VIEW)
register_zero(*ops("device", "layout", "dtype", namespace=torch.ops.prim), op_kind=OpKind.VIEW)

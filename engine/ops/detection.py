"""torchvision's detection ops (``torchvision::``), counted per channel like pooling.

roi_align / ps_roi_align: output elements × samples per bin × 10 — each sample is a bilinear
interpolation (9 FLOPs: 3 lerps of 3, as ``upsample_bilinear2d``) plus 1 add into the bin's average
(the final divide takes the first add's place); the sample coordinates, shared by all channels, are
not added. Samples per bin = sampling_ratio² when sampling_ratio > 0; the adaptive ratio (≤ 0)
depends on each box's size, so the worst case is taken: a box covering the whole feature map,
ceil(H / pooled_h) · ceil(W / pooled_w). Backward: the same per grad_output element.
nms over N boxes: 19 FLOPs per IoU pair over all N·(N−1)/2 pairs, as torchvision's CUDA kernel
(devIoU: 4 min/max, 2 widths, 2 clamps, 1 product, 6 for the two areas, 2 for the union, 1 divide,
1 compare) computes every pair whatever is kept; N itself is the trace's worst case (every box
passes the score filters). The sort by score is not counted (as ``sort``). roi_pool's bins are a
data-dependent max: uncounted."""
from __future__ import annotations

from functools import partial

import math

import torch

from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind
from torchbudget.engine.ops.shapes import numel, ops, out_numel

register = partial(registry.register, op_kind=OpKind.DETECTION)

try:
    import torchvision  # noqa: F401  (loads the torchvision:: ops)
except ImportError:  # no torchvision: nothing to register
    pass

vision = torch.ops.torchvision
BILINEAR_SAMPLE_FLOPS = 10   # 9 for the bilinear interpolation + 1 add into the bin's average
IOU_PAIR_FLOPS = 19


def samples_per_bin(sampling_ratio: int, feature_hw, pooled_hw) -> int:
    """sampling_ratio² (fixed), else the adaptive ratio's worst case: a box as large as the feature map."""
    if sampling_ratio > 0:
        return sampling_ratio * sampling_ratio
    return math.prod(math.ceil(size / pooled) for size, pooled in zip(feature_hw, pooled_hw))


def _roi_align(ratio_index: int):
    def formula(args, kwargs, out) -> int:
        pooled = (int(args[3]), int(args[4]))
        samples = samples_per_bin(int(args[ratio_index]), args[0].shape[-2:], pooled)
        return out_numel(out) * samples * BILINEAR_SAMPLE_FLOPS
    formula.__doc__ = "10 × output elements × samples per bin (sampling_ratio², adaptive: worst case)"
    return formula


register(*ops("roi_align", namespace=vision))(_roi_align(5))
register(*ops("ps_roi_align", namespace=vision))(_roi_align(5))


@register(*ops("_roi_align_backward", namespace=vision))
def roi_align_backward_flops(args, kwargs, out) -> int:
    """10 × grad_output elements × samples per bin (as the forward)"""
    grad, height, width, ratio = args[0], int(args[7]), int(args[8]), int(args[9])
    samples = samples_per_bin(ratio, (height, width), (int(args[3]), int(args[4])))
    return numel(grad) * samples * BILINEAR_SAMPLE_FLOPS


def all_pairs_nms_flops(boxes: int) -> int:
    return IOU_PAIR_FLOPS * (boxes * (boxes - 1) // 2)


@register(*ops("nms", namespace=vision))
def nms_flops(args, kwargs, out) -> int:
    """19 per IoU pair, all N·(N−1)/2 pairs (as the CUDA kernel)"""
    return all_pairs_nms_flops(args[0].shape[0])

"""Closed forms of the sampling and detection formulas: grid_sample, fold/unfold, unique,
torchvision's roi_align / ps_roi_align (and backward) and nms."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from torchbudget.engine.ops.detection import samples_per_bin
from torchbudget.engine.results import OpStatus
from tests.formula_capture import capture


def _statuses(counts, name):
    return {r.status for op, r, _ in counts.calls if op == name}


@pytest.mark.parametrize("mode, per_element", [("bilinear", 9), ("bicubic", 35), ("nearest", 0)])
def test_grid_sample_2d_costs_per_output_element(mode, per_element):
    n, c, h, w = 2, 3, 5, 6
    x, grid = torch.empty(n, c, 8, 8, device="meta"), torch.empty(n, h, w, 2, device="meta")
    counts = capture(lambda: F.grid_sample(x, grid, mode=mode, align_corners=False))
    assert counts.flops_by_op["aten.grid_sampler_2d"] == per_element * n * c * h * w
    assert _statuses(counts, "aten.grid_sampler_2d") == {OpStatus.COUNTED}


def test_grid_sample_3d_is_trilinear():
    x, grid = torch.empty(1, 2, 4, 4, 4, device="meta"), torch.empty(1, 3, 3, 3, 3, device="meta")
    counts = capture(lambda: F.grid_sample(x, grid, align_corners=True))
    assert counts.flops_by_op["aten.grid_sampler_3d"] == 21 * 2 * 27


@pytest.mark.parametrize("grid_grad", [False, True])
def test_grid_sample_backward_counts_each_requested_gradient(grid_grad):
    x = torch.empty(2, 4, 7, 7, device="meta", requires_grad=True)
    grid = torch.empty(2, 3, 5, 2, device="meta", requires_grad=grid_grad)
    counts = capture(lambda: F.grid_sample(x, grid, align_corners=False).sum().backward())
    forward = 9 * 2 * 4 * 3 * 5
    assert counts.flops_by_op["aten.grid_sampler_2d"] == forward
    assert counts.flops_by_op["aten.grid_sampler_2d_backward"] == forward * (2 if grid_grad else 1)


def test_fold_sums_every_column_element_and_unfold_is_a_gather():
    n, c, k, size = 2, 3, 2, 5
    blocks = (size - k + 1) ** 2
    columns = torch.empty(n, c * k * k, blocks, device="meta")
    counts = capture(lambda: F.fold(columns, (size, size), k))
    assert counts.flops_by_op["aten.col2im"] == n * c * k * k * blocks
    counts = capture(lambda: F.unfold(torch.empty(n, c, size, size, device="meta"), k))
    assert _statuses(counts, "aten.im2col") == {OpStatus.ZERO}


def test_unique_is_known_zero_like_sort():
    counts = capture(lambda: torch.unique(torch.tensor([3, 1, 3, 2]), return_counts=True))
    assert _statuses(counts, "aten._unique2") == {OpStatus.ZERO}


def test_roi_align_forward_and_backward():
    channels, boxes, pooled, ratio = 4, 3, (2, 3), 2
    x = torch.randn(1, channels, 10, 10, requires_grad=True)
    rois = torch.tensor([[0, 0, 0, 5, 5.0], [0, 1, 1, 9, 9], [0, 2, 0, 4, 8]])
    counts = capture(lambda: torchvision.ops.roi_align(x, rois, pooled, 1.0, ratio).sum().backward())
    expected = boxes * channels * math.prod(pooled) * ratio * ratio * 10
    assert counts.flops_by_op["torchvision.roi_align"] == expected
    assert counts.flops_by_op["torchvision._roi_align_backward"] == expected


def test_roi_align_adaptive_ratio_takes_a_box_as_large_as_the_feature_map():
    x = torch.empty(1, 4, 10, 10, device="meta")
    counts = capture(lambda: torchvision.ops.roi_align(x, torch.empty(3, 5, device="meta"), (2, 3), 1.0, -1))
    assert counts.flops_by_op["torchvision.roi_align"] == 3 * 4 * 6 * math.ceil(10 / 2) * math.ceil(10 / 3) * 10


def test_adaptive_worst_case_is_torchvisions_own_grid_for_a_full_map_box():
    """torchvision's adaptive ratio for a box covering a 12×12 map pooled to 3×3 is a 4×4 grid:
    its output equals the fixed ratio 4 and no other."""
    torch.manual_seed(0)
    x, full = torch.randn(1, 2, 12, 12), torch.tensor([[0, 0, 0, 12, 12.0]])
    adaptive = torchvision.ops.roi_align(x, full, 3, 1.0, -1)
    matching = [r for r in (2, 3, 4, 5, 6) if torch.allclose(adaptive, torchvision.ops.roi_align(x, full, 3, 1.0, r))]
    assert matching == [4]
    assert samples_per_bin(-1, (12, 12), (3, 3)) == 4 * 4


def test_ps_roi_align_counts_its_reduced_channels():
    pooled, ratio = 2, 2
    x = torch.randn(1, 8 * pooled * pooled, 6, 6)
    counts = capture(lambda: torchvision.ops.ps_roi_align(x, torch.tensor([[0, 0, 0, 4, 4.0]]), pooled, 1.0, ratio))
    assert counts.flops_by_op["torchvision.ps_roi_align"] == 8 * pooled * pooled * ratio * ratio * 10


@pytest.mark.parametrize("boxes", [1, 7, 40])
def test_nms_counts_every_pair_as_the_cuda_kernel(boxes):
    torch.manual_seed(boxes)
    corners = torch.rand(boxes, 2) * 10
    dets = torch.cat([corners, corners + 1 + torch.rand(boxes, 2)], dim=1)
    counts = capture(lambda: torchvision.ops.nms(dets, torch.rand(boxes), 0.5))
    assert counts.flops_by_op["torchvision.nms"] == 19 * boxes * (boxes - 1) // 2


def test_roi_heads_of_a_tiny_detector_are_fully_counted():
    """MultiScaleRoIAlign + batched nms as faster R-CNN uses them, on meta."""
    pool = torchvision.ops.MultiScaleRoIAlign(["p2"], 7, 2)
    features = {"p2": torch.empty(1, 16, 20, 20, device="meta")}
    proposals = [torch.empty(5, 4, device="meta")]
    counts = capture(lambda: pool(features, proposals, [(80, 80)]))
    assert not counts.uncounted
    assert counts.flops_by_op["torchvision.roi_align"] == 5 * 16 * 49 * 4 * 10

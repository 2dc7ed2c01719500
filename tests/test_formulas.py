"""Property tests: random layer configurations, output shapes against torch's own forward, MACs/FLOPs
against closed-form formulas written here independently of engine/ops."""
from __future__ import annotations

import math

import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from tests.formula_capture import capture

FAST = settings(max_examples=25, deadline=None)


def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_transpose_out(size, k, s, p, d, output_padding):
    return (size - 1) * s - 2 * p + d * (k - 1) + output_padding + 1


def meta_copy(module: nn.Module) -> nn.Module:
    return module.to("meta")


@st.composite
def conv_configs(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 2, 4]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    s = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    p = draw(st.integers(0, 2))
    size = draw(st.integers(d * (k - 1) + 1, 7))
    batch = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    return dims, groups, cin, cout, k, s, d, p, size, batch, bias


@FAST
@given(conv_configs())
def test_conv_shape_and_macs_match_closed_form(config):
    dims, groups, cin, cout, k, s, d, p, size, batch, bias = config
    conv_cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    layer = conv_cls(cin, cout, k, stride=s, padding=p, dilation=d, groups=groups, bias=bias)
    x_shape = (batch, cin) + (size,) * dims
    real_out = layer(torch.randn(x_shape))
    out_size = conv_out(size, k, s, p, d)
    assert tuple(real_out.shape) == (batch, cout) + (out_size,) * dims

    counts = capture(meta_copy(layer), torch.empty(x_shape, device="meta"))
    expected_macs = batch * cout * out_size ** dims * (cin // groups) * k ** dims
    assert counts.macs_by_op["aten.convolution"] == expected_macs
    assert counts.flops == 2 * expected_macs  # bias folded in: no extra FLOP


@FAST
@given(groups=st.sampled_from([1, 2]), cin_mult=st.integers(1, 3), cout_mult=st.integers(1, 3),
       k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), op_extra=st.integers(0, 2),
       size=st.integers(1, 6), batch=st.integers(1, 2))
def test_conv_transpose_counts_input_positions(groups, cin_mult, cout_mult, k, s, p, op_extra, size, batch):
    output_padding = min(op_extra, s - 1)  # torch requires output_padding < stride
    cin, cout = groups * cin_mult, groups * cout_mult
    out_size = conv_transpose_out(size, k, s, p, 1, output_padding)
    if out_size < 1:
        return
    layer = nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=output_padding, groups=groups)
    x_shape = (batch, cin, size, size)
    assert tuple(layer(torch.randn(x_shape)).shape) == (batch, cout, out_size, out_size)

    counts = capture(meta_copy(layer), torch.empty(x_shape, device="meta"))
    # every input element meets every tap of its group's Cout/groups filters once
    expected_macs = batch * size * size * cin * (cout // groups) * k * k
    assert counts.macs_by_op["aten.convolution"] == expected_macs


@FAST
@given(kind=st.sampled_from(["max", "avg"]), k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2),
       channels=st.integers(1, 4), size=st.integers(4, 9), batch=st.integers(1, 2))
def test_pool_shape_and_flops(kind, k, s, p, channels, size, batch):
    if 2 * p > k:  # torch: padding must be at most half the kernel
        p = k // 2
    layer = nn.MaxPool2d(k, s, p) if kind == "max" else nn.AvgPool2d(k, s, p)
    x_shape = (batch, channels, size, size)
    out_size = conv_out(size, k, s, p, 1)
    assert tuple(layer(torch.randn(x_shape)).shape) == (batch, channels, out_size, out_size)
    counts = capture(layer, torch.empty(x_shape, device="meta"))
    assert counts.flops == k * k * channels * out_size * out_size * batch  # seed: k²·C·Hout·Wout
    assert counts.macs == 0 and not counts.uncounted


@FAST
@given(in_features=st.integers(1, 16), out_features=st.integers(1, 16), lead=st.lists(st.integers(1, 3), max_size=2),
       bias=st.booleans())
def test_linear_macs(in_features, out_features, lead, bias):
    layer = nn.Linear(in_features, out_features, bias=bias)
    x_shape = tuple(lead) + (in_features,)
    assert tuple(layer(torch.randn(x_shape)).shape) == tuple(lead) + (out_features,)
    counts = capture(meta_copy(layer), torch.empty(x_shape, device="meta"))
    assert counts.macs == math.prod(lead) * in_features * out_features
    assert not counts.uncounted


@FAST
@given(b=st.integers(1, 3), m=st.integers(1, 8), k=st.integers(2, 8), n=st.integers(1, 8))
def test_einsum_and_matmul_decompose_to_counted_products(b, m, k, n):
    # (k == 1 einsum dispatches as a broadcast mul: 1 FLOP per output element, no MACs)
    x = torch.empty(b, m, k, device="meta")
    y = torch.empty(b, k, n, device="meta")
    for fn in (lambda: torch.einsum("bmk,bkn->bmn", x, y), lambda: x @ y):
        counts = capture(fn)
        assert counts.macs == b * m * k * n
        assert not counts.uncounted


@FAST
@given(b=st.integers(1, 2), h=st.integers(1, 4), sq=st.integers(1, 9),
       sk=st.integers(1, 9), d=st.integers(1, 8), dv=st.integers(1, 8))
def test_sdpa_cpu_kernel_and_backward(b, h, sq, sk, d, dv):
    q = torch.empty(b, h, sq, d, device="meta")
    k = torch.empty(b, h, sk, d, device="meta")
    v = torch.empty(b, h, sk, dv, device="meta")
    forward = b * h * sq * sk * (d + dv)  # Q·Kᵀ and P·V
    aten = torch.ops.aten
    for op in (aten._scaled_dot_product_efficient_attention,):
        counts = capture(lambda: op(q, k, v, None, False))
        assert counts.macs == forward
    if d == dv:  # the CPU flash kernel needs equal head dims
        counts = capture(lambda: aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, is_causal=True))
        assert counts.macs == forward  # causal counted as the full product
        out = torch.empty(b, h, sq, dv, device="meta")
        lse = torch.empty(b, h, sq, device="meta")
        counts = capture(lambda: aten._scaled_dot_product_flash_attention_for_cpu_backward(
            out, q, k, v, out, lse, 0.0, False))
        # recomputed scores, dP, dV, dQ, dK: 2 products of d and 3 of dv... written out per matmul
        assert counts.macs == b * h * (sq * sk * d + sq * sk * dv + sk * sq * dv + sq * sk * d + d * sq * sk)

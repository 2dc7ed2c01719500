"""Formula checks beyond the layer shapes: backward ops against FlopCounterMode, adaptive pooling
against torch's own windows, optimizer steps, normalisation/softmax dispatch, the thop preset per op."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tests.formula_capture import capture

FAST = settings(max_examples=20, deadline=None)


@FAST
@given(transposed=st.booleans(), groups=st.sampled_from([1, 2, 4]), k=st.integers(1, 3), s=st.integers(1, 2),
       size=st.integers(3, 8), input_grad=st.booleans())
def test_conv_backward_is_forward_per_gradient(transposed, groups, k, s, size, input_grad):
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    layer = cls(4, 8, k, stride=s, groups=groups).to("meta")
    x = torch.empty(2, 4, size, size, device="meta", requires_grad=input_grad)

    def step():
        layer(x).sum().backward()

    counts = capture(step)
    forward = counts.flops_by_op["aten.convolution"]
    gradients = 2 if input_grad else 1  # grad_weight always, grad_input only when x needs it
    assert counts.flops_by_op["aten.convolution_backward"] == gradients * forward
    if groups == 1:  # FlopCounterMode's grad_weight term ignores groups, so compare only ungrouped
        with FlopCounterMode(display=False) as reference:
            step()
        assert counts.flops_by_op["aten.convolution_backward"] == \
            reference.get_flop_counts()["Global"][torch.ops.aten.convolution_backward]


def _taps_from_torch(in_size: int, out_size: int, pool) -> int:
    """Σ over output cells of their window size, read off torch itself: set one input cell at a time
    and count the output cells that change."""
    taps = 0
    for i in range(in_size):
        for j in range(in_size):
            x = torch.zeros(1, 1, in_size, in_size)
            x[0, 0, i, j] = 1.0
            taps += int((pool(x, out_size) != 0).sum())
    return taps


@FAST
@given(in_size=st.integers(1, 9), out_size=st.integers(1, 9), channels=st.integers(1, 3))
def test_adaptive_pool_counts_torchs_windows(in_size, out_size, channels):
    for pool in (F.adaptive_avg_pool2d, lambda t, o: F.adaptive_max_pool2d(t, o)):
        counts = capture(lambda: pool(torch.empty(2, channels, in_size, in_size, device="meta"), out_size))
        taps = _taps_from_torch(in_size, out_size, pool)
        if out_size == 1 and pool is F.adaptive_avg_pool2d:  # dispatches as mean: + 1 divide per output
            assert counts.flops == 2 * channels * (taps + 1)
        else:
            assert counts.flops == 2 * channels * taps


def _params(numels, device="meta"):
    return [nn.Parameter(torch.zeros(n, device=device)) for n in numels]


def _step(optimizer_cls, params, **kwargs):
    optimizer = optimizer_cls(params, **kwargs)
    for p in params:
        p.grad = torch.zeros_like(p)
    return capture(optimizer.step)


def test_optimizer_steps_count_per_parameter_element():
    numels = [3, 50, 7]
    total = sum(numels)
    foreach = _step(torch.optim.AdamW, _params(numels), foreach=True)
    assert foreach.flops_by_op["aten._foreach_lerp_"] == 3 * total
    assert foreach.flops_by_op["aten._foreach_addcmul_"] == 3 * total
    assert foreach.flops_by_op["aten._foreach_addcdiv_"] == 3 * total
    assert foreach.flops_by_op["aten._foreach_add_"] >= total  # eps add (+ one per step counter)
    assert not foreach.uncounted
    # fused kernels refuse meta tensors; tiny CPU tensors are as good (only shapes are read)
    fused = _step(torch.optim.AdamW, _params(numels, "cpu"), fused=True)
    assert fused.flops_by_op["aten._fused_adamw_"] == 14 * total
    sgd = _step(torch.optim.SGD, _params(numels, "cpu"), lr=0.1, momentum=0.9, fused=True)
    assert sgd.flops_by_op["aten._fused_sgd_"] == 4 * total  # momentum buffers are passed in
    plain = _step(torch.optim.SGD, _params(numels, "cpu"), lr=0.1, fused=True)
    assert plain.flops_by_op["aten._fused_sgd_"] == 2 * total
    assert not (fused.uncounted or sgd.uncounted or plain.uncounted)


def test_norms_and_softmax_dispatch_to_their_documented_counts():
    ln = nn.LayerNorm(16).to("meta")
    x = torch.empty(3, 5, 16, device="meta", requires_grad=True)

    def step():
        ln(x).softmax(-1).sum().backward()

    counts = capture(step)
    n = x.numel()
    assert counts.flops_by_op["aten.native_layer_norm"] == 5 * n
    assert counts.flops_by_op["aten.native_layer_norm_backward"] == 10 * n
    assert counts.flops_by_op["aten._softmax"] == 5 * n
    assert counts.flops_by_op["aten._softmax_backward_data"] == 4 * n
    assert not counts.uncounted


def test_upsample_and_embedding():
    x = torch.empty(1, 2, 4, 4, device="meta")
    bilinear = capture(lambda: F.interpolate(x, scale_factor=2, mode="bilinear"))
    assert bilinear.flops == 9 * 2 * 8 * 8
    nearest = capture(lambda: F.interpolate(x, scale_factor=2, mode="nearest"))
    assert nearest.flops == 0 and not nearest.uncounted
    emb = nn.Embedding(10, 4).to("meta")
    counts = capture(lambda: emb(torch.zeros(2, 3, dtype=torch.long, device="meta")))
    assert counts.flops == 0 and not counts.uncounted


@FAST
@given(k=st.integers(1, 4), s=st.integers(1, 3), size=st.integers(1, 6), bias=st.booleans())
def test_thop_preset_conv_transpose_counts_output_elements(k, s, size, bias):
    layer = nn.ConvTranspose2d(4, 6, k, stride=s, bias=bias).to("meta")
    x = torch.empty(1, 4, size, size, device="meta")
    out_size = (size - 1) * s + k
    thop = capture(layer, x, convention="thop")
    # thop 0.0.31 count_convNd: y.nelement() * (in_channels // groups * prod(k) + bias)
    assert thop.macs == 6 * out_size ** 2 * (4 * k * k + int(bias))
    default = capture(layer, x)
    assert default.macs == size * size * 4 * 6 * k * k
    assert math.isclose(thop.macs / max(default.macs, 1), (out_size / size) ** 2 * (1 + bias / (4 * k * k)))


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 2), length=st.integers(1, 6), heads=st.sampled_from([1, 2, 4]),
       head_dim=st.integers(1, 4), ffn=st.integers(1, 24))
def test_mha_and_encoder_fast_paths(batch, length, heads, head_dim, ffn):
    """Eval + no_grad on CPU takes the fused fast paths where torch allows (FlopCounterMode counts them
    as 0); other shapes take the decomposed path. Both must give the closed form."""
    e = heads * head_dim
    x = torch.randn(batch, length, e)
    attention = 4 * batch * length * e * e + 2 * batch * length * length * e  # 4 projections, Q·Kᵀ, P·V
    mha = nn.MultiheadAttention(e, heads, batch_first=True).eval()
    enc = nn.TransformerEncoderLayer(e, heads, ffn, batch_first=True).eval()
    with torch.no_grad():
        mha_counts = capture(lambda: mha(x, x, x, need_weights=False))
        enc_counts = capture(lambda: enc(x))
    assert mha_counts.macs == attention
    assert enc_counts.macs == attention + 2 * batch * length * e * ffn
    assert not (mha_counts.uncounted or enc_counts.uncounted)


def test_fast_paths_are_the_fused_ops():
    x = torch.randn(2, 5, 16)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    enc = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True).eval()
    with torch.no_grad():
        assert [n for n, _, _ in capture(lambda: mha(x, x, x, need_weights=False)).calls] == \
            ["aten._native_multi_head_attention"]
        assert [n for n, _, _ in capture(lambda: enc(x)).calls] == ["aten._transformer_encoder_layer_fwd"]


def test_backend_specific_conv_ops_share_the_formula():
    """The backend ops a CPU trace can reach directly, called on tiny CPU tensors."""
    aten = torch.ops.aten
    x, w = torch.randn(2, 4, 7, 7), torch.randn(6, 4, 3, 3)
    regular = 2 * 6 * 5 * 5 * 4 * 3 * 3  # B · Cout · Hout·Wout · Cin · k²
    calls = {
        "mkldnn_convolution": lambda: aten.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1),
        "_slow_conv2d_forward": lambda: aten._slow_conv2d_forward(x, w, [3, 3], None, [1, 1], [0, 0]),
        "slow_conv_dilated2d": lambda: aten.slow_conv_dilated2d(x, w, [3, 3], None, [1, 1], [0, 0], [1, 1]),
    }
    for name, call in calls.items():
        assert capture(call).macs == regular, name
    wt = torch.randn(4, 6, 3, 3)  # transposed: [Cin, Cout, k, k]
    transposed = capture(lambda: aten.slow_conv_transpose2d(x, wt, [3, 3], None, [2, 2], [0, 0], [0, 0], [1, 1]))
    assert transposed.macs == 2 * 7 * 7 * 4 * 6 * 3 * 3  # B · input positions · Cin · Cout · k²

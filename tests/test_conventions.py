"""The seed documents' layer formulas, the thop preset's published AlexNet figures, the registry's
three-way classification, agreement with FlopCounterMode, and full coverage of torchvision training."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torchbudget.engine.api import analyze
from torchbudget.engine.ops import registry
from torchbudget.engine.results import OpKind, OpStatus
from tests.formula_capture import capture

ROOT = Path(__file__).resolve().parents[1]


def test_seed_conv_params_and_flops():
    c, cout, k, h = 6, 8, 3, 10
    conv = nn.Conv2d(c, cout, k, padding=1)
    assert sum(p.numel() for p in conv.parameters()) == k * k * c * cout + cout
    counts = capture(conv.to("meta"), torch.empty(1, c, h, h, device="meta"))
    hout = (h + 2 * 1 - k) // 1 + 1
    assert counts.flops == 2 * c * k * k * hout * hout * cout  # seed: bias folded in


@pytest.mark.parametrize("training", [False, True])
def test_seed_batch_norm(training):
    c, h, w = 5, 7, 6
    bn = nn.BatchNorm2d(c).train(training)
    assert sum(p.numel() for p in bn.parameters()) == 2 * c
    counts = capture(bn.to("meta"), torch.empty(1, c, h, w, device="meta"))
    bn_flops = sum(r.flops for name, r, _ in counts.calls if "batch_norm" in name)
    assert bn_flops == 2 * c * h * w


def test_seed_pooling_relu_and_transposed_output_size():
    c, h, k, s = 4, 12, 2, 2
    counts = capture(nn.MaxPool2d(k, s), torch.empty(1, c, h, h, device="meta"))
    hout = (h - k) // s + 1
    assert counts.flops == k * k * c * hout * hout
    counts = capture(nn.ReLU(), torch.empty(1, c, h, h, device="meta"))
    assert counts.flops == c * h * h
    layer = nn.ConvTranspose2d(c, 3, 3, stride=2, padding=1, output_padding=1)
    assert layer(torch.randn(1, c, h, h)).shape[-1] == (h - 1) * 2 - 2 * 1 + 3 + 1
    assert sum(p.numel() for p in layer.parameters()) == 3 * 3 * c * 3 + 3


@pytest.mark.parametrize("shape, thop_0_0_31", [((1, 3, 224, 224), 714_691_904),
                                                 ((1, 3, 512, 512), 3_710_034_752),
                                                 ((8, 3, 224, 224), 5_717_535_232)])
def test_thop_preset_reproduces_seed_alexnet(shape, thop_0_0_31):
    result = analyze("alexnet", "x".join(map(str, shape)), convention="thop")
    assert result.totals.macs == thop_0_0_31


def test_default_alexnet_macs_are_conv_plus_linear():
    with torch.device("meta"):
        model = torchvision.models.alexnet(weights=None)
        x = torch.empty(1, 3, 224, 224)
    expected = 0
    for layer in model.features:
        y = layer(x)
        if isinstance(layer, nn.Conv2d):
            expected += y.numel() * layer.in_channels * math.prod(layer.kernel_size)
        x = y
    expected += sum(m.in_features * m.out_features for m in model.classifier if isinstance(m, nn.Linear))
    assert analyze("alexnet", "1x3x224x224").totals.macs == expected


def test_matmul_like_flops_equal_flop_counter_mode_in_training():
    with torch.device("meta"):
        model = torchvision.models.resnet18(weights=None)
        x = torch.randn(2, 3, 64, 64)

    def step():
        model(x).sum().backward()

    with FlopCounterMode(display=False) as reference:
        step()
    model.zero_grad(set_to_none=True)
    counts = capture(step)
    matmul_flops = sum(r.flops for _, r, _ in counts.calls if r.matmul_like)
    assert matmul_flops == reference.get_total_flops()
    assert counts.flops_by_op["aten.convolution_backward"] == 2 * counts.flops_by_op["aten.convolution"] \
        - 2 * 2 * 64 * 32 * 32 * 3 * 7 * 7  # the stem conv needs no grad_input (the image)


def test_registry_rejects_duplicates_and_reports_unknown_ops():
    with pytest.raises(ValueError, match="twice"):
        registry.register(torch.ops.aten.mm, op_kind=OpKind.MATMUL)(lambda a, k, o: 0)
    with pytest.raises(ValueError, match="twice"):
        registry.register_zero(torch.ops.aten.view, op_kind=OpKind.VIEW)
    x = torch.empty(3, 3, device="meta")
    unknown = registry.count(torch.ops.aten.linalg_det.default, (x,), {}, torch.empty((), device="meta"))
    assert unknown.status is OpStatus.UNCOUNTED
    view = registry.count(torch.ops.aten.view.default, (x, [9]), {}, x.view(9))
    assert view.status is OpStatus.ZERO and view.flops == 0 and view.op_kind is OpKind.VIEW


def test_every_registered_op_has_a_formula_or_is_known_zero():
    for convention in ("default", "thop"):
        for name, status in registry.registered_ops(convention).items():
            packet = registry.packet_named(name)
            if status == "counted":
                assert registry.lookup(packet, convention) is not None, name
            else:
                assert status == "zero" and registry.is_known_zero(packet), name


def test_conventions_doc_lists_every_registered_op():
    doc = (ROOT / "docs" / "conventions.md").read_text()
    missing = [name for name in registry.registered_ops() if f"`{name}`" not in doc]
    assert not missing, f"docs/conventions.md does not list {missing[:10]}"


def test_conventions_doc_table_is_the_generated_one():
    from torchbudget.engine.ops.catalog import markdown_table
    doc = (ROOT / "docs" / "conventions.md").read_text()
    assert markdown_table() in doc, "regenerate the table: see engine/ops/catalog.py"


@pytest.mark.parametrize("name", ["resnet18", "swin_t", "densenet121", "efficientnet_b0",
                                  "lraspp_mobilenet_v3_large"])  # ViT: the trace test below
def test_torchvision_training_step_has_no_uncounted_ops(name):
    seg = name in torchvision.models.list_models(module=torchvision.models.segmentation)
    with torch.device("meta"):
        kwargs = {"weights": None, **({"weights_backbone": None} if seg else {})}
        model = torchvision.models.get_model(name, **kwargs)
        x = torch.randn(2, 3, 64, 64) if name == "swin_t" else torch.randn(2, 3, 32, 32)
        optimizer = torch.optim.AdamW(model.parameters(), foreach=True)

    def step():
        out = model(x)
        (out["out"] if seg else out).sum().backward()
        optimizer.step()

    counts = capture(step)
    assert not counts.uncounted
    assert counts.flops_by_op["aten._foreach_lerp_"] == 3 * sum(p.numel() for p in model.parameters())


def test_trace_of_vit_training_step_is_fully_counted():
    """Through the real trace in training, for an H100 (fp32: memory-efficient attention) and for the CPU
    (its flash kernel): the fused kernel and its backward, by the registry's kind tag."""
    for target, kernel in (("sm90", "efficient_attention"), ("cpu", "flash_attention_for_cpu")):
        result = analyze("vit_b_16", "1x3x224x224", mode="train", target=target)
        assert result.uncounted_ops == ()
        tokens, heads, head_dim, layers = 197, 12, 64, 12
        forward = heads * tokens * tokens * 2 * head_dim  # Q·Kᵀ + P·V per layer
        attention = [op for op in result.ops if op.kind is OpKind.ATTENTION]
        assert all(kernel in op.op for op in attention)
        assert sum(op.macs for op in attention if "backward" not in op.op) == layers * forward
        assert sum(op.macs for op in attention if "backward" in op.op) == layers * forward * 5 // 2


def test_a_formula_that_cannot_read_a_call_raises_to_the_recorder():
    # the registry does not swallow a formula's error: the recorder is the one boundary that reports it
    with pytest.raises((TypeError, IndexError, AttributeError)):
        registry.count(torch.ops.aten.convolution.default, (None, None), {}, None)

"""Seed 001: AlexNet's 61,100,840 params, its pure MAC count and how it scales with batch and
resolution, layer by layer from the seed's formulas, and thop 0.0.31's three numbers exactly."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import torchvision
from torch import nn

from torchbudget.engine.api import analyze


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """The seed: H_out = (H + 2·padding − kernel) / stride + 1 (floored), for convs and pools."""
    return (size + 2 * padding - kernel) // stride + 1


def _first(value):
    return value[0] if isinstance(value, tuple) else value


@lru_cache(maxsize=1)
def _alexnet() -> nn.Module:
    with torch.device("meta"):  # only the layer hyper-parameters are read
        return torchvision.models.alexnet(weights=None)


def alexnet_layers(batch: int, height: int, width: int) -> dict[str, dict]:
    """Per-layer expectations from the seed's formulas, walking torchvision's AlexNet definition."""
    model = _alexnet()
    expected: dict[str, dict] = {}
    channels, h, w = 3, height, width
    for index, layer in enumerate(model.features):
        path = f"features.{index}"
        if isinstance(layer, nn.Conv2d):
            k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
            h, w = conv_out(h, k, s, p), conv_out(w, k, s, p)
            cout = layer.out_channels
            expected[path] = {"params": k * k * channels * cout + cout, "shape": (batch, cout, h, w),
                              "macs": batch * channels * k * k * h * w * cout}
            channels = cout
        elif isinstance(layer, nn.MaxPool2d):
            h, w = (conv_out(x, layer.kernel_size, layer.stride, layer.padding) for x in (h, w))
            expected[path] = {"params": 0, "shape": (batch, channels, h, w), "macs": 0}
        else:
            expected[path] = {"params": 0, "shape": (batch, channels, h, w), "macs": 0}
    for index, layer in enumerate(model.classifier):
        if isinstance(layer, nn.Linear):
            expected[f"classifier.{index}"] = {"params": layer.in_features * layer.out_features + layer.out_features,
                                               "shape": (batch, layer.out_features),
                                               "macs": batch * layer.in_features * layer.out_features}
    assert model.classifier[1].in_features == channels * 6 * 6  # the adaptive pool always yields 6x6
    return expected


def alexnet_pure_macs(batch: int, height: int, width: int) -> int:
    return sum(layer["macs"] for layer in alexnet_layers(batch, height, width).values())


@pytest.fixture(scope="module")
def base():
    return analyze("alexnet", "1x3x224x224")


def test_params_are_the_seeds(base):
    assert base.totals.params == base.totals.trainable_params == 61_100_840
    assert base.totals.param_bytes == 61_100_840 * 4


def test_pure_macs_at_224(base):
    assert alexnet_pure_macs(1, 224, 224) == 714_188_480  # the formulas reproduce the brief's number
    assert base.totals.macs == 714_188_480
    assert base.totals.flops >= 2 * base.totals.macs  # + ReLU, pooling


@pytest.mark.parametrize("batch, size", [(1, 224), (8, 224), (1, 512), (2, 300)])
def test_layer_by_layer(batch, size):
    result = analyze("alexnet", f"{batch}x3x{size}x{size}")
    for path, layer in alexnet_layers(batch, size, size).items():
        node = result.module(path)
        assert (node.params, node.output_shapes, node.macs) == (layer["params"], (layer["shape"],), layer["macs"]), path
    assert result.totals.macs == alexnet_pure_macs(batch, size, size)


def test_scaling_with_batch_and_resolution(base):
    batch8 = analyze("alexnet", "8x3x224x224")
    assert batch8.totals.macs == 8 * base.totals.macs and batch8.totals.flops == 8 * base.totals.flops
    assert batch8.totals.params == base.totals.params  # params do not depend on the input
    big = analyze("alexnet", "1x3x512x512")
    assert big.totals.macs == alexnet_pure_macs(1, 512, 512)
    assert big.totals.params == base.totals.params


@pytest.mark.parametrize("shape, thop_macs", [
    ("1x3x224x224", 714_691_904),     # the seed's thop 0.0.31 output
    ("1x3x512x512", 3_710_034_752),
    ("8x3x224x224", 5_717_535_232),
])
def test_thop_convention_reproduces_the_seed(shape, thop_macs):
    result = analyze("alexnet", shape, convention="thop")
    assert result.totals.macs == thop_macs
    assert result.options.convention == "thop"

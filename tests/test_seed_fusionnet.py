"""Seed 000: the FusionNet (input_nc=1, output_nc=1, ngf=32), checked layer by layer against the seed's
formulas for conv, BN, pooling, ReLU and transposed conv (params, output size, FLOPs). The shapes each
layer sees come from a real CPU forward with hooks; the expected numbers are computed here."""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torchbudget.engine.api import analyze

MODELS = Path(__file__).parent / "models"
SPEC = f"{MODELS / 'fusionnet.py'}:FusionNet"
KWARGS = {"input_nc": 1, "output_nc": 1, "ngf": 32}
BATCH, SIZE = 2, 64  # four 2x poolings: the side must divide by 16


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """The seed: H_out = (H + 2·padding − kernel) / stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def deconv_out(size: int, kernel: int, stride: int, padding: int, output_padding: int) -> int:
    """The seed: H_out = (H − 1)·stride − 2·padding + kernel + output_padding."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


@pytest.fixture(scope="module")
def reference():
    """A real CPU FusionNet: each leaf module's (input shape, output shape) per call."""
    sys.path.insert(0, str(MODELS))
    try:
        from fusionnet import FusionNet
    finally:
        sys.path.remove(str(MODELS))
    torch.manual_seed(0)
    model = FusionNet(**KWARGS)
    calls: dict[str, list] = defaultdict(list)
    names = {id(m): n for n, m in model.named_modules()}  # a shared module keeps its first name
    handles = [m.register_forward_hook(lambda mod, args, out: calls[names[id(mod)]].append(
        (tuple(args[0].shape), tuple(out.shape)))) for m in model.modules() if not list(m.children())]
    x = torch.randn(BATCH, 1, SIZE, SIZE)
    with torch.no_grad():
        model.eval()(x)
        for handle in handles:
            handle.remove()
        with FlopCounterMode(display=False) as counter:
            model(x)
    return model, dict(calls), counter.get_total_flops()


@pytest.fixture(scope="module")
def result():
    return analyze(SPEC, f"{BATCH}x1x{SIZE}x{SIZE}", model_kwargs=KWARGS)


def test_params_match_the_seed_and_torch(result, reference):
    model, _, _ = reference
    assert result.module("down_1").params == 37_632  # the seed's hand count
    assert result.totals.params == sum(p.numel() for p in model.parameters())
    assert result.coverage == 1.0 and not result.uncounted_ops


def _expected(module: nn.Module, calls: list) -> tuple[int, int, tuple]:
    """(params, FLOPs summed over calls, last output shape) from the seed's formulas."""
    flops, shape = 0, None
    for in_shape, _ in calls:
        b, c, h, w = in_shape
        if isinstance(module, nn.Conv2d):
            k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
            shape = (b, module.out_channels, conv_out(h, k, s, p), conv_out(w, k, s, p))
            flops += b * 2 * c * k * k * shape[2] * shape[3] * module.out_channels  # bias folded in (seed)
        elif isinstance(module, nn.ConvTranspose2d):
            k, s, p, op = module.kernel_size[0], module.stride[0], module.padding[0], module.output_padding[0]
            shape = (b, module.out_channels, deconv_out(h, k, s, p, op), deconv_out(w, k, s, p, op))
            flops += b * 2 * c * k * k * h * w * module.out_channels  # every input element × every tap
        elif isinstance(module, nn.BatchNorm2d):
            shape = in_shape
            flops += b * 2 * c * h * w
        elif isinstance(module, nn.MaxPool2d):
            k, s, p = module.kernel_size, module.stride, module.padding
            shape = (b, c, conv_out(h, k, s, p), conv_out(w, k, s, p))
            flops += b * k * k * c * shape[2] * shape[3]
        elif isinstance(module, (nn.ReLU, nn.LeakyReLU)):
            shape = in_shape
            flops += b * c * h * w
        else:
            raise AssertionError(f"no seed formula for {type(module).__name__}")
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        k = module.kernel_size[0]
        params = k * k * module.in_channels * module.out_channels + module.out_channels
    elif isinstance(module, nn.BatchNorm2d):
        params = 2 * module.num_features
    else:
        params = 0
    return params, flops, shape


def test_every_layer_follows_the_seed_formulas(result, reference):
    model, calls, _ = reference
    checked = defaultdict(int)
    for path, module in model.named_modules():
        if list(module.children()):
            continue
        params, flops, shape = _expected(module, calls[path])
        assert shape == calls[path][-1][1], f"seed output-size formula vs torch at {path}"
        node = result.module(path)
        assert (node.params, node.flops, node.output_shapes, node.calls) == (params, flops, (shape,),
                                                                             len(calls[path])), path
        checked[type(module).__name__] += 1
    blocks, deconvs = 9, 4  # 9 residual blocks of 5 conv+BN pairs, 4 deconv+BN blocks, 1 output conv
    assert checked == {"Conv2d": blocks * 5 + 1, "BatchNorm2d": blocks * 5 + deconvs, "ConvTranspose2d": deconvs,
                       "MaxPool2d": 4, "LeakyReLU": 1, "ReLU": 1}  # one shared instance of each activation


def test_functional_skip_averages_are_counted_on_the_root(result, reference):
    _, calls, _ = reference
    root_ops = [op for op in result.ops if op.module_path == ""]
    assert [op.op for op in root_ops] == ["aten.add.Tensor", "aten.div.Tensor"] * 4
    for i, name in enumerate(("up_1", "up_2", "up_3", "up_4")):
        skip_elements = torch.Size(calls[f"{name}.conv_1.0"][0][0]).numel()  # up_i's input is the skip average
        assert root_ops[2 * i].flops == root_ops[2 * i + 1].flops == skip_elements
    assert result.module("").flops_own == sum(op.flops for op in root_ops)
    # the residual add inside each block (conv_1 + conv_2) belongs to the block itself
    down_1_elements = BATCH * 32 * SIZE * SIZE
    assert result.module("down_1").flops_own == down_1_elements


def test_conv_and_transposed_conv_macs_match_torch_flop_counter(result, reference):
    _, _, torch_flops = reference
    assert sum(op.macs for op in result.ops if op.matmul_like) * 2 == torch_flops

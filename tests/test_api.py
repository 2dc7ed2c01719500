"""The public analyze() API: every way of giving inputs, options, workloads, and the guarantee that a
live user module comes back exactly as it was (also after a failed analysis)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from torchbudget.engine.api import analyze, analyze_workload, default_inputs
from torchbudget.engine.errors import InputSpecError, ShapeMismatchError, UnknownModelError, UserError
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.workload import Workload


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 8)
        self.proj = nn.Linear(8, 4)

    def forward(self, ids, mask):
        return self.proj(self.embed(ids)) * mask.unsqueeze(-1)


def _small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 16 * 16, 10))


def _conv_macs_expected(batch: int) -> int:
    # closed form: conv Cin·k²·Cout·H·W + linear in·out, per sample
    return batch * (3 * 9 * 8 * 16 * 16 + 8 * 16 * 16 * 10)


@pytest.mark.parametrize("inputs", [
    "2x3x16x16",
    (2, 3, 16, 16),
    [InputSpec((2, 3, 16, 16))],
    (torch.zeros(2, 3, 16, 16),),
    torch.zeros(2, 3, 16, 16),
    ["2x3x16x16"],
])
def test_every_input_form_gives_the_same_count(inputs):
    result = analyze(_small_cnn(), inputs)
    assert result.inputs == (InputSpec((2, 3, 16, 16)),)
    assert result.totals.macs == _conv_macs_expected(2)
    assert result.totals.params == sum(p.numel() for p in _small_cnn().parameters())


def test_named_inputs_from_a_dict_of_tensors_and_shapes():
    model = TwoInputs()
    by_tensor = analyze(model, {"ids": torch.zeros(2, 5, dtype=torch.long), "mask": torch.ones(2, 5)})
    by_text = analyze(model, "ids=2x5:int64,mask=2x5")
    by_shape = analyze(model, {"ids": "2x5:int64", "mask": (2, 5)})
    assert by_tensor.inputs == (InputSpec((2, 5), "int64", "ids"), InputSpec((2, 5), "float32", "mask"))
    assert by_tensor.totals == by_text.totals == by_shape.totals
    assert by_tensor.module("").output_shapes == ((2, 5, 4),)
    assert by_tensor.totals.macs == 2 * 5 * 8 * 4  # the linear layer: rows × in × out


def test_torchvision_name_default_input_and_options():
    result = analyze("alexnet")
    assert result.model_name == "alexnet" and result.inputs == (InputSpec((1, 3, 224, 224)),)
    assert result.totals.params == 61_100_840  # the seed's number
    half = analyze("alexnet", dtype="bf16")
    assert half.options.precision == "bf16"
    assert half.totals.param_bytes * 2 == result.totals.param_bytes
    assert analyze("alexnet", precision="float16").options.precision == "fp16"


def test_model_kwargs_and_workloads_agree():
    direct = analyze("resnet18", "2x3x64x64", model_kwargs={"num_classes": 10})
    workload = Workload("resnet18", (InputSpec((2, 3, 64, 64)),), model_kwargs={"num_classes": 10})
    via_workload = analyze_workload(workload)
    assert direct.totals == via_workload.totals
    assert direct.module("fc").output_shapes == ((2, 10),)
    assert analyze_workload(Workload("resnet18")).inputs == default_inputs("resnet18")


@pytest.mark.parametrize("kwargs, field", [
    ({"mode": "fly"}, "mode"), ({"dtype": "fp8"}, "precision"), ({"convention": "fvcore"}, "convention"),
    ({"optimizer": "lion"}, "optimizer"),
])
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(UserError) as info:
        analyze("alexnet", **kwargs)
    assert info.value.field == field and repr(next(iter(kwargs.values()))) in str(info.value)


def test_input_errors_are_user_errors():
    with pytest.raises(InputSpecError, match="no known default input"):
        analyze(nn.Sequential(nn.ReLU()))
    with pytest.raises(InputSpecError):
        analyze(_small_cnn(), {"x": object()})
    with pytest.raises(UnknownModelError):
        analyze("not_a_model")
    with pytest.raises(UserError, match="model_kwargs"):
        analyze(_small_cnn(), "1x3x16x16", model_kwargs={"a": 1})


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: (tuple(v.shape), v.dtype, v.device, v.requires_grad, v.data_ptr(), v.clone())
                  for k, v in model.state_dict(keep_vars=True).items()},
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for m in model.modules()],
        "attributes": [sorted(vars(m)) for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
    }


def _same(before: dict, after: dict) -> bool:
    if before["state"].keys() != after["state"].keys():
        return False
    for key, (shape, dtype, device, grad, ptr, value) in before["state"].items():
        shape2, dtype2, device2, grad2, ptr2, value2 = after["state"][key]
        if (shape, dtype, device, grad, ptr) != (shape2, dtype2, device2, grad2, ptr2) or not torch.equal(value, value2):
            return False
    return all(before[k] == after[k] for k in ("training", "hooks", "attributes", "grads"))


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_live_module_is_left_exactly_as_found(mode):
    torch.manual_seed(0)
    model = _small_cnn()
    model[1].eval()  # a mixed train/eval state must survive
    model[4].weight.requires_grad_(False)
    handle = model[2].register_forward_hook(lambda *a: None)
    before = _snapshot(model)
    result = analyze(model, "2x3x16x16", mode=mode)
    assert result.totals.trainable_params == result.totals.params - model[4].weight.numel()
    assert _same(before, _snapshot(model))
    with pytest.raises(ShapeMismatchError):
        analyze(model, "2x4x16x16", mode=mode)  # wrong channel count: fails inside the trace
    assert _same(before, _snapshot(model))
    handle.remove()


def test_importing_the_engine_leaves_the_garbage_collector_alone():
    """A library must not change the importing process's collector; only our CLI/app freeze objects."""
    import subprocess
    import sys

    code = ("import gc, engine.api, engine.planner, engine.trace; "
            "engine.api.analyze('alexnet', '1x3x64x64'); print(gc.get_freeze_count(), gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "True"]

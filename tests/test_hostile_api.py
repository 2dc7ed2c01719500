"""Hostile use of the Python API: a live module must come back untouched (also with checkpointing), user
files that exit or parse arguments must not take the caller down, odd inputs are one InputSpecError, and
data-dependent reads of a fake tensor (``.tolist()``) cost one policy decision, not one per element."""
from __future__ import annotations

import sys
import time

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from torchbudget.engine.api import analyze
from torchbudget.engine.errors import InputSpecError, ModelLoadError, UserError
from torchbudget.engine.tracing import policies
from tests.hostile_support import TINY_MODEL, write


# --------------------------------------------------------------------------------- the module is untouched
def _block(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())


def _net() -> nn.Module:
    torch.manual_seed(0)
    # a top-level container of blocks: each block is a checkpointed region (engine.tracing.training)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Sequential(_block(8), _block(8)), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _snapshot(module: nn.Module) -> dict:
    """Everything analyze() could change: values, objects, flags, hooks and attributes of every submodule."""
    return {
        "state": {k: (v.detach().clone(), v.dtype, v.device, v.requires_grad)
                  for k, v in module.state_dict(keep_vars=True).items()},
        "objects": [(n, id(t)) for n, t in (*module.named_parameters(), *module.named_buffers())],
        "grads": [p.grad for p in module.parameters()],
        "modules": [(n, id(m), m.training, sorted(vars(m)), dict(m._forward_hooks), dict(m._forward_pre_hooks),
                     dict(m._backward_hooks), dict(m._parameters), dict(m._buffers), dict(m._modules))
                    for n, m in module.named_modules()],
    }


def _assert_same(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    for key, (value, *meta) in before["state"].items():
        assert meta == list(after["state"][key][1:]), key
        assert torch.equal(value, after["state"][key][0]), key   # BatchNorm running stats, num_batches_tracked
    assert before["objects"] == after["objects"]
    assert after["grads"] == [None] * len(after["grads"])
    assert before["modules"] == after["modules"]


# checkpointing: the regions are recomputed in backward, and that recompute must run on stand-ins too (it
# once ran on the user's own BatchNorm and bumped its num_batches_tracked 0 -> 1)
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("starts_in", ["train", "eval"])
def test_training_analysis_leaves_the_module_untouched(checkpointing, starts_in):
    module = _net().train(starts_in == "train")
    module[3][0][1].register_forward_hook(lambda m, i, o: None)
    module[0].register_forward_pre_hook(lambda m, i: None)
    module[6].register_full_backward_hook(lambda m, gi, go: None)
    module.custom_flag = "mine"
    before = _snapshot(module)
    result = analyze(module, "2x3x16x16", mode="train", optimizer="adamw", checkpointing=checkpointing)
    _assert_same(before, _snapshot(module))
    assert module.custom_flag == "mine" and result.totals.params == sum(p.numel() for p in module.parameters())


def test_inference_analysis_leaves_the_module_untouched():
    module = _net().eval()
    before = _snapshot(module)
    analyze(module, "1x3x16x16", precision="bf16-amp")
    _assert_same(before, _snapshot(module))


def test_user_forward_hooks_fire_with_fake_tensors():
    """Documented in docs/reliability.md: hooks are part of the model (weight_norm, pruning use them), so
    they run; what they keep is a data-less FakeTensor."""
    module = _net()
    seen = []
    module[6].register_forward_hook(lambda m, i, o: seen.append(o))
    analyze(module, "2x3x16x16")
    assert len(seen) == 1 and isinstance(seen[0], FakeTensor) and tuple(seen[0].shape) == (2, 4)


# --------------------------------------------------------------------------------------- hostile inputs
@pytest.mark.parametrize("inputs, fragment", [
    ((1, 4, 10**30), "is too large"),
    ((True, 4), "dimension True is not a whole number"),
    ({"x": (1, -4)}, "has a dimension that is not a positive integer"),
    ("1x" + "4" * 40, "is too large"),
    ([object()], "cannot use a object as a model input"),
    ({}, "the input dict is empty"),
])
def test_hostile_api_inputs(inputs, fragment):
    with pytest.raises(InputSpecError) as caught:
        analyze(nn.Linear(4, 2), inputs)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_model_of_the_wrong_type():
    with pytest.raises(UserError, match="model must be a name, a path/to/file.py:Name or an nn.Module, not int"):
        analyze(5)


# ----------------------------------------------------------------------------------------- user files
def test_a_file_that_exits_does_not_end_the_caller(tmp_path):
    model = write(tmp_path, "net.py", "raise SystemExit(0)\n" + TINY_MODEL)
    with pytest.raises(ModelLoadError, match=r"the model file exited \(sys.exit\(0\)\) while importing net.py"):
        analyze(f"{model}:Net", "1x4")


def test_a_file_with_argparse_and_its_own_engine_module(tmp_path):
    write(tmp_path, "engine.py", "WIDTH = 5\n")
    model = write(tmp_path, "net.py", """
        import argparse
        import engine
        import torch.nn as nn
        parser = argparse.ArgumentParser()
        parser.add_argument("--width", type=int, default=engine.WIDTH)
        WIDTH = parser.parse_args().width   # sees [path], not pytest's arguments
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, WIDTH)
            def forward(self, x):
                return self.fc(x)
    """)
    argv = list(sys.argv)
    result = analyze(f"{model}:Net", "1x4")
    assert result.totals.params == 4 * 5 + 5
    assert sys.argv == argv and str(tmp_path) not in sys.path
    assert "torchbudget.engine" in sys.modules and sys.modules["engine"].__file__ == str(tmp_path / "engine.py")


def test_two_files_each_with_their_own_engine_module(tmp_path):
    """Python caches `engine` by name: the second folder's file must still get its own engine.py."""
    specs = []
    for width in (3, 6):
        folder = tmp_path / f"project{width}"
        folder.mkdir()
        write(folder, "engine.py", f"WIDTH = {width}\n")
        source = "import engine\n" + TINY_MODEL.replace("Linear(4, 2)", "Linear(4, engine.WIDTH)")
        specs.append(f"{write(folder, 'net.py', source)}:Net")
    for spec, width in [(specs[0], 3), (specs[1], 6), (specs[0], 3)]:
        assert analyze(spec, "1x4").totals.params == 4 * width + width


# --------------------------------------------------------------------------------------------- tolist
class _ToList(nn.Module):
    """Reads its input as Python values, as code that logs or branches on data does."""

    def __init__(self, seen: list):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen = [seen]   # in a list: not a submodule or buffer

    def forward(self, x):
        self.seen[0].extend([x.tolist(), (x > 0).tolist(), x.long()[0, 0, :2, :3].tolist(), x[0, 0, 0, 0].tolist()])
        return self.conv(x)


def test_tolist_of_a_fake_tensor_is_one_policy_decision():
    seen = []
    started = time.perf_counter()
    result = analyze(_ToList(seen), "1x3x224x224")
    seconds = time.perf_counter() - started
    floats, bools, longs, scalar = seen
    assert len(floats) == 1 and len(floats[0]) == 3 and len(floats[0][2]) == 224 and len(floats[0][2][223]) == 224
    assert floats[0][2][223][223] == 1.0 and isinstance(floats[0][1][0][0], float)
    assert bools[0][0][5][7] is False and longs == [[1, 1, 1], [1, 1, 1]] and scalar == 1.0
    assert policies.SCALAR in result.policies
    assert sum(op.op.startswith("aten._local_scalar_dense") for op in result.ops) == 4   # one per call
    assert seconds < 5   # 150,528 elements: 18.6 s when each element was its own .item()
    assert FakeTensor.tolist is policies._original_tolist   # torch's own again outside a trace


def test_tolist_of_an_empty_tensor():
    seen = []

    class Empty(nn.Module):
        def forward(self, x):
            seen.append(x[:, :0].tolist())
            return x * 2

    analyze(Empty(), "2x3")
    assert seen == [[[], []]]

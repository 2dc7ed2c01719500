"""The user's module is left exactly as it was (also when the trace fails); errors name the problem."""
import gc

import pytest
import torch
import torch.nn.modules.module as module_globals
from torch import nn

from torchbudget.engine.errors import InputSpecError, ShapeMismatchError, TraceError, UserError
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.trace import trace_model

GLOBAL_HOOK_DICTS = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_always_called",
                     "_global_forward_hooks_with_kwargs", "_global_backward_hooks", "_global_backward_pre_hooks")


class Live(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
                                    nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Dropout(0.1)))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.head(x.mean((2, 3)))


def snapshot(model):
    return {
        "state": {k: (v.clone(), v.device, v.dtype, v.requires_grad) for k, v in model.state_dict(keep_vars=True).items()},
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(m._backward_pre_hooks)) for m in model.modules()],
        "attrs": [sorted(vars(m)) for m in model.modules()],
        "modules": [list(m._modules) for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
        "global": [len(getattr(module_globals, name)) for name in GLOBAL_HOOK_DICTS],
        "fastpath": torch.backends.mha.get_fastpath_enabled(),
        "gc": gc.isenabled(),
    }


def assert_unchanged(before, model):
    after = snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for key, (value, device, dtype, requires_grad) in before["state"].items():
        now = after["state"][key]
        assert (now[1], now[2], now[3]) == (device, dtype, requires_grad), key
        assert torch.equal(now[0], value), key
    for field in ("training", "hooks", "attrs", "modules", "global", "fastpath", "gc"):
        assert before[field] == after[field], field
    assert all(g is None for g in after["grads"])


def live_model():
    torch.manual_seed(0)
    model = Live()
    model.blocks[1].eval()         # a mixed train/eval state must come back as it was
    model.head.weight.requires_grad_(False)
    return model


@pytest.mark.parametrize("options", [
    TraceOptions(), TraceOptions(mode="train", optimizer="adam", checkpointing=True),
    TraceOptions(mode="train", precision="bf16", optimizer="sgd-momentum"), TraceOptions(precision="fp16-amp"),
])
def test_live_module_unchanged(options):
    model = live_model()
    before = snapshot(model)
    result = trace_model(model, [InputSpec((2, 3, 8, 8))], options)
    assert_unchanged(before, model)
    assert result.totals.trainable_params == result.totals.params - 8 * 5


def test_live_module_unchanged_when_the_trace_fails():
    model = live_model()
    before = snapshot(model)
    with pytest.raises(ShapeMismatchError):
        trace_model(model, [InputSpec((2, 4, 8, 8))], TraceOptions(mode="train"))
    assert_unchanged(before, model)


def test_trainable_params_and_frozen_weights_get_no_gradient():
    from torchbudget.engine.results import MemoryCategory
    model = live_model()
    r = trace_model(model, [InputSpec((2, 3, 8, 8))], TraceOptions(mode="train", optimizer="sgd"))
    grads = sum(e.nbytes for e in r.storage_events if e.kind == "alloc" and e.category is MemoryCategory.GRADIENTS)
    assert grads == 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_conv_channel_mismatch_names_module_and_shapes():
    import torchvision
    with pytest.raises(ShapeMismatchError) as err:
        trace_model(torchvision.models.resnet18(weights=None), [InputSpec((1, 4, 64, 64))])
    assert str(err.value) == ("shapes broke at conv1 (Conv2d): input 1x4x64x64 but weight 64x3x7x7 "
                              "expects 3 input channels")


def test_linear_mismatch_names_module_and_shapes():
    model = nn.Sequential(nn.Linear(10, 5), nn.Linear(6, 3))
    with pytest.raises(ShapeMismatchError) as err:
        trace_model(model, [InputSpec((2, 10))])
    assert str(err.value) == "shapes broke at 1 (Linear): input 2x5 but weight 3x6 expects 6 input features"


class Asserting(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Identity(), Checker())

    def forward(self, x):
        return self.inner(x)


class Checker(nn.Module):
    def forward(self, x):
        if x.shape[1] != 4:
            raise ValueError(f"expected 4 features, got {x.shape[1]}")
        return x


def test_python_level_error_names_innermost_module():
    with pytest.raises(ShapeMismatchError, match=r"inner\.1 \(Checker\).*expected 4 features, got 3"):
        trace_model(Asserting(), [InputSpec((2, 3))])


class Repeats(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 3)

    def forward(self, x):
        return self.proj(torch.repeat_interleave(x, x[:, 0].long(), dim=0))


def test_untraceable_data_dependent_op_is_a_trace_error():
    with pytest.raises(TraceError, match=r"aten\.repeat_interleave\.Tensor.*top level \(Repeats\)"):
        trace_model(Repeats(), [InputSpec((2, 3))])


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 3)

    def forward(self, x):
        y = self.proj(x)
        picked = y[y > 0]                       # boolean mask: all true
        where = torch.nonzero(y)                # every element nonzero
        distinct = torch.unique(y)
        return picked, where, distinct, y.sum().item()


def test_worst_case_policies_applied_and_reported():
    r = trace_model(DataDependent(), [InputSpec((2, 3))])
    shapes = {op.op: op.outputs[0].shape for op in r.ops if op.outputs}
    assert shapes["aten.nonzero.default"] == (6, 2)
    assert shapes["aten.index.Tensor"] == (6,)
    assert shapes["aten._unique2.default"] == (1,)   # one group: see the policy text
    assert r.module("").output_shapes == ((6,), (6, 2), (1,))
    assert len(r.policies) == 4 and any("nonzero" in p for p in r.policies)


def test_bad_options_and_inputs():
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        trace_model(nn.Linear(2, 2), [InputSpec((1, 2))], TraceOptions(precision="fp8"))
    with pytest.raises(UserError, match="unknown optimizer 'lion'"):
        trace_model(nn.Linear(2, 2), [InputSpec((1, 2))], TraceOptions(mode="train", optimizer="lion"))
    with pytest.raises(InputSpecError):
        trace_model(nn.Linear(2, 2), [InputSpec((1, 2))], input_names=True)


class Fallback(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        try:
            return self.proj(x.view(3, 5))      # fails: the model catches it and falls back
        except RuntimeError:
            return self.proj(x)


def test_op_errors_the_model_catches_stay_catchable():
    r = trace_model(Fallback(), [InputSpec((2, 4))])
    assert r.module("proj").output_shapes == ((2, 4),)


def test_inputs_the_forward_does_not_accept():
    with pytest.raises(InputSpecError, match=r"does not accept these inputs.*forward\(\)"):
        trace_model(nn.Linear(2, 2), [InputSpec((1, 2)), InputSpec((1, 2))])


def test_concurrent_traces_from_threads_do_not_mix():
    from concurrent.futures import ThreadPoolExecutor
    models = [live_model() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda m: trace_model(m, [InputSpec((2, 3, 8, 8))]), models))
    single = trace_model(live_model(), [InputSpec((2, 3, 8, 8))])
    for r in results:
        assert [(op.op, op.module_path) for op in r.ops] == [(op.op, op.module_path) for op in single.ops]
    assert torch.backends.mha.get_fastpath_enabled()

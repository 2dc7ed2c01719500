"""Training traces on fake CPU tensors: phases, gradients, optimizer state, precisions, checkpointing."""
import pytest
import torch
from torch import nn

from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.results import MemoryCategory as C, Phase, TraceOptions
from torchbudget.engine.trace import trace_model


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))


class Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(16, 32)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 32)) for _ in range(4))
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def allocated(result, category):
    return sum(e.nbytes for e in result.storage_events if e.kind == "alloc" and e.category is category)


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def test_phases_and_flops_closed_form():
    model = mlp()
    r = trace_model(model, [InputSpec((4, 32))], TraceOptions(mode="train", optimizer="sgd"))
    assert {op.phase for op in r.ops} == {Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER}
    forward_macs = 4 * (32 * 64 + 64 * 64 + 64 * 8)
    assert r.totals.macs == forward_macs
    mm_backward = sum(op.macs for op in r.ops if op.phase is Phase.BACKWARD and op.op == "aten.mm.default")
    # grad wrt weight for every layer, grad wrt input for all but the first (the input needs no grad)
    assert mm_backward == forward_macs + 4 * (64 * 64 + 64 * 8)
    assert r.module("2").backward_flops >= 2 * 2 * 4 * 64 * 64
    assert all(op.module_path == "" or op.phase is not Phase.OPTIMIZER for op in r.ops)


@pytest.mark.parametrize("optimizer,state_copies", [("adam", 2), ("adamw", 2), ("sgd-momentum", 1), ("sgd", 0)])
def test_gradients_and_optimizer_state(optimizer, state_copies):
    model = mlp()
    r = trace_model(model, [InputSpec((4, 32))], TraceOptions(mode="train", optimizer=optimizer))
    fp32_param_bytes = 4 * param_count(model)
    n_tensors = len(list(model.parameters()))
    assert allocated(r, C.WEIGHTS) == r.totals.param_bytes == fp32_param_bytes
    assert allocated(r, C.GRADIENTS) == fp32_param_bytes
    step_scalars = 4 * n_tensors if optimizer.startswith("adam") else 0   # Adam's per-tensor "step"
    assert allocated(r, C.OPTIMIZER_STATE) == state_copies * fp32_param_bytes + step_scalars
    # gradients and optimizer state stay alive to the end of the step
    freed = {e.storage_id for e in r.storage_events if e.kind == "free"}
    assert not any(e.storage_id in freed for e in r.storage_events if e.category in (C.GRADIENTS, C.OPTIMIZER_STATE))


def test_precisions_cast_stand_ins_only():
    model = mlp()
    r16 = trace_model(model, [InputSpec((4, 32))], TraceOptions(mode="train", precision="bf16", optimizer="adam"))
    assert dict(r16.totals.param_bytes_by_dtype) == {"bfloat16": 2 * param_count(model)}
    assert allocated(r16, C.GRADIENTS) == 2 * param_count(model)
    amp = trace_model(model, [InputSpec((4, 32))], TraceOptions(mode="train", precision="fp16-amp", optimizer="adam"))
    assert dict(amp.totals.param_bytes_by_dtype) == {"float32": 4 * param_count(model)}
    assert allocated(amp, C.OPTIMIZER_STATE) == 2 * 4 * param_count(model) + 4 * 6
    addmm = [op for op in amp.ops if op.op == "aten.addmm.default" and op.phase is Phase.FORWARD]
    assert addmm and all(op.compute_dtype == "float16" for op in addmm)
    assert next(p for p in model.parameters()).dtype == torch.float32


def test_checkpointing_recomputes_and_saves_less():
    model = Blocks()
    plain = trace_model(model, [InputSpec((8, 16))], TraceOptions(mode="train", optimizer=None))
    ckpt = trace_model(model, [InputSpec((8, 16))], TraceOptions(mode="train", optimizer=None, checkpointing=True))
    assert ckpt.totals.macs == plain.totals.macs
    recomputed = sum(op.macs for op in ckpt.ops if op.phase is Phase.BACKWARD and op.op == "aten.addmm.default")
    # each block's first Linear runs again in backward; recomputation stops early before the second
    # Linear, whose output nothing saved (torch.utils.checkpoint's early stop)
    assert recomputed == 4 * 8 * 32 * 32
    assert ckpt.totals.backward_flops == plain.totals.backward_flops + sum(
        op.flops for op in ckpt.ops if op.phase is Phase.BACKWARD and op.module_path.startswith("blocks.")
        and op.op in ("aten.addmm.default", "aten.gelu.default"))
    assert allocated(ckpt, C.ACTIVATIONS) < allocated(plain, C.ACTIVATIONS)
    assert {m.path for m in ckpt.modules} == {m.path for m in plain.modules}   # no wrapper in the tree
    assert ckpt.module("blocks.0.0").calls == 1


def test_backward_ops_attributed_to_modules():
    model = mlp()
    r = trace_model(model, [InputSpec((4, 32))], TraceOptions(mode="train", optimizer=None))
    backward_mm = {op.module_path for op in r.ops if op.phase is Phase.BACKWARD and op.op == "aten.mm.default"}
    assert backward_mm == {"0", "2", "4"}
    assert r.module("").backward_flops == r.totals.backward_flops


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.logits = nn.Linear(16, 50)
        self.value = nn.Linear(16, 1)

    def forward(self, ids, scale):
        h = self.embed(ids) * scale
        logits = self.logits(h)
        return {"logits": logits, "value": self.value(h), "argmax": logits.argmax(-1)}


def test_dict_output_loss_sums_every_floating_output():
    r = trace_model(DictOut(), [InputSpec((2, 7), "int64", "ids"), InputSpec((2, 7, 1), "float32", "scale")],
                    TraceOptions(mode="train", optimizer=None))
    backward_mm = {op.module_path for op in r.ops if op.phase is Phase.BACKWARD and op.op == "aten.mm.default"}
    assert backward_mm == {"logits", "value"}          # both floating outputs got a gradient
    assert allocated(r, C.GRADIENTS) == 4 * (50 * 16 + 16 * 50 + 50 + 16 + 1)
    sums = [op for op in r.ops if op.op == "aten.sum.default" and op.module_path == ""]
    assert {op.phase for op in sums} == {Phase.BACKWARD} and len(sums) == 2   # the loss seeds backward


def test_optimizer_step_reports_no_policy():
    r = trace_model(mlp(), [InputSpec((4, 32))], TraceOptions(mode="train", optimizer="adamw"))
    assert r.policies == ()


def test_adamw_in_place_foreach_updates_are_recorded_with_their_flops_and_allocate_nothing():
    # the recorder answers these without the fake kernel; they must still be counted like any op
    model = mlp()
    r = trace_model(model, [InputSpec((4, 32))], TraceOptions(mode="train", optimizer="adamw"))
    n = sum(p.numel() for p in model.parameters())
    step = [op for op in r.ops if op.phase is Phase.OPTIMIZER]
    by_name = {}
    for op in step:
        by_name.setdefault(op.op.split(".")[1], []).append(op)
    assert {"_foreach_lerp_", "_foreach_addcmul_", "_foreach_addcdiv_", "_foreach_mul_"} <= set(by_name)
    for name, per_element in (("_foreach_lerp_", 3), ("_foreach_addcmul_", 3), ("_foreach_addcdiv_", 3)):
        assert sum(op.flops for op in by_name[name]) == per_element * n
        assert all(op.outputs == () and op.bytes_written == 0 for op in by_name[name])
    in_place_ops = {op.index for ops in by_name.values() for op in ops if op.op.split(".")[1].endswith("_")}
    assert not any(e.kind == "alloc" and e.op_index in in_place_ops for e in r.storage_events)


def test_in_place_foreach_on_fake_scalars_with_a_value_still_updates_the_value():
    # Adam's step counters are fake scalars carrying their value; .item() must read 1 after the increment
    from torch._subclasses.fake_tensor import FakeTensorMode

    from torchbudget.engine.tracing.modules import ModuleStack
    from torchbudget.engine.tracing.recorder import Recorder

    recorder = Recorder(ModuleStack(nn.Linear(1, 1)))
    recorder.phase = Phase.OPTIMIZER
    with FakeTensorMode(allow_non_fake_inputs=True):
        step, weight = torch.tensor(0.0), torch.empty(3, 2)
        with recorder:
            torch._foreach_add_([step], 1)
            torch._foreach_mul_([weight], 0.5)
    assert step.constant.item() == 1.0
    assert [op.op for op in recorder.ops] == ["aten._foreach_add_.Scalar", "aten._foreach_mul_.Scalar"]
    assert recorder.ops[1].flops == 6

"""Inference traces on meta tensors: shapes, MACs and params against closed-form formulas."""
import torch
from torch import nn

from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.results import MemoryCategory, OpStatus, Phase, TraceOptions
from torchbudget.engine.trace import trace_model


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x):
        y = self.conv(x)
        y = (y + y) / 2          # functional ops in the root's forward
        return self.head(y.flatten(1))


def test_conv_linear_macs_shapes_params_closed_form():
    r = trace_model(ConvNet(), [InputSpec((2, 3, 16, 16))])
    conv_macs = 2 * 8 * 16 * 16 * (3 * 3 * 3)    # out elements × (Cin·kh·kw), bias folded in
    head_macs = 2 * 10 * (8 * 16 * 16)
    assert r.module("conv").macs == conv_macs
    assert r.module("head").macs == head_macs
    assert r.module("").macs == r.totals.macs == conv_macs + head_macs
    assert r.module("conv").output_shapes == ((2, 8, 16, 16),)
    assert r.module("head").output_shapes == ((2, 10),)
    assert r.totals.params == 3 * 8 * 9 + 8 + 8 * 256 * 10 + 10 == sum(p.numel() for p in ConvNet().parameters())
    assert r.module("conv").params_own == 3 * 8 * 9 + 8
    assert r.totals.output_bytes == 2 * 10 * 4
    assert r.totals.input_bytes == 2 * 3 * 16 * 16 * 4
    assert r.module("").name == "ConvNet" and r.modules[0].path == ""


def test_functional_ops_attributed_to_running_module():
    r = trace_model(ConvNet(), [InputSpec((1, 3, 16, 16))])
    root_ops = {op.op for op in r.ops if op.module_path == ""}
    assert "aten.add.Tensor" in root_ops and "aten.div.Tensor" in root_ops
    assert {op.module_path for op in r.ops if op.op == "aten.convolution.default"} == {"conv"}
    assert all(op.phase is Phase.FORWARD for op in r.ops)
    conv = next(op for op in r.ops if op.op == "aten.convolution.default")
    assert conv.inputs[0].shape == (1, 3, 16, 16) and conv.outputs[0].shape == (1, 8, 16, 16)
    assert conv.bytes_written == 8 * 16 * 16 * 4 and conv.compute_dtype == "float32"
    assert conv.status is OpStatus.COUNTED and conv.matmul_like


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.out = nn.Linear(16, 100, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids):
        return self.out(self.embed(ids))


def test_tied_weights_counted_once():
    r = trace_model(Tied(), [InputSpec((2, 5), "int64")])
    assert r.totals.params == 1600
    assert r.module("embed").params_own == 1600 and r.module("out").params_own == 0
    assert r.module("out").params == 1600  # inclusive: unique params in its subtree
    weights = [e for e in r.storage_events if e.category is MemoryCategory.WEIGHTS]
    assert [e.nbytes for e in weights] == [1600 * 4]


def test_storage_events_sane():
    r = trace_model(ConvNet(), [InputSpec((2, 3, 16, 16))])
    live = peak = allocated = 0
    for e in r.storage_events:
        live += e.nbytes if e.kind == "alloc" else -e.nbytes
        allocated += e.nbytes if e.kind == "alloc" else 0
        peak = max(peak, live)
    assert allocated >= peak >= r.totals.param_bytes
    pre = [e for e in r.storage_events if e.op_index == -1]
    assert {e.category for e in pre} == {MemoryCategory.WEIGHTS, MemoryCategory.INPUTS}
    assert sum(e.nbytes for e in pre if e.category is MemoryCategory.WEIGHTS) == r.totals.param_bytes
    # the output is the only storage alive at the end besides weights and input
    assert live == r.totals.param_bytes + r.totals.input_bytes + r.totals.output_bytes


def test_resnet18_matches_flop_counter():
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode
    model = torchvision.models.resnet18(weights=None).eval()
    r = trace_model(model, [InputSpec((1, 3, 64, 64))])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    conv_mm = sum(op.flops for op in r.ops if op.op in ("aten.convolution.default", "aten.addmm.default"))
    # FlopCounterMode ignores the bias add of addmm; ours folds it (MACs = out × K)
    assert conv_mm == counter.get_total_flops()
    assert r.totals.params == sum(p.numel() for p in model.parameters())


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(8, 8)
        self.alias = self.shared          # the same module under a second name

    def forward(self, ids, mask):
        x = ids.float() * mask
        return self.alias(self.shared(x))


def test_named_inputs_and_reused_module():
    r = trace_model(Reused(), [InputSpec((3, 8), "int64", "ids"), InputSpec((3, 8), "float32", "mask")])
    assert [m.path for m in r.modules] == ["", "shared"]     # one node per module object
    shared = r.module("shared")
    assert shared.calls == 2 and shared.output_shapes == ((3, 8),)
    assert shared.macs == 2 * 3 * 8 * 8
    assert shared.activation_bytes == 2 * 3 * 8 * 4           # both calls' outputs
    assert r.totals.input_bytes == 3 * 8 * 8 + 3 * 8 * 4      # int64 ids stay int64
    assert r.modules[0].children == ("shared",) and shared.parent == "" and shared.depth == 1


def test_precision_casts_float_inputs_and_params():
    r = trace_model(ConvNet(), [InputSpec((1, 3, 16, 16))], TraceOptions(precision="fp16"))
    assert dict(r.totals.param_bytes_by_dtype) == {"float16": 2 * r.totals.params}
    conv = next(op for op in r.ops if op.op == "aten.convolution.default")
    assert conv.compute_dtype == "float16" and conv.inputs[0].nbytes == 3 * 16 * 16 * 2


class ViewsAndInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        y = self.fc(x.view(4, 16))          # a view of the input: no allocation
        y.relu_()                           # in place: no allocation
        return y.t().reshape(-1)[:8]        # views of y: the output shares y's storage


def test_views_and_in_place_ops_allocate_nothing_and_output_is_an_activation():
    r = trace_model(ViewsAndInPlace(), [InputSpec((2, 2, 16))])
    allocs = [e for e in r.storage_events if e.kind == "alloc" and e.op_index >= 0]
    # only addmm and the copy that reshape makes of a transposed view create storages
    assert [(r.ops[e.op_index].op, e.nbytes) for e in allocs] == [("aten.addmm.default", 256),
                                                                  ("aten.clone.default", 256)]
    freed = {e.storage_id: e for e in r.storage_events if e.kind == "free"}
    hidden, output = allocs
    assert hidden.storage_id in freed and hidden.category is MemoryCategory.TEMPORARIES
    assert output.storage_id not in freed and output.category is MemoryCategory.ACTIVATIONS

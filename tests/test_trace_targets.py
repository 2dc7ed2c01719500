"""Issue 9 through the paths users take (models by name and by file, the CLI): the target GPU's
kernels, activation checkpointing on meta-built models, the caching allocator in the plan, optimizer
implementations, the output freed before the step, coverage by FLOPs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from torchbudget.cli import run_cli
from torchbudget.engine.api import analyze
from torchbudget.engine.memory import simulate_memory
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.results import MemoryCategory as C
from torchbudget.engine.results import OpKind, Phase

GPT = str(Path(__file__).parent / "models" / "gpt_block.py") + ":GPT"
TOKENS = {1024: "4x1024:int64", 2048: "4x2048:int64"}


def activations(model: str, shape: str, **options) -> int:
    return simulate_memory(analyze(model, shape, **options)).by_category[C.ACTIVATIONS]


def attention_ops(result) -> set[str]:
    return {op.op.split(".")[1] for op in result.ops if op.kind is OpKind.ATTENTION}


def test_an_h100_runs_flash_attention_so_activations_grow_linearly_in_sequence():
    options = dict(mode="train", precision="bf16-amp", optimizer="adamw", target="sm90")
    ratio = activations(GPT, TOKENS[2048], **options) / activations(GPT, TOKENS[1024], **options)
    assert ratio <= 2.15
    result = analyze(GPT, TOKENS[1024], **options)
    # dropout 0.1 is not a multiple of 1/16: cuDNN's SDPA refuses it and flash runs (torch 2.14.1 sdp_utils)
    assert attention_ops(result) == {"_scaled_dot_product_flash_attention",
                                     "_scaled_dot_product_flash_attention_backward"}
    assert any("flash" in p and "not cudnn" in p for p in result.policies)


def test_the_math_what_if_brings_the_quadratic_term_back():
    options = dict(mode="train", precision="bf16-amp", optimizer="adamw", target="sm90", attention="math")
    small, large = activations(GPT, TOKENS[1024], **options), activations(GPT, TOKENS[2048], **options)
    # the math path saves B x H x S x S fp32 scores and probabilities and a bool dropout mask per layer
    batch, heads, layers = 4, 4, 2
    quadratic = lambda s: layers * batch * heads * s * s * (4 + 4 + 1)  # noqa: E731
    assert large - small >= quadratic(2048) - quadratic(1024)
    assert large / small > 3


@pytest.mark.parametrize("precision, backend", [("bf16-amp", "math"), ("fp16-amp", "efficient")])
def test_a_t4_follows_its_own_rules(precision, backend):
    # sm75: no flash (sm80+); memory-efficient attention takes fp16 and fp32 but not bf16 below sm80
    result = analyze(GPT, "1x256:int64", mode="train", precision=precision, target="sm75")
    kernels = attention_ops(result)
    if backend == "math":
        assert kernels == set() and any("attention: math (sm75, bfloat16" in p for p in result.policies)
    else:
        assert kernels == {"_scaled_dot_product_efficient_attention", "_scaled_dot_product_efficient_attention_backward"}


def test_cuda_autocast_lists_keep_layer_norm_in_fp32():
    # CUDA's autocast runs layer_norm in fp32 (its fp32 list), the CPU's does not
    result = analyze(GPT, "1x64:int64", mode="infer", precision="bf16-amp", target="sm90")
    norms = [op for op in result.ops if op.op.startswith("aten.native_layer_norm.")]
    assert norms and all(op.outputs[0].dtype == "float32" for op in norms)


def plan_json(capsys, *args) -> dict:
    assert run_cli(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("model, shape", [("resnet18", "8x3x224x224"), ("vit_b_16", "8x3x224x224")])
def test_checkpointing_works_on_models_named_on_the_command_line(capsys, model, shape):
    plain = plan_json(capsys, model, "--input", shape, "--mode", "train", "--gpu", "H100 SXM", "--no-max-batch")
    ckpt = plan_json(capsys, model, "--input", shape, "--mode", "train", "--checkpointing", "--gpu", "H100 SXM",
                     "--no-max-batch")
    before, after = plain["memory"]["by_category"]["activations"], ckpt["memory"]["by_category"]["activations"]
    assert after < 0.7 * before
    assert ckpt["workload"]["checkpointing"] is True


def test_checkpointing_a_user_file_recomputes_its_forward_in_backward():
    plain = analyze(GPT, "2x512:int64", mode="train", precision="bf16-amp")
    ckpt = analyze(GPT, "2x512:int64", mode="train", precision="bf16-amp", checkpointing=True)
    assert simulate_memory(ckpt).by_category[C.ACTIVATIONS] < 0.7 * simulate_memory(plain).by_category[C.ACTIVATIONS]
    # each checkpointed block's forward runs again in backward (up to the last tensor backward needs: torch
    # stops recomputing early), attention included
    blocks_forward = sum(ckpt.module(f"blocks.{i}").flops for i in range(2))
    recomputed = ckpt.totals.backward_flops - plain.totals.backward_flops
    assert 0.5 * blocks_forward < recomputed <= blocks_forward
    again = [op for op in ckpt.ops if op.phase is Phase.BACKWARD and op.op.startswith("aten._scaled_dot_product")
             and "backward" not in op.op]
    assert len(again) == 2
    assert any(p.startswith("activation checkpointing: 2 region(s)") for p in ckpt.policies)


def test_checkpointing_leaves_a_live_module_untouched():
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    analyze(model, "2x3x64x64", mode="train", checkpointing=True)
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)   # num_batches_tracked included
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_plan_json_reports_allocated_at_most_reserved(capsys):
    document = plan_json(capsys, "resnet50", "--input", "32x3x224x224", "--mode", "train", "--precision", "bf16-amp",
                         "--gpu", "RTX 4090", "--no-max-batch")
    memory = document["memory"]
    assert 0 < memory["allocated_peak_bytes"] <= memory["reserved_peak_bytes"]
    assert memory["reserved_peak_bytes"] % (2 * 2**20) == 0   # whole 2 MiB-multiple segments
    overheads = memory["overheads"]
    assert document["required_bytes"] == (memory["reserved_peak_bytes"] + overheads["cuda_context_bytes"]
                                          + memory["by_category"]["workspace"])


def test_the_cuda_context_knob_changes_the_verdict(capsys):
    args = ("resnet18", "--input", "64x3x224x224", "--mode", "train", "--gpu", "T4", "--no-max-batch")
    base = plan_json(capsys, *args)
    bigger = plan_json(capsys, *args, "--cuda-context-mib", "14000")
    assert base["fits"] and not bigger["fits"]
    assert bigger["required_bytes"] - base["required_bytes"] == (14000 - 512) * 2**20


def test_fused_adamw_needs_less_than_foreach():
    peaks = {impl: simulate_memory(analyze("resnet18", "2x3x64x64", mode="train", optimizer="adamw",
                                           optimizer_impl=impl)).steady_state_peak_bytes
             for impl in ("foreach", "fused")}
    assert peaks["fused"] < peaks["foreach"]


class WideHead(nn.Module):
    """A large output next to small weights: whether it is alive in the optimizer step is easy to see."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        return self.fc(x).repeat(1, 4096)


def test_the_output_is_freed_before_the_optimizer_step():
    result = analyze(WideHead(), "8x64", mode="train", optimizer="sgd", target="cpu")
    live = 0
    for event in result.storage_events:
        if event.phase is Phase.OPTIMIZER:
            break
        live += event.nbytes if event.kind == "alloc" else -event.nbytes
    weights = (64 * 64 + 64) * 4
    # entering the step: weights, their gradients and the input batch (the loss was freed with the output)
    assert live == 2 * weights + 8 * 64 * 4


class Determinant(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16 * 16)

    def forward(self, x):
        return torch.linalg.det(self.fc(x).view(-1, 16, 16))


def test_coverage_is_reported_by_flops_with_uncounted_ops_estimated_from_their_shapes():
    result = analyze(Determinant(), "4x16", target="cpu")
    names = [op.op for op in result.uncounted_ops]
    assert any("linalg_lu" in n or "det" in n for n in names)
    counted = sum(op.flops for op in result.ops)
    estimated = sum(op.estimated_flops for op in result.uncounted_ops)
    assert estimated > 0
    assert result.flop_coverage == pytest.approx(counted / (counted + estimated))
    assert [op.estimated_flops for op in result.uncounted_ops] == sorted(
        (op.estimated_flops for op in result.uncounted_ops), reverse=True)


def test_a_formula_that_raises_is_reported_not_silent(monkeypatch):
    from torchbudget.engine.ops import registry

    entry = registry.lookup(torch.ops.aten.addmm)
    monkeypatch.setitem(registry._FORMULAS["default"], torch.ops.aten.addmm,
                        registry._Entry(lambda a, k, o: [][1], entry.kind, entry.op_kind))
    result = analyze(nn.Linear(4, 4), "2x4", target="cpu")
    assert any("aten.addmm" in w and "IndexError" in w for w in result.warnings)
    assert "aten.addmm.default" in [op.op for op in result.uncounted_ops]


def test_overheads_reject_a_bad_allocator_setting():
    from torchbudget.errors import UserError

    with pytest.raises(UserError, match="expandable"):
        Overheads.with_alloc_conf("expandable_segments:maybe")


def test_gpus_of_other_capabilities_share_a_trace_no_capability_decided():
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.results import TraceOptions
    from torchbudget.engine.workload import Workload

    cache = TraceCache()
    cnn = Workload("resnet18", parse_inputs("2x3x64x64"), TraceOptions(mode="train"))
    a, b = cache.get(cnn.with_options(target="sm90")), cache.get(cnn.with_options(target="sm75"))
    assert cache.misses == 1 and not a.target_dependent            # no attention: one trace serves both
    assert (a.options.target, b.options.target) == ("sm90", "sm75") and a.storage_events is b.storage_events
    assert cache.batches_of(cnn.with_options(target="sm75")) == [2]
    gpt = Workload(GPT, parse_inputs("1x64:int64"), TraceOptions(mode="train", precision="fp16-amp"))
    cache.get(gpt.with_options(target="sm90")), cache.get(gpt.with_options(target="sm75"))
    assert cache.misses == 3                                       # SDPA decided by the capability: two traces

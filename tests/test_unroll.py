"""Identical repeated blocks traced once and replicated (engine/tracing/unroll.py): the replicated step must be
the full trace itself — every op record, every storage event, module rows, totals and notes — on the models
users name, through the entry points the CLI and GUI use; any model the rule does not hold for is traced in full."""
from dataclasses import replace

import pytest
import torch
import transformers
from torch import nn

from tests.models.tiny_llms import GPT2, LLAMA, GEMMA2, _on_meta
from tests.models.tiny_moe import MIXTRAL, _on_meta as _moe_on_meta
from torchbudget.engine import api
from torchbudget.engine.inputs import InputSpec, parse_inputs
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.trace import trace_model
from torchbudget.engine.tracing import unroll
from torchbudget.engine.workload import Workload

NOTE = "repeated blocks:"
TOKENS = parse_inputs("input_ids=2x16:int64")


def _llama(layers=6, **extra):
    return _on_meta(transformers.LlamaForCausalLM, transformers.LlamaConfig(**dict(LLAMA, num_hidden_layers=layers,
                                                                                  **extra)))


def _events(result):
    ids: dict[int, int] = {}
    shown = [(e.kind, e.op_index, ids.setdefault(e.storage_id, len(ids)), e.nbytes, e.category, e.phase)
             for e in result.storage_events]
    return unroll.free_runs_sorted(shown)


def assert_same_step(replicated, full):
    """Equal in everything but the note saying how it was traced (and the time it took)."""
    assert any(p.startswith(NOTE) for p in replicated.policies), "the step was traced in full"
    assert not any(p.startswith(NOTE) for p in full.policies)
    assert len(replicated.ops) == len(full.ops)
    for mine, theirs in zip(replicated.ops, full.ops):
        assert mine == theirs
    assert _events(replicated) == _events(full)
    assert replicated.modules == full.modules
    assert replicated.totals == full.totals
    assert tuple(p for p in replicated.policies if not p.startswith(NOTE)) == full.policies
    assert replicated.warnings == full.warnings
    assert (replicated.coverage, replicated.flop_coverage) == (full.coverage, full.flop_coverage)


def _both(model, options, inputs=TOKENS):
    return (trace_model(model, inputs, options, unroll_blocks=True),
            trace_model(model, inputs, options, unroll_blocks=False))


@pytest.mark.parametrize("options", [
    TraceOptions(mode="infer", precision="bf16"),
    TraceOptions(mode="train", precision="bf16-amp", optimizer="adamw"),
    TraceOptions(mode="train", precision="fp32", optimizer="adamw", optimizer_impl="fused", checkpointing=True),
    TraceOptions(mode="train", precision="bf16-amp", optimizer="adamw", grad_accum=4),
    TraceOptions(mode="train", precision="bf16-amp", optimizer="adamw-8bit", lora_rank=8),
    TraceOptions(mode="train", precision="fp16-amp", optimizer="sgd", target="cpu"),
], ids=["infer-bf16", "train-amp", "fused-checkpointing", "grad-accum", "lora-8bit", "cpu-sgd"])
def test_llama_replicated_equals_full_trace(options):
    assert_same_step(*_both(_llama(), options))


def test_moe_gpt2_and_bert_replicated_equal_full_traces():
    mixtral = transformers.MixtralConfig(**dict(MIXTRAL, num_hidden_layers=6))
    assert_same_step(*_both(_moe_on_meta(transformers.MixtralForCausalLM, mixtral, "grouped_mm"),
                            TraceOptions(mode="train", precision="bf16-amp", optimizer="adamw")))
    gpt2 = _on_meta(transformers.GPT2LMHeadModel, transformers.GPT2Config(**dict(GPT2, n_layer=6)))
    assert_same_step(*_both(gpt2, TraceOptions(mode="train", precision="bf16-amp", optimizer="adamw",
                                               checkpointing=True)))
    bert = _on_meta(transformers.BertModel, transformers.BertConfig(
        vocab_size=512, hidden_size=64, num_hidden_layers=6, num_attention_heads=4, intermediate_size=128))
    assert_same_step(*_both(bert, TraceOptions(mode="train", precision="fp32", optimizer="adamw")))


def test_layers_that_differ_are_traced_in_full():
    # Gemma-2 alternates sliding-window and full attention: its blocks are not identical
    gemma = _on_meta(transformers.Gemma2ForCausalLM, transformers.Gemma2Config(**dict(GEMMA2, num_hidden_layers=6)),
                     "eager")
    assert unroll.plan(gemma, generation=False, min_blocks=0) is None
    # a frozen first layer runs another backward than the others: checked, and traced in full
    frozen, full = _both(_llama(), TraceOptions(mode="train", precision="bf16-amp", optimizer="adamw",
                                                freeze=("model.layers.0.*",)))
    assert not any(p.startswith(NOTE) for p in frozen.policies)
    assert _events(frozen) == _events(full) and frozen.ops == full.ops


class Indexed(nn.Module):
    """Runs its layers by a count of its own: a cut-short list breaks it, the full trace does not."""

    def __init__(self, n=6):
        super().__init__()
        self.n = n
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(n))

    def forward(self, x):
        for i in range(self.n):
            x = self.layers[i](x)
        return x


class SkipsSecond(nn.Module):
    """Identical blocks, but the forward treats one differently: the 4-block check catches it."""

    def __init__(self, n=6):
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(n))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i != 2 else layer(x) * 2
        return x


@pytest.mark.parametrize("model", [Indexed(), SkipsSecond()], ids=["indexed", "odd-layer"])
def test_models_the_rule_does_not_hold_for_fall_back(model):
    options = TraceOptions(mode="train", optimizer="adamw")
    first = trace_model(model, [InputSpec((4, 8))], options, unroll_blocks=True)
    full = trace_model(model, [InputSpec((4, 8))], options, unroll_blocks=False)
    assert not any(p.startswith(NOTE) for p in first.policies)
    assert first.ops == full.ops and _events(first) == _events(full)


def test_a_model_by_name_is_replicated_through_the_planners_entry_point():
    """Llama-3.2-1B (16 layers) through analyze_workload, as plan/analyze/the GUI run it: replicated by default,
    and equal to the full trace of the same model; the weights of every layer are there (closed form)."""
    workload = Workload("meta-llama/Llama-3.2-1B", parse_inputs("input_ids=1x256:int64"),
                        TraceOptions(mode="train", precision="bf16-amp", optimizer="adamw", checkpointing=True))
    replicated = api.analyze_workload(workload)
    loaded = api.load_model(workload.model)
    full = trace_model(loaded.module, workload.inputs, workload.options, model_name=loaded.name,
                       forward_kwargs=loaded.forward_kwargs, unroll_blocks=False)
    notes = tuple(p for p in replicated.policies if p not in full.policies)
    assert len(notes) == 1 and notes[0].startswith(NOTE + " 16 identical model.layers blocks")
    assert _events(replicated) == _events(full)
    assert replicated.ops == full.ops and replicated.modules == full.modules
    # every layer's ops are there: 16 decoder layers, each with its q_proj matmul in forward
    paths = {op.module_path for op in replicated.ops if op.module_path.endswith("self_attn.q_proj")}
    assert paths == {f"model.layers.{i}.self_attn.q_proj" for i in range(16)}


def test_notes_grow_with_the_blocks():
    assert unroll.extrapolate(("attention: flash ×3 in model.layers.0…model.layers.2", "same"),
                              ("attention: flash ×4 in model.layers.0…model.layers.3", "same"), 80) == (
        "attention: flash ×80 in model.layers.0…model.layers.79", "same")
    assert unroll.extrapolate(("1,000 bytes ×3",), ("1,500 bytes ×4",), 5) == ("2,000 bytes ×5",)
    with pytest.raises(unroll.NotPeriodic):
        unroll.extrapolate(("a ×3",), ("a ×4", "b"), 80)


# ---------------------------------------------------------------------------------------------- several GPUs
def _fsdp_events(result):
    """Storage events without the zero-byte ones (FSDP's unsharded placeholders of the blocks not run are not
    made: they hold nothing, the caching allocator skips them)."""
    ids: dict[int, int] = {}
    return unroll.free_runs_sorted([(e.kind, e.op_index, ids.setdefault(e.storage_id, len(ids)), e.nbytes,
                                     e.category, e.phase) for e in result.storage_events if e.nbytes])


@pytest.mark.parametrize("options", [
    dict(precision="bf16-amp", strategy="fsdp", world_size=4),
    dict(precision="bf16-amp", strategy="fsdp", world_size=8, checkpointing=True, optimizer_impl="fused"),
    dict(precision="fp32", strategy="fsdp-grad-op", world_size=4, optimizer_impl="foreach", target="cpu"),
], ids=["fsdp-amp", "fsdp-checkpointing-fused", "grad-op-cpu"])
def test_fsdp_replicated_equals_the_full_distributed_trace(options, monkeypatch):
    from torchbudget.engine.api import make_options
    from torchbudget.engine.distributed import trace as distributed, unrolled

    options = make_options(mode="train", optimizer="adamw", **options)
    monkeypatch.setattr(unroll, "MIN_BLOCKS", 0)
    replicated = distributed.trace_distributed(_llama(8), TOKENS, options)
    monkeypatch.setattr(unrolled, "eligible", lambda *args: None)
    full = distributed.trace_distributed(_llama(8), TOKENS, options)
    assert any(p.startswith(NOTE) for p in replicated.policies), "traced in full"
    assert replicated.ops == full.ops
    assert _fsdp_events(replicated) == _fsdp_events(full)
    assert replicated.distributed == full.distributed   # every collective, groups, notes, parameter bytes
    assert replicated.totals == full.totals
    # module rows (the class names aside: FSDP renames the classes it wraps), checkpointed blocks included
    def rows(result):
        return [replace(n, type_name="", name=n.name if n.path else "") for n in result.modules]

    assert rows(replicated) == rows(full)
    assert tuple(p for p in replicated.policies if not p.startswith(NOTE)) == full.policies

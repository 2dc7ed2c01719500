"""Activation checkpointing's granularity: each repeated block is a region (engine.tracing.blocks.find_blocks), as
transformers' gradient_checkpointing_enable, timm's set_grad_checkpointing and torch's checkpoint_wrapper
recipes do; the top-level rule only for a model without repeated blocks. Checked against independent
references: a real CPU run with transformers' own checkpointing measured by torch.profiler, FlopCounterMode's
count of the recompute, and the closed form of what a checkpointed block keeps (its input hidden state)."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from torchbudget.bench.profiler_reference import profiled_peak_bytes
from torchbudget.engine.api import analyze
from torchbudget.engine.memory import simulate_memory
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.results import MemoryCategory as C, Phase
from torchbudget.engine.tracing import blocks, training
from tests.models.tiny_llama import CONFIG, config

SHAPE = (2, 256)


def llama(own: bool = False) -> nn.Module:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = config()
    cfg.use_cache = False
    model = LlamaForCausalLM(cfg)
    if own:   # what a user's training script does
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _note(result) -> str:
    return next(p for p in result.policies if p.startswith("activation checkpointing"))


# ------------------------------------------------------------------------------------------------ the rule
def test_each_decoder_layer_is_a_region():
    plan = training.checkpoint_plan(llama())
    assert plan.rule == "blocks" and plan.regions == ("model.layers.0", "model.layers.1")
    assert [p for p, _ in blocks.find_blocks(llama())] == list(plan.regions)   # the FSDP units' rule too


@pytest.mark.parametrize("name, regions", [
    ("vit_b_16", [f"encoder.layers.encoder_layer_{i}" for i in range(12)]),   # once: the whole encoder
    ("resnet18", [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]),
])
def test_vision_blocks(name, regions):
    plan = training.checkpoint_plan(getattr(torchvision.models, name)(weights=None))
    assert plan.rule == "blocks" and list(plan.regions) == regions


def test_no_repeated_blocks_falls_back_to_the_top_level_rule():
    plan = training.checkpoint_plan(torchvision.models.vgg11(weights=None))
    assert plan.rule == "top-level" and plan.regions == ("features", "classifier") and plan.plain == ("avgpool",)
    assert "no repeated blocks" in training.checkpoint_note(plan)


def test_the_note_names_the_blocks_and_their_number():
    result = analyze(llama(), "2x32:int64", mode="train", checkpointing=True, target="cpu")
    assert _note(result) == ("activation checkpointing: 2 region(s) recomputed in backward, one per repeated "
                             "block (model.layers.0, model.layers.1)")
    # the copies on the way to the blocks (the view's LlamaModel) are attributed to their own paths
    assert result.module("model").calls == 1 and result.module("model.layers.1").calls == 1
    assert any(op.module_path == "model.embed_tokens" for op in result.ops)


# -------------------------------------------------------------- a model with its own (transformers) checkpointing
def test_a_model_that_checkpoints_itself_is_never_checkpointed_twice():
    own = llama(own=True)
    plain = analyze(llama(), "2x32:int64", mode="train", target="cpu")
    ours = analyze(llama(), "2x32:int64", mode="train", target="cpu", checkpointing=True)
    both = analyze(own, "2x32:int64", mode="train", target="cpu", checkpointing=True)
    itself = analyze(own, "2x32:int64", mode="train", target="cpu")
    assert both.totals.backward_flops == ours.totals.backward_flops == itself.totals.backward_flops
    assert both.totals.backward_flops > plain.totals.backward_flops
    assert "own gradient checkpointing (2 layer(s)) is switched off in the trace" in _note(both)
    assert _note(itself).startswith("activation checkpointing: the model's own (transformers "
                                    "gradient_checkpointing_enable, 2 layer(s)): 2 region(s)")
    # the user's module keeps its flags
    assert all(layer.gradient_checkpointing for layer in own.model.layers)


def test_a_model_that_checkpoints_itself_traces_for_a_gpu():
    # transformers calls torch.utils.checkpoint without a context_fn: its recompute would run outside the
    # target's semantics ("A different number of tensors was saved"); the view's regions replace it
    result = analyze(llama(own=True), "2x32:int64", mode="train", precision="bf16-amp", target="sm90")
    assert any("(+2 recomputed by checkpointing)" in p for p in result.policies)


# ------------------------------------------------------------------------------ independent references
@pytest.mark.slow
def test_peak_matches_a_real_run_with_transformers_own_checkpointing():
    ids = (torch.randint(0, CONFIG["vocab_size"], SHAPE),)
    result = analyze(llama(), "x".join(map(str, SHAPE)) + ":int64", mode="train", target="cpu", checkpointing=True)
    predicted = simulate_memory(result, Overheads.none()).trace_peak_bytes
    measured = profiled_peak_bytes(llama(own=True), ids, mode="train", optimizer="adamw")   # HF checkpoints
    plain = simulate_memory(analyze(llama(), "2x256:int64", mode="train", target="cpu"), Overheads.none())
    assert predicted < 0.7 * plain.trace_peak_bytes     # the reference is a checkpointed run
    # The one difference, exact: torch.utils.checkpoint keeps the CPU generator's state (preserve_rng_state)
    # per region until its backward, a real host tensor made outside any op the trace records; at the peak
    # (layer 0's backward) layer 0's is alive. On a GPU it is host memory, not the device's.
    assert measured - predicted == torch.get_rng_state().nbytes
    # and our regions run for real give the same peak as transformers' own
    assert profiled_peak_bytes(llama(), ids, mode="train", optimizer="adamw", checkpointing=True) == measured


@pytest.mark.slow
def test_recompute_flops_are_the_blocks_forward_matmuls():
    ids = (torch.randint(0, CONFIG["vocab_size"], SHAPE),)
    counted = {}
    for own in (False, True):
        model = llama(own).train()
        with FlopCounterMode(display=False) as counter:
            training.scalar_loss(model(*ids)).backward()
        counted[own] = counter.get_total_flops()
    registry = {str(op) for op in flop_registry}

    def ours(checkpointing):
        result = analyze(llama(), "2x256:int64", mode="train", target="cpu", checkpointing=checkpointing)
        return sum(op.flops for op in result.ops if op.op.rsplit(".", 1)[0] in registry)

    # closed form, per layer, T tokens: q, k, v, o, gate, up again (2·T·in·out each); torch's early stop
    # ends the recompute at the last op that saved a tensor, before down_proj's matmul (its output is only
    # added to the residual); CPU flash attention is not in FlopCounterMode's table
    t, h, inter = SHAPE[0] * SHAPE[1], CONFIG["hidden_size"], CONFIG["intermediate_size"]
    kv = CONFIG["num_key_value_heads"] * h // CONFIG["num_attention_heads"]
    per_layer = 2 * t * h * (h + kv + kv + h + inter + inter)
    recompute = CONFIG["num_hidden_layers"] * per_layer
    assert counted[True] - counted[False] == recompute
    assert ours(True) - ours(False) == recompute
    assert ours(False) == counted[False]


def _saved_at_forward_end(result, inside: str) -> int:
    """ACTIVATIONS bytes alive when the forward ends that ops under module path ``inside`` allocated."""
    live = {}
    for e in result.storage_events:
        if e.phase is not Phase.FORWARD:
            continue
        if e.kind == "alloc" and e.category is C.ACTIVATIONS and e.op_index >= 0 \
                and result.ops[e.op_index].module_path.startswith(inside):
            live[e.storage_id] = e.nbytes
        elif e.kind == "free":
            live.pop(e.storage_id, None)
    return sum(live.values())


@pytest.mark.slow
def test_llama_3_2_1b_by_name_keeps_one_hidden_state_per_block():
    args = dict(mode="train", precision="bf16-amp", optimizer="none")
    plain = analyze("meta-llama/Llama-3.2-1B", "1x2048:int64", **args)
    ckpt = analyze("meta-llama/Llama-3.2-1B", "1x2048:int64", checkpointing=True, **args)
    layers, hidden = 16, 2048
    assert _note(ckpt).startswith(f"activation checkpointing: {layers} region(s) recomputed in backward, one per "
                                  "repeated block (model.layers.0, ")
    # what a checkpointed block leaves for backward: its output, the next block's (or the final norm's) saved
    # input: the fp32 residual stream under autocast, batch x seq x hidden
    per_block = 1 * 2048 * hidden * 4
    assert _saved_at_forward_end(ckpt, "model.layers.") == layers * per_block
    kept = _saved_at_forward_end(plain, "model.layers.")
    assert kept > 10 * layers * per_block     # every block's internals, without checkpointing
    # the rest of the model (embedding, rotary, final norm, head, logits) is checkpointed by neither; the
    # regions' recompute also keeps the blocks' other inputs: the position ids (batch x seq int64, one tensor
    # shared by every block), which nothing saves without checkpointing (cos/sin are saved either way)
    rest = _saved_at_forward_end(ckpt, "") - layers * per_block
    assert rest - (_saved_at_forward_end(plain, "") - kept) == 1 * 2048 * 8


@pytest.mark.slow
def test_the_plan_on_the_command_line_states_the_blocks(capsys):
    import json

    from torchbudget.cli import run_cli

    def plan(*extra):
        assert run_cli(["plan", "meta-llama/Llama-3.2-1B", "--input", "1x2048:int64", "--mode", "train",
                        "--precision", "bf16-amp", "--optimizer", "none", "--gpu", "H100 SXM", "--no-max-batch",
                        *extra, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    plain, ckpt = plan(), plan("--checkpointing")
    assert ckpt["workload"]["checkpointing"] is True
    # without: the peak is backward's start, every block's activations alive; with: the end of backward
    assert plain["memory"]["by_category"]["activations"] > 6 * 2**30
    assert ckpt["memory"]["allocated_peak_bytes"] < plain["memory"]["allocated_peak_bytes"]
    assert run_cli(["plan", "meta-llama/Llama-3.2-1B", "--input", "1x128:int64", "--mode", "train", "--no-store",
                    "--gpu", "H100 SXM", "--no-max-batch", "--no-max-seq-len", "--checkpointing"]) == 0
    assert "policy: activation checkpointing: 16 region(s) recomputed in backward" in capsys.readouterr().out
    assert run_cli(["analyze", "meta-llama/Llama-3.2-1B", "--input", "1x128:int64", "--mode", "train", "--no-store",
                    "--checkpointing"]) == 0
    assert ("policy: activation checkpointing: 16 region(s) recomputed in backward, one per repeated block "
            "(model.layers.0, model.layers.1, model.layers.2, …, model.layers.14, model.layers.15)\n"
            in capsys.readouterr().out)

"""gui.state.WorkloadState without Qt: what is set comes back exactly, drafts keep what was typed, refused
changes leave the workload as it was, subscribers hear each change once, and a model's default input never
overwrites an input the user typed."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import fields, replace

import pytest

from torchbudget.engine.errors import UserError
from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.workload import Workload
from torchbudget.gui.state import DEFAULT_WORKLOAD, MAX_DIM, WorkloadState

RICH = Workload("resnet18", parse_inputs("8x3x64x64"),
                TraceOptions(mode="train", precision="bf16-amp", optimizer="sgd", checkpointing=True,
                             convention="thop", optimizer_impl="fused", attention="math", target="sm75",
                             base_dtype="nf4", lora_rank=8, lora_targets=("fc",), freeze=("conv1.*",), grad_accum=4,
                             moe_routing="skewed", attention_flops="causal"),
                {"num_classes": 10, "weights": None}, {"return_dict": False})
# the generation-only options cannot sit in a training workload: a second one carries them
RICH_DECODE = Workload("gpt2", parse_inputs("8x1:int64"), TraceOptions(mode="decode", context_len=512, kv_dtype="fp8"))
# several GPUs: a third (strategies do not take LoRA or decode yet)
RICH_PARALLEL = Workload("gpt2", parse_inputs("4x128:int64"),
                         TraceOptions(mode="train", strategy="fsdp+tp", world_size=16, tp_size=4, sequence_parallel=True))


def test_the_state_module_imports_no_qt():
    code = "import sys, torchbudget.gui.state; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('PySide6', 'pyqtgraph', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_set_then_workload_is_exact_for_every_field():
    assert all(any(getattr(w.options, f.name) != getattr(TraceOptions(), f.name)
                   for w in (RICH, RICH_DECODE, RICH_PARALLEL))
               for f in fields(TraceOptions))
    for rich in (RICH, RICH_DECODE, RICH_PARALLEL):
        state = WorkloadState()
        state.set(rich)
        assert state.workload == rich
        assert WorkloadState(rich).workload == rich
    assert state.workload.forward_kwargs == {} and WorkloadState(RICH).workload.forward_kwargs == {"return_dict": False}
    assert WorkloadState(RICH).workload.model_kwargs == {"num_classes": 10, "weights": None}


def test_updates_change_one_thing_and_tell_subscribers_what():
    state = WorkloadState(RICH)
    heard = []
    unsubscribe = state.subscribe(heard.append)
    state.update(source="slider", batch=32)
    assert state.workload == RICH.with_batch(32)
    assert heard[-1].fields == {"inputs", "batch"} and heard[-1].source == "slider"
    assert heard[-1].previous == RICH
    state.update(resolution=96)
    assert state.workload.inputs[0].shape == (32, 3, 96, 96) and "resolution" in heard[-1].fields
    state.update(attention="flash", convention="default")
    assert heard[-1].fields == {"attention", "convention"}
    state.update(model_kwargs='{"num_classes": 3}')
    assert state.workload.model_kwargs == {"num_classes": 3}
    count = len(heard)
    state.update(attention="flash")   # no change, nothing said
    assert len(heard) == count
    unsubscribe()
    state.update(batch=2)
    assert len(heard) == count


def test_refused_changes_leave_the_workload_as_it_was():
    state = WorkloadState(RICH)
    for changes in ({"precision": "fp8"}, {"mode": "sleep"}, {"optimizer": "lion"}, {"batch": 0},
                    {"batch": 10**40}, {"inputs": "10000000000000000000000000000000000000000x3x224x224"},
                    {"inputs": "4000000000x3x224x224"}, {"inputs": "2000000000x2000000000x3"},
                    {"model_kwargs": "[1, 2]"}, {"model": "  "}, {"target": "sm3"}):
        with pytest.raises(UserError):
            state.update(**changes)
        assert state.workload == RICH, changes
    with pytest.raises(TypeError):
        state.update(colour="red")


def test_a_draft_keeps_the_text_and_its_error_and_blocks_batch_changes():
    state = WorkloadState(RICH)
    error = state.edit_text("inputs", "8x3x64x")
    assert error is not None and error.field == "input" and "malformed" in str(error)
    assert state.drafts == {"inputs": "8x3x64x"} and not state.ready
    assert state.workload == RICH                         # the last valid workload is kept
    with pytest.raises(UserError, match="fix the input shape first"):
        state.update(batch=4)
    assert state.edit_text("inputs", "8x3x64x48") is None
    assert state.ready and state.drafts == {} and state.workload.inputs == parse_inputs("8x3x64x48")
    huge = state.edit_text("inputs", "1" + "0" * 40 + "x3x224x224")
    assert "too large" in str(huge) and state.drafts["inputs"].startswith("1000")


def test_inference_keeps_the_training_choices_for_later():
    state = WorkloadState(RICH)
    state.update(mode="infer")
    assert state.workload.options.optimizer is None and state.workload.options.checkpointing is False
    assert state.training_choice("optimizer") == "sgd" and state.training_choice("optimizer_impl") == "fused"
    state.update(optimizer="adam")   # chosen while in inference: kept for training
    state.update(mode="train")
    assert state.workload.options == replace(RICH.options, optimizer="adam")


def test_the_default_input_never_overwrites_what_the_user_typed():
    state = WorkloadState(DEFAULT_WORKLOAD.with_batch(6))
    default = parse_inputs("1x3x299x299")
    # picked, then the default arrives: used, at the batch chosen
    state.pick_model("inception_v3")
    assert not state.ready and state.pending_inputs_for == "inception_v3"
    assert state.apply_default_inputs("inception_v3", default)
    assert state.ready and state.workload.inputs == parse_inputs("6x3x299x299")
    # picked, the user types (a whole shape, or half of one), then the default arrives: ignored
    state.pick_model("resnet18")
    state.edit_text("inputs", "2x3x320x320")
    assert state.ready and not state.apply_default_inputs("resnet18", default)
    assert state.workload.inputs == parse_inputs("2x3x320x320")
    state.pick_model("alexnet")
    state.edit_text("inputs", "2x3x")   # half typed: still the user's
    assert not state.apply_default_inputs("alexnet", default) and state.drafts["inputs"] == "2x3x"
    # a default for a model no longer chosen is ignored
    state.pick_model("resnet18")
    state.pick_model("alexnet")
    assert not state.apply_default_inputs("resnet18", default)
    assert state.apply_default_inputs("alexnet", parse_inputs("1x3x224x224"))


def test_limits_are_the_spin_boxes():
    state = WorkloadState()
    state.update(batch=MAX_DIM)
    assert state.workload.batch_size == MAX_DIM
    with pytest.raises(UserError, match="batch size must be from 1 to 2,147,483,647"):
        state.update(batch=MAX_DIM + 1)


def test_mode_dependent_options_come_back_and_sequence_length_is_a_field():
    from torchbudget.gui.state import DEFAULT_CONTEXT

    state = WorkloadState(Workload("m.py:Llama", parse_inputs("input_ids=2x16:int64")))
    state.update(mode="decode")   # decode needs a context: the default one
    assert state.workload.options.context_len == DEFAULT_CONTEXT
    state.update(context_len=300, kv_dtype="fp8")
    state.update(mode="train", grad_accum=4)
    assert (state.workload.options.context_len, state.workload.options.kv_dtype) == (0, "auto")
    assert state.choice("context_len") == 300 and state.choice("kv_dtype") == "fp8"
    state.update(mode="prefill")   # the KV dtype applies, the context does not
    assert (state.workload.options.context_len, state.workload.options.kv_dtype) == (0, "fp8")
    assert state.choice("grad_accum") == 4
    state.update(mode="decode")
    assert (state.workload.options.context_len, state.workload.options.kv_dtype) == (300, "fp8")
    state.update(seq_len=64)
    assert state.workload.inputs == parse_inputs("input_ids=2x64:int64")
    assert state.edit_text("freeze", "model.embed_tokens.*") is None   # cleared outside training, kept for it
    assert state.choice("freeze") == ("model.embed_tokens.*",) and state.workload.options.freeze == ()
    error = state.edit_text("lora_targets", "q_proj")   # targets without a rank: a draft with its error
    assert error is not None and error.field == "lora_targets" and state.drafts == {"lora_targets": "q_proj"}


def test_several_gpu_fields_follow_the_strategy_and_come_back():
    """Picking a strategy brings the GPU count chosen before (else 8); one GPU clears the count, the TP degree and
    sequence parallel; the TP degree follows the strategy. The cluster (nodes, links) is checked and canonical."""
    state = WorkloadState(Workload("gpt2", parse_inputs("2x64:int64"), TraceOptions(mode="train")))
    heard = []
    state.subscribe(heard.append)
    state.update(strategy="fsdp")
    assert (state.workload.options.world_size, state.workload.options.tp_size) == (8, 1)
    state.update(world_size=16)
    state.update(strategy="fsdp+tp")
    assert (state.workload.options.world_size, state.workload.options.tp_size) == (16, 2)
    state.update(tp_size=4, sequence_parallel=True)
    state.update(strategy="tp")
    assert (state.workload.options.tp_size, state.workload.options.sequence_parallel) == (16, True)
    state.update(strategy="none")
    assert state.workload.options == TraceOptions(mode="train")
    state.update(strategy="fsdp+tp")
    assert (state.workload.options.world_size, state.workload.options.tp_size) == (16, 4)   # both came back
    with pytest.raises(UserError, match="not divisible"):
        state.update(tp_size=3)
    assert state.workload.options.tp_size == 4
    state.set_cluster(gpus_per_node=4, intra="nvlink4", inter="roce-400")
    assert heard[-1].fields == {"cluster"}
    assert (state.cluster.gpus_per_node, state.cluster.intra, state.cluster.inter) == (4, "NVLink 4", "RoCE 400GbE")
    for bad in ({"gpus_per_node": 0}, {"intra": "carrier pigeon"}):
        with pytest.raises(UserError):
            state.set_cluster(**bad)
    assert state.cluster.gpus_per_node == 4
    state.set_cluster(gpus_per_node=None, intra=None, inter=None)
    assert state.cluster == type(state.cluster)()

"""The window's token-model mode, driven as a user does: a small Llama (tests/models/tiny_llms.py, run in the
model's own process), the sequence-length slider, decode with a context and a KV-cache dtype, LoRA and
gradient accumulation; the verdict's figures checked against the configs' closed forms."""
from __future__ import annotations

from pathlib import Path

import pytest

from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.report.units import human_bytes
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.workload import Workload
from torchbudget.gui import user_code
from tests.gui_support import close_window, make_window, wait_for_plans
from tests.models.tiny_llms import LLAMA

MODEL = f"{Path(__file__).parent / 'models' / 'tiny_llms.py'}:TinyLlama"
LAYERS, KV_HEADS = LLAMA["num_hidden_layers"], LLAMA["num_key_value_heads"]
HEAD_DIM = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
WAIT = 180_000


def kv_cache_bytes(tokens: int, sequences: int, nbytes: int) -> int:
    """2 (keys and values) x layers x KV heads x head dim x tokens x sequences x bytes per value."""
    return 2 * LAYERS * KV_HEADS * HEAD_DIM * tokens * sequences * nbytes


FP8_SCALES = 2 * LAYERS * 4   # an fp8 cache keeps one float32 scale per layer's keys and values


def lora_params(rank: int) -> int:
    """The default targets, every attention projection (engine.finetune): q_proj and o_proj (hidden <-> heads x
    head dim), k_proj and v_proj (hidden -> KV heads x head dim); rank x (in + out) per adapter, per layer."""
    hidden = LLAMA["hidden_size"]
    q_or_o = rank * (hidden + LLAMA["num_attention_heads"] * HEAD_DIM)
    k_or_v = rank * (hidden + KV_HEADS * HEAD_DIM)
    return LAYERS * 2 * (q_or_o + k_or_v)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(user_code, "ask", lambda parent, path, why: True)
    w = make_window(qtbot, tmp_path, monkeypatch, workload=Workload(MODEL, parse_inputs("input_ids=2x16:int64")))
    w.hardware_panel.select("H100 SXM")
    yield w
    close_window(w)


def choose(panel, name, value):
    combo = panel.option_combos[name]
    index = combo.findData(value)
    assert index >= 0, (name, value)
    combo.setCurrentIndex(index)


def test_token_model_decode_and_lora_through_the_window(qtbot, window):
    panel = window.workload_panel
    wait_for_plans(qtbot, window, lambda ev: ev.plans[0].gpu.name == "H100 SXM", timeout=WAIT)
    # a token model: the second slider is the sequence length, and it changes the token input
    assert panel.axis_label.text() == "Sequence length"
    assert panel.seq_len_pair.isVisibleTo(panel) and not panel.resolution_pair.isVisibleTo(panel)
    assert panel.seq_len_spin.value() == 16
    panel.seq_len_spin.setValue(32)
    assert panel.state.workload.inputs == parse_inputs("input_ids=2x32:int64")
    assert panel.inputs_edit.text() == "input_ids=2x32:int64"
    panel.seq_len_slider.setValue(2)   # steps of 64 positions
    assert panel.state.workload.seq_len == 128 and panel.seq_len_spin.value() == 128
    assert not panel.generation_group.isVisibleTo(panel) and not panel.finetune_group.isVisibleTo(panel)
    # the longest sequence at this batch and memory against sequence length, from the model's own process
    solved = wait_for_plans(qtbot, window, lambda ev: ev.workload == panel.state.workload and ev.plans[0].max_seq_len,
                            timeout=WAIT)
    longest = solved.plans[0].max_seq_len
    assert window.verdict.figure_text("max_seq_len") == f"{longest:,} tokens at batch 2"
    qtbot.waitUntil(lambda: window.resolution_sweep is not None and window.resolution_sweep.axis == "seq_len"
                    and window._file_sweeps_for[0] == panel.state.workload.key(), timeout=WAIT)
    sweep = window.resolution_sweep
    assert sweep.gpus[0].max_seq_len == longest and {128, longest} <= {p.value for p in sweep.points}
    assert [p.per_gpu[0].fits for p in sweep.points if p.value in (longest, longest + 1)] == [True, False][
        :len([p for p in sweep.points if p.value in (longest, longest + 1)])]
    tabs = window.tabs
    assert tabs.tabText(tabs.indexOf(window.plots.memory_vs_resolution)) == "Memory vs sequence length"
    assert window.plots.memory_vs_batch.getPlotItem().getAxis("bottom").labelText.startswith("Batch size (sequences")

    # decode: one new token per sequence against a KV cache of the context's tokens, stored in fp8
    panel.inputs_edit.selectAll()
    qtbot.keyClicks(panel.inputs_edit, "input_ids=2x1:int64")
    choose(panel, "mode", "decode")
    assert panel.generation_group.isVisibleTo(panel) and panel.context_spin.isEnabled()
    assert panel.state.workload.options.context_len == panel.context_spin.value() == 1024   # the default
    panel.context_spin.setValue(256)
    choose(panel, "kv_dtype", "fp8")
    assert panel.state.workload.options == TraceOptions(mode="decode", context_len=256, kv_dtype="fp8",
                                                        target="sm90")
    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload == panel.state.workload, timeout=WAIT)
    g = evaluation.plans[0].generation
    assert (g.sequences, g.context_tokens, g.new_tokens) == (2, 256, 1)
    assert g.kv_read_bytes == kv_cache_bytes(256, 2, 1) + FP8_SCALES    # fp8: one byte per value
    assert g.kv_cache_bytes == kv_cache_bytes(257, 2, 1) + FP8_SCALES   # the step's new token appended
    verdict = window.verdict
    assert verdict.extra_title.text() == "Generation"
    assert verdict.figure_text("kv_cache") == f"{human_bytes(g.kv_read_bytes)} (2 × 256 tokens)"
    assert verdict.figure_text("tokens_per_s").startswith(f"{g.tokens_per_s:,.0f} (")
    assert not verdict.max_batch.isVisibleTo(verdict)   # sequences, not samples, count in decode
    qtbot.waitUntil(lambda: window.batch_sweep is not None and window._file_sweeps_for[0] == panel.state.workload.key(),
                    timeout=WAIT)
    assert window.plots.memory_vs_batch.getPlotItem().getAxis("bottom").labelText.startswith("Concurrent sequences")
    # the model's process solves the largest number of sequences and the largest context
    solved = wait_for_plans(qtbot, window, lambda ev: ev.workload == panel.state.workload
                            and ev.plans[0].max_batch and ev.plans[0].generation.max_context, timeout=WAIT)
    plan = solved.plans[0]
    assert verdict.figure_text("max_concurrent_sequences") == f"{plan.max_batch:,} at context 256"
    assert verdict.figure_text("max_context") == f"{plan.generation.max_context:,} tokens at 2 sequences"

    # training with LoRA: the fine-tuning group; a target matching no module is said under its field
    choose(panel, "mode", "train")
    assert not panel.generation_group.isVisibleTo(panel) and panel.finetune_group.isVisibleTo(panel)
    assert panel.state.choice("context_len") == 256   # kept for when decode comes back
    panel.lora_rank_spin.setValue(8)
    panel.grad_accum_spin.setValue(4)
    panel.lora_targets_edit.setFocus()
    qtbot.keyClicks(panel.lora_targets_edit, "nope_proj")
    panel.lora_targets_edit.editingFinished.emit()
    assert panel.state.workload.options.lora_targets == ("nope_proj",)
    qtbot.waitUntil(lambda: panel.errors["lora_targets"].isVisibleTo(panel), timeout=WAIT)
    assert "'nope_proj' matches no module" in panel.errors["lora_targets"].message
    assert not panel.errors["model"].isVisibleTo(panel)   # one message, under the field that caused it
    panel.lora_targets_edit.clear()
    panel.lora_targets_edit.editingFinished.emit()
    assert panel.state.workload.options.lora_targets == ()
    evaluation = wait_for_plans(qtbot, window, lambda ev: ev.workload == panel.state.workload, timeout=WAIT)
    assert not panel.errors["lora_targets"].isVisibleTo(panel)
    totals = evaluation.result.totals
    assert totals.trainable_params == lora_params(8)
    assert verdict.extra_title.text() == "Fine-tuning"
    assert verdict.figure_text("trainable_params").startswith(f"{lora_params(8) / 1e3:.2f} K of ")
    assert verdict.figure_text("global_batch") == "8 (4 × 2)"
    assert evaluation.plans[0].latency.global_batch == 8

    # back to decode: the context and KV dtype chosen before come back
    choose(panel, "mode", "decode")
    assert (panel.state.workload.options.context_len, panel.state.workload.options.kv_dtype) == (256, "fp8")
    assert panel.context_spin.value() == 256


def test_the_second_axis_follows_the_inputs(qtbot, tmp_path, monkeypatch):
    """An image model shows the resolution; typing a token input switches the row to sequence length."""
    from torchbudget.gui.workload_panel import WorkloadPanel
    from torchbudget.gui.state import WorkloadState

    state = WorkloadState(Workload("resnet18", parse_inputs("2x3x64x64")))
    panel = WorkloadPanel(state=state, may_list_models=False)
    qtbot.addWidget(panel)
    assert panel.axis_label.text() == "Resolution" and panel.resolution_pair.isVisibleTo(panel)
    qtbot.keyClicks(panel.inputs_edit, "")   # focus
    panel.inputs_edit.selectAll()
    qtbot.keyClicks(panel.inputs_edit, "input_ids=4x100:int64")
    assert panel.axis_label.text() == "Sequence length" and panel.seq_len_spin.value() == 100
    assert not panel.resolution_pair.isVisibleTo(panel)
    panel.seq_len_spin.setValue(300)
    assert state.workload.inputs == parse_inputs("input_ids=4x300:int64")
    # decode needs a context: choosing decode starts at the default one; the generation group appears
    panel.option_combos["mode"].setCurrentIndex(panel.option_combos["mode"].findData("decode"))
    assert panel.generation_group.isVisibleTo(panel) and state.workload.options.context_len == 1024
    panel.option_combos["mode"].setCurrentIndex(panel.option_combos["mode"].findData("prefill"))
    assert not panel.context_spin.isEnabled() and state.workload.options.context_len == 0
    # LoRA targets without a rank: refused, kept as typed, said under the field
    panel.option_combos["mode"].setCurrentIndex(panel.option_combos["mode"].findData("train"))
    panel.lora_targets_edit.setEnabled(True)
    panel.lora_targets_edit.setText("q_proj")
    panel.lora_targets_edit.editingFinished.emit()
    assert state.drafts == {"lora_targets": "q_proj"} and not state.ready
    assert "LoRA targets need a LoRA rank" in panel.errors["lora_targets"].message
    panel.lora_rank_spin.setValue(4)
    panel.lora_targets_edit.editingFinished.emit()
    assert state.ready and state.workload.options.lora_targets == ("q_proj",)
    panel.lora_rank_spin.setValue(0)   # no adapters: no targets either
    assert state.workload.options.lora_rank == 0 and state.workload.options.lora_targets == ()
    assert panel.lora_targets_edit.text() == "" and not panel.lora_targets_edit.isEnabled()


def test_a_new_sequence_length_shows_an_estimated_verdict_before_its_exact_trace(qtbot, tmp_path, monkeypatch):
    # the sequence-length slider, like the batch slider: a length not traced yet is planned at once from three
    # traced lengths (the quadratic model; the sweep traced them), marked as an estimate until its own trace lands
    import threading

    from tests.test_seq_len import TINY_LLAMA

    workload = Workload("llama-3.2-1b", parse_inputs("input_ids=1x256:int64"), TraceOptions(), TINY_LLAMA)
    window = make_window(qtbot, tmp_path, monkeypatch, workload=workload)
    try:
        panel = window.workload_panel
        wait_for_plans(qtbot, window, timeout=WAIT)
        qtbot.waitUntil(lambda: not window.busy and window.resolution_sweep is not None
                        and window.resolution_sweep.axis == "seq_len", timeout=WAIT)
        traced = window.cache.seq_lens_in_memory(window.evaluation.plans[0].workload)
        length = next(n for n in (320, 384, 192, 448) if n not in traced)
        gate, analyze = threading.Event(), window.cache._analyze
        window.cache._analyze = lambda w: (gate.wait(WAIT / 1000), analyze(w))[1]   # exact traces wait for us
        panel.seq_len_spin.setValue(length)
        qtbot.waitUntil(lambda: window.evaluation.workload.seq_len == length, timeout=5_000)
        estimate = window.evaluation
        assert estimate.interpolated and estimate.result is None
        assert window.progress_label.text().startswith("Estimated from traces at sequence lengths")
        assert window.verdict.verdict_text() not in ("…", "Analysing…")   # a verdict on screen for the new length
        gate.set()
        exact = wait_for_plans(qtbot, window, lambda ev: ev.workload.seq_len == length, timeout=WAIT)
        assert exact.plans[0].memory.required_bytes == estimate.plans[0].memory.required_bytes
    finally:
        close_window(window)


def test_decode_plots_memory_and_tokens_per_s_against_the_context(qtbot, window):
    # the fourth tab of a decode workload: memory needed and the KV cache against the context (each point its own
    # trace, in the model's process for a .py model), new tokens/s on a right-hand axis, a marker at each GPU's
    # largest context
    panel = window.workload_panel
    wait_for_plans(qtbot, window, lambda ev: ev.plans[0].gpu.name == "H100 SXM", timeout=WAIT)
    panel.inputs_edit.selectAll()
    qtbot.keyClicks(panel.inputs_edit, "input_ids=2x1:int64")
    choose(panel, "mode", "decode")
    panel.context_spin.setValue(512)
    workload = panel.state.workload
    assert workload.options.context_len == 512
    qtbot.waitUntil(lambda: window.resolution_sweep is not None and window.resolution_sweep.axis == "context"
                    and window._file_sweeps_for[0] == panel.state.workload.key(), timeout=WAIT)
    sweep = window.resolution_sweep
    values = [p.value for p in sweep.points]
    assert 512 in values and len(values) >= 3
    for point in sweep.points:   # fp32 cache: 4 bytes per value
        assert point.per_gpu[0].kv_cache_bytes == kv_cache_bytes(point.value, 2, 4)
        assert point.per_gpu[0].tokens_per_s > 0
    best = sweep.gpus[0].max_context
    solved = wait_for_plans(qtbot, window, lambda ev: ev.workload == workload and ev.plans[0].generation.max_context,
                            timeout=WAIT)
    assert best == solved.plans[0].generation.max_context
    tabs = window.tabs
    assert tabs.tabText(tabs.indexOf(window.plots.memory_vs_resolution)) == "Memory vs context"
    item = window.plots.memory_vs_resolution.getPlotItem()
    assert item.getAxis("bottom").labelText.startswith("Context (tokens in the KV cache")
    assert item.getAxis("right").isVisible()
    names = [label.text for _, label in item.legend.items]
    assert f"largest context on H100 SXM: {best:,}" in names and "KV cache" in names
    assert "H100 SXM tokens/s" in names
    # back to inference: the fourth tab is the sequence length again, without the tokens/s axis
    choose(panel, "mode", "infer")
    qtbot.waitUntil(lambda: window.resolution_sweep is not None and window.resolution_sweep.axis == "seq_len",
                    timeout=WAIT)
    assert tabs.tabText(tabs.indexOf(window.plots.memory_vs_resolution)) == "Memory vs sequence length"
    assert not item.getAxis("right").isVisible()
    assert not any(name.endswith("tokens/s") for name in (label.text for _, label in item.legend.items))

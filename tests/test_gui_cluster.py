"""The cluster panel (issue 11) driven as a user does: resnet18 in training, FSDP picked in the Strategy combo,
8 GPUs; the verdict says per rank, the memory breakdown is rank 0's, the step bar splits compute from
communication; the numbers against closed forms of resnet18 (every dim 0 divides by 8: FSDP pads nothing)."""
from __future__ import annotations

from pathlib import Path

import pytest

from torchbudget.engine.inputs import parse_inputs
from torchbudget.engine.overheads import NCCL_BYTES_PER_COMMUNICATOR
from torchbudget.engine.report.units import human_bytes, human_ms
from torchbudget.engine.results import MemoryCategory, TraceOptions
from torchbudget.engine.workload import Workload
from tests.gui_support import close_window, make_window, wait_for_plans

RESNET18_PARAMS = 11_689_512
GPU = "H100 SXM"
WAIT = 240_000


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    w = make_window(qtbot, tmp_path, monkeypatch,
                    workload=Workload("resnet18", parse_inputs("2x3x64x64"), TraceOptions(mode="train")))
    w.hardware_panel.select(GPU)
    yield w
    close_window(w)


def choose(combo, value):
    index = combo.findData(value)
    assert index >= 0, value
    combo.setCurrentIndex(index)


def at_start(result, category) -> int:
    """Bytes rank 0 holds when the step starts (the storages allocated before op 0)."""
    return sum(e.nbytes for e in result.storage_events
               if e.kind == "alloc" and e.op_index == -1 and e.category is category)


def test_fsdp_on_eight_gpus_through_the_cluster_panel(qtbot, window):
    panel, group, verdict = window.workload_panel, window.workload_panel.cluster_group, window.verdict
    wait_for_plans(qtbot, window, lambda ev: ev.plans[0].gpu.name == GPU, timeout=WAIT)
    assert "per rank" not in verdict.badge.text() and verdict.step_text() == ""
    assert not group.world_spin.isEnabled() and group.world_spin.value() == 1   # one GPU
    assert group.intra_combo.itemText(0) == "auto (NVLink 4)"                     # the H100 SXM's own link

    choose(panel.strategy_combo, "fsdp")
    assert group.world_spin.isEnabled() and group.world_spin.value() == 8          # a node of 8 when first chosen
    assert panel.state.workload.options.world_size == 8 and not group.tp_spin.isEnabled()
    ev = wait_for_plans(qtbot, window, lambda ev: ev.plans[0].distributed is not None, timeout=WAIT)
    plan, d = ev.plans[0], ev.plans[0].distributed
    assert (d.strategy, d.world_size, d.intra) == ("fsdp", 8, "NVLink 4")

    # the verdict, the memory and the largest batch are per rank
    assert "per rank" in verdict.badge.text() and f"8× {GPU}" in verdict.badge.text()
    assert verdict.summary.text().startswith("Each rank (GPU) needs")
    assert verdict.memory_title.text() == "Memory per rank (rank 0 of 8, fsdp)"
    assert verdict.figures.labelForField(verdict.max_batch).text() == "Largest batch per rank"
    # closed forms: FSDP holds 1/8 of every fp32 parameter; one NCCL communicator; the all-gathers move every
    # block's parameters twice (forward, backward) and the root's (conv1, bn1, fc: kept gathered from forward
    # to backward, as fully_shard(model) leaves the root) once; the reduce-scatters every gradient once
    assert at_start(ev.result, MemoryCategory.WEIGHTS) == RESNET18_PARAMS * 4 // 8
    assert plan.memory.by_category[MemoryCategory.COMMUNICATION] == NCCL_BYTES_PER_COMMUNICATOR
    legend = [verdict.legend.itemAt(i).widget().text() for i in range(verdict.legend.count())
              if hasattr(verdict.legend.itemAt(i).widget(), "text")]
    assert f"NCCL buffers {human_bytes(NCCL_BYTES_PER_COMMUNICATOR)}" in legend
    root = 64 * 3 * 7 * 7 + 2 * 64 + 512 * 1000 + 1000
    assert human_bytes((2 * RESNET18_PARAMS - root) * 4) in verdict.figure_text("collective_all_gather")
    assert human_bytes(RESNET18_PARAMS * 4) in verdict.figure_text("collective_reduce_scatter")
    assert verdict.figure_text("cluster") == f"8x {GPU} on NVLink 4"
    assert "global batch 16" in verdict.figure_text("job_throughput")   # 2 per rank x 8 replicas

    # the step bar: compute, then the communication compute cannot hide; the rest overlaps
    c = d.comm
    assert verdict.step_bar.isVisibleTo(verdict) and c.exposed_ms > 0 and c.overlapped_ms > 0
    assert verdict.step_text() == (f"Compute {human_ms(c.compute_ms)}; Exposed communication {human_ms(c.exposed_ms)}; "
                                   f"Overlapped communication {human_ms(c.overlapped_ms)}")
    assert c.compute_ms + c.exposed_ms == pytest.approx(d.step_ms)
    assert (verdict.step_bar.compute_ms, verdict.step_bar.exposed_ms) == (c.compute_ms, c.exposed_ms)

    # two nodes of 4: the groups of 8 cross InfiniBand, slower than NVLink: more communication
    group.per_node_spin.setValue(4)
    assert panel.state.cluster.gpus_per_node == 4
    ev = wait_for_plans(qtbot, window, lambda ev: ev.plans[0].distributed.gpus_per_node == 4, timeout=WAIT)
    assert "2 nodes of 4" in verdict.figure_text("cluster")
    assert ev.plans[0].distributed.comm.comm_ms > c.comm_ms
    # a node of 3 cannot hold 8 GPUs: hardware.cluster's one line, under the GPU count
    group.per_node_spin.setValue(3)
    qtbot.waitUntil(lambda: "not a whole number of nodes" in panel.errors["world_size"].message, timeout=WAIT)

    # back to one GPU: no strategy, no "per rank"; FSDP again brings the 8 GPUs back
    group.per_node_spin.setValue(0)
    choose(panel.strategy_combo, "none")
    assert panel.state.workload.options == TraceOptions(mode="train", target="sm90")
    assert not group.world_spin.isEnabled()
    wait_for_plans(qtbot, window, lambda ev: ev.plans[0].distributed is None, timeout=WAIT)
    assert "per rank" not in verdict.badge.text() and not verdict.step_bar.isVisibleTo(verdict)
    choose(panel.strategy_combo, "fsdp")
    assert panel.state.workload.options.world_size == 8


def test_tensor_parallel_degrees_follow_the_strategy(qtbot, window):
    """fsdp+tp takes a degree (2 at first), tp the whole world; a degree that does not divide the GPUs is
    refused under its field and changes nothing; DDP in inference is refused under the strategy."""
    panel, group = window.workload_panel, window.workload_panel.cluster_group
    choose(panel.strategy_combo, "fsdp+tp")
    options = panel.state.workload.options
    assert (options.world_size, options.tp_size) == (8, 2) and group.tp_spin.isEnabled() and group.sp_box.isEnabled()
    group.tp_spin.setValue(3)
    assert "not divisible by the tensor-parallel degree 3" in panel.errors["tp_size"].message
    assert panel.state.workload.options.tp_size == 2 and group.tp_spin.value() == 2
    group.tp_spin.setValue(4)
    choose(panel.strategy_combo, "tp")
    assert panel.state.workload.options.tp_size == 8 and not group.tp_spin.isEnabled()
    choose(panel.strategy_combo, "ddp")
    assert panel.state.workload.options.tp_size == 1 and not group.sp_box.isEnabled()
    choose(panel.mode_combo, "infer")
    assert "only applies to --mode train" in panel.errors["strategy"].message
    assert panel.state.workload.options.mode == "train"


LLAMA_MODEL = f"{Path(__file__).parent / 'models' / 'tiny_llms.py'}:TinyLlama"


@pytest.fixture
def llama_window(qtbot, tmp_path, monkeypatch):
    from torchbudget.gui import user_code

    monkeypatch.setattr(user_code, "ask", lambda parent, path, why: True)
    w = make_window(qtbot, tmp_path, monkeypatch, workload=Workload(LLAMA_MODEL, parse_inputs("input_ids=2x16:int64"),
                                                                    TraceOptions(mode="train")))
    w.hardware_panel.select(GPU)
    yield w
    close_window(w)


def test_tensor_parallel_decode_and_fsdp_grad_accum_through_the_cluster_panel(qtbot, llama_window):
    """Serving with TP (the KV cache per rank is the full cache / tp: 2 x layers x KV heads / 2 x head dim x
    tokens x sequences x 4 bytes) and FSDP with gradient accumulation (global batch K x micro-batch x GPUs):
    combinations the panel takes like any other; the verdict shows the generation figures, then the cluster's."""
    from tests.models.tiny_llms import LLAMA

    window = llama_window
    panel, group, verdict = window.workload_panel, window.workload_panel.cluster_group, window.verdict
    choose(panel.strategy_combo, "fsdp")
    panel.grad_accum_spin.setValue(4)
    assert panel.state.workload.options.grad_accum == 4 and panel.state.workload.options.world_size == 8
    ev = wait_for_plans(qtbot, window, lambda ev: ev.workload == panel.state.workload and ev.plans[0].distributed,
                        timeout=WAIT)
    d = ev.plans[0].distributed
    assert d.grad_accum == 4 and d.global_batch == 4 * 2 * 8
    assert "global batch 64" in verdict.figure_text("job_throughput")
    assert "per step of 4 micro-batches" in verdict.figure_text("collective_reduce_scatter")

    panel.inputs_edit.selectAll()
    qtbot.keyClicks(panel.inputs_edit, "input_ids=2x1:int64")
    choose(panel.strategy_combo, "tp")
    group.world_spin.setValue(2)
    choose(panel.mode_combo, "decode")
    panel.context_spin.setValue(256)
    options = panel.state.workload.options
    assert (options.mode, options.strategy, options.world_size, options.tp_size) == ("decode", "tp", 2, 2)
    ev = wait_for_plans(qtbot, window, lambda ev: ev.workload == panel.state.workload and ev.plans[0].distributed,
                        timeout=WAIT)
    plan = ev.plans[0]
    head_dim = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
    per_rank = 2 * LLAMA["num_hidden_layers"] * (LLAMA["num_key_value_heads"] // 2) * head_dim * 256 * 2 * 4
    assert plan.generation.kv_read_bytes == per_rank
    assert verdict.extra_title.text() == "Generation (per rank)"
    assert verdict.figure_text("kv_cache") == f"{human_bytes(per_rank)} (2 × 256 tokens)"
    assert "communication" in verdict.figure_text("decode_bound")
    assert verdict.figure_text("cluster") == f"2x {GPU} on NVLink 4"
    assert verdict.figure_text("job_throughput") is None     # tokens/s are the generation figures'
    assert "per rank" in verdict.badge.text()

"""Gradient accumulation with a strategy (K micro-batches per optimizer step), rank 0 under torch's own wrappers:
DDP runs ``no_sync()`` on micro-batches 1..K-1 and all-reduces on the last (traced: the accumulated full gradients
alive from its start, one set of bucket all-reduces per optimizer step); FSDP2's default reduce-scatters every
micro-batch into the sharded gradients (traced: one of 2..K, sharded gradients alive from its start, K times the
collectives per step); tensor parallel communicates in every micro-batch. Checked against closed forms of
tests/models/tiny_llms.py's Llama and of the step-time model (docs/distributed.md)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("transformers")

from torchbudget.engine.api import analyze  # noqa: E402
from torchbudget.engine.distributed import comm  # noqa: E402
from torchbudget.engine.distributed.links import build_cluster  # noqa: E402
from torchbudget.engine.latency import op_estimates_ms  # noqa: E402
from torchbudget.engine.planner import plan_result  # noqa: E402
from torchbudget.engine.results import MemoryCategory, Phase  # noqa: E402
from torchbudget.hardware.catalog import resolve_gpu  # noqa: E402
from tests.models.tiny_llms import LLAMA  # noqa: E402
from tests.test_distributed import (  # noqa: E402
    LLAMA_FILE, PARAMS, ROOT_PARAMS, TOKENS, at_start, calls, llama_shapes, numel, run_cli,
)

K = 3
BATCH, SEQ = 2, 16
NORMS = sum(numel(s) for name, s in llama_shapes().items() if "norm" in name)
GPU = "H100 SXM"


def trace(strategy: str, world: int, k: int = K, **kw):
    return analyze(LLAMA_FILE, TOKENS, mode="train", strategy=strategy, world_size=world, grad_accum=k,
                   optimizer_impl="foreach", **kw)


@pytest.fixture(scope="module")
def fsdp8():
    return trace("fsdp", 8, 1), trace("fsdp", 8)


@pytest.fixture(scope="module")
def ddp2():
    return trace("ddp", 2, 1), trace("ddp", 2)


def per_step(plan, kind: str) -> tuple[int, int]:
    calls_, nbytes, _ = plan.distributed.comm.by_kind[kind]
    return calls_, nbytes


def test_fsdp_sharded_gradients_alive_from_the_start(fsdp8):
    one, acc = fsdp8
    # micro-batch 2..K starts with rank 0's sharded gradient of every parameter (fp32, every dim 0 divides by 8);
    # micro-batch 1 (no accumulation) starts with none
    assert at_start(acc, MemoryCategory.GRADIENTS) == PARAMS * 4 // 8
    assert at_start(one, MemoryCategory.GRADIENTS) == 0
    # the same sharded parameters and the same collectives in the traced micro-batch
    assert at_start(acc, MemoryCategory.WEIGHTS) == at_start(one, MemoryCategory.WEIGHTS) == PARAMS * 4 // 8
    key = lambda r: [(c.kind, c.phase, c.nbytes) for c in r.distributed.collectives]  # noqa: E731
    assert key(acc) == key(one)
    # accumulated in place: the gradients alive when the step ends are the same shards
    live = sum(e.nbytes * (1 if e.kind == "alloc" else -1) for e in acc.storage_events
               if e.category is MemoryCategory.GRADIENTS)
    assert live == PARAMS * 4 // 8
    assert any("FSDP2's default" in p and f"{K} micro-batches" in p for p in acc.policies)


def test_fsdp_collective_volume_per_optimizer_step_is_k_micro_batches(fsdp8):
    one, acc = fsdp8
    gpu = resolve_gpu(GPU)
    p1, pk = plan_result(one, gpu), plan_result(acc, gpu)
    blocks = LLAMA["num_hidden_layers"]
    # one micro-batch: every block gathered in forward and backward, the root once; every gradient reduce-scattered
    assert per_step(p1, "all_gather") == (2 * blocks + 1, (2 * PARAMS - ROOT_PARAMS) * 4)
    assert per_step(p1, "reduce_scatter") == (blocks + 1, PARAMS * 4)
    assert per_step(pk, "all_gather") == (K * (2 * blocks + 1), K * (2 * PARAMS - ROOT_PARAMS) * 4)
    assert per_step(pk, "reduce_scatter") == (K * (blocks + 1), K * PARAMS * 4)
    assert {t.per_step for t in pk.distributed.comm.collectives} == {K}
    # time: each call by the bus-bandwidth formula on NVLink, K times
    link = build_cluster(gpu, 8).intra
    one_pass = sum(comm.collective_seconds(c.kind, c.nbytes, 8, link.bandwidth_gb_s, link.efficiency,
                                           link.latency_us) for c in acc.distributed.collectives) * 1000
    assert pk.distributed.comm.comm_ms == pytest.approx(K * one_pass)
    assert p1.distributed.comm.comm_ms == pytest.approx(one_pass)
    ms = op_estimates_ms(acc, gpu)
    passes = sum(ms[op.index] for op in acc.ops if op.phase is not Phase.OPTIMIZER)
    optimizer = sum(ms[op.index] for op in acc.ops if op.phase is Phase.OPTIMIZER)
    assert pk.distributed.comm.compute_ms == pytest.approx(K * passes + optimizer)
    assert pk.distributed.step_ms >= pk.distributed.comm.compute_ms
    assert pk.distributed.global_batch == K * BATCH * 8


def test_ddp_accumulated_gradients_and_one_all_reduce_per_step(ddp2):
    one, acc = ddp2
    # micro-batch K starts with the accumulated full gradients, plus DDP's buckets (a second copy, as always)
    assert at_start(acc, MemoryCategory.GRADIENTS) == 2 * PARAMS * 4
    assert at_start(one, MemoryCategory.GRADIENTS) == PARAMS * 4
    assert any("no_sync()" in p for p in acc.policies)
    gpu = resolve_gpu(GPU)
    pk = plan_result(acc, gpu)
    # no_sync: the buckets all-reduce once per optimizer step, not K times
    assert per_step(pk, "all_reduce") == (2, PARAMS * 4)
    assert [t.per_step for t in pk.distributed.comm.collectives if t.call.kind == "all_reduce"] == [1, 1]
    assert sum(c.nbytes for c in calls(acc, "all_reduce", Phase.BACKWARD)) == PARAMS * 4


def test_step_time_counts_k_micro_batches_and_one_optimizer_step(ddp2):
    """DDP's step = the traced micro-batch's timeline (its all-reduces, the optimizer) + K - 1 micro-batches of
    forward and backward compute under no_sync (no gradient all-reduce; DDP still broadcasts its buffers in each
    forward, a blocking collective). Compute = K x (forward + backward) + the optimizer step."""
    _, acc = ddp2
    gpu = resolve_gpu(GPU)
    pk = plan_result(acc, gpu)
    # the traced micro-batch alone (its all-reduces, the optimizer step) on the same timeline
    traced_alone = plan_result(replace(acc, options=replace(acc.options, grad_accum=1)), gpu).distributed
    ms = op_estimates_ms(acc, gpu)
    passes = sum(ms[op.index] for op in acc.ops if op.phase is not Phase.OPTIMIZER)
    optimizer = sum(ms[op.index] for op in acc.ops if op.phase is Phase.OPTIMIZER)
    d = pk.distributed
    assert d.comm.compute_ms == pytest.approx(K * passes + optimizer)
    link = build_cluster(gpu, 2).intra
    broadcasts = sum(comm.collective_seconds(c.kind, c.nbytes, 2, link.bandwidth_gb_s, link.efficiency,
                                             link.latency_us) for c in calls(acc, "broadcast", Phase.FORWARD)) * 1000
    assert traced_alone.grad_accum == 1
    assert d.step_ms == pytest.approx(traced_alone.step_ms + (K - 1) * (passes + broadcasts))
    # samples over the job: K micro-batches x the per-rank batch x 2 replicas per optimizer step
    assert d.global_batch == K * BATCH * 2
    assert d.samples_per_s == pytest.approx(d.global_batch / (d.step_ms / 1000))
    assert d.tokens_per_s == pytest.approx(d.samples_per_s * SEQ)
    assert pk.throughput_samples_per_s == d.samples_per_s


def test_tensor_parallel_accumulates_rank_shards_and_communicates_every_micro_batch():
    one, acc = trace("tp", 2, 1), trace("tp", 2, 2)
    # rank 0's gradient shards: every projection, the embedding and the head halved, the norms whole
    assert at_start(acc, MemoryCategory.GRADIENTS) == ((PARAMS - NORMS) // 2 + NORMS) * 4
    gpu = resolve_gpu(GPU)
    p1, p2 = plan_result(one, gpu), plan_result(acc, gpu)
    calls1, bytes1 = per_step(p1, "all_reduce")
    assert per_step(p2, "all_reduce") == (2 * calls1, 2 * bytes1)
    # Megatron: (2 per block + 1) all-reduces of B x S x H fp32 in forward, as many in backward, per micro-batch
    regions = 2 * LLAMA["num_hidden_layers"] + 1
    assert bytes1 == 2 * regions * BATCH * SEQ * LLAMA["hidden_size"] * 4
    assert p2.distributed.global_batch == 2 * BATCH     # one replica: TP shares the batch


def test_fsdp_plus_tp_accumulates():
    result = trace("fsdp+tp", 4, 2, tp_size=2)
    # TP 2 then FSDP over the 2 data-parallel ranks: the projections' gradients by 4, the norms' by 2
    assert at_start(result, MemoryCategory.GRADIENTS) == ((PARAMS - NORMS) // 4 + NORMS // 2) * 4


def test_cli_plan_fsdp_grad_accum(capsys):
    argv = ["plan", LLAMA_FILE, "--input", TOKENS, "--mode", "train", "--gpu", GPU, "--world-size", "8",
            "--strategy", "fsdp", "--grad-accum", "4", "--no-max-batch", "--no-max-seq-len"]
    assert run_cli(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    d = out["distributed"]
    assert d["grad_accum"] == 4 and d["global_batch"] == 4 * BATCH * 8
    assert d["by_kind"]["reduce_scatter"]["bytes"] == 4 * PARAMS * 4
    assert {c["per_step"] for c in d["collectives"]} == {4}
    assert d["tokens_per_s"] == pytest.approx(d["samples_per_s"] * SEQ)
    assert out["memory"]["by_category"]["gradients"] > 0
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "per optimizer step of 4 micro-batches" in text and "global batch 64 = 4 x 2 x 8 replica(s)" in text

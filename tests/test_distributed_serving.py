"""Serving with tensor parallel (--mode prefill / decode --strategy tp): rank 0's step under torch's own
parallelize_module on a fake process group, through transformers' own cache (the decode step's context filled by
the model's own prefill on the wrapped model). Each rank holds whole heads: 1/tp of the query and KV heads, so
its KV cache is the full cache / tp exactly; 1/tp of every projection, the embedding and the head; one all-reduce
of the hidden state after each attention and each MLP block (and the embedding's), the head's logits
all-gathered. Checked against closed forms of tests/models/tiny_llms.py's Llama config."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from torchbudget.cli import run_cli as _run_cli  # noqa: E402
from torchbudget.engine.api import analyze_workload  # noqa: E402
from torchbudget.engine.cache import TraceCache  # noqa: E402
from torchbudget.engine.distributed import comm  # noqa: E402
from torchbudget.engine.distributed.links import build_cluster  # noqa: E402
from torchbudget.engine.errors import UserError  # noqa: E402
from torchbudget.engine.inputs import parse_inputs  # noqa: E402
from torchbudget.engine.memory import kv_cache_bytes, simulate_memory  # noqa: E402
from torchbudget.engine.overheads import Overheads  # noqa: E402
from torchbudget.engine.planner import Planner, overheads_for  # noqa: E402
from torchbudget.engine.results import MemoryCategory, Phase, TraceOptions  # noqa: E402
from torchbudget.engine.solver import result_fits  # noqa: E402
from torchbudget.engine.workload import Workload  # noqa: E402
from torchbudget.hardware.catalog import resolve_gpu  # noqa: E402
from tests.models.tiny_llms import LLAMA  # noqa: E402
from tests.planner_fakes import small_gpu  # noqa: E402
from tests.test_distributed import LLAMA_FILE, PARAMS, at_start, llama_shapes, numel  # noqa: E402

LAYERS, H, V = LLAMA["num_hidden_layers"], LLAMA["hidden_size"], LLAMA["vocab_size"]
KV_HEADS = LLAMA["num_key_value_heads"]
HEAD_DIM = H // LLAMA["num_attention_heads"]
NORMS = sum(numel(s) for name, s in llama_shapes().items() if "norm" in name)
GPU = "H100 SXM"


def kv_bytes(batch: int, tokens: int, tp: int = 1, value_bytes: int = 2) -> int:
    """2 (keys, values) x layers x (KV heads / tp) x head dim x tokens x batch x bytes per value."""
    return 2 * LAYERS * (KV_HEADS // tp) * HEAD_DIM * tokens * batch * value_bytes


def rank_weight_bytes(tp: int, value_bytes: int = 2) -> int:
    """Every projection, the embedding and the (untied) head split by tp; the RMSNorms whole."""
    return ((PARAMS - NORMS) // tp + NORMS) * value_bytes


def workload(mode: str, shape: str, tp: int = 2, **options) -> Workload:
    strategy = dict(strategy="tp", world_size=tp) if tp > 1 else {}
    return Workload(LLAMA_FILE, parse_inputs(shape),
                    TraceOptions(mode=mode, precision=options.pop("precision", "bf16"), **strategy, **options))


def trace(mode: str, shape: str, tp: int = 2, **options):
    return analyze_workload(workload(mode, shape, tp, **options))


def collectives(result, kind: str):
    return [c for c in result.distributed.collectives if c.kind == kind]


@pytest.fixture(scope="module")
def decode_tp2():
    return trace("decode", "input_ids=4x1:int64", context_len=64)


def test_decode_kv_cache_per_rank_is_the_full_cache_over_tp(decode_tp2):
    before, after = kv_cache_bytes(decode_tp2.storage_events)
    assert before == kv_bytes(4, 64, tp=2)            # the context, allocated before the first op
    assert after == kv_bytes(4, 65, tp=2)             # and the new token appended
    one = trace("decode", "input_ids=4x1:int64", tp=1, context_len=64)
    assert kv_cache_bytes(one.storage_events) == (2 * before, 2 * after)
    assert decode_tp2.policies[0].startswith("decode: 4 sequence(s) x 1 new token(s) against a DynamicCache of 64")


def test_decode_weights_per_rank(decode_tp2):
    assert at_start(decode_tp2, MemoryCategory.WEIGHTS) == rank_weight_bytes(2)
    assert decode_tp2.distributed.local_param_bytes == rank_weight_bytes(2)
    assert decode_tp2.distributed.global_param_bytes == PARAMS * 2


def test_decode_all_reduces_the_hidden_state_after_each_attention_and_mlp(decode_tp2):
    """Megatron in forward: the embedding (row-wise over the vocabulary) and each block's o and down projections
    all-reduce B x new x H; the head's vocabulary-sharded logits (logits_to_keep=1) are all-gathered."""
    reduces = collectives(decode_tp2, "all_reduce")
    assert [c.nbytes for c in reduces] == [4 * 1 * H * 2] * (2 * LAYERS + 1)
    assert [c.nbytes for c in collectives(decode_tp2, "all_gather")] == [4 * 1 * V * 2]
    assert {(c.group, c.group_size, c.phase) for c in decode_tp2.distributed.collectives} == {("tp", 2, Phase.FORWARD)}
    assert len(decode_tp2.distributed.collectives) == 2 * LAYERS + 2


def test_decode_plan_bounds_latency_and_tokens_per_s(decode_tp2):
    gpu = resolve_gpu(GPU)
    plan = Planner().plan(workload("decode", "input_ids=4x1:int64", context_len=64), gpu, solve_max_batch=False)
    g, d = plan.generation, plan.distributed
    # bandwidth bound per rank: rank 0's weights and its KV cache, read once per step
    assert g.weight_bytes == rank_weight_bytes(2) and g.kv_read_bytes == kv_bytes(4, 64, tp=2)
    assert g.bandwidth_bound_ms == pytest.approx((g.weight_bytes + g.kv_read_bytes) / (gpu.bandwidth_gbs * 1e9) * 1e3)
    # every all-reduce / all-gather is on the critical path: exposed = the bus-bandwidth time of all of them
    link = build_cluster(gpu, 2).intra
    exposed = sum(comm.collective_seconds(c.kind, c.nbytes, 2, link.bandwidth_gb_s, link.efficiency, link.latency_us)
                  for c in plan.result.distributed.collectives) * 1000
    assert d.comm.exposed_ms == pytest.approx(exposed) and g.exposed_comm_ms == pytest.approx(exposed)
    assert g.step_estimate_ms == pytest.approx(plan.latency.estimate_ms + exposed) == pytest.approx(d.step_ms)
    assert g.step_bound_ms == pytest.approx(plan.latency.lower_bound_ms + exposed)
    assert g.tokens_per_s == pytest.approx(4 / (d.step_ms / 1000)) == pytest.approx(d.tokens_per_s)
    assert g.max_tokens_per_s == pytest.approx(4 / (max(g.step_bound_ms, g.bandwidth_bound_ms + exposed) / 1000))
    assert d.global_batch == 4 and g.world_size == 2


def test_prefill_with_tensor_parallel():
    result = trace("prefill", "input_ids=2x16:int64")
    assert kv_cache_bytes(result.storage_events) == (0, kv_bytes(2, 16, tp=2))
    assert [c.nbytes for c in collectives(result, "all_reduce")] == [2 * 16 * H * 2] * (2 * LAYERS + 1)
    assert [c.nbytes for c in collectives(result, "all_gather")] == [2 * 1 * V * 2]   # logits_to_keep=1
    plan = Planner().plan(workload("prefill", "input_ids=2x16:int64"), resolve_gpu(GPU), solve_max_batch=False)
    g = plan.generation
    assert g.time_to_first_token_ms == pytest.approx(plan.distributed.step_ms)
    assert g.tokens_per_s == pytest.approx(2 * 16 / (plan.distributed.step_ms / 1000))


def test_tp_four_ways_with_four_kv_heads_quarters_the_cache():
    from tests.test_distributed import mha_llama

    from torchbudget.engine.distributed.trace import trace_distributed

    options = TraceOptions(mode="decode", precision="bf16", context_len=32, strategy="tp", world_size=4)
    result = trace_distributed(mha_llama(), parse_inputs("input_ids=2x1:int64"), options)   # 4 KV heads of 32
    assert kv_cache_bytes(result.storage_events)[0] == 2 * LAYERS * (4 // 4) * HEAD_DIM * 32 * 2 * 2


def test_max_concurrent_sequences_and_max_context_per_rank():
    """The planner's solvers on rank 0's traces, with NCCL's buffers counted as in the plan: the answer fits, one
    more does not; TP 2 halves the per-sequence cache, so it decodes more sequences on the same GPU than one GPU."""
    overheads = Overheads(cuda_context_bytes=0, cublas_workspace_bytes=0)   # NCCL's buffers stay
    cache = TraceCache()
    base = workload("decode", "input_ids=1x1:int64", context_len=256)
    single = workload("decode", "input_ids=1x1:int64", tp=1, context_len=256)
    ranked = overheads_for(base.options, overheads)
    assert ranked.communication_bytes(ranked.communicators) > 0
    peak = simulate_memory(cache.get(base), ranked).required_bytes
    gpu = small_gpu(peak + 200 * kv_bytes(1, 257, tp=2))
    planner = Planner(cache, overheads=overheads)
    best, why = planner.max_concurrent_sequences(base, gpu)
    assert why is None and best > 10
    at = lambda w: cache.get(w.on_gpu(gpu))  # noqa: E731
    assert result_fits(at(base.with_batch(best)), ranked, gpu.available_memory_bytes)
    assert not result_fits(at(base.with_batch(best + 1)), ranked, gpu.available_memory_bytes)
    # one GPU (no NCCL buffers) with the room rank 0 has besides them: every sequence's cache is twice as large
    same_room = small_gpu(gpu.available_memory_bytes - ranked.communication_bytes(ranked.communicators))
    alone, _ = planner.max_concurrent_sequences(single, same_room)
    assert 0 < alone < best
    context, why = planner.max_context(base.with_batch(4), gpu)
    assert why is None and context > 256
    four = base.with_batch(4)
    assert result_fits(at(four.with_options(context_len=context)), ranked, gpu.available_memory_bytes)
    assert not result_fits(at(four.with_options(context_len=context + 1)), ranked, gpu.available_memory_bytes)


@pytest.mark.parametrize("options, message", [
    (dict(strategy="tp", world_size=4), "does not divide the 2 heads of model.layers.0.self_attn.k_proj"),
])
def test_a_tp_degree_that_splits_kv_heads_is_refused(options, message):
    with pytest.raises(UserError, match=message):
        analyze_workload(Workload(LLAMA_FILE, parse_inputs("input_ids=2x1:int64"),
                                  TraceOptions(mode="decode", context_len=8, **options)))


@pytest.mark.parametrize("strategy, message", [
    ("fsdp", "--mode decode is not planned with --strategy fsdp: FSDP gathers every layer's full weights"),
    ("fsdp+tp", "not planned with --strategy fsdp+tp"),
    ("ddp", "only applies to --mode train; serving (--mode decode) over several GPUs is planned with --strategy tp"),
    ("zero1", "only applies to --mode train"),
])
def test_training_strategies_do_not_serve(strategy, message):
    tp = dict(tp_size=2) if strategy == "fsdp+tp" else {}
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        TraceOptions(mode="decode", context_len=8, strategy=strategy, world_size=4, **tp)


def test_sequence_parallel_is_not_planned_for_serving():
    with pytest.raises(UserError, match="--sequence-parallel is not planned for --mode prefill"):
        TraceOptions(mode="prefill", strategy="tp", world_size=2, sequence_parallel=True)


def run_cli(argv):
    return _run_cli(argv + ["--no-isolation", "--no-store"])


@pytest.mark.parametrize("tp_flag", [[], ["--tp", "2"]])
def test_cli_decode_with_tensor_parallel(capsys, tp_flag):
    argv = ["plan", LLAMA_FILE, "--mode", "decode", "--context", "1024", "--batch", "4", "--strategy", "tp",
            "--world-size", "2", *tp_flag, "--gpu", GPU]
    assert run_cli(argv + ["--json", "--no-max-batch"]) == 0
    out = json.loads(capsys.readouterr().out)
    g, d = out["generation"], out["distributed"]
    # fp32 (the default precision): 2 x 3 layers x (2 KV heads / 2) x 32 x 1,024 tokens x 4 sequences x 4 bytes
    assert g["kv_cache_bytes_before_step"] == 2 * 3 * (2 // 2) * 32 * 1024 * 4 * 4 == kv_bytes(4, 1024, 2, 4)
    assert g["kv_cache_bytes"] == kv_bytes(4, 1025, 2, 4)
    assert g["weight_bytes"] == rank_weight_bytes(2, 4)
    assert (d["strategy"], d["world_size"], d["tp_size"]) == ("tp", 2, 2)
    reduces = d["by_kind"]["all_reduce"]
    assert (reduces["calls"], reduces["bytes"]) == (2 * LAYERS + 1, (2 * LAYERS + 1) * 4 * H * 4)
    assert g["world_size"] == 2 and d["exposed_comm_ms"] > 0
    assert g["exposed_comm_ms"] == pytest.approx(d["exposed_comm_ms"])
    assert g["tokens_per_s"] == pytest.approx(d["tokens_per_s"])
    assert out["memory"]["by_category"]["kv_cache"] >= kv_bytes(4, 1024, 2, 4)
    assert run_cli(argv + ["--no-max-batch"]) == 0
    text = capsys.readouterr().out
    assert "on rank 0 (its 1/tp of the KV heads)" in text and "+ exposed communication" in text
    assert "cluster: 2x H100 SXM" in text and "tokens/s over the job" in text


def test_cli_decode_solves_per_rank(capsys):
    argv = ["plan", LLAMA_FILE, "--mode", "decode", "--context", "1024", "--batch", "4", "--strategy", "tp",
            "--world-size", "2", "--gpu", GPU, "--json"]
    assert run_cli(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["generation"]["max_concurrent_sequences"] == out["max_batch"] > 4
    assert out["generation"]["max_context"] > 1024


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "fsdp", "--world-size", "2"], "--mode decode is not planned with --strategy fsdp"),
    (["--strategy", "ddp", "--world-size", "2"], "the ddp strategy only applies to --mode train"),
    (["--strategy", "tp", "--world-size", "4"], "does not divide the 2 heads"),
    (["--strategy", "tp", "--world-size", "2", "--sequence-parallel"], "--sequence-parallel is not planned"),
    (["--strategy", "tp", "--world-size", "2", "--tp", "4"], "must equal the world size"),
])
def test_cli_serving_bad_input_is_one_line(capsys, extra, message):
    assert run_cli(["plan", LLAMA_FILE, "--mode", "decode", "--context", "64", "--batch", "2", "--gpu", GPU,
                    "--no-max-batch", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_cli_fewest_gpus_for_serving_tries_tensor_parallel(capsys):
    """--strategy auto in a generation mode tries the strategy that serves (tp) only; its smallest world is 2."""
    argv = ["plan", LLAMA_FILE, "--mode", "decode", "--context", "64", "--batch", "2", "--gpu", "T4",
            "--world-size", "auto", "--strategy", "auto", "--no-max-batch", "--json"]
    assert run_cli(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["strategy"] for s in out["fewest_gpus"]] == ["tp"]
    assert out["chosen"] == {"strategy": "tp", "world_size": 2, "gpu": "T4"}
    assert out["plan"]["generation"]["kv_cache_bytes_before_step"] == kv_bytes(2, 64, 2, 4)

"""Several GPUs (issue 11): rank 0's step traced under torch's own DDP, FSDP2, ZeRO-1 and tensor parallel on a
fake process group, checked against closed forms of the same model (tests/models/tiny_llms.py's Llama: every
dimension divisible by 8, so FSDP's padding is zero and its shards are exact), the collectives' bytes and their
bus-bandwidth times, and the CLI's plan and one-line errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

from torchbudget.cli import run_cli as _run_cli  # noqa: E402
from torchbudget.engine.api import analyze  # noqa: E402
from torchbudget.engine.distributed import comm  # noqa: E402
from torchbudget.engine.errors import UserError  # noqa: E402
from torchbudget.engine.results import MemoryCategory, Phase, TraceOptions  # noqa: E402
from tests.models.tiny_llms import LLAMA  # noqa: E402

LLAMA_FILE = str(Path(__file__).parent / "models" / "tiny_llms.py") + ":TinyLlama"
TOKENS = "input_ids=2x16:int64"


def llama_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter's shape, from the config (untied embedding and head)."""
    h, i, v, layers = LLAMA["hidden_size"], LLAMA["intermediate_size"], LLAMA["vocab_size"], LLAMA["num_hidden_layers"]
    kv = LLAMA["num_key_value_heads"] * h // LLAMA["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for n in range(layers):
        p = f"model.layers.{n}."
        shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                       p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    return shapes


def numel(shape) -> int:
    return math.prod(shape)


def fsdp_shard_elements(shape, n: int) -> int:
    """FSDP2 shards dim 0 in chunks of ceil(d0 / n) (padded): rank 0 holds one whole chunk."""
    return math.ceil(shape[0] / n) * numel(shape[1:])


PARAMS = sum(numel(s) for s in llama_shapes().values())
N_TENSORS = len(llama_shapes())
ROOT_PARAMS = sum(numel(s) for name, s in llama_shapes().items() if not name.startswith("model.layers."))


def allocated(result, category: MemoryCategory) -> int:
    return sum(e.nbytes for e in result.storage_events if e.kind == "alloc" and e.category is category)


def at_start(result, category: MemoryCategory) -> int:
    return sum(e.nbytes for e in result.storage_events
               if e.kind == "alloc" and e.op_index == -1 and e.category is category)


def calls(result, kind: str, phase: Phase | None = None):
    return [c for c in result.distributed.collectives if c.kind == kind and (phase is None or c.phase is phase)]


@pytest.fixture(scope="module")
def fsdp8():
    return analyze(LLAMA_FILE, TOKENS, mode="train", strategy="fsdp", world_size=8, optimizer_impl="foreach")


@pytest.fixture(scope="module")
def ddp2():
    return analyze(LLAMA_FILE, TOKENS, mode="train", strategy="ddp", world_size=2, optimizer_impl="foreach")


def test_llama_params_closed_form(fsdp8):
    assert PARAMS == fsdp8.distributed.global_params == 574_336


def test_fsdp_shards_params_and_optimizer_state(fsdp8):
    shard = sum(fsdp_shard_elements(s, 8) for s in llama_shapes().values())
    assert shard * 8 == PARAMS    # no padding: every dim 0 divides by 8
    # the sharded parameters are what the step starts with (fp32)
    assert at_start(fsdp8, MemoryCategory.WEIGHTS) == shard * 4
    # AdamW: exp_avg and exp_avg_sq per shard, one fp32 step tensor per parameter
    assert allocated(fsdp8, MemoryCategory.OPTIMIZER_STATE) == 2 * shard * 4 + 4 * N_TENSORS


def test_fsdp_collective_volume(fsdp8):
    """FULL_SHARD gathers every block's parameters in forward and again in backward; the root (embedding, final
    norm, head) as ``fully_shard(model)`` leaves it keeps its gathered parameters from forward to backward
    (torch's default for the root). All-gather volume = (2 x params - root params) x 4 bytes; reduce-scatter =
    grads x 4 bytes (S of nccl-tests)."""
    blocks = LLAMA["num_hidden_layers"]
    assert len(calls(fsdp8, "all_gather", Phase.FORWARD)) == blocks + 1
    assert len(calls(fsdp8, "all_gather", Phase.BACKWARD)) == blocks
    assert len(calls(fsdp8, "reduce_scatter", Phase.BACKWARD)) == blocks + 1
    assert sum(c.nbytes for c in calls(fsdp8, "all_gather")) == (2 * PARAMS - ROOT_PARAMS) * 4
    assert sum(c.nbytes for c in calls(fsdp8, "reduce_scatter")) == PARAMS * 4
    block = sum(numel(s) for name, s in llama_shapes().items() if name.startswith("model.layers.0."))
    assert block * 4 in {c.nbytes for c in calls(fsdp8, "all_gather", Phase.FORWARD)}
    assert {c.group_size for c in fsdp8.distributed.collectives} == {8}


def test_fsdp_grad_op_gathers_once_in_bf16():
    result = analyze(LLAMA_FILE, TOKENS, mode="train", precision="bf16-amp", strategy="fsdp-grad-op",
                     world_size=4, optimizer_impl="foreach")
    # no reshard after forward: nothing gathered again in backward; MixedPrecisionPolicy gathers bf16
    assert not calls(result, "all_gather", Phase.BACKWARD)
    assert sum(c.nbytes for c in calls(result, "all_gather")) == PARAMS * 2
    # reduce_dtype float32: gradients reduce-scattered in fp32
    assert sum(c.nbytes for c in calls(result, "reduce_scatter")) == PARAMS * 4


def test_ddp_keeps_everything_full_and_all_reduces_buckets(ddp2):
    assert at_start(ddp2, MemoryCategory.WEIGHTS) == PARAMS * 4
    assert allocated(ddp2, MemoryCategory.OPTIMIZER_STATE) == 2 * PARAMS * 4 + 4 * N_TENSORS
    reduces = calls(ddp2, "all_reduce", Phase.BACKWARD)
    # buckets of 1 MiB then 25 MiB (the steady state): 2.19 MiB of fp32 gradients -> 2 buckets covering all
    assert len(reduces) == 2
    assert sum(c.nbytes for c in reduces) == PARAMS * 4
    assert reduces[0].nbytes >= 2**20
    # DDP's gradient buckets are a second copy of the gradients, allocated before the step
    assert at_start(ddp2, MemoryCategory.GRADIENTS) == PARAMS * 4


def test_zero1_shards_only_the_optimizer_state():
    result = analyze(LLAMA_FILE, TOKENS, mode="train", strategy="zero1", world_size=4, optimizer_impl="foreach")
    assert at_start(result, MemoryCategory.WEIGHTS) == PARAMS * 4
    state = allocated(result, MemoryCategory.OPTIMIZER_STATE)
    assert 0 < state < 2 * PARAMS * 4 / 2     # well under the full state (a quarter, by ZeRO's greedy partition)
    assert calls(result, "broadcast", Phase.OPTIMIZER)    # updated parameters broadcast from their owners


def test_tensor_parallel_shards_the_projections():
    result = analyze(LLAMA_FILE, TOKENS, mode="train", strategy="tp", world_size=2, optimizer_impl="foreach")
    shapes = llama_shapes()
    norms = sum(numel(s) for name, s in shapes.items() if "norm" in name)
    # every projection, the embedding and the head are split by 2; the norms stay whole
    assert at_start(result, MemoryCategory.WEIGHTS) == ((PARAMS - norms) // 2 + norms) * 4
    # Megatron: one all-reduce after each row-wise projection in forward (o, down per block; the embedding)
    assert len(calls(result, "all_reduce", Phase.FORWARD)) == 2 * LLAMA["num_hidden_layers"] + 1
    assert {c.group for c in result.distributed.collectives} == {"tp"}


def test_bus_bandwidth_formulas():
    s, b = 1e9, 100.0   # 1 GB over 100 GB/s at efficiency 1, no latency
    assert comm.collective_seconds("all_reduce", s, 8, b, 1.0, 0.0) == pytest.approx(2 * 7 / 8 * 0.01)
    assert comm.collective_seconds("all_gather", s, 8, b, 1.0, 0.0) == pytest.approx(7 / 8 * 0.01)
    assert comm.collective_seconds("reduce_scatter", s, 4, b, 0.5, 0.0) == pytest.approx(3 / 4 * 0.02)
    assert comm.collective_seconds("broadcast", s, 8, b, 1.0, 10.0) == pytest.approx(0.01 + 10e-6)
    assert comm.collective_seconds("all_to_all", s, 2, b, 1.0, 0.0) == pytest.approx(0.005)
    assert comm.collective_seconds("all_reduce", s, 1, b, 1.0, 10.0) == 0.0


def test_plan_times_collectives_on_the_cluster(fsdp8):
    from torchbudget.engine.planner import plan_result
    from torchbudget.hardware.catalog import resolve_gpu

    gpu = resolve_gpu("H100 SXM")
    plan = plan_result(fsdp8, gpu)
    d = plan.distributed
    link = d.comm.collectives[0]
    assert d.world_size == 8 and d.method == "traced" and d.global_batch == 2 * 8
    from torchbudget.engine.distributed.links import build_cluster

    intra = build_cluster(gpu, 8).intra
    expected = sum(comm.collective_seconds(c.kind, c.nbytes, 8, intra.bandwidth_gb_s, intra.efficiency,
                                           intra.latency_us) for c in fsdp8.distributed.collectives) * 1000
    assert link.link == intra.name
    assert d.comm.comm_ms == pytest.approx(expected)
    assert d.step_ms == pytest.approx(d.comm.compute_ms + d.comm.exposed_ms)
    assert 0 < d.comm.exposed_ms <= d.comm.comm_ms
    assert d.comm.overlapped_ms == pytest.approx(d.comm.comm_ms - d.comm.exposed_ms)
    # NCCL buffers: one communicator
    from torchbudget.engine.overheads import NCCL_BYTES_PER_COMMUNICATOR

    assert plan.memory.by_category[MemoryCategory.COMMUNICATION] == NCCL_BYTES_PER_COMMUNICATOR


def test_tp_communication_is_all_exposed():
    from torchbudget.engine.planner import plan_result
    from torchbudget.hardware.catalog import resolve_gpu

    result = analyze(LLAMA_FILE, TOKENS, mode="infer", strategy="tp", world_size=2)
    d = plan_result(result, resolve_gpu("H100 SXM")).distributed
    assert d.comm.exposed_ms == pytest.approx(d.comm.comm_ms)
    assert d.global_batch == 2      # tensor parallel: one replica


def run_cli(argv):
    return _run_cli(argv + ["--no-isolation", "--no-store"])


def test_cli_plan_fsdp_json(capsys):
    argv = ["plan", LLAMA_FILE, "--input", TOKENS, "--mode", "train", "--gpu", "H100 SXM", "--world-size", "8",
            "--strategy", "fsdp", "--no-max-batch"]
    assert run_cli(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    d = out["distributed"]
    assert (d["world_size"], d["strategy"], d["method"]) == (8, "fsdp", "traced")
    assert d["per_rank_memory"]["peak_bytes"] == out["memory"]["peak_bytes"]
    assert sum(c["bytes"] for c in d["collectives"] if c["kind"] == "all_gather") == (2 * PARAMS - ROOT_PARAMS) * 4
    assert d["comm_time_ms"] == pytest.approx(d["exposed_comm_ms"] + d["overlapped_comm_ms"])
    assert out["fits"] is True and d["tokens_per_s"] > 0
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "cluster: 8x H100 SXM" in text and "per rank" in text and "exposed" in text


def test_a_strategy_over_one_gpu_says_so(capsys):
    # a forgotten --world-size plans one GPU under the strategy: the plan says nothing is sharded
    argv = ["plan", "resnet18", "--input", "2x3x32x32", "--mode", "train", "--gpu", "A100 SXM 80GB",
            "--strategy", "fsdp", "--no-max-batch"]
    assert run_cli(argv) == 0
    assert "note: --strategy fsdp over 1 GPU shards and communicates nothing" in capsys.readouterr().out
    assert run_cli(argv[:-3] + ["--world-size", "2"] + argv[-3:]) == 0
    assert "over 1 GPU" not in capsys.readouterr().out


def test_cli_plan_ddp_on_torchvision(capsys):
    argv = ["plan", "resnet18", "--input", "2x3x64x64", "--mode", "train", "--gpu", "A100 SXM 80GB",
            "--world-size", "4", "--strategy", "ddp", "--no-max-batch", "--json"]
    assert run_cli(argv) == 0
    d = json.loads(capsys.readouterr().out)["distributed"]
    resnet18_params = 11_689_512
    assert sum(c["bytes"] for c in d["collectives"] if c["kind"] == "all_reduce" and c["phase"] == "backward") \
        == resnet18_params * 4
    assert d["global_batch"] == 8


@pytest.mark.parametrize("extra, message", [
    (["--world-size", "8", "--strategy", "fsdp+tp", "--tp", "3"], "not divisible by the tensor-parallel degree 3"),
    (["--world-size", "4"], "needs a --strategy"),
    (["--world-size", "2", "--strategy", "tp", "--tp", "4"], "must equal the world size"),
    (["--world-size", "2", "--strategy", "fsdp", "--tp", "2"], "--tp only applies"),
    (["--interconnect", "NVLink 4"], "only applies with --world-size"),
])
def test_cli_bad_combinations_are_one_line(capsys, extra, message):
    assert run_cli(["plan", LLAMA_FILE, "--input", TOKENS, "--mode", "train", "--gpu", "H100 SXM",
                    "--no-max-batch", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_inference_with_ddp_is_refused():
    with pytest.raises(UserError, match="only applies to --mode train"):
        TraceOptions(mode="infer", strategy="ddp", world_size=2)


def test_tp_on_a_model_without_projections_is_one_line():
    with pytest.raises(UserError, match="tensor parallel"):
        analyze("resnet18", "1x3x32x32", mode="train", strategy="tp", world_size=2)


def test_fine_tuning_with_a_strategy_is_refused():
    # tensor parallel splits nn.Linear layers by name, which peft's LoRA layers are not; QLoRA + FSDP would
    # need bitsandbytes' quant_storage
    with pytest.raises(UserError, match="not supported yet: --lora-rank with --strategy tp"):
        analyze(LLAMA_FILE, TOKENS, mode="train", strategy="tp", world_size=2, lora_rank=8)
    with pytest.raises(UserError, match="not supported yet: --base-dtype nf4 with --strategy fsdp"):
        analyze(LLAMA_FILE, TOKENS, mode="train", strategy="fsdp", world_size=2, lora_rank=8, base_dtype="nf4",
                precision="bf16-amp")


def lora_params(rank: int) -> tuple[int, int]:
    """peft's default targets on the Llama (q, k, v, o): A is rank x in, B is out x rank. (params, tensors)"""
    h = LLAMA["hidden_size"]
    kv = LLAMA["num_key_value_heads"] * h // LLAMA["num_attention_heads"]
    per_layer = rank * (h + h) + 2 * rank * (h + kv) + rank * (h + h)
    return per_layer * LLAMA["num_hidden_layers"], 8 * LLAMA["num_hidden_layers"]


def test_lora_with_fsdp_shards_everything_and_trains_only_the_adapters():
    """LoRA + FSDP as users run it: peft on a meta copy before fully_shard; the frozen base is sharded (and
    gathered like any parameter), but has no gradient, no reduce-scatter and no optimizer state."""
    result = analyze(LLAMA_FILE, TOKENS, mode="train", strategy="fsdp", world_size=8, lora_rank=8,
                     optimizer_impl="foreach")
    adapters, tensors = lora_params(8)
    assert adapters == 21_504
    assert result.totals.trainable_params == adapters
    assert result.distributed.global_params == PARAMS + adapters
    assert at_start(result, MemoryCategory.WEIGHTS) == (PARAMS + adapters) * 4 // 8   # every dim 0 divides by 8
    # AdamW's two fp32 moments of rank 0's shard of each adapter (8 B x adapters / N), one step tensor each
    assert allocated(result, MemoryCategory.OPTIMIZER_STATE) == 8 * adapters // 8 + 4 * tensors
    assert sum(c.nbytes for c in calls(result, "reduce_scatter")) == adapters * 4
    assert sum(c.nbytes for c in calls(result, "all_gather")) == (2 * (PARAMS + adapters) - ROOT_PARAMS) * 4
    assert any("LoRA rank 8" in note for note in result.policies)


def test_lora_with_ddp_and_a_bf16_base():
    """DDP buckets only what trains: the fp32 adapters' gradients (twice: .grad and the bucket); the frozen base
    is stored in bf16."""
    result = analyze(LLAMA_FILE, TOKENS, mode="train", strategy="ddp", world_size=2, lora_rank=8, precision="bf16",
                     base_dtype="bf16", optimizer_impl="foreach")
    adapters, tensors = lora_params(8)
    assert at_start(result, MemoryCategory.WEIGHTS) == PARAMS * 2 + adapters * 4
    assert sum(c.nbytes for c in calls(result, "all_reduce", Phase.BACKWARD)) == adapters * 4
    assert allocated(result, MemoryCategory.GRADIENTS) == 2 * adapters * 4
    assert allocated(result, MemoryCategory.OPTIMIZER_STATE) == 8 * adapters + 4 * tensors


def test_freeze_with_fsdp():
    result = analyze(LLAMA_FILE, TOKENS, mode="train", strategy="fsdp", world_size=4, optimizer_impl="foreach",
                     freeze=("model.embed_tokens.*", "model.layers.0.*"))
    shapes = llama_shapes()
    frozen = {n: s for n, s in shapes.items() if n.startswith(("model.embed_tokens.", "model.layers.0."))}
    trained = PARAMS - sum(numel(s) for s in frozen.values())
    assert result.totals.trainable_params == trained
    assert at_start(result, MemoryCategory.WEIGHTS) == PARAMS * 4 // 4
    assert sum(c.nbytes for c in calls(result, "reduce_scatter")) == trained * 4
    assert allocated(result, MemoryCategory.OPTIMIZER_STATE) == 8 * trained // 4 + 4 * (N_TENSORS - len(frozen))


def test_fewest_gpus_and_strategies_side_by_side():
    """A GPU too small for the whole training step: DDP never fits (a full replica), FSDP does once sharded."""
    from dataclasses import replace

    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.distributed.solve import compare_strategies, fewest_gpus
    from torchbudget.engine.overheads import Overheads
    from torchbudget.engine.planner import Planner
    from torchbudget.engine.workload import Workload
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.hardware.catalog import resolve_gpu

    overheads = Overheads(cuda_context_bytes=0, cublas_workspace_bytes=0, nccl_bytes_per_communicator=0)
    planner = Planner(TraceCache(), overheads=overheads)
    workload = Workload(LLAMA_FILE, parse_inputs(TOKENS), TraceOptions(mode="train", optimizer_impl="foreach"))
    h100 = resolve_gpu("H100 SXM")
    ddp = planner.plan(workload.with_options(strategy="ddp", world_size=2), h100, solve_max_batch=False)
    budget = ddp.required_bytes - 1            # a GPU one byte too small for DDP's rank
    small = replace(h100, name="small", available_memory_bytes=budget)
    assert fewest_gpus(planner, workload, small, "ddp", limit=8) == (None, None)
    world, plan = fewest_gpus(planner, workload, small, "fsdp", limit=8)
    assert world in (1, 2) and plan.fits   # FSDP keeps no second copy of the gradients (DDP's buckets)
    rows = compare_strategies(planner, workload, h100, 4, ["ddp", "fsdp", "zero1"])
    by = {r.strategy: r for r in rows}
    assert by["fsdp"].per_rank_bytes < by["zero1"].per_rank_bytes < by["ddp"].per_rank_bytes
    assert all(0 < r.scaling_efficiency <= 1 and r.samples_per_s > 0 for r in rows)


def test_cli_compare_strategies_side_by_side(capsys):
    argv = ["compare", LLAMA_FILE, "--input", TOKENS, "--mode", "train", "--gpus", "H100 SXM", "--world-size", "8",
            "--strategy", "ddp,fsdp,fsdp+tp", "--no-max-batch"]
    assert run_cli(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["strategy"]: r for r in out["rows"]}
    assert list(rows) == ["ddp", "fsdp", "fsdp+tp"]
    assert {r["world_size"] for r in rows.values()} == {8}
    assert rows["fsdp+tp"]["tp_size"] == 2          # the default TP degree of a list
    assert rows["fsdp"]["per_rank_bytes"] < rows["ddp"]["per_rank_bytes"]
    for r in rows.values():
        assert r["fits"] and r["tokens_per_s"] == pytest.approx(r["samples_per_s"] * 16)
        assert 0 < r["scaling_efficiency"] <= 1 and r["step_ms"] >= r["exposed_comm_ms"]
        assert r["per_rank_bytes"] == r["plan"]["memory"]["peak_bytes"]
    assert out["fastest"]["strategy"] in rows
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "Comm exposed" in text and "fsdp+tp (tp 2)" in text and "fastest that fits: 8x H100 SXM" in text


def test_cli_compare_clusters_side_by_side(capsys):
    argv = ["compare", LLAMA_FILE, "--input", TOKENS, "--mode", "train", "--gpus", "8x H100 SXM,16x A100 PCIe 80GB",
            "--strategy", "fsdp", "--no-max-batch", "--json"]
    assert run_cli(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["gpu"], r["world_size"]) for r in rows] == [("H100 SXM", 8), ("A100 PCIe 80GB", 16)]
    assert "InfiniBand" in rows[1]["cluster"]       # 16 GPUs: two nodes of 8
    # FSDP over 16 holds half the shard of FSDP over 8: less state per rank
    state = [r["plan"]["memory"]["by_category"]["optimizer_state"] for r in rows]
    assert state[1] < state[0]


def test_cli_plan_world_size_auto(capsys):
    """The fewest GPUs per strategy; a workload that fits one GPU is said to need no strategy."""
    argv = ["plan", LLAMA_FILE, "--input", TOKENS, "--mode", "train", "--gpu", "T4", "--world-size", "auto",
            "--strategy", "fsdp,fsdp+tp", "--no-max-batch", "--no-max-seq-len"]
    assert run_cli(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    fewest = {s["strategy"]: s for s in out["fewest_gpus"]}
    assert fewest["fsdp"]["world_size"] == 1 and fewest["fsdp+tp"]["world_size"] == 2
    assert out["chosen"] == {"strategy": "fsdp", "world_size": 1, "gpu": "T4"}
    assert out["plan"]["fits"] and out["plan"]["distributed"]["world_size"] == 1
    assert run_cli(argv) == 0
    assert "fits one GPU (no strategy needed" in capsys.readouterr().out


def test_fewest_search_stops_when_memory_stops_shrinking():
    """DDP's replica does not shrink with more GPUs: two traces say no world size fits (not ten)."""
    from dataclasses import replace

    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.distributed.solve import search_fewest
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.overheads import Overheads
    from torchbudget.engine.planner import Planner
    from torchbudget.engine.workload import Workload
    from torchbudget.hardware.catalog import resolve_gpu

    planner = Planner(TraceCache(), overheads=Overheads(cuda_context_bytes=0, cublas_workspace_bytes=0,
                                                        nccl_bytes_per_communicator=0))
    workload = Workload(LLAMA_FILE, parse_inputs(TOKENS), TraceOptions(mode="train", optimizer_impl="foreach"))
    fsdp1 = planner.plan(workload.with_options(strategy="fsdp", world_size=1), resolve_gpu("H100 SXM"),
                         solve_max_batch=False)
    small = replace(resolve_gpu("H100 SXM"), name="small", available_memory_bytes=fsdp1.required_bytes * 2 // 3)
    ddp = search_fewest(planner, workload, small, "ddp")
    assert ddp.world_size is None and len(ddp.tried) == 2 and "does not shrink" in ddp.reason
    fsdp = search_fewest(planner, workload, small, "fsdp")
    assert fsdp.world_size is not None and fsdp.plan.fits
    smaller = [w for w, _, fits in fsdp.tried if w < fsdp.world_size]
    assert smaller and all(not fits for w, _, fits in fsdp.tried if w < fsdp.world_size)


UNSHARDABLE = str(Path(__file__).parent / "models" / "unshardable.py") + ":ScalarGate"


@pytest.mark.parametrize("argv, message", [
    (["plan", LLAMA_FILE, "--input", TOKENS, "--gpu", "H100 SXM", "--world-size", "8", "--strategy", "zero4"],
     "unknown strategy 'zero4'; use one of: none, ddp, fsdp"),
    (["compare", LLAMA_FILE, "--input", TOKENS, "--gpus", "H100 SXM", "--world-size", "8",
      "--strategy", "ddp,fsdp3"], "unknown strategy 'fsdp3'"),
    (["compare", LLAMA_FILE, "--input", TOKENS, "--gpus", "6x H100 SXM", "--strategy", "fsdp+tp", "--tp", "4"],
     "world size 6 is not divisible by the tensor-parallel degree 4"),
    (["plan", UNSHARDABLE, "--input", "2x4", "--gpu", "H100 SXM", "--world-size", "2", "--strategy", "fsdp"],
     "FSDP cannot wrap this model: ValueError: fully_shard doesn't support scalar parameters"),
    (["plan", LLAMA_FILE, "--input", TOKENS, "--gpu", "H100 SXM", "--world-size", "8", "--strategy", "auto"],
     "use it with --world-size auto"),
    (["plan", LLAMA_FILE, "--input", TOKENS, "--gpu", "H100 SXM", "--world-size", "8", "--strategy", "ddp,fsdp"],
     "plan plans one strategy; compare takes several"),
    (["plan", LLAMA_FILE, "--input", TOKENS, "--gpu", "H100 SXM", "--world-size", "auto"],
     "--world-size auto needs --strategy"),
    (["compare", LLAMA_FILE, "--input", TOKENS, "--gpus", "8x H100 SXM"], "needs a --strategy"),
    (["compare", LLAMA_FILE, "--input", TOKENS, "--gpus", "H100 SXM", "--strategy", "fsdp"],
     "give --world-size N (or auto), or the GPUs as COUNTx NAME"),
])
def test_cli_several_gpus_bad_input_is_one_line(capsys, argv, message):
    assert run_cli([*argv, "--mode", "train", "--no-max-batch"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


# --- sequence parallel (torchtitan's Llama plan) -------------------------------------------------------------

def mha_llama():
    """tiny_llms' Llama with 4 KV heads, so that TP 4 gives every rank whole heads."""
    from tests.models.tiny_llms import _on_meta

    return _on_meta(transformers.LlamaForCausalLM, transformers.LlamaConfig(**dict(LLAMA, num_key_value_heads=4)))


@pytest.fixture(scope="module")
def tp_pairs():
    """{tp: (without sequence parallel, with it)}: fp32 training of the 4-KV-head Llama at 2x16 tokens."""
    model = mha_llama()
    return {tp: tuple(analyze(model, TOKENS, mode="train", strategy="tp", world_size=tp, sequence_parallel=sp,
                              optimizer_impl="foreach") for sp in (False, True)) for tp in (2, 4)}


@pytest.mark.parametrize("tp", [2, 4])
def test_sequence_parallel_shards_norms_and_residuals(tp_pairs, tp):
    """What SP shards, as a closed form: every RMSNorm (2 per layer + the final one) saves its input (the residual
    stream), the normalised tensor (B x S x H each, fp32) and its rsqrt (B x S x 1); with SP each rank keeps
    S/tp of them. The tensors the projections save (the gathered full-sequence input, q/k/v, attention) are
    the same either way, as are the parameters."""
    plain, sp = tp_pairs[tp]
    b, s, h, layers = 2, 16, LLAMA["hidden_size"], LLAMA["num_hidden_layers"]
    norms = 2 * layers + 1
    saved = norms * (2 * b * h * 4 + b * 4)               # bytes per sequence position the norms save
    assert allocated(plain, MemoryCategory.ACTIVATIONS) - allocated(sp, MemoryCategory.ACTIVATIONS) \
        == saved * (s - s // tp)
    assert at_start(sp, MemoryCategory.WEIGHTS) == at_start(plain, MemoryCategory.WEIGHTS)


@pytest.mark.parametrize("tp", [2, 4])
def test_sequence_parallel_turns_all_reduces_into_all_gather_reduce_scatter_pairs(tp_pairs, tp):
    """Megatron without SP: one all-reduce per row-wise region in forward (o, down per layer; the embedding) and
    one per column-wise region in backward (attention, MLP; the head), of the full B x S x H activation. With SP
    each becomes a reduce-scatter and an all-gather of the same S (nccl-tests' bytes): the same bus time. The
    norms' weight gradients, partial sums over each rank's part of the sequence, are all-reduced (H x 4 bytes)."""
    plain, sp = tp_pairs[tp]
    b, s, h, layers = 2, 16, LLAMA["hidden_size"], LLAMA["num_hidden_layers"]
    activation = b * s * h * 4
    regions = 2 * layers + 1
    for phase in (Phase.FORWARD, Phase.BACKWARD):
        assert [c.nbytes for c in calls(plain, "all_reduce", phase)] == [activation] * regions
        assert not calls(plain, "all_gather", phase) and not calls(plain, "reduce_scatter", phase)
        assert [c.nbytes for c in calls(sp, "all_gather", phase)] == [activation] * regions
        assert [c.nbytes for c in calls(sp, "reduce_scatter", phase)] == [activation] * regions
        assert not calls(sp, "all_reduce", phase)
    # forward: the embedding and each row-wise projection reduce-scatter, each attention/MLP and the head gather
    kinds = [c.kind for c in calls(sp, "all_gather", Phase.FORWARD) + calls(sp, "reduce_scatter", Phase.FORWARD)]
    assert kinds.count("all_gather") == kinds.count("reduce_scatter")
    assert {c.nbytes for c in calls(sp, "all_reduce")} == {h * 4}
    assert {c.phase for c in calls(sp, "all_reduce")} == {Phase.OPTIMIZER}
    time = lambda result: sum(comm.collective_seconds(c.kind, c.nbytes, tp, 100.0, 1.0, 0.0)  # noqa: E731
                              for c in result.distributed.collectives if c.phase is not Phase.OPTIMIZER)
    assert time(sp) == pytest.approx(time(plain))
    assert {c.group for c in sp.distributed.collectives} == {"tp"}


def test_sequence_parallel_with_fsdp_and_checkpointing_on_mistral():
    """FSDP + TP + SP on Mistral (sliding-window mask from the full sequence) with checkpointed blocks: TP is
    applied to the bare blocks before they are wrapped (torchtitan's order), so the projections are sharded."""
    mistral = str(Path(__file__).parent / "models" / "tiny_llms.py") + ":TinyMistral"
    result = analyze(mistral, TOKENS, mode="train", strategy="fsdp+tp", world_size=4, tp_size=2,
                     sequence_parallel=True, checkpointing=True, optimizer_impl="foreach")
    shapes = llama_shapes()
    norms = sum(numel(s) for name, s in shapes.items() if "norm" in name)
    # TP 2 then FSDP over the 2 data-parallel ranks: the projections by 4, the norms by 2 (FSDP only)
    assert at_start(result, MemoryCategory.WEIGHTS) == ((PARAMS - norms) // 4 + norms // 2) * 4
    assert calls(result, "all_gather", Phase.FORWARD) and calls(result, "reduce_scatter", Phase.FORWARD)
    assert {c.group for c in calls(result, "reduce_scatter", Phase.FORWARD) if c.nbytes == 2 * 16 * 128 * 4} \
        == {"tp"}


def test_tensor_parallel_needs_whole_heads_per_rank():
    with pytest.raises(UserError, match="does not divide the 2 heads of model.layers.0.self_attn.k_proj"):
        analyze(LLAMA_FILE, TOKENS, mode="train", strategy="tp", world_size=4)


def test_sequence_parallel_plan_for_a_tied_head():
    """A tied embedding and head stay whole: the stream is split after the embedding and gathered before the head."""
    from torch.distributed.tensor.parallel import PrepareModuleInput, PrepareModuleOutput

    from torchbudget.engine.distributed.strategies import tp_plan
    from torchbudget.engine.tracing.blocks import find_blocks

    model = mha_llama()
    model.lm_head.weight = model.model.embed_tokens.weight
    plan = tp_plan(model, find_blocks(model), 2, True)
    assert isinstance(plan["model.embed_tokens"], PrepareModuleOutput)
    assert isinstance(plan["lm_head"], PrepareModuleInput)
    assert type(plan["model.layers.0.self_attn"]).__name__ == "BlockInput"
    assert type(plan["model.norm"]).__name__ == "SequenceParallel"
    assert "model.layers.0.input_layernorm" in plan and "model.layers.0.self_attn.q_proj" in plan


def test_traces_leave_the_process_as_they_found_it():
    """torch's init_process_group wraps sys.excepthook to prefix tracebacks with "[rank0]: " and
    destroy_process_group leaves it: every in-process trace added one more prefix. The session restores it;
    logging (handlers, formatters, levels of the loggers that existed) is untouched too."""
    import contextlib
    import io
    import logging
    import sys

    def logging_state():
        loggers = {"": logging.getLogger()} | {name: logger for name, logger in logging.Logger.manager.loggerDict.items()
                                               if isinstance(logger, logging.Logger)}
        return {name: (logger.level, logger.propagate, logger.disabled, tuple(logger.filters),
                       tuple((h, h.formatter, h.level, tuple(h.filters)) for h in logger.handlers))
                for name, logger in loggers.items()}

    analyze(LLAMA_FILE, TOKENS, mode="infer", strategy="tp", world_size=2)   # imports done: their loggers exist
    factory, before = logging.getLogRecordFactory(), logging_state()
    hook = sys.excepthook    # pytest-qt's, during a test: the interpreter's own while the traces run
    sys.excepthook = sys.__excepthook__
    try:
        analyze(LLAMA_FILE, TOKENS, mode="train", strategy="fsdp", world_size=2)
        analyze(LLAMA_FILE, TOKENS, mode="train", strategy="tp", world_size=2, sequence_parallel=True)
        assert sys.excepthook is sys.__excepthook__
        try:
            raise RuntimeError("uncaught")
        except RuntimeError:
            printed = io.StringIO()
            with contextlib.redirect_stderr(printed):
                sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook = hook
    assert "RuntimeError: uncaught" in printed.getvalue() and "[rank" not in printed.getvalue()
    assert logging.getLogRecordFactory() is factory
    after = logging_state()
    assert {name: after[name] for name in before} == before


def test_tied_embedding_and_head_stay_one_parameter():
    """GPT-2 ties its head to the token embedding: materialising the model for the wrappers (to_empty) made one
    tensor per module; it is re-tied, so FSDP shards, and the totals count, the shared weight once."""
    gpt2 = str(Path(__file__).parent / "models" / "tiny_llms.py") + ":TinyGPT2"
    result = analyze(gpt2, TOKENS, mode="train", strategy="fsdp", world_size=2, optimizer_impl="foreach")
    params = result.distributed.global_params
    assert result.totals.params == params
    assert at_start(result, MemoryCategory.WEIGHTS) == params * 4 // 2


def test_backward_ops_are_attributed_the_same_on_every_run():
    """Each backward op's module comes from the parameters' own objects: the same on every trace (it was keyed by
    the id of a tensor to_local() made and dropped, which another object could take)."""
    import transformers

    from torchbudget.engine.api import make_options
    from torchbudget.engine.distributed.trace import trace_distributed
    from torchbudget.engine.inputs import parse_inputs
    from tests.models.tiny_llms import _on_meta

    options = make_options(mode="train", precision="bf16-amp", optimizer="adamw", strategy="fsdp", world_size=4)
    runs = set()
    for _ in range(3):
        model = _on_meta(transformers.LlamaForCausalLM, transformers.LlamaConfig(**dict(LLAMA, num_hidden_layers=4)))
        result = trace_distributed(model, parse_inputs("input_ids=2x16:int64"), options)
        runs.add(tuple((op.op, op.module_path) for op in result.ops))
    assert len(runs) == 1


def test_checkpointed_blocks_keep_their_rows_under_a_strategy():
    """The module table lists the model as its ops are attributed: a checkpointed block's layers under their own
    paths with their outputs (they were listed under the wrapper's ``inner`` with nothing), so the activation
    total is the sum of every leaf's outputs, blocks included."""
    import transformers

    from torchbudget.engine.api import make_options
    from torchbudget.engine.distributed.trace import trace_distributed
    from torchbudget.engine.inputs import parse_inputs
    from tests.models.tiny_llms import _on_meta

    options = make_options(mode="train", precision="fp32", optimizer="adamw", strategy="ddp", world_size=2,
                           checkpointing=True)
    model = _on_meta(transformers.LlamaForCausalLM, transformers.LlamaConfig(**LLAMA))
    result = trace_distributed(model, parse_inputs("input_ids=2x16:int64"), options)
    rows = {n.path: n for n in result.modules}
    q = rows["model.layers.1.self_attn.q_proj"]
    assert q.output_shapes == ((2, 16, LLAMA["num_attention_heads"] * (LLAMA["hidden_size"] // LLAMA["num_attention_heads"])),)
    assert q.params_own == LLAMA["hidden_size"] * LLAMA["hidden_size"]
    assert not any(".inner" in path for path in rows)
    assert result.totals.activation_bytes == sum(n.activation_bytes for n in result.modules if not n.children)
    assert result.totals.activation_bytes >= LLAMA["num_hidden_layers"] * q.activation_bytes

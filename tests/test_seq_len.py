"""Sequence length as the second axis of token models: the max-sequence-length solver (exact on the simulation),
plan's max_seq_len and position notes, sweep --seq-len, and the attention FLOP conventions."""
from __future__ import annotations

import json

import pytest

from torchbudget.cli import run_cli
from torchbudget.engine.cache import TraceCache
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.memory import simulate_memory
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.planner import Planner, sweep_seq_lens
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.solver import max_seq_len, result_fits
from torchbudget.engine.workload import Workload
from tests.planner_fakes import small_gpu

TINY_LLAMA = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 1000, "bos_token_id": 0, "eos_token_id": 0}
TINY = json.dumps(TINY_LLAMA)
NONE = Overheads.none()


def cli_json(capsys, *argv: str) -> dict:
    code = run_cli([*argv, "--json", "--no-store"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def tiny(seq: int, batch: int = 1, **options) -> Workload:
    return Workload("llama-3.2-1b", (InputSpec((batch, seq), "int64", "input_ids"),), TraceOptions(**options),
                    TINY_LLAMA)


@pytest.mark.parametrize("options, capacity", [
    ({"mode": "train", "precision": "bf16"}, 48 * 2**20),            # flash-style kernels: memory linear in S
    ({"precision": "bf16", "attention": "math"}, 24 * 2**20),        # the math path keeps S x S scores
])
def test_max_seq_len_answer_fits_and_answer_plus_one_does_not(options, capacity):
    cache = TraceCache(maxsize=256)
    gpu = small_gpu(capacity)
    start = tiny(512, **options)
    best = max_seq_len(start, gpu, cache=cache, overheads=NONE)
    assert best > 512
    at = start.on_gpu(gpu)
    assert result_fits(cache.get(at.with_seq_len(best)), NONE, capacity)
    assert not result_fits(TraceCache().get(at.with_seq_len(best + 1)), NONE, capacity)   # its own fresh trace


def test_max_seq_len_from_a_length_that_does_not_fit_and_zero_when_nothing_fits():
    cache = TraceCache(maxsize=256)
    gpu = small_gpu(24 * 2**20)
    long = tiny(8192, precision="bf16", attention="math")
    best = max_seq_len(long, gpu, cache=cache, overheads=NONE)
    assert 1 < best < 8192
    assert result_fits(cache.get(long.on_gpu(gpu).with_seq_len(best)), NONE, gpu.available_memory_bytes)
    assert not result_fits(cache.get(long.on_gpu(gpu).with_seq_len(best + 1)), NONE, gpu.available_memory_bytes)
    weights_only = 2 * sum(simulate_memory(cache.get(long.on_gpu(gpu).with_seq_len(1)), NONE).by_category.values())
    assert max_seq_len(long, small_gpu(weights_only // 4), cache=cache, overheads=NONE) == 0


def test_no_token_input_no_answer():
    assert max_seq_len(Workload("resnet18", (InputSpec((1, 3, 32, 32)),)), small_gpu(2**30)) is None


def test_plan_max_seq_len_through_the_cli(capsys):
    """plan's answer: planning at it fits, one token more does not (each its own plan, its own trace)."""
    base = ("plan", "llama-3.2-1b", "--kwargs", TINY, "--mode", "train", "--precision", "bf16", "--gpu", "T4",
            "--cuda-context-mib", "15550", "--no-max-batch")
    data = cli_json(capsys, *base, "--seq-len", "256")
    best = data["max_seq_len"]
    assert isinstance(best, int) and best > 256 and data["max_batch"] is None
    at = cli_json(capsys, *base, "--seq-len", str(best), "--no-max-seq-len")
    above = cli_json(capsys, *base, "--seq-len", str(best + 1), "--no-max-seq-len")
    assert at["fits"] and not above["fits"] and at["max_seq_len"] is None


def test_plan_text_shows_max_seq_len_and_other_models_have_none(capsys):
    code = run_cli(["plan", "llama-3.2-1b", "--kwargs", TINY, "--seq-len", "128", "--gpu", "T4", "--no-store",
                    "--cuda-context-mib", "15550", "--no-max-batch"])
    out = capsys.readouterr().out
    assert code == 0 and "\nmax seq len: " in out and " at batch 1" in out
    vision = cli_json(capsys, "plan", "resnet18", "--input", "1x3x64x64", "--gpu", "T4", "--no-max-batch")
    assert vision["max_seq_len"] is None


def test_a_sequence_above_max_positions_warns_and_plans(capsys):
    """GPT-2 with 64 learned positions planned at 100 tokens: a plan, with a note (not an error)."""
    kwargs = json.dumps({"n_layer": 1, "n_positions": 64, "n_embd": 64, "n_head": 4})
    data = cli_json(capsys, "plan", "gpt2", "--kwargs", kwargs, "--seq-len", "100", "--gpu", "T4", "--no-max-batch",
                    "--no-max-seq-len")
    assert data["verdict"] == "fits"
    assert any("sequence length 100 is above the 64 positions gpt2 has" in note for note in data["notes"])
    within = cli_json(capsys, "plan", "gpt2", "--kwargs", kwargs, "--seq-len", "64", "--gpu", "T4", "--no-max-batch",
                      "--no-max-seq-len")
    assert not any("positions" in note for note in within["notes"])
    # a rotary model runs past its positions: analyze counts it and warns (one line, exit 0)
    rotary = json.dumps(dict(TINY_LLAMA, max_position_embeddings=64))
    code = run_cli(["analyze", "llama-3.2-1b", "--kwargs", rotary, "--seq-len", "100", "--no-store"])
    out = capsys.readouterr().out
    assert code == 0 and "warning: sequence length 100 is above the 64 positions llama-3.2-1b has" in out
    data = cli_json(capsys, "analyze", "llama-3.2-1b", "--kwargs", rotary, "--seq-len", "64")
    assert not any("positions" in w for w in data["warnings"])


def test_max_seq_len_stops_at_a_learned_position_table_not_at_rotary_positions(capsys):
    """GPT-2's positions are rows of a 64-row table (n_positions): fake tensors index past it silently, a GPU
    run fails, so the answer is 64 with the reason. Llama's rotary positions run past its 64
    max_position_embeddings: memory decides, with a note."""
    gpt2 = json.dumps({"n_layer": 1, "n_positions": 64, "n_embd": 64, "n_head": 4})
    data = cli_json(capsys, "plan", "gpt2", "--kwargs", gpt2, "--seq-len", "16", "--gpu", "H100 SXM", "--no-max-batch")
    assert data["max_seq_len"] == 64
    assert "sequence length 65 cannot run: gpt2 has 64 learned positions" in data["notes"]
    beyond = cli_json(capsys, "plan", "gpt2", "--kwargs", gpt2, "--seq-len", "100", "--gpu", "H100 SXM",
                      "--no-max-batch")
    assert beyond["max_seq_len"] == 64 and any("a real run indexes past the table" in n for n in beyond["notes"])
    rotary = json.dumps(dict(TINY_LLAMA, max_position_embeddings=64))
    data = cli_json(capsys, "plan", "llama-3.2-1b", "--kwargs", rotary, "--seq-len", "16", "--precision", "bf16",
                    "--gpu", "T4", "--cuda-context-mib", "15550", "--no-max-batch")
    assert data["max_seq_len"] > 64
    assert f"max seq len {data['max_seq_len']:,} is beyond the model's 64 positions: memory is not what limits it" \
        in data["notes"]


def test_planner_remembers_max_seq_len_per_workload_without_its_length():
    calls = []
    cache = TraceCache(maxsize=256)
    original = cache._analyze
    cache._analyze = lambda w: calls.append(w.seq_len) or original(w)
    planner = Planner(cache, overheads=NONE)
    gpu = small_gpu(48 * 2**20)
    best, why = planner.max_seq_len(tiny(512, mode="train", precision="bf16"), gpu)
    assert why is None and best > 512
    traced = len(calls)
    assert planner.max_seq_len(tiny(300, mode="train", precision="bf16"), gpu) == (best, None)
    assert len(calls) == traced          # moving the sequence slider traces nothing
    assert planner.known_max_seq_len(tiny(64, mode="train", precision="bf16"), gpu) == best


def test_sweep_seq_len_points_are_exact_plans(capsys):
    base = ("llama-3.2-1b", "--kwargs", TINY, "--precision", "bf16", "--gpus", "T4", "--cuda-context-mib", "15550")
    data = cli_json(capsys, "sweep", *base, "--seq-len", "128,512,2048", "--batch", "2")
    assert data["axis"] == "seq_len" and [p["value"] for p in data["points"]] == [128, 512, 2048]
    assert all(p["batch_size"] == 2 and not p["interpolated"] for p in data["points"])
    for point in data["points"]:
        plan = cli_json(capsys, "plan", *base[:5], "--gpu", "T4", "--cuda-context-mib", "15550", "--batch", "2",
                        "--seq-len", str(point["value"]), "--no-max-batch", "--no-max-seq-len")
        assert point["per_gpu"][0]["required_bytes"] == plan["required_bytes"]
    # 15.25 GiB available, 15.19 GiB of it the context: bf16 on sm75 runs attention as matmuls (S x S scores)
    best = data["gpus"][0]["max_seq_len"]
    assert [p["per_gpu"][0]["fits"] for p in data["points"]] == [p["value"] <= best for p in data["points"]]
    assert 512 <= best < 2048
    at = cli_json(capsys, "plan", *base[:5], "--gpu", "T4", "--cuda-context-mib", "15550", "--batch", "2",
                  "--seq-len", str(best), "--no-max-batch", "--no-max-seq-len")
    above = cli_json(capsys, "plan", *base[:5], "--gpu", "T4", "--cuda-context-mib", "15550", "--batch", "2",
                     "--seq-len", str(best + 1), "--no-max-batch", "--no-max-seq-len")
    assert at["fits"] and not above["fits"]


def test_sweep_seq_len_default_grid_brackets_the_longest_sequence():
    """Planner.seq_len_sweep without lengths: powers of two around the current length plus the longest sequence
    n and n + 1, the curve crossing the capacity line between them."""
    planner = Planner(TraceCache(maxsize=256), overheads=NONE)
    gpu = small_gpu(24 * 2**20)
    data = planner.seq_len_sweep(tiny(256, precision="bf16", attention="math"), [gpu])
    best = data.gpus[0].max_seq_len
    values = [p.value for p in data.points]
    assert best in values and best + 1 in values and 256 in values
    assert [p.per_gpu[0].fits for p in data.points] == [v <= best for v in values]


def test_sweep_one_length_is_a_batch_sweep_at_that_length(capsys):
    data = cli_json(capsys, "sweep", "llama-3.2-1b", "--kwargs", TINY, "--batch", "1,2", "--seq-len", "64",
                    "--gpus", "T4", "--cuda-context-mib", "15600")
    assert data["axis"] == "batch" and [p["value"] for p in data["points"]] == [1, 2]
    default = cli_json(capsys, "sweep", "llama-3.2-1b", "--kwargs", TINY, "--seq-len", "64", "--gpus", "T4")
    assert default["axis"] == "batch" and [p["value"] for p in default["points"]][:3] == [1, 2, 4]
    code = run_cli(["sweep", "llama-3.2-1b", "--kwargs", TINY, "--seq-len", "64,128", "--batch", "1,2",
                    "--gpus", "T4", "--no-store"])
    assert code == 2 and "with --seq-len LIST give one --batch N" in capsys.readouterr().err
    code = run_cli(["sweep", "resnet18", "--seq-len", "64,128", "--gpus", "T4", "--no-store"])
    assert code == 2 and "--seq-len needs a token input" in capsys.readouterr().err


def test_default_seq_len_grid():
    assert sweep_seq_lens(2048, [5000]) == (128, 256, 512, 1024, 2048, 4096, 5000, 5001, 8192)
    assert sweep_seq_lens(77, [None]) == (64, 77, 128)


# ------------------------------------------------------------------------------------- attention FLOPs
def test_causal_convention_counts_half_of_causal_attention(capsys):
    """GPT-2 (1 layer, 4 heads of 16, fused SDPA with is_causal): full - causal = half of Q·Kᵀ and P·V,
    B·H·S·S·(Dqk + Dv) / 2 MACs; the projections and MLP are the same in both."""
    base = ("analyze", "gpt2", "--kwargs", json.dumps({"n_layer": 1, "n_embd": 64, "n_head": 4}), "--seq-len", "256",
            "--batch", "2", "--precision", "bf16")
    full = cli_json(capsys, *base)
    causal = cli_json(capsys, *base, "--attention-flops", "causal")
    attention = 2 * 4 * 256 * 256 * (16 + 16)
    assert full["totals"]["macs"] - causal["totals"]["macs"] == attention // 2
    assert any("causal convention" in p for p in causal["policies"])
    train_full = cli_json(capsys, *base, "--mode", "train")
    train_causal = cli_json(capsys, *base, "--mode", "train", "--attention-flops", "causal")
    # backward: five S x S products (recomputed scores, dP, dV, dQ, dK) over Dqk or Dv, halved
    backward_attention_flops = 2 * (2 * 4 * 256 * 256 * (16 + 16 + 16 + 16 + 16))
    assert train_full["totals"]["backward_flops"] - train_causal["totals"]["backward_flops"] == \
        backward_attention_flops // 2


def test_causal_convention_leaves_non_causal_attention_full(capsys):
    """BERT's encoder attention is not causal: the convention changes nothing."""
    base = ("analyze", "bert-base", "--kwargs", '{"num_hidden_layers": 1}', "--seq-len", "128")
    assert cli_json(capsys, *base)["totals"]["macs"] == cli_json(
        capsys, *base, "--attention-flops", "causal")["totals"]["macs"]


@pytest.mark.parametrize("options", [{"precision": "bf16", "attention": "math"},   # S x S scores: quadratic
                                     {"mode": "train", "precision": "bf16"}])      # flash-style: linear in S
def test_quick_plans_along_the_sequence_axis_equal_the_exact_trace_at_interpolated_lengths(options):
    # storage sizes and op counts of a transformer are polynomials of degree <= 2 in the sequence length, so the
    # quadratic through three traced lengths is exact at every other length: the quick plan (no trace) has the
    # memory (and the roofline) of the exact trace, and says it is an estimate until that trace replaces it
    cache = TraceCache(maxsize=256)
    gpu = small_gpu(64 * 2**20)
    planner = Planner(cache, overheads=NONE)
    for length in (64, 128, 256, 512):
        cache.get(tiny(length, 2, **options).on_gpu(gpu))
    traces = cache.misses
    for length in (96, 192, 320):
        workload = tiny(length, 2, **options)
        (quick,), estimated = planner.quick_plans(workload, [gpu])
        assert estimated and cache.misses == traces   # nothing traced for it
        assert quick.result.warnings[-1].startswith("estimated from traces at sequence lengths")
        exact = planner.plan(workload, gpu, solve_max_batch=False)
        traces = cache.misses
        assert quick.memory.required_bytes == exact.memory.required_bytes
        assert quick.memory.tensor_peak_bytes == exact.memory.tensor_peak_bytes
        assert quick.memory.by_category == exact.memory.by_category
        assert quick.latency.estimate_ms == pytest.approx(exact.latency.estimate_ms, rel=1e-9)
        assert quick.verdict is exact.verdict
    # another batch: none of its lengths is in memory, no estimate (a trace is needed)
    assert planner.quick_plans(tiny(1000, 3, **options), [gpu]) is None

"""Prefill and decode through the model's own KV cache (engine/tracing/generation.py), the decode bounds,
tokens/s and the generation solvers, against closed forms from the tiny configs in tests/models/tiny_llms.py."""
import json
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

from torchbudget.cli import run_cli as _run_cli  # noqa: E402
from torchbudget.engine.api import analyze_workload  # noqa: E402
from torchbudget.engine.cache import TraceCache  # noqa: E402
from torchbudget.engine.errors import UserError  # noqa: E402
from torchbudget.engine.inputs import parse_inputs  # noqa: E402
from torchbudget.engine.memory import kv_cache_bytes, simulate_memory  # noqa: E402
from torchbudget.engine.overheads import Overheads  # noqa: E402
from torchbudget.engine.planner import Planner  # noqa: E402
from torchbudget.engine.results import MemoryCategory, TraceOptions  # noqa: E402
from torchbudget.engine.solver import max_concurrent_sequences, max_context, result_fits  # noqa: E402
from torchbudget.engine.workload import Workload  # noqa: E402
from torchbudget.hardware.catalog import resolve_gpu  # noqa: E402
from tests.models.tiny_llms import GEMMA2, GPT2, LLAMA, MISTRAL  # noqa: E402
from tests.planner_fakes import small_gpu  # noqa: E402

MODELS = Path(__file__).parent / "models" / "tiny_llms.py"
LLAMA_FILE = f"{MODELS}:TinyLlama"
NONE = Overheads.none()


def llama_kv_bytes(batch: int, tokens: int, value_bytes: int = 2) -> int:
    """2 (keys, values) x layers x KV heads x head dim x tokens x batch x bytes per value."""
    head_dim = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
    return 2 * LLAMA["num_hidden_layers"] * LLAMA["num_key_value_heads"] * head_dim * tokens * batch * value_bytes


def llama_params() -> int:
    v, h, i, layers = LLAMA["vocab_size"], LLAMA["hidden_size"], LLAMA["intermediate_size"], LLAMA["num_hidden_layers"]
    kv = LLAMA["num_key_value_heads"] * h // LLAMA["num_attention_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h    # q, o; k, v; gate, up, down; two RMSNorms
    return 2 * v * h + layers * per_layer + h                  # embedding, lm_head (untied), final norm


def workload(mode: str, shape: str, model: str = LLAMA_FILE, **options) -> Workload:
    return Workload(model, parse_inputs(shape), TraceOptions(mode=mode, precision=options.pop("precision", "bf16"),
                                                             **options))


def trace(mode: str, shape: str, **options):
    return analyze_workload(workload(mode, shape, **options))


def test_prefill_fills_a_kv_cache_of_the_prompt_alive_at_the_end():
    result = trace("prefill", "input_ids=2x16:int64")
    before, after = kv_cache_bytes(result.storage_events)
    assert (before, after) == (0, llama_kv_bytes(batch=2, tokens=16))
    assert LLAMA["num_key_value_heads"] < LLAMA["num_attention_heads"]   # GQA: the cache has the KV heads only
    assert result.policies[0].startswith("prefill: 2 sequence(s) x 16 prompt token(s)")


def test_decode_reads_a_cache_of_the_context_and_appends_the_new_token():
    result = trace("decode", "input_ids=4x1:int64", context_len=40)
    before, after = kv_cache_bytes(result.storage_events)
    assert before == llama_kv_bytes(batch=4, tokens=40)              # allocated before the first op
    assert after == llama_kv_bytes(batch=4, tokens=41)               # what the cache holds for the next step
    first = [e for e in result.storage_events if e.category is MemoryCategory.KV_CACHE][0]
    assert first.op_index == -1 and first.kind == "alloc"
    # DynamicCache grows by concatenation: at the peak, one layer's keys exist twice (context + the new copy)
    at_peak = simulate_memory(result, NONE).by_category[MemoryCategory.KV_CACHE]
    head_dim = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
    assert before < at_peak <= before + 2 * LLAMA["num_key_value_heads"] * head_dim * 41 * 4 * 2


def test_decode_bandwidth_bound_is_weights_plus_context_cache_over_bandwidth():
    gpu = resolve_gpu("H100 SXM")
    plan = Planner().plan(workload("decode", "input_ids=8x1:int64", context_len=128), gpu, solve_max_batch=False)
    g = plan.generation
    assert g.weight_bytes == 2 * llama_params()                      # bf16: every weight read once per step
    assert g.kv_read_bytes == llama_kv_bytes(batch=8, tokens=128)
    assert g.bandwidth_bound_ms == pytest.approx((g.weight_bytes + g.kv_read_bytes) / (gpu.bandwidth_gbs * 1e9) * 1e3)
    assert g.bandwidth_bound_ms <= g.step_bound_ms <= g.step_estimate_ms   # each op reads its weights and the cache
    assert g.tokens_per_s == pytest.approx(8 / (plan.latency.estimate_ms / 1e3))
    assert g.per_sequence_tokens_per_s == pytest.approx(1 / (plan.latency.estimate_ms / 1e3))
    assert g.max_tokens_per_s == pytest.approx(8 / (max(g.step_bound_ms, g.bandwidth_bound_ms) / 1e3))
    assert g.time_to_first_token_ms is None


def test_prefill_time_to_first_token_and_tokens_per_s():
    plan = Planner().plan(workload("prefill", "input_ids=2x64:int64"), resolve_gpu("H100 SXM"), solve_max_batch=False)
    g = plan.generation
    assert g.time_to_first_token_ms == plan.latency.estimate_ms
    assert g.tokens_per_s == pytest.approx(2 * 64 / (plan.latency.estimate_ms / 1e3))
    assert (g.kv_read_bytes, g.kv_cache_bytes) == (0, llama_kv_bytes(batch=2, tokens=64))


@pytest.mark.parametrize("mode,shape,options", [("prefill", "input_ids=2x16:int64", {}),
                                                ("decode", "input_ids=2x1:int64", {"context_len": 24})])
def test_kv_dtype_what_ifs_store_the_cache_in_that_dtype(mode, shape, options):
    layers = LLAMA["num_hidden_layers"]
    tokens = options.get("context_len", 0) + int(shape.split("x")[1].split(":")[0])
    bf16 = kv_cache_bytes(trace(mode, shape, **options).storage_events)[1]
    assert bf16 == llama_kv_bytes(2, tokens)
    fp8 = kv_cache_bytes(trace(mode, shape, kv_dtype="fp8", **options).storage_events)[1]
    assert fp8 == bf16 // 2 + 2 * layers * 4          # 1 byte per value + one float32 scale per layer's K and V
    int8 = kv_cache_bytes(trace(mode, shape, kv_dtype="int8", **options).storage_events)[1]
    head_dim = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
    scales = 2 * layers * LLAMA["num_key_value_heads"] * tokens * 2 * 2   # a float16 scale per token and KV head
    assert int8 == bf16 // 2 + scales and scales == bf16 // 2 * 2 // head_dim
    # fp32 model, bf16 cache: half of the fp32 cache
    fp32 = kv_cache_bytes(trace(mode, shape, precision="fp32", **options).storage_events)[1]
    cast = kv_cache_bytes(trace(mode, shape, precision="fp32", kv_dtype="bf16", **options).storage_events)[1]
    assert fp32 == llama_kv_bytes(2, tokens, 4) and cast == fp32 // 2


def test_fp8_cache_is_dequantised_per_layer_as_transformers_does():
    result = trace("decode", "input_ids=2x1:int64", context_len=24, kv_dtype="fp8")
    assert any("Fp8QuantizedLayer" in p for p in result.policies)
    ops = [op.op for op in result.ops]
    assert ops.count("aten.cat.default") >= 2 * LLAMA["num_hidden_layers"]    # fp8 codes appended per layer
    # the dequantised copy (float32, then bfloat16) of each layer's keys and values is a temporary of the step
    peak = simulate_memory(result, NONE)
    assert peak.by_category[MemoryCategory.TEMPORARIES] >= llama_kv_bytes(2, 25) // LLAMA["num_hidden_layers"]


def test_sliding_window_layers_keep_their_window_between_decode_steps():
    model = f"{MODELS}:TinyMistral"
    result = analyze_workload(workload("decode", "input_ids=2x1:int64", model=model, context_len=40))
    before, after = kv_cache_bytes(result.storage_events)
    window, layers = MISTRAL["sliding_window"], MISTRAL["num_hidden_layers"]
    per_token = 2 * MISTRAL["num_key_value_heads"] * (MISTRAL["hidden_size"] // MISTRAL["num_attention_heads"]) * 2 * 2
    window_tensors = layers * 8                                       # each layer's int64 window size
    assert before == layers * (window - 1) * per_token + window_tensors
    assert after == layers * window * per_token + window_tensors     # the window's keys are a view of the last update


def test_alternating_sliding_and_full_layers_each_keep_their_own_length():
    types = transformers.Gemma2Config(**GEMMA2).layer_types
    assert set(types) == {"sliding_attention", "full_attention"}
    result = analyze_workload(workload("decode", "input_ids=2x1:int64", model=f"{MODELS}:TinyGemma2", context_len=40))
    per_token = 2 * GEMMA2["num_key_value_heads"] * GEMMA2["head_dim"] * 2 * 2
    window = GEMMA2["sliding_window"]
    sliding = types.count("sliding_attention")
    expected = tuple(sum((window - 1 + new if t == "sliding_attention" else 40 + new) * per_token for t in types)
                     + sliding * 8 for new in (0, 1))
    assert kv_cache_bytes(result.storage_events) == expected


def test_a_multi_head_model_caches_every_head():
    result = analyze_workload(workload("decode", "input_ids=3x1:int64", model=f"{MODELS}:TinyGPT2", context_len=10))
    head_dim = GPT2["n_embd"] // GPT2["n_head"]
    assert kv_cache_bytes(result.storage_events) == tuple(2 * GPT2["n_layer"] * GPT2["n_head"] * head_dim * t * 3 * 2
                                                          for t in (10, 11))


def cache_appends(result) -> list:
    """DynamicLayer.update's concatenations: the (empty) cache so far and this step's keys or values."""
    return [op for op in result.ops if op.op == "aten.cat.default" and any(t.shape == (0,) for t in op.inputs)]


def test_training_builds_no_kv_cache():
    assert not cache_appends(trace("train", "input_ids=2x16:int64"))
    # without use_cache=False the model's default (config.use_cache) concatenates keys and values into a cache
    head_dim = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
    appends = cache_appends(trace("infer", "input_ids=2x16:int64"))
    assert len(appends) == 2 * LLAMA["num_hidden_layers"]
    assert {op.outputs[0].shape for op in appends} == {(2, LLAMA["num_key_value_heads"], 16, head_dim)}


def test_max_concurrent_sequences_fits_and_one_more_does_not():
    cache = TraceCache()
    base = workload("decode", "input_ids=1x1:int64", context_len=256)
    one = simulate_memory(cache.get(base), NONE).peak_bytes
    gpu = small_gpu(one + 20 * llama_kv_bytes(1, 257))
    best = max_concurrent_sequences(base, gpu, cache=cache, overheads=NONE)
    assert best > 10
    assert result_fits(cache.get(base.with_batch(best).on_gpu(gpu)), NONE, gpu.available_memory_bytes)
    assert not result_fits(cache.get(base.with_batch(best + 1).on_gpu(gpu)), NONE, gpu.available_memory_bytes)


def test_max_context_fits_and_one_more_token_does_not():
    cache = TraceCache()
    base = workload("decode", "input_ids=4x1:int64", context_len=16)
    gpu = small_gpu(simulate_memory(cache.get(base), NONE).peak_bytes + llama_kv_bytes(4, 300))
    best = max_context(base, gpu, cache=cache, overheads=NONE)
    assert 16 < best < 16 + 300      # the cache grows, and so do the attention temporaries and the append copy
    at = lambda n: cache.get(base.with_options(context_len=n).on_gpu(gpu))  # noqa: E731
    assert result_fits(at(best), NONE, gpu.available_memory_bytes)
    assert not result_fits(at(best + 1), NONE, gpu.available_memory_bytes)


def test_solvers_refuse_other_modes():
    with pytest.raises(UserError, match="decode question"):
        max_context(workload("prefill", "input_ids=1x8:int64"), small_gpu(2**30))


def run_cli(argv):
    return _run_cli(argv + ["--no-isolation", "--no-store"])


def test_cli_decode_plan(capsys):
    """The path users take: plan FILE.py:Factory --mode decode --context 2048 (8 sequences) on an H100."""
    argv = ["plan", LLAMA_FILE, "--mode", "decode", "--context", "2048", "--input", "input_ids=8x1:int64",
            "--precision", "bf16", "--gpu", "H100 SXM"]
    assert run_cli(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    g = out["generation"]
    assert g["kv_cache_bytes_before_step"] == llama_kv_bytes(8, 2048)
    assert g["kv_cache_bytes"] == llama_kv_bytes(8, 2049)
    assert g["weight_bytes"] == 2 * llama_params()
    assert (g["sequences"], g["new_tokens"], g["context_tokens"]) == (8, 1, 2048)
    assert g["max_concurrent_sequences"] == out["max_batch"] > 8 and g["max_context"] > 2048
    assert out["memory"]["by_category"]["kv_cache"] >= llama_kv_bytes(8, 2048)
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "bf16 decode, context 2,048" in text
    assert "KV cache: 12.00 MiB for 8 x 2,048 tokens before the step" in text   # 2x3x2x32x2048x8x2 B
    assert f"max concurrent sequences: {out['max_batch']:,} (at context 2,048)" in text
    assert "tokens/s estimated" in text and "decode bound: weights" in text


def test_cli_prefill_plan_shows_time_to_first_token(capsys):
    argv = ["plan", LLAMA_FILE, "--mode", "prefill", "--input", "input_ids=2x32:int64", "--gpu", "L4",
            "--no-max-batch", "--kv-dtype", "fp8"]
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "fp32 prefill, KV cache fp8" in text and "time to first token:" in text
    assert "prefill throughput:" in text and "max batch: not solved (prompts of 32 tokens)" in text


def test_decode_on_a_model_without_a_kv_cache_is_one_line(capsys):
    models = Path(__file__).parent / "models"
    assert run_cli(["plan", f"{models / 'gpt_block.py'}:GPT", "--mode", "decode", "--context", "16",
                    "--input", "2x1:int64", "--gpu", "T4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs a model with a KV cache" in err


def test_decode_without_token_ids_or_with_an_encoder_decoder_is_refused():
    with pytest.raises(UserError, match="needs a model with a KV cache"):
        trace("decode", "1x3x32x32:float32", model="resnet18", context_len=4)
    with pytest.raises(UserError, match="encoder-decoder"):
        trace("decode", "input_ids=1x1:int64", model=f"{MODELS}:TinyT5", context_len=4)


def test_context_beyond_the_models_positions_is_a_warning_and_a_plan_note():
    short = f"{MODELS}:ShortLlama"
    result = analyze_workload(workload("decode", "input_ids=1x1:int64", model=short, context_len=64))
    assert any("65 positions (context 64 + 1 new) exceed the model's 64 positions" in w for w in result.warnings)
    plan = Planner().plan(workload("decode", "input_ids=1x1:int64", model=short, context_len=64),
                          resolve_gpu("T4"), solve_max_batch=False)
    assert any("exceed the model's 64 positions" in n for n in plan.notes)
    inside = analyze_workload(workload("decode", "input_ids=1x1:int64", model=short, context_len=63))
    assert not inside.warnings


# ----------------------------------------------------------------------------------------------- context sweeps
def test_context_sweep_points_are_exact_traces_with_the_kv_cache_of_each_context():
    # every point: its own trace at that context; the KV cache read by the step is 2 x layers x KV heads x head dim
    # x context x sequences x bytes; each GPU's largest context is the solver's (the plot's marker)
    cache = TraceCache(maxsize=64)
    gpu = small_gpu(24 * 2**20)
    planner = Planner(cache, overheads=NONE)
    w = workload("decode", "input_ids=4x1:int64", context_len=512)
    result = planner.context_sweep(w, [gpu], [256, 512, 1024, 2048])
    assert result.axis == "context" and [p.value for p in result.points] == [256, 512, 1024, 2048]
    for point in result.points:
        (g,) = point.per_gpu
        assert not point.interpolated and point.batch_size == 4
        assert g.kv_cache_bytes == llama_kv_bytes(4, point.value)
        exact = simulate_memory(cache.get(w.on_gpu(gpu).with_options(context_len=point.value)), NONE)
        assert g.required_bytes == exact.required_bytes and g.tokens_per_s > 0
    best = result.gpus[0].max_context
    assert best == max_context(w, gpu, cache=cache, overheads=NONE) and best > 0
    assert [p.per_gpu[0].fits for p in result.points] == [p.value <= best for p in result.points]
    default = planner.context_sweep(w, [gpu])   # default grid: powers of two and the boundary best, best + 1
    assert {512, best, best + 1} <= {p.value for p in default.points}
    with pytest.raises(UserError, match="the context sweep is a decode question"):
        planner.context_sweep(workload("infer", "input_ids=4x16:int64"), [gpu], [256, 512])


def test_cli_sweep_context(capsys):
    argv = ["sweep", LLAMA_FILE, "--mode", "decode", "--context", "256,1024", "--input", "input_ids=2x1:int64",
            "--precision", "bf16", "--gpus", "H100 SXM"]
    assert run_cli(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["axis"] == "context" and [p["value"] for p in data["points"]] == [256, 1024]
    assert [p["per_gpu"][0]["kv_cache_bytes"] for p in data["points"]] == [llama_kv_bytes(2, 256),
                                                                         llama_kv_bytes(2, 1024)]
    assert data["gpus"][0]["max_context"] > 1024
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "KV cache" in text and "tokens/s" in text and "max context" in text
    # one line, not a traceback: the context is a decode question
    assert run_cli(["sweep", LLAMA_FILE, "--context", "256,1024", "--input", "input_ids=2x16:int64"]) != 0
    assert "--context only applies to --mode decode" in capsys.readouterr().err
    assert run_cli(argv[:5] + ["256,x"] + argv[6:]) != 0
    assert "--context must be integers" in capsys.readouterr().err

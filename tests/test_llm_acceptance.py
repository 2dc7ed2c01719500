"""Issue 10's acceptance numbers on the bundled full-size configs, by name, through the paths users take (the CLI
and engine.api): expected values are the configs' closed forms written out here, never the engine's own.

Mixtral-8x7B's MACs against the top-k closed form in bf16 and fp32; a GQA model's decode step (KV-cache bytes,
weights read per token) with the decode default of one new token per sequence; LoRA's optimizer state and
gradients on a bundled Llama; --lora-rank 0 as one line. (Parameters of every bundled config against transformers'
own build, use_cache in training, unknown hub ids, config.json with missing fields and lengths past the
positions are in tests/test_hf_models.py and tests/test_seq_len.py.)"""
from __future__ import annotations

import json

import pytest

from tests.hf_closed_forms import expected_params
from torchbudget.cli import run_cli
from torchbudget.engine.api import analyze
from torchbudget.engine.hf_catalog import find_bundled
from torchbudget.engine.results import MemoryCategory as C

MIXTRAL = dict(find_bundled("mistralai/Mixtral-8x7B-v0.1").config)
LLAMA_8B = dict(find_bundled("meta-llama/Llama-3.1-8B").config)
LLAMA_1B = dict(find_bundled("meta-llama/Llama-3.2-1B").config)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = run_cli([*argv, "--no-isolation", "--no-store"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys, *argv: str) -> dict:
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def head_dim(c: dict) -> int:
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


# ------------------------------------------------------------------------------------------------ Mixtral
def mixtral_macs(batch: int, seq: int, c: dict = MIXTRAL) -> int:
    """tokens x (q, k, v, o projections + router + k experts' SwiGLU) + attention scores per layer, + LM head.
    Attention scores: Q·Kᵀ and P·V over the full square (docs/conventions.md's default), per head."""
    tokens = batch * seq
    h, heads, kv_heads, inter = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], \
        c["intermediate_size"]
    d = head_dim(c)
    projections = tokens * (h * heads * d + 2 * h * kv_heads * d + heads * d * h)
    scores = batch * heads * seq * seq * 2 * d
    router = tokens * h * c["num_local_experts"]
    experts = tokens * c["num_experts_per_tok"] * 3 * h * inter      # gate, up: h -> I; down: I -> h
    return c["num_hidden_layers"] * (projections + scores + router + experts) + tokens * h * c["vocab_size"]


def test_mixtral_closed_form_is_the_published_shape():
    # 2 of 8 experts: about 12.9 B parameters active per token of 46.7 B (the model card's "12.9B active")
    c = MIXTRAL
    d, h, layers = head_dim(c), c["hidden_size"], c["num_hidden_layers"]
    active = expected_params(c) - layers * (c["num_local_experts"] - c["num_experts_per_tok"]) * 3 * h * \
        c["intermediate_size"]
    assert expected_params(c) == 46_702_792_704 and round(active / 1e9, 1) == 12.9
    assert d == 128 and c["num_key_value_heads"] == 8


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_mixtral_8x7b_by_name_macs_equal_the_top_k_closed_form(dtype):
    """engine.api by hub id: every expert op counted (coverage 100% of FLOPs) and the MACs those of top-2
    routing (within 1% is the acceptance bar; the count is exact). fp32 runs _grouped_mm as torch's fallback."""
    r = analyze("mistralai/Mixtral-8x7B-v0.1", "input_ids=2x32:int64", dtype=dtype)
    expected = mixtral_macs(2, 32)
    assert abs(r.totals.macs - expected) <= 0.01 * expected
    assert r.totals.macs == expected
    assert r.flop_coverage == 1.0 and not r.uncounted_ops
    assert r.totals.params == expected_params(MIXTRAL)
    assert any(p.startswith("MoE routing: balanced, 2 of 8 experts per token") for p in r.policies)


def test_mixtral_8x7b_through_the_cli(capsys):
    data = cli_json(capsys, "analyze", "mixtral-8x7b", "--batch", "1", "--seq-len", "48", "--precision", "bf16")
    assert [(i["name"], i["shape"]) for i in data["inputs"]] == [("input_ids", [1, 48])]
    assert data["totals"]["macs"] == mixtral_macs(1, 48)
    assert data["flop_coverage"] == 1.0


# ------------------------------------------------------------------------------------------------- decode
def kv_bytes(c: dict, tokens: int, batch: int, value_bytes: int) -> int:
    """2 (keys and values) x layers x KV heads x head dim x tokens x batch x bytes per value."""
    return 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * head_dim(c) * tokens * batch * value_bytes


def test_llama_3_1_8b_decode_kv_cache_and_weights_read_per_token(capsys):
    """`plan meta-llama/Llama-3.1-8B --mode decode --context 4096 --batch 8`: 8 concurrent sequences, one new
    token each (decode's default input), against a bf16 cache of 4,096 tokens. GQA: 8 KV heads of 32."""
    data = cli_json(capsys, "plan", "meta-llama/Llama-3.1-8B", "--mode", "decode", "--context", "4096",
                    "--batch", "8", "--precision", "bf16", "--gpu", "H100 SXM", "--no-max-batch")
    g = data["generation"]
    assert (g["sequences"], g["new_tokens"], g["context_tokens"]) == (8, 1, 4096)
    assert data["inputs"] == ["input_ids=8x1:int64"]
    assert g["kv_cache_bytes_before_step"] == kv_bytes(LLAMA_8B, 4096, 8, 2) == 4 * 2**30
    assert g["kv_cache_bytes"] == kv_bytes(LLAMA_8B, 4097, 8, 2)
    assert g["weight_bytes"] == 2 * expected_params(LLAMA_8B) == 16_060_522_496   # every bf16 weight, once
    assert data["memory"]["by_category"]["weights"] == 2 * expected_params(LLAMA_8B)
    assert data["memory"]["by_category"]["kv_cache"] >= kv_bytes(LLAMA_8B, 4096, 8, 2)


def test_decode_defaults_to_one_new_token_per_sequence(capsys):
    """Without --input, decode's token input is one new token per sequence (the cache holds the context), not
    the default prompt length other modes take; --seq-len still sets it (several new tokens: speculative)."""
    tiny = json.dumps({"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128,
                       "num_attention_heads": 4, "num_key_value_heads": 2})
    data = cli_json(capsys, "analyze", "llama-3.2-1b", "--kwargs", tiny, "--mode", "decode", "--context", "16")
    assert [i["shape"] for i in data["inputs"]] == [[1, 1]]
    data = cli_json(capsys, "analyze", "llama-3.2-1b", "--kwargs", tiny, "--mode", "decode", "--context", "16",
                    "--seq-len", "4", "--batch", "3")
    assert [i["shape"] for i in data["inputs"]] == [[3, 4]]
    infer = cli_json(capsys, "analyze", "llama-3.2-1b", "--kwargs", tiny, "--batch", "3")
    assert [i["shape"] for i in infer["inputs"]] == [[3, 2048]]


# --------------------------------------------------------------------------------------------------- LoRA
def lora_params(c: dict, rank: int) -> int:
    """Adapters on q, k, v, o (the default targets): A (rank x in) and B (out x rank) per projection."""
    h, d = c["hidden_size"], head_dim(c)
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    shapes = [(h, q), (h, kv), (h, kv), (q, h)]
    return c["num_hidden_layers"] * sum(rank * (i + o) for i, o in shapes)


def test_lora_optimizer_state_is_8_bytes_per_adapter_parameter_on_a_bundled_llama():
    """QLoRA of Llama-3.2-1B by name (engine.api): AdamW keeps exp_avg and exp_avg_sq (fp32) for the adapters only,
    plus torch's 4-byte step per adapter tensor; gradients only for the adapters (fp32); the nf4 base as its
    storage (4-bit codes and scales), never fp32."""
    rank = 16
    r = analyze("meta-llama/Llama-3.2-1B", "input_ids=1x128:int64", mode="train", lora_rank=rank, base_dtype="nf4",
                precision="bf16-amp")
    adapters = lora_params(LLAMA_1B, rank)
    assert adapters == 16 * 16 * (4096 + 2560 + 2560 + 4096) == 3_407_872
    assert r.totals.trainable_params == adapters
    tensors = 2 * 4 * LLAMA_1B["num_hidden_layers"]              # A and B per adapted projection
    allocated = {c: sum(e.nbytes for e in r.storage_events if e.kind == "alloc" and e.category is c)
                 for c in (C.OPTIMIZER_STATE, C.GRADIENTS, C.WEIGHTS)}
    assert allocated[C.OPTIMIZER_STATE] == 8 * adapters + 4 * tensors
    assert allocated[C.GRADIENTS] == 4 * adapters
    assert allocated[C.WEIGHTS] < 2 * expected_params(LLAMA_1B)   # far below fp32 (4 B) and bf16 (2 B) weights


def test_lora_rank_zero_is_one_line_exit_2(capsys):
    code, out, err = cli(capsys, "plan", "meta-llama/Llama-3.1-8B", "--mode", "train", "--lora-rank", "0",
                         "--gpu", "RTX 4090")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and "--lora-rank must be 1 or more, got 0" in err

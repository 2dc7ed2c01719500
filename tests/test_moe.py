"""Mixture of experts (issue 10): top-k routing counted as it runs, every token to exactly k experts.

Expected numbers come from the tiny configs' closed forms (tests/models/tiny_moe.py) and from
torch.utils.flop_counter.FlopCounterMode on a real CPU run of the same model with its routers forced to the
balanced assignment (pair t·k+j -> expert (t·k+j) mod E, written here independently of engine/tracing/routing.py)."""
from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from tests.formula_capture import capture
from tests.models import tiny_moe
from tests.models.tiny_moe import MIXTRAL, QWEN2_MOE
from torchbudget.engine.api import analyze
from torchbudget.engine.results import MemoryCategory as C, Phase

ROOT = Path(__file__).resolve().parents[1]
B, S = 2, 16
T = B * S
INPUTS = f"input_ids={B}x{S}:int64"

EXPERT_IMPLEMENTATIONS = ["grouped_mm", "eager"]


# ------------------------------------------------------------------------------------------ closed forms
def _attention_macs(c: dict) -> int:
    h, heads = c["hidden_size"], c["num_attention_heads"]
    head_dim = h // heads
    kv = c["num_key_value_heads"] * head_dim
    projections = T * (2 * h * h + 2 * h * kv)                 # q, o: h×h; k, v: h×kv
    scores = B * heads * S * S * (head_dim + head_dim)         # Q·Kᵀ and P·V, the full square (conventions.md)
    return projections + scores


def mixtral_macs(c: dict = MIXTRAL) -> int:
    h, e, k, inter = c["hidden_size"], c["num_local_experts"], c["num_experts_per_tok"], c["intermediate_size"]
    experts = T * k * 3 * h * inter                            # SwiGLU: gate, up (h -> I) and down (I -> h)
    router = T * h * e
    return c["num_hidden_layers"] * (_attention_macs(c) + router + experts) + T * h * c["vocab_size"]


def qwen2_moe_macs(c: dict = QWEN2_MOE) -> int:
    h, e, k = c["hidden_size"], c["num_experts"], c["num_experts_per_tok"]
    experts = T * k * 3 * h * c["moe_intermediate_size"]
    shared = T * (3 * h * c["shared_expert_intermediate_size"] + h)   # the shared expert and its 1-wide gate
    router = T * h * e
    return c["num_hidden_layers"] * (_attention_macs(c) + router + experts + shared) + T * h * c["vocab_size"]


def mixtral_params(c: dict = MIXTRAL) -> int:
    h, inter, e = c["hidden_size"], c["intermediate_size"], c["num_local_experts"]
    kv = c["num_key_value_heads"] * h // c["num_attention_heads"]
    layer = 2 * h * h + 2 * h * kv + e * h + e * 3 * h * inter + 2 * h
    return c["vocab_size"] * h * 2 + c["num_hidden_layers"] * layer + h


def qwen2_moe_params(c: dict = QWEN2_MOE) -> int:
    h, e = c["hidden_size"], c["num_experts"]
    kv = c["num_key_value_heads"] * h // c["num_attention_heads"]
    attention = 2 * h * h + 2 * h * kv + (h + 2 * kv)          # q, k, v carry biases
    moe = e * h + e * 3 * h * c["moe_intermediate_size"] + 3 * h * c["shared_expert_intermediate_size"] + h
    return c["vocab_size"] * h * 2 + c["num_hidden_layers"] * (attention + moe + 2 * h) + h


MODELS = {
    "mixtral": (tiny_moe.TinyMixtral, mixtral_macs, mixtral_params, MIXTRAL["num_local_experts"],
                MIXTRAL["num_experts_per_tok"]),
    "qwen2_moe": (tiny_moe.TinyQwen2Moe, qwen2_moe_macs, qwen2_moe_params, QWEN2_MOE["num_experts"],
                  QWEN2_MOE["num_experts_per_tok"]),
}


def balanced_loads(tokens: int, k: int, experts: int) -> list[int]:
    pairs = tokens * k
    return [pairs // experts + (1 if e < pairs % experts else 0) for e in range(experts)]


# ------------------------------------------------------------------------------------------ the counts
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("experts", EXPERT_IMPLEMENTATIONS)
@pytest.mark.parametrize("name", list(MODELS))
def test_macs_equal_the_top_k_closed_form(name, experts, dtype):
    build, macs, params, n_experts, k = MODELS[name]
    model = build(experts)
    r = analyze(model, INPUTS, dtype=dtype)
    assert r.totals.macs == macs()
    assert r.totals.params == params() == sum(p.numel() for p in model.parameters())
    assert r.flop_coverage == 1.0 and not r.uncounted_ops
    routing = [p for p in r.policies if p.startswith("MoE routing: balanced")]
    assert len(routing) == 1 and f"{k} of {n_experts} experts per token" in routing[0]
    assert "model.layers.0.mlp.gate" in routing[0] and "model.layers.1.mlp.gate" in routing[0]
    assert not any(p.startswith("nonzero") for p in r.policies)   # no worst case left in the expert loop
    if experts == "grouped_mm":
        grouped = [op for op in r.ops if op.op == "aten._grouped_mm.default"]
        assert len(grouped) == 2 * MIXTRAL["num_hidden_layers"]   # up and down projections per layer
        assert any("grouped_mm in float32" in p for p in r.policies) == (dtype == "fp32")


class BalancedTopK(TorchFunctionMode):
    """Forces every topk over ``experts`` scores to the balanced assignment (a real run's routers)."""

    def __init__(self, experts: int):
        super().__init__()
        self.experts = experts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.topk, torch.Tensor.topk) and args[0].shape[-1] == self.experts:
            scores = args[0]
            k = args[1] if len(args) > 1 else kwargs["k"]
            tokens = scores.numel() // self.experts
            index = (torch.arange(tokens * k) % self.experts).reshape(*scores.shape[:-1], k)
            return torch.return_types.topk((scores.gather(-1, index), index))
        return func(*args, **kwargs)


def _real_model(name: str):
    """The tiny model on CPU with real (random) weights, eager experts and eager attention: FlopCounterMode
    has no formula for _grouped_mm nor for CPU's flash attention kernel, and the implementations do the same
    matmuls (attention's Q·Kᵀ and P·V over the full square, as the trace counts SDPA)."""
    torch.manual_seed(0)
    cls, config = {"mixtral": (transformers.MixtralForCausalLM, transformers.MixtralConfig(**MIXTRAL)),
                   "qwen2_moe": (transformers.Qwen2MoeForCausalLM, transformers.Qwen2MoeConfig(**QWEN2_MOE))}[name]
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    return cls(config).eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_macs_equal_flop_counter_mode_on_a_balanced_real_run(name):
    build, _, _, n_experts, k = MODELS[name]
    model = _real_model(name)
    ids = torch.randint(0, 512, (B, S))
    with torch.no_grad(), BalancedTopK(n_experts), FlopCounterMode(display=False) as reference:
        model(input_ids=ids)
    for experts in EXPERT_IMPLEMENTATIONS:
        assert 2 * analyze(build(experts), INPUTS).totals.macs == reference.get_total_flops()


@pytest.mark.parametrize("name", list(MODELS))
def test_eager_experts_see_the_balanced_loads(name):
    """The eager loop runs one gate/up matmul per hit expert, on exactly the tokens routed to it."""
    build, _, _, n_experts, k = MODELS[name]
    config = {"mixtral": MIXTRAL, "qwen2_moe": QWEN2_MOE}[name]
    gate_up = 2 * config.get("moe_intermediate_size", config["intermediate_size"])
    r = analyze(build("eager"), INPUTS)
    rows = collections.defaultdict(list)
    for op in r.ops:
        if op.module_path.endswith("mlp.experts") and op.op == "aten.mm.default" and op.outputs[0].shape[-1] == gate_up:
            rows[op.module_path].append(op.inputs[0].shape[0])   # the h -> 2I projection: one per hit expert
    assert len(rows) == 2
    for found in rows.values():
        assert sorted(found) == sorted(balanced_loads(T, k, n_experts))


@pytest.mark.parametrize("experts", EXPERT_IMPLEMENTATIONS)
def test_skewed_routing_sends_every_token_to_the_same_k_experts(experts):
    balanced = analyze(tiny_moe.TinyMixtral(experts), INPUTS)
    skewed = analyze(tiny_moe.TinyMixtral(experts), INPUTS, moe_routing="skewed")
    k, n_experts = MIXTRAL["num_experts_per_tok"], MIXTRAL["num_local_experts"]
    assert skewed.totals.macs == balanced.totals.macs == mixtral_macs()   # the same pairs, other experts
    line = next(p for p in skewed.policies if p.startswith("MoE routing"))
    assert line.startswith(f"MoE routing: skewed (worst case), every token to the same {k} of {n_experts}")
    if experts == "eager":
        per_layer = collections.Counter(op.module_path for op in skewed.ops
                                        if op.module_path.endswith("mlp.experts") and op.op == "aten.mm.default")
        assert set(per_layer.values()) == {2 * k}             # gate_up and down for each of the k hot experts
        assert {op.inputs[0].shape[0] for op in skewed.ops
                if op.module_path.endswith("mlp.experts") and op.op == "aten.mm.default"} == {T}
        # the hot experts' intermediates are T rows, not T·k/E: 4× (E/k) larger under skew
        def largest(r):
            return max(op.bytes_written for op in r.ops if op.module_path.endswith("mlp.experts")
                       and op.op == "aten.mm.default" and op.outputs[0].shape[-1] == 2 * MIXTRAL["intermediate_size"])
        assert largest(skewed) == 4 * largest(balanced) == 4 * T * k // n_experts * 2 * MIXTRAL["intermediate_size"] * 4


# ------------------------------------------------------------------------------------------ training
def test_training_with_the_router_aux_loss():
    config = transformers.MixtralConfig(**dict(MIXTRAL, output_router_logits=True, router_aux_loss_coef=0.02))
    model = tiny_moe._on_meta(transformers.MixtralForCausalLM, config, "grouped_mm")
    r = analyze(model, f"{INPUTS},labels={B}x{S}:int64", mode="train")
    assert r.totals.macs == mixtral_macs()
    assert r.flop_coverage == 1.0 and not r.uncounted_ops
    # the aux loss re-routes each layer's logits at the top level: the same balanced assignment
    line = next(p for p in r.policies if p.startswith("MoE routing: balanced"))
    assert "the model's top level" in line
    h, k, inter = MIXTRAL["hidden_size"], MIXTRAL["num_experts_per_tok"], MIXTRAL["intermediate_size"]
    expert_macs = MIXTRAL["num_hidden_layers"] * T * k * 3 * h * inter
    forward = sum(op.macs for op in r.ops if op.phase is Phase.FORWARD and op.module_path.endswith("experts"))
    backward = sum(op.macs for op in r.ops if op.phase is Phase.BACKWARD and op.module_path.endswith("experts"))
    assert forward == expert_macs and backward == 2 * expert_macs   # grad input and grad weight
    param_bytes = 4 * mixtral_params()
    alloc = collections.Counter()
    for e in r.storage_events:
        if e.kind == "alloc":
            alloc[e.category] += e.nbytes
    assert alloc[C.WEIGHTS] == alloc[C.GRADIENTS] == param_bytes
    assert alloc[C.OPTIMIZER_STATE] >= 2 * param_bytes
    assert alloc[C.ACTIVATIONS] > 0


# ------------------------------------------------------------------------------------------ op formulas
def test_grouped_mm_formula_is_the_sum_over_groups():
    sizes = [3, 0, 5, 2]                                       # an expert with no tokens included
    offs = torch.tensor(sizes, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    x, w = torch.randn(12, 8), torch.randn(4, 8, 4)           # 12 rows, 10 of them in a group
    counts = capture(lambda: torch._grouped_mm(x, w, offs=offs))
    assert counts.macs_by_op["aten._grouped_mm"] == sum(sizes) * 8 * 4
    with FlopCounterMode(display=False) as reference:
        start = 0
        for g, size in enumerate(sizes):
            x[start:start + size] @ w[g]
            start += size
    assert 2 * counts.macs_by_op["aten._grouped_mm"] == reference.get_total_flops()
    # the weight gradient's form: 2d x 2d, the contraction grouped (one K×N output per group)
    g = torch.randn(12, 4)
    counts = capture(lambda: torch._grouped_mm(x.t(), g, offs=offs))
    assert counts.macs_by_op["aten._grouped_mm"] == 8 * sum(sizes) * 4


def test_histc_formula():
    counts = capture(lambda: torch.histc(torch.rand(40), bins=8, min=0, max=1))
    assert counts.flops_by_op["aten.histc"] == 4 * 40


# ------------------------------------------------------------------------------------------ the CLI
def test_cli_analyze_reports_the_routing_and_full_coverage():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "main.py", "analyze", "tests/models/tiny_moe.py:TinyMixtral",
                          "--input", INPUTS, "--moe-routing", "skewed"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"MACs         {mixtral_macs():,}" in out.stdout
    assert "coverage 100.0% of FLOPs" in out.stdout
    assert "policy: MoE routing: skewed (worst case)" in out.stdout


# ------------------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("experts", EXPERT_IMPLEMENTATIONS)
def test_decode_step_routes_each_new_token_to_k_experts(experts):
    from torchbudget.engine import trace
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.results import TraceOptions
    context, new = 32, B   # one new token per sequence against a cache of `context`
    c = MIXTRAL
    h, heads, k = c["hidden_size"], c["num_attention_heads"], c["num_experts_per_tok"]
    kv = c["num_key_value_heads"] * h // heads
    layer = new * (2 * h * h + 2 * h * kv) + B * heads * (context + 1) * 2 * (h // heads) \
        + new * h * c["num_local_experts"] + new * k * 3 * h * c["intermediate_size"]
    r = trace.trace_model(tiny_moe.TinyMixtral(experts), parse_inputs(f"input_ids={B}x1:int64"),
                          TraceOptions(mode="decode", precision="bf16", context_len=context))
    assert r.totals.macs == c["num_hidden_layers"] * layer + new * h * c["vocab_size"]
    assert r.flop_coverage == 1.0

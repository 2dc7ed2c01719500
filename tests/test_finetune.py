"""Fine-tuning workloads (docs/trace.md "Fine-tuning"): LoRA through peft, --freeze, the frozen base's storage
(bf16, nf4, int8), 8-bit AdamW, Adafactor and gradient accumulation. Expected numbers come from closed forms
written out here (bitsandbytes' and torch's layouts) or from peft itself on a real model."""
import json
import math

import pytest
import torch
from torch import nn

from torchbudget.cli import run_cli as _run_cli
from torchbudget.engine.api import analyze
from torchbudget.engine.errors import UserError
from torchbudget.engine.latency import roofline
from torchbudget.engine.memory import simulate_memory
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.results import MemoryCategory as C, Phase
from torchbudget.hardware.catalog import resolve_gpu
from tests.models.tiny_llama import CONFIG, config
from tests.test_trace_safety import assert_unchanged, snapshot

MODEL = "tests/models/tiny_llama.py:TinyLlama"
INPUT = "2x32:int64"
HIDDEN, INTER, LAYERS, VOCAB = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["num_hidden_layers"], \
    CONFIG["vocab_size"]
KV = HIDDEN // CONFIG["num_attention_heads"] * CONFIG["num_key_value_heads"]
# (in, out) of every nn.Linear in one decoder layer
ATTENTION = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (HIDDEN, KV), "v_proj": (HIDDEN, KV), "o_proj": (HIDDEN, HIDDEN)}
MLP = {"gate_proj": (HIDDEN, INTER), "up_proj": (HIDDEN, INTER), "down_proj": (INTER, HIDDEN)}
NORMS = (2 * LAYERS + 1) * HIDDEN
EMBED = HEAD = VOCAB * HIDDEN
BASE = EMBED + HEAD + NORMS + LAYERS * sum(i * o for i, o in {**ATTENTION, **MLP}.values())


def adapter_params(rank: int, targets=ATTENTION) -> int:
    """LoRA: A (rank x in) and B (out x rank) per adapted Linear."""
    return LAYERS * sum(rank * (i + o) for i, o in targets.values())


def allocated(result, category) -> int:
    return sum(e.nbytes for e in result.storage_events if e.kind == "alloc" and e.category is category)


def train(**options):
    return analyze(MODEL, INPUT, mode="train", **options)


def run_cli(argv):
    return _run_cli(argv + ["--no-isolation"])


# ------------------------------------------------------------------------------------------------ LoRA
def test_trainable_parameters_equal_peft_on_a_real_model():
    peft = pytest.importorskip("peft")
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    real = peft.get_peft_model(LlamaForCausalLM(config()),
                               peft.LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    trainable, total = real.get_nb_trainable_parameters()     # what print_trainable_parameters prints
    r = train(lora_rank=8)
    assert (r.totals.trainable_params, r.totals.params) == (trainable, total)
    assert trainable == adapter_params(8) and total == BASE + adapter_params(8)
    assert any("q_proj, k_proj, v_proj, o_proj: the attention projections (default)" in p for p in r.policies)


def test_lora_gradients_and_adamw_state_only_for_adapters():
    r = train(lora_rank=8)
    n, tensors = adapter_params(8), 2 * LAYERS * len(ATTENTION)   # A and B per adapted module
    assert allocated(r, C.GRADIENTS) == 4 * n                     # fp32 adapters
    assert allocated(r, C.OPTIMIZER_STATE) == 8 * n + 4 * tensors   # exp_avg + exp_avg_sq + a 4-byte step each
    assert allocated(r, C.WEIGHTS) == 4 * (BASE + n)              # fp32 precision: base fp32 too


def test_lora_targets_by_name_and_all_linear():
    r = train(lora_rank=4, lora_targets="q_proj,v_proj")
    assert r.totals.trainable_params == adapter_params(4, {k: ATTENTION[k] for k in ("q_proj", "v_proj")})
    every = train(lora_rank=4, lora_targets="all-linear")      # peft's keyword: all but the output head
    assert every.totals.trainable_params == adapter_params(4, {**ATTENTION, **MLP})


def test_frozen_base_in_bf16_adapters_in_fp32():
    r = train(lora_rank=8, base_dtype="bf16", precision="bf16-amp")
    n = adapter_params(8)
    assert allocated(r, C.WEIGHTS) == 2 * BASE + 4 * n
    assert dict(r.totals.param_bytes_by_dtype) == {"bfloat16": 2 * BASE, "float32": 4 * n}


def nf4_bytes(numel: int) -> int:
    """bitsandbytes NF4 with double quantisation (blocksize 64, nested blocksize 256): packed codes, uint8
    absmax, fp32 second-level absmax, the 256-entry fp32 map, the fp32 offset and the 16-entry NF4 table."""
    blocks = math.ceil(numel / 64)
    return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / 256) + 4 * 256 + 4 + 4 * 16


def test_qlora_nf4_weights_closed_form():
    r = train(lora_rank=8, base_dtype="nf4", precision="bf16-amp")
    quantised = LAYERS * sum(nf4_bytes(i * o) for i, o in {**ATTENTION, **MLP}.values())
    unquantised = EMBED + HEAD + NORMS        # the output head stays in full precision (fp32 under AMP)
    assert allocated(r, C.WEIGHTS) == quantised + 4 * unquantised + 4 * adapter_params(8)
    assert r.totals.params == BASE + adapter_params(8)        # logical counts, not packed bytes
    assert allocated(r, C.OPTIMIZER_STATE) == 8 * adapter_params(8) + 4 * 2 * LAYERS * len(ATTENTION)


def test_qlora_dequantises_a_transient_full_size_weight_per_call():
    r = train(lora_rank=8, base_dtype="nf4", precision="bf16-amp")
    events = {}
    for e in r.storage_events:
        events.setdefault(e.op_index, []).append(e)
    calls = [op for op in r.ops if op.op == "torchbudget.dequantize_4bit.default"]
    forward = [op for op in calls if op.phase is Phase.FORWARD]
    backward = [op for op in calls if op.phase is Phase.BACKWARD]
    assert len(forward) == LAYERS * 7
    # backward dequantises where the layer's input needs a gradient: not layer 0's q/k/v (their input comes
    # from the frozen embedding), every other layer
    assert len(backward) == LAYERS * 7 - 3
    for op in forward:
        (shape,) = [t.shape for t in op.outputs]
        (alloc,) = [e for e in events[op.index] if e.kind == "alloc"]
        assert alloc.nbytes == 2 * math.prod(shape) and op.outputs[0].dtype == "bfloat16"
        assert alloc.category is C.TEMPORARIES      # freed after its matmul: not saved for backward


def test_int8_base_weights_closed_form():
    r = train(lora_rank=8, base_dtype="int8", precision="bf16-amp")
    quantised = LAYERS * sum(i * o + 4 * o for i, o in {**ATTENTION, **MLP}.values())   # int8 + fp32 row scales
    assert allocated(r, C.WEIGHTS) == quantised + 4 * (EMBED + HEAD + NORMS) + 4 * adapter_params(8)
    assert any(op.op == "torchbudget.int8_linear_matmul.default" for op in r.ops)


def test_nf4_inference_quantises_every_linear_but_the_head():
    r = analyze(MODEL, INPUT, precision="bf16", base_dtype="nf4")
    quantised = LAYERS * sum(nf4_bytes(i * o) for i, o in {**ATTENTION, **MLP}.values())
    assert allocated(r, C.WEIGHTS) == quantised + 2 * (EMBED + HEAD + NORMS)


# ---------------------------------------------------------------------------------------------- freeze
def test_freeze_globs():
    r = train(freeze="model.embed_tokens.*,model.layers.0.*")
    layer = sum(i * o for i, o in {**ATTENTION, **MLP}.values()) + 2 * HIDDEN
    assert r.totals.trainable_params == BASE - EMBED - layer
    assert allocated(r, C.GRADIENTS) == 4 * (BASE - EMBED - layer)
    assert r.module("model.layers.0").trainable_params == 0
    assert r.module("model.layers.1").trainable_params == layer


def test_freeze_and_base_dtype_errors():
    with pytest.raises(UserError, match="'embed' matches no parameter name"):
        train(freeze="embed")
    with pytest.raises(UserError, match="nothing left to train"):
        train(freeze="*")
    with pytest.raises(UserError, match="every parameter trains"):
        train(base_dtype="nf4")
    with pytest.raises(UserError, match="computes in torch.float32"):
        train(lora_rank=4, base_dtype="bf16")
    with pytest.raises(UserError, match="'qproj' matches no module"):
        train(lora_rank=4, lora_targets="qproj")
    with pytest.raises(UserError, match="no attention projection found"):
        analyze(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "2x4", mode="train", lora_rank=2)


# ---------------------------------------------------------------------------------------------- module
class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.mlp = nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.mlp(torch.relu(self.q_proj(x)))


@pytest.mark.parametrize("options", [dict(lora_rank=4), dict(lora_rank=4, base_dtype="nf4", precision="bf16-amp"),
                                     dict(lora_rank=4, base_dtype="int8", precision="fp16-amp", checkpointing=True),
                                     dict(freeze="mlp.*", optimizer="adamw-8bit", grad_accum=2)])
def test_live_module_untouched_through_the_api(options):
    torch.manual_seed(0)
    model = TwoLayer()
    before = snapshot(model)
    types = [type(m) for m in model.modules()]
    r = analyze(model, "3x16", mode="train", **options)
    assert_unchanged(before, model)
    assert [type(m) for m in model.modules()] == types
    assert r.totals.params >= sum(p.numel() for p in model.parameters())


def test_live_llama_untouched_by_qlora():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(config())
    before = snapshot(model)
    r = analyze(model, INPUT, mode="train", lora_rank=8, base_dtype="nf4", precision="bf16-amp")
    assert_unchanged(before, model)
    assert r.totals.trainable_params == adapter_params(8)


# ------------------------------------------------------------------------------------------ optimizers
def adamw_8bit_bytes(numel: int) -> int:
    """bitsandbytes' Optimizer2State.init_state: fp32 moments under min_8bit_size (4096) elements, else uint8
    moments + two fp32 absmax per 256-element block."""
    return 8 * numel if numel < 4096 else 2 * numel + 2 * 4 * math.ceil(numel / 256)


def test_adamw_8bit_state_and_flops():
    r = train(optimizer="adamw-8bit")
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        sizes = [p.numel() for p in LlamaForCausalLM(config()).parameters()]
    assert allocated(r, C.OPTIMIZER_STATE) == sum(adamw_8bit_bytes(n) for n in sizes) + 2 * 256 * 4   # + the maps
    step = [e for e in r.storage_events if e.phase is Phase.OPTIMIZER and e.kind == "alloc"]
    assert all(e.category is C.OPTIMIZER_STATE for e in step)     # in-place kernels: no temporaries
    assert r.totals.optimizer_flops == sum(14 * n if n < 4096 else 20 * n for n in sizes)


def test_adafactor_state_is_factored():
    r = train(optimizer="adafactor")
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        shapes = [p.shape for p in LlamaForCausalLM(config()).parameters()]
    # torch.optim.Adafactor: row and column statistics for a matrix, a full second moment for a vector, and a
    # 4-byte step; no first moment (beta1 None)
    expected = sum(4 * (s[0] + s[1]) if len(s) == 2 else 4 * s[0] for s in shapes) + 4 * len(shapes)
    assert allocated(r, C.OPTIMIZER_STATE) == expected
    loop = train(optimizer="adafactor", optimizer_impl="for-loop")
    assert allocated(loop, C.OPTIMIZER_STATE) == expected
    with pytest.raises(UserError, match="no fused implementation"):
        train(optimizer="adafactor", optimizer_impl="fused")
    with pytest.raises(UserError, match="does not apply to adamw-8bit"):
        train(optimizer="adamw-8bit", optimizer_impl="foreach")


# ---------------------------------------------------------------------------------------- accumulation
def test_grad_accumulation_memory_and_time():
    one, four = train(lora_rank=8), train(lora_rank=8, grad_accum=4)
    at_start = [e for e in four.storage_events if e.op_index == -1 and e.category is C.GRADIENTS]
    assert sum(e.nbytes for e in at_start) == 4 * adapter_params(8)      # alive before micro-batch 2..K begins
    assert not [e for e in one.storage_events if e.op_index == -1 and e.category is C.GRADIENTS]
    m1, m4 = simulate_memory(one, Overheads.none()), simulate_memory(four, Overheads.none())
    assert m4.steady_state_peak_bytes >= m1.steady_state_peak_bytes
    assert m4.timeline[0][1] - m1.timeline[0][1] == 4 * adapter_params(8)
    # backward adds into the gradients in place: the same backward FLOPs plus one add per gradient element
    assert four.totals.backward_flops == one.totals.backward_flops + adapter_params(8)
    gpu = resolve_gpu("H100 SXM")
    lat = roofline(four, gpu)
    k = 4
    assert lat.estimate_ms == pytest.approx(k * (lat.forward.estimate_ms + lat.backward.estimate_ms)
                                            + lat.optimizer.estimate_ms)
    assert lat.lower_bound_ms == pytest.approx(k * (lat.forward.bound_ms + lat.backward.bound_ms)
                                               + lat.optimizer.bound_ms)
    assert lat.global_batch == 8
    assert lat.throughput_samples_per_s == pytest.approx(8 / (lat.estimate_ms / 1000))


# ------------------------------------------------------------------------------------ transformers' mask
@pytest.mark.parametrize("target", ["cpu", "sm90"])
def test_causal_mask_left_to_sdpa_as_a_real_run_decides(target):
    """use_cache=False and no attention mask (a training step on input ids): a real run finds one sequence per
    row in the position ids the model makes, skips the 4-D mask (SDPA's is_causal) and passes GQA to SDPA
    (enable_gqa) instead of repeating K and V; on data-less ids transformers would keep the mask (it takes a
    FakeTensor for a compile trace). The trace decides as the real run does and says so; transformers' function
    is put back."""
    import transformers.masking_utils as masking
    from transformers import LlamaForCausalLM

    from torchbudget.engine.tracing import hf_masks

    original = masking.find_packed_sequence_indices
    cfg = config()
    cfg.use_cache = False
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    result = analyze(model, INPUT, mode="train", target=target)
    assert hf_masks.NOTE in result.policies
    forward = [op for op in result.ops if op.phase is Phase.FORWARD]
    assert not [op for op in forward if op.op in ("aten.where.self", "aten.bitwise_and.Tensor")]   # no mask built
    assert not [op for op in forward if op.op == "aten.clone.default" and op.module_path.endswith("self_attn")]
    assert masking.find_packed_sequence_indices is original


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_qlora_plan_on_a_llama(capsys):
    argv = ["plan", MODEL, "--mode", "train", "--lora-rank", "16", "--base-dtype", "nf4", "--precision", "bf16-amp",
            "--gpu", "RTX 4090", "--grad-accum", "4", "--no-max-batch"]
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "bf16-amp train, adamw, grad-accum 4, LoRA r16, base nf4" in text
    assert "global batch 8 (4 x 2)" in text
    assert run_cli(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["workload"]["lora_rank"] == 16 and data["workload"]["base_dtype"] == "nf4"
    assert data["throughput"]["global_batch"] == 8 and data["throughput"]["grad_accum"] == 4
    assert data["memory"]["by_category"]["gradients"] == 4 * adapter_params(16)


@pytest.mark.parametrize("argv,message", [
    (["--lora-rank", "8", "--lora-targets", "qproj"], "--lora-targets: 'qproj' matches no module"),
    (["--freeze", "nothing.*"], "--freeze: 'nothing.*' matches no parameter name"),
    (["--base-dtype", "nf4"], "every parameter trains: add --lora-rank or --freeze"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    assert run_cli(["analyze", MODEL, "--mode", "train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_freeze_needs_training(capsys):
    assert run_cli(["analyze", MODEL, "--freeze", "model.*"]) == 2
    assert "--freeze only applies to --mode train" in capsys.readouterr().err

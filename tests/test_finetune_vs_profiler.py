"""Fine-tuning peaks against torch.profiler on a real CPU run of the same step (as
tests/test_memory_vs_profiler.py): LoRA applied for real by peft's get_peft_model, a bf16 base, --freeze,
Adafactor, and a second micro-batch of gradient accumulation. The trace targets the CPU (its kernels).

use_cache=False, no attention mask: the real run skips transformers' 4-D causal mask (one sequence per row in
the position ids) and the trace decides the same (engine/tracing/hf_masks.py). The reference drops the logits
once the loss exists, as the trace does, and leaves out kernel scratch (CPU mm's private copy of the stand-in
loss's stride-0 gradient included). Within 0.1%, as ordinary models: the measured gaps are tens of bytes."""
import copy

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from torchbudget.bench.profiler_reference import _storage_bytes, profiled_peak_bytes
from torchbudget.engine.api import analyze
from torchbudget.engine.memory import simulate_memory
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.tracing.profiler_check import allocation_events, allocation_peak_bytes
from torchbudget.engine.tracing.training import make_optimizer, scalar_loss
from tests.models.tiny_llama import config

pytestmark = pytest.mark.slow
peft = pytest.importorskip("peft")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SHAPE = (2, 64)


def llama(dtype=torch.float32):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = config()
    cfg.use_cache = False
    return LlamaForCausalLM(cfg).to(dtype)


def predicted(model, **options) -> int:
    result = analyze(model, "x".join(map(str, SHAPE)) + ":int64", mode="train", target="cpu", **options)
    return simulate_memory(result, Overheads.none()).trace_peak_bytes


def ids():
    return (torch.randint(0, config().vocab_size, SHAPE),)


@pytest.mark.parametrize("precision,base", [("fp32", "auto"), ("bf16", "bf16")])
def test_lora_step_matches_peft_on_a_real_run(precision, base):
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = llama()
    expected = predicted(model, lora_rank=8, precision=precision, base_dtype=base)
    real = peft.get_peft_model(copy.deepcopy(model).to(dtype), peft.LoraConfig(r=8, target_modules=TARGETS))
    assert all(p.dtype == torch.float32 for n, p in real.named_parameters() if "lora_" in n)
    measured = profiled_peak_bytes(real, ids(), mode="train", optimizer="adamw")
    assert expected == pytest.approx(measured, rel=1e-3)


def test_freeze_and_adafactor_match_a_real_run():
    model = llama()
    expected = predicted(model, freeze="model.embed_tokens.*,model.layers.0.*", optimizer="adafactor")
    real = copy.deepcopy(model)
    for name, p in real.named_parameters():
        if name.startswith(("model.embed_tokens.", "model.layers.0.")):
            p.requires_grad_(False)
    measured = profiled_peak_bytes(real, ids(), mode="train", optimizer="adafactor")
    assert expected == pytest.approx(measured, rel=1e-3)


def test_second_micro_batch_matches_a_real_run():
    model = llama()
    expected = predicted(model, lora_rank=8, grad_accum=2)
    real = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=8, target_modules=TARGETS))
    real.train()
    inputs = ids()
    trainable = [p for p in real.parameters() if p.requires_grad]
    opt = make_optimizer("adamw", trainable)
    scalar_loss(real(*inputs)).backward()          # micro-batch 1: its gradients stay for micro-batch 2
    baseline = _storage_bytes([*real.parameters(), *real.buffers(), *inputs, *(p.grad for p in trainable)])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        scalar_loss(real(*inputs)).backward()
        opt.step()
    measured = baseline + allocation_peak_bytes(allocation_events(prof, "cpu"))
    assert expected == pytest.approx(measured, rel=1e-3)

"""Predicted peaks equal torch.profiler's allocation events of a real CPU run (within 2%), like for like:
the trace's own peak, without GPU overheads or allocator rounding, and the profiler's peak without
CPU-kernel scratch (bench/profiler_reference.py). Big models: bench/bench_planner.py."""
import copy

import pytest
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

from torchbudget.bench.profiler_reference import profiled_peak_bytes
from torchbudget.engine.api import analyze
from torchbudget.engine.memory import simulate_memory
from torchbudget.engine.overheads import Overheads
from torchbudget.engine.results import MemoryCategory as C

pytestmark = pytest.mark.slow

CASES = [  # model, input, mode, optimizer, precision, checkpointing
    ("resnet18", "1x3x128x128", "train", "adamw", "fp32", False),     # peak in the optimizer step
    ("resnet18", "4x3x112x112", "train", "sgd", "fp32", True),        # checkpointing; peak in backward
    ("resnet18", "4x3x96x96", "train", "adam", "bf16-amp", False),    # autocast, fp32 master weights
    ("resnet18", "4x3x96x96", "train", "adamw", "bf16", False),       # pure bf16 weights and state
    ("resnet18", "2x3x160x160", "infer", None, "fp32", False),
    ("tiny_vit", "4x3x32x32", "train", "adamw", "fp32", False),
    ("tiny_vit", "4x3x32x32", "infer", None, "fp32", False),
]


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "tiny_vit":
        return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=64,
                                 mlp_dim=128, num_classes=10)
    return getattr(torchvision.models, name)(weights=None)


@pytest.mark.parametrize("name,shape,mode,optimizer,precision,checkpointing", CASES)
def test_trace_peak_matches_real_cpu_run(name, shape, mode, optimizer, precision, checkpointing):
    model = build(name)
    # the CPU target: what the CPU run we compare with executes (its kernels, its autocast lists)
    result = analyze(model, shape, mode=mode, optimizer=optimizer or "adamw", precision=precision,
                     checkpointing=checkpointing, target="cpu")
    predicted = simulate_memory(result, Overheads.none()).trace_peak_bytes
    pure = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    real_model = copy.deepcopy(model).to(pure) if pure is not torch.float32 else model
    inputs = (torch.randn(tuple(int(d) for d in shape.split("x")), dtype=pure),)
    measured = profiled_peak_bytes(real_model, inputs, mode=mode, optimizer=optimizer,
                                   autocast_dtype=torch.bfloat16 if precision == "bf16-amp" else None,
                                   checkpointing=checkpointing)
    assert predicted == pytest.approx(measured, rel=0.02)


def _allocated(result, category):
    return sum(e.nbytes for e in result.storage_events if e.kind == "alloc" and e.category is category)


@pytest.mark.parametrize("precision", ["fp32", "bf16-amp"])
def test_adam_state_is_two_fp32_copies_and_amp_keeps_fp32_master_weights(precision):
    model = build("resnet18")
    result = analyze(model, "2x3x64x64", mode="train", optimizer="adam", precision=precision)
    params = list(model.parameters())
    fp32_param_bytes = sum(p.numel() * 4 for p in params)
    # exp_avg + exp_avg_sq per parameter, plus Adam's 4-byte "step" scalar per parameter tensor
    assert _allocated(result, C.OPTIMIZER_STATE) == 2 * fp32_param_bytes + 4 * len(params)
    assert _allocated(result, C.WEIGHTS) == fp32_param_bytes
    assert _allocated(result, C.GRADIENTS) == fp32_param_bytes
    profile = simulate_memory(result, Overheads.none())
    # steady state: the optimizer state is alive from the start of the step
    assert profile.steady_state_peak_bytes >= profile.iteration1_peak_bytes

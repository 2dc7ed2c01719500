"""Trace speed and memory: ResNet-50 (1×3×224² warm, 64×3×1024²) and the LLaMA-7B-shaped decoder.
Targets: ResNet-50 small ≲ 0.2 s warm, 7B decoder ≤ 5 s, process RSS ≤ 1.5 GB."""
from __future__ import annotations

import resource
import time

import torchvision

from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.results import TraceOptions
from torchbudget.engine.trace import trace_model


def _timed(model, spec, options, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = trace_model(model, [spec], options)
        best = min(best, time.perf_counter() - started)
    return best, result


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run() -> list[str]:
    from torchbudget.bench.llm7b import build_on_meta
    lines = []
    resnet = torchvision.models.resnet50(weights=None)
    trace_model(resnet, [InputSpec((1, 3, 224, 224))])   # warm-up: imports, fake-tensor caches
    cases = [
        ("resnet50 1x3x224x224 infer", resnet, InputSpec((1, 3, 224, 224)), TraceOptions()),
        ("resnet50 64x3x1024x1024 infer", resnet, InputSpec((64, 3, 1024, 1024)), TraceOptions()),
        ("resnet50 32x3x224x224 train adamw", resnet, InputSpec((32, 3, 224, 224)), TraceOptions(mode="train")),
    ]
    decoder = build_on_meta()
    cases += [
        ("decoder-7B 1x2048 infer", decoder, InputSpec((1, 2048), "int64"), TraceOptions()),
        ("decoder-7B 1x2048 train adamw bf16-amp", decoder, InputSpec((1, 2048), "int64"),
         TraceOptions(mode="train", precision="bf16-amp")),
    ]
    for name, model, spec, options in cases:
        seconds, result = _timed(model, spec, options, repeat=3 if "7B" not in name else 1)
        lines.append(f"{name:42s} {seconds:6.3f} s  {len(result.ops):6d} ops  "
                     f"{result.totals.params / 1e6:8.1f} M params  max RSS {_rss_mb():6.0f} MB")
    return lines

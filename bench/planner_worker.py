"""One planner benchmark case in a fresh process: ``python -m torchbudget.bench.planner_worker CASE`` prints one JSON
line with the timed seconds (imports excluded), peak RSS and the case's own numbers."""
from __future__ import annotations

import json
import resource
import sys
import time


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _h100():
    from torchbudget.hardware.catalog import resolve_gpu

    return resolve_gpu("H100 SXM")


def _resnet50_workload(batch: int = 32):
    from torchbudget.engine.api import make_options
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.workload import Workload

    return Workload("resnet50", parse_inputs(f"{batch}x3x224x224"), make_options(mode="train", optimizer="adamw"))


def case_resnet50_plan() -> dict:
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.planner import plan, plan_result

    gpu, workload, cache = _h100(), _resnet50_workload(), TraceCache()
    start = time.perf_counter()
    p = plan(workload, gpu, cache=cache, solve_max_batch=False)
    total = time.perf_counter() - start
    start = time.perf_counter()
    plan_result(p.result, gpu)
    arithmetic = time.perf_counter() - start
    return {"seconds": total, "planner_only_seconds": arithmetic, "trace_seconds": p.result.trace_seconds,
            "peak_bytes": p.memory.peak_bytes, "trace_peak_bytes": p.memory.trace_peak_bytes}


def case_resnet50_memtracker() -> dict:
    """torch's MemTracker on the same workload (fake tensors, AdamW foreach, one step)."""
    import torch
    import torchvision
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    start = time.perf_counter()
    with FakeTensorMode():
        model = torchvision.models.resnet50(weights=None)
        optimizer = torch.optim.AdamW(model.parameters(), foreach=True)
        inputs = torch.randn(32, 3, 224, 224)
        tracker = MemTracker()
        tracker.track_external(model, optimizer, inputs)
        with tracker:
            model(inputs).float().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        peak = sum(tracker.get_tracker_snapshot("peak")[torch.device("cpu")].values()) // 2  # "Total" is included
    return {"seconds": time.perf_counter() - start, "peak_bytes": int(peak)}


def case_llm7b_plan() -> dict:
    from torchbudget.bench.llm7b import build_on_meta
    from torchbudget.engine.api import analyze
    from torchbudget.engine.planner import plan_result

    model = build_on_meta()
    start = time.perf_counter()
    result = analyze(model, "1x2048:int64", mode="train", optimizer="adamw", precision="bf16-amp")
    traced = time.perf_counter()
    p = plan_result(result, _h100())
    end = time.perf_counter()
    return {"seconds": end - start, "planner_only_seconds": end - traced, "trace_seconds": result.trace_seconds,
            "ops": len(result.ops), "events": len(result.storage_events),
            "peak_gib": p.memory.peak_bytes / 2**30, "verdict": p.verdict.value}


def case_resnet50_sweep() -> dict:
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.solver import sweep

    from torchbudget.engine.api import analyze_workload

    calls, trace_seconds = [], []

    def counted(workload):
        calls.append(workload.batch_size)
        t = time.perf_counter()
        result = analyze_workload(workload)
        trace_seconds.append(time.perf_counter() - t)
        return result

    start = time.perf_counter()
    s = sweep(_resnet50_workload(), [_h100()], batches=[1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256],
              cache=TraceCache(analyzer=counted))
    total = time.perf_counter() - start
    return {"seconds": total, "planner_only_seconds": total - sum(trace_seconds),
            "trace_seconds_each": [round(t, 2) for t in trace_seconds], "traces": len(calls), "traced_batches": calls,
            "max_batch": s.gpus[0].max_batch, "interpolated_points": sum(p.interpolated for p in s.points)}


def _profiler_case(name: str, shape: str, mode: str = "train") -> dict:
    import torch
    import torchvision

    from torchbudget.bench.profiler_reference import profiled_peak_bytes
    from torchbudget.engine.api import analyze
    from torchbudget.engine.memory import simulate_memory
    from torchbudget.engine.overheads import Overheads

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    result = analyze(model, shape, mode=mode, optimizer="adamw", target="cpu")   # the CPU run's own kernels
    predicted = simulate_memory(result, Overheads.none()).trace_peak_bytes
    start = time.perf_counter()
    measured = profiled_peak_bytes(model, (torch.randn(tuple(int(d) for d in shape.split("x"))),), mode=mode,
                                   optimizer="adamw")
    return {"seconds": time.perf_counter() - start, "predicted": predicted, "measured": measured,
            "rel_error": (predicted - measured) / measured}


def case_profiler_resnet50() -> dict:
    return _profiler_case("resnet50", "2x3x224x224")


def case_profiler_vit_b_16() -> dict:
    return _profiler_case("vit_b_16", "1x3x224x224")


def case_profiler_resnet50_infer() -> dict:
    return _profiler_case("resnet50", "4x3x224x224", "infer")


def case_profiler_vit_b_16_infer() -> dict:
    return _profiler_case("vit_b_16", "4x3x224x224", "infer")


if __name__ == "__main__":
    from torchbudget.engine.process import freeze_startup_objects

    freeze_startup_objects()  # as the CLI and the app do once their imports are done
    out = globals()[f"case_{sys.argv[1]}"]()
    out["peak_rss_mib"] = _rss_mib()
    print(json.dumps(out))

"""One several-GPU benchmark case in a fresh process: ``python -m torchbudget.bench.distributed_worker CASE``
prints one JSON line with the timed seconds (imports excluded), peak RSS and the case's own numbers."""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _plan(model: str, world: int, model_kwargs=None, tokens=(1, 2048), precision="bf16-amp", checkpointing=True,
          optimizer_impl="auto", target=None) -> dict:
    from torchbudget.engine.api import make_options
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.planner import Planner
    from torchbudget.engine.workload import Workload
    from torchbudget.hardware.catalog import resolve_gpu

    import torch  # noqa: F401 - imports are not timed
    import transformers  # noqa: F401
    import torch.distributed.fsdp  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401 - the model's module (transformers loads it lazily)

    options = make_options(mode="train", precision=precision, optimizer="adamw", checkpointing=checkpointing,
                           strategy="fsdp", world_size=world, optimizer_impl=optimizer_impl,
                           **({"target": target} if target else {}))
    workload = Workload(model, parse_inputs(f"input_ids={tokens[0]}x{tokens[1]}:int64"), options,
                        dict(model_kwargs or {}))
    start = time.perf_counter()
    plan = Planner(TraceCache()).plan(workload, resolve_gpu("H100 SXM"), solve_max_batch=False,
                                      solve_max_seq_len=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "trace_seconds": plan.result.trace_seconds, "ops": len(plan.result.ops),
            "per_rank_bytes": plan.required_bytes, "fits": plan.fits,
            "trace_peak_bytes": plan.memory.trace_peak_bytes, "step_ms": plan.distributed.step_ms,
            "peak_rss_mib": _rss_mib()}


def case_llama70b_fsdp64_plan() -> dict:
    return _plan("meta-llama/Llama-3.1-70B", 64)


SMALL = {"num_hidden_layers": 4}
SMALL_TOKENS = (1, 512)


def case_llama8b4_fsdp8_plan() -> dict:
    # as the tracker runs it: fp32 (its policy gives no amp here), foreach AdamW, no checkpointing, CPU kernels
    return _plan("meta-llama/Llama-3.1-8B", 8, SMALL, SMALL_TOKENS, precision="fp32", checkpointing=False,
                 optimizer_impl="foreach", target="cpu")


def case_llama8b4_fsdp8_memtracker() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fsdp_tracker_reference import peak_snapshot
    from torchbudget.engine.sources import load_model

    import torch.distributed._tools.fsdp2_mem_tracker  # noqa: F401
    start = time.perf_counter()
    model = load_model("meta-llama/Llama-3.1-8B", SMALL).module
    snapshot = peak_snapshot(8, "fp32", 1, False, model=model, tokens=SMALL_TOKENS)
    return {"seconds": time.perf_counter() - start, "trace_peak_bytes": snapshot["Total"],
            "peak_rss_mib": _rss_mib()}


if __name__ == "__main__":
    print(json.dumps(globals()[f"case_{sys.argv[1]}"]()))

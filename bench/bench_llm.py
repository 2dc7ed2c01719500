"""LLM targets of issue 10, by name from the bundled configs (resources/hf_models.toml):

- `analyze meta-llama/Llama-3.1-8B` (its default input, 1 x 2,048 tokens, fp32 inference) <= 2 s warm, in process;
- `plan meta-llama/Llama-3.1-70B --mode train --precision bf16-amp --gpu "H100 SXM"` <= 3 s and peak RSS <= 2 GB,
  with an empty trace store (the first plan a user runs; the repeated plan from the store is shown beside it):
  timed in a fresh interpreter after its imports (torch, transformers, torch._dynamo that the first fake
  dispatch loads, ours: ~3.5 s on this 2-core host that no plan can avoid), and end to end as a command.

Peers measured in the same run on the same transformers model from the same config, on fake tensors (meta
storage: transformers' Llama calls ``.item()``, which plain meta tensors refuse): torch.utils.flop_counter's
FlopCounterMode (counts only) and torch.distributed._tools.mem_tracker's MemTracker (peak memory by category),
timed warm in process for the 8B forward and in a fresh interpreter (build included) for the 70B AdamW step.
``python -m torchbudget.bench.bench_llm peer PEER MODEL MODE`` runs one peer and prints one JSON line."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANALYZE_MODEL, ANALYZE_TARGET_S = "meta-llama/Llama-3.1-8B", 2.0
PLAN = ["plan", "meta-llama/Llama-3.1-70B", "--mode", "train", "--precision", "bf16-amp", "--gpu", "H100 SXM"]
PLAN_TARGET_S, PLAN_TARGET_RSS_MIB = 3.0, 2048
SEQ = 2048


# ------------------------------------------------------------------------------------------------ peers
def plan_after_imports() -> dict:
    """The 70B plan in this (fresh) interpreter, timed after the imports every plan needs."""
    import contextlib
    import io

    import torch._dynamo  # noqa: F401 - the first fake-tensor dispatch imports it
    import transformers.models.llama.modeling_llama  # noqa: F401
    import torchbudget.engine.api  # noqa: F401
    import torchbudget.engine.planner  # noqa: F401
    from torchbudget.cli import run_cli

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_cli(list(PLAN))
    return {"seconds": time.perf_counter() - started, "code": code}


def _build_fake(model: str):
    """transformers' own model from the bundled config, built on meta (no initialisation), then its parameters
    and buffers made fake CPU tensors (meta storage) by ``to_empty`` under the fake mode; and that mode."""
    import torch
    import transformers
    from torch._subclasses.fake_tensor import FakeTensorMode

    from torchbudget.engine.hf_catalog import find_bundled

    entry = find_bundled(model)
    fields = {k: v for k, v in entry.config.items() if k != "model_type"}
    config = transformers.AutoConfig.for_model(entry.config["model_type"], **fields)
    with torch.device("meta"):
        module = getattr(transformers, entry.architecture)(config)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        module.to_empty(device="cpu")
    return module, mode


def _step(module, mode, train: bool, counter):
    """One forward (inference) or AdamW step (train: bf16 autocast, as --precision bf16-amp) under ``counter``."""
    import torch

    with mode:
        ids = torch.zeros(1, SEQ, dtype=torch.long)
        if not train:
            with torch.no_grad(), counter:
                module(input_ids=ids, use_cache=False)
            return
        optimizer = torch.optim.AdamW(module.parameters(), foreach=True)
        with counter:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = module(input_ids=ids, use_cache=False).logits.float().sum()
            loss.backward()
            optimizer.step()


def _counter(peer: str, module):
    if peer == "FlopCounterMode":
        from torch.utils.flop_counter import FlopCounterMode

        return FlopCounterMode(display=False)
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(module)
    return tracker


def _answer(peer: str, counter) -> str:
    if peer == "FlopCounterMode":
        return f"{counter.get_total_flops() / 2:.4g} MACs"
    peak = counter.get_tracker_snapshot("peak")
    return f"peak {max(v['Total'] for v in peak.values()) / 2**30:.1f} GiB"


def run_peer(peer: str, model: str, mode_name: str, warm: bool) -> dict:
    started = time.perf_counter()
    module, mode = _build_fake(model)
    train = mode_name == "train"
    if warm:
        _step(module, mode, train, _counter(peer, module))
    best, answer = float("inf"), ""
    for _ in range(2 if warm else 1):
        t0 = time.perf_counter()
        counter = _counter(peer, module)
        _step(module, mode, train, counter)
        best, answer = min(best, time.perf_counter() - t0), _answer(peer, counter)
    total = time.perf_counter() - started
    return {"peer": peer, "seconds": best, "with_build_seconds": total, "answer": answer,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ------------------------------------------------------------------------------------------------ ours
def _fresh_rss(command: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of a fresh interpreter running ``command``: timed and measured by a
    wrapper interpreter whose only child it is (RUSAGE_CHILDREN is then that child's peak)."""
    wrapper = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
               "p.returncode, p.stdout, p.stderr]))")
    done = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    wall, rss_kib, code, out, err = json.loads(done.stdout)
    if code != 0:
        raise RuntimeError((err.strip().splitlines() or ["failed"])[-1])
    return wall, rss_kib / 1024, out


def _peer_line(peer: str, model: str, mode: str, warm: bool, env: dict) -> dict:
    command = [sys.executable, "-m", "torchbudget.bench.bench_llm", "peer", peer, model, mode, "warm" if warm else "cold"]
    wall, rss, out = _fresh_rss(command, env)
    data = json.loads(out.strip().splitlines()[-1])
    data["process_seconds"], data["process_rss_mib"] = wall, rss
    return data


def run() -> list[str]:
    from torchbudget.engine.api import analyze

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    lines = []
    # 1. Llama-3.1-8B analyse, warm, in process
    analyze(ANALYZE_MODEL)   # warm-up: imports, the model's first build
    best, result = float("inf"), None
    for _ in range(3):
        started = time.perf_counter()
        result = analyze(ANALYZE_MODEL)
        best = min(best, time.perf_counter() - started)
    lines.append(f"`analyze {ANALYZE_MODEL}` ({result.inputs[0].text()}, fp32 infer), warm, best of 3: {best:.2f} s "
                 f"({len(result.ops):,} ops, trace {result.trace_seconds:.2f} s, build on meta the rest)")
    for peer in ("FlopCounterMode", "MemTracker"):
        try:
            data = _peer_line(peer, ANALYZE_MODEL, "infer", True, env)
            lines.append(f"  peer {peer} (same model, fake tensors, forward, warm): {data['seconds']:.2f} s "
                         f"({data['answer']}) -> ours / {peer} = {best / data['seconds']:.2f}")
        except Exception as exc:  # noqa: BLE001  (a peer that cannot run is reported, not fatal)
            lines.append(f"  peer {peer}: could not run ({exc})")
    lines.append(f"target analyse <= {ANALYZE_TARGET_S:g} s warm: {'met' if best <= ANALYZE_TARGET_S else 'MISSED'} "
                 f"({best:.2f})")
    # 2. Llama-3.1-70B training plan, a fresh interpreter, an empty store (then the repeated plan from it)
    with tempfile.TemporaryDirectory(prefix="torchbudget-bench-store-") as store:
        store_env = dict(env, TORCHBUDGET_CACHE_DIR=store)
        cli = [sys.executable, str(ROOT / "main.py"), *PLAN]
        first, first_rss, out = _fresh_rss(cli, store_env)
        repeated, repeated_rss, _ = _fresh_rss(cli, store_env)
    with tempfile.TemporaryDirectory(prefix="torchbudget-bench-store-") as store:
        _, _, inner = _fresh_rss([sys.executable, "-m", "torchbudget.bench.bench_llm", "plan-after-imports"],
                                 dict(env, TORCHBUDGET_CACHE_DIR=store))
    work = json.loads(inner.strip().splitlines()[-1])["seconds"]
    verdict = next((line for line in out.splitlines() if "FIT" in line or line.startswith("fits")), "").strip()
    floor, _, _ = _fresh_rss([sys.executable, "-c", "import torch, transformers; transformers.LlamaForCausalLM"], env)
    lines.append(f"`{' '.join(PLAN)}`, fresh interpreter, empty store: {first:.2f} s, peak RSS {first_rss:,.0f} MiB "
                 f"({verdict[:60]})")
    lines.append(f"  timed after its imports (a fresh interpreter, empty store): {work:.2f} s")
    lines.append(f"  repeated (from the store): {repeated:.2f} s, peak RSS {repeated_rss:,.0f} MiB; "
                 f"`import torch, transformers` alone: {floor:.2f} s")
    for peer in ("FlopCounterMode", "MemTracker"):
        try:
            data = _peer_line(peer, "meta-llama/Llama-3.1-70B", "train", False, env)
            lines.append(f"  peer {peer} (70B AdamW step on fake tensors, fresh interpreter): "
                         f"{data['process_seconds']:.2f} s, peak RSS {data['process_rss_mib']:,.0f} MiB "
                         f"({data['answer']}) -> ours / {peer} = {first / data['process_seconds']:.2f} (time), "
                         f"{first_rss / data['process_rss_mib']:.2f} (RSS)")
        except Exception as exc:  # noqa: BLE001
            lines.append(f"  peer {peer}: could not run ({exc})")
    lines.append(f"target 70B training plan <= {PLAN_TARGET_S:g} s after imports: "
                 f"{'met' if work <= PLAN_TARGET_S else 'MISSED'} ({work:.2f}; the command {first:.2f}); "
                 f"RSS <= {PLAN_TARGET_RSS_MIB:,} MiB: "
                 f"{'met' if first_rss <= PLAN_TARGET_RSS_MIB else 'MISSED'} ({first_rss:,.0f})")
    return lines


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "plan-after-imports":
        print(json.dumps(plan_after_imports()))
    elif len(sys.argv) >= 5 and sys.argv[1] == "peer":
        print(json.dumps(run_peer(sys.argv[2], sys.argv[3], sys.argv[4], len(sys.argv) < 6 or sys.argv[5] == "warm")))
    else:
        for line in run():
            print(line, flush=True)

"""Planner benchmarks, each case in a fresh subprocess (bench/planner_worker.py): seconds exclude imports.

Targets (issue #4): resnet50 bs32 training plan <= 0.5 s (torch's MemTracker on the same workload, same
run, for scale); 7B decoder training plan <= 3 s and <= 1.5 GiB RSS; 12-point resnet50 batch sweep plus
max-batch solve <= 2 s. Also: trace peak vs a real CPU run under torch.profiler for resnet50 / vit_b_16."""
from __future__ import annotations

import json
import subprocess
import sys

TIMEOUT_S = 600
CASES = [  # case, target seconds (None: no target), target RSS MiB
    ("resnet50_plan", 0.5, None),
    ("resnet50_memtracker", None, None),
    ("llm7b_plan", 3.0, 1536),
    ("resnet50_sweep", 2.0, None),
    ("profiler_resnet50", None, None),
    ("profiler_vit_b_16", None, None),
    ("profiler_resnet50_infer", None, None),
    ("profiler_vit_b_16_infer", None, None),
]


def measure(case: str) -> dict:
    try:
        done = subprocess.run([sys.executable, "-m", "torchbudget.bench.planner_worker", case], capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_S} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def _verdict(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return f" (target <= {target:g}: {'met' if value <= target else 'MISSED'})"


def run() -> list[str]:
    lines = []
    for case, seconds_target, rss_target in CASES:
        out = measure(case)
        if "error" in out:
            lines.append(f"{case}: ERROR {out['error']}")
            continue
        extra = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()
                 if k not in ("seconds", "peak_rss_mib")}
        lines.append(f"{case}: {out['seconds']:.2f} s{_verdict(out['seconds'], seconds_target)}, "
                     f"peak RSS {out['peak_rss_mib']:.0f} MiB{_verdict(out['peak_rss_mib'], rss_target)}; {extra}")
    return lines

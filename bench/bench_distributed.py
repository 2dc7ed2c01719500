"""Several-GPU plans (issue 11), each case in a fresh subprocess (bench/distributed_worker.py): seconds exclude
imports, RSS is the worker's peak.

Target: Llama-3.1-70B, AdamW bf16-amp, batch 1 x 2048, checkpointing, FSDP over 64 H100s: one training-step plan
<= 5 s and <= 2 GiB RSS. Peer in the same run: torch's FSDPMemTracker (memory only, no time, no allocator) on
Llama-3.1-8B's first 4 layers over 8 fake ranks, against our plan of the same workload."""
from __future__ import annotations

import json
import subprocess
import sys

TIMEOUT_S = 900
CASES = [  # case, target seconds (None: no target), target RSS MiB
    ("llama70b_fsdp64_plan", 5.0, 2048),
    ("llama8b4_fsdp8_plan", None, None),
    ("llama8b4_fsdp8_memtracker", None, None),
]


def measure(case: str) -> dict:
    try:
        done = subprocess.run([sys.executable, "-m", "torchbudget.bench.distributed_worker", case],
                              capture_output=True, text=True, timeout=TIMEOUT_S)
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

"""Engine benchmark: ours vs thop, ptflops, torchinfo, fvcore and FlopCounterMode on the same models.

Every counter runs in its own fresh subprocess (``python -m torchbudget.bench.peers``) under a wall-clock timeout
and an address-space cap, so a peer that runs out of memory or time is reported, not fatal. Peers
need real CPU tensors (ours and FlopCounterMode run on meta). Cases whose real weights or
activations cannot fit the cap are skipped for those peers (documented in docs/benchmarks.md)."""
from __future__ import annotations

import json
import resource
import subprocess
import sys

PEERS = ("ours", "FlopCounterMode", "thop", "ptflops", "torchinfo", "fvcore")
MEMORY_CAP_GIB = 16       # per subprocess (this machine: 24 GiB)
PEER_TIMEOUT_S = 120

CASES = [
    # (model, input shape, warm timing, peers to run, targets for ours)
    ("resnet50", "1x3x224x224", True, PEERS, {"seconds": 0.3}),
    ("resnet50", "64x3x1024x1024", False, PEERS, {}),
    # real fp32 weights alone are 27 GB: only meta-capable counters can run it
    ("llm7b", "1x2048", False, ("ours", "FlopCounterMode"), {"seconds": 5.0, "peak_rss_mib": 1536}),
]


def _cap_memory() -> None:
    limit = MEMORY_CAP_GIB * 1024 ** 3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def measure(peer: str, model: str, shape: str, warm: bool) -> dict:
    command = [sys.executable, "-m", "torchbudget.bench.peers", peer, model, shape] + ([] if warm else ["--cold"])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PEER_TIMEOUT_S,
                              preexec_fn=_cap_memory)
    except subprocess.TimeoutExpired:
        return {"peer": peer, "error": f"timed out after {PEER_TIMEOUT_S} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peer": peer, "error": f"exit {done.returncode}: {last[:120]}"}
    return json.loads(lines[-1])


def run() -> list[str]:
    lines = [f"each counter in a fresh subprocess, cap {MEMORY_CAP_GIB} GiB address space, "
             f"timeout {PEER_TIMEOUT_S} s; MACs ratio = peer / ours"]
    for model, shape, warm, peers, targets in CASES:
        lines.append(f"\n{model} {shape} ({'warm: second call' if warm else 'cold: build + first call'})")
        lines.append(f"{'counter':<16}{'seconds':>10}{'peak RSS MiB':>14}{'MACs':>22}{'ratio':>8}")
        results = [measure(peer, model, shape, warm) for peer in peers]
        ours = next((r for r in results if r["peer"] == "ours" and "macs" in r), None)
        for r in results:
            if "error" in r:
                lines.append(f"{r['peer']:<16}  {r['error']}")
                continue
            ratio = f"{r['macs'] / ours['macs']:.4f}" if ours and ours["macs"] else "-"
            lines.append(f"{r['peer']:<16}{r['seconds']:>10.3f}{r['peak_rss_mib']:>14.0f}{r['macs']:>22,}{ratio:>8}")
        if ours:
            for key, limit in targets.items():
                verdict = "met" if ours[key] <= limit else "MISSED"
                lines.append(f"target ours {key} <= {limit}: {verdict} ({ours[key]:.3f})")
            slower = [r["peer"] for r in results if r["peer"] != "ours" and "seconds" in r
                      and r["seconds"] < ours["seconds"]]
            lines.append("faster than every peer that finished" if not slower else f"slower than: {', '.join(slower)}")
    return lines

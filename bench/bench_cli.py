"""The CLI from a cold start (a fresh interpreter per run), the way a user runs it twice.

Target (issue 12): a repeated `plan` of a stored workload answers from the trace store without importing
PyTorch, in <= 1.5 s cold. Measured against the floor of any PyTorch tool on the same machine in the same
run: `python -c "import torch"`."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAN = ["plan", "resnet50", "--input", "32x3x224x224", "--mode", "train", "--gpu", "RTX 4090"]
TARGET_S = 1.5
REPEATS = 5


def _wall(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    return elapsed


def run():
    with tempfile.TemporaryDirectory(prefix="torchbudget-bench-store-") as store:
        env = dict(os.environ, TORCHBUDGET_CACHE_DIR=store)
        cli = [sys.executable, str(ROOT / "main.py"), *PLAN]
        first = _wall(cli, env)
        repeated = [_wall(cli, env) for _ in range(REPEATS)]
        torch_floor = [_wall([sys.executable, "-c", "import torch"], env) for _ in range(REPEATS)]
    median, floor = statistics.median(repeated), statistics.median(torch_floor)
    yield f"`{' '.join(PLAN)}`, fresh interpreter per run (median of {REPEATS})"
    yield f"first run (traces, fills the store)   {first:6.2f} s"
    yield f"repeated run (from the store)          {median:6.2f} s  (min {min(repeated):.2f}, max {max(repeated):.2f})"
    yield f"python -c 'import torch' (the floor)   {floor:6.2f} s  -> repeated plan / import torch = {median / floor:.2f}"
    yield f"target repeated <= {TARGET_S:g} s: {'met' if median <= TARGET_S else 'MISSED'} ({median:.2f})"

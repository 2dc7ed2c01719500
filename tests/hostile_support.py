"""Helpers shared by the hostile-input suites (tests/test_hostile_*.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from torchbudget.cli import run_cli

ROOT = Path(__file__).resolve().parent.parent

# A model small enough that tracing costs nothing; hostile lines are added around it.
TINY_MODEL = """
import torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
    def forward(self, x):
        return self.fc(x)
"""


def write(directory: Path, name: str, source: str | bytes) -> Path:
    path = directory / name
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``run_cli`` in this process: (exit status, stdout, stderr). argparse's own errors exit too."""
    try:
        code = run_cli(list(argv))
    except SystemExit as exc:   # argparse rejects an option value
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def main_py(*argv: str, env: dict | None = None, timeout: float = 120) -> tuple[int, str, str, float]:
    """``python main.py ARGV`` as a user runs it: (exit status, stdout, stderr, seconds)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def assert_one_error(code, out: str, err: str, *fragments: str) -> str:
    """Exit 2, nothing on stdout, exactly one ``error:`` line on stderr holding every fragment, no traceback."""
    assert code == 2, (code, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity (the schema promises strict JSON)."""
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def process_alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that may never come in a container counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return "\nState:\tZ" not in status
